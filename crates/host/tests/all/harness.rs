//! Test harness: builds the guest components once per test run, instantiates scenario folders
//! (`tests/scenarios/<name>/spin.toml` with `%{...}` placeholders) into temp dirs and runs the
//! host on 127.0.0.1 with an ephemeral port.

use kiloclaw_host::{App, HostConfig, LoadError, ServerHandle};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The crate directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where guest builds go: next to this test binary's target dir, so they are cached.
fn guest_target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KILOCLAW_HOST_GUEST_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/debug/deps/all-xxxx → <target>/host-guests
    exe.ancestors()
        .nth(3)
        .map(|t| t.join("host-guests"))
        .unwrap_or_else(|| std::env::temp_dir().join("kiloclaw-host-guests"))
}

/// Builds the guest workspace (once per process) and returns the directory holding the `.wasm`.
pub fn guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = guest_target_dir();
        let manifest = crate_dir().join("tests/guests/Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--release",
                "--manifest-path",
            ])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("run cargo to build the test guests");
        assert!(status.success(), "building test guests failed");
        target.join("wasm32-wasip2/release")
    })
}

/// The path of one built guest.
pub fn guest(name: &str) -> PathBuf {
    guests().join(format!("{}.wasm", name.replace('-', "_")))
}

/// A scenario instantiated into a temp dir.
pub struct Scenario {
    pub dir: tempfile::TempDir,
    pub config: HostConfig,
}

/// A server on a free loopback port that accepts connections and never answers, so a client's
/// handshake can only time out; abort the handle to close it.
pub async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    (port, holder)
}

/// A unique prefix for Redis keys of this test run.
pub fn unique(tag: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("kc-host-test:{tag}:{}:{nanos}:", std::process::id())
}

impl Scenario {
    /// Copies `tests/scenarios/<name>` into a temp dir, filling placeholders:
    /// `%{guest:<name>}` → wasm path, plus every `(key, value)` in `extra` as `%{key}`.
    pub fn new(name: &str, extra: &[(&str, String)]) -> Self {
        let source = crate_dir().join("tests/scenarios").join(name);
        let dir = tempfile::tempdir().expect("tempdir");
        copy_templated(&source, dir.path(), extra);
        let mut config = HostConfig::new(dir.path().join("spin.toml"));
        config.state_dir = Some(dir.path().join(".spin"));
        let runtime_config = dir.path().join("runtime-config.toml");
        if runtime_config.exists() {
            config.runtime_config_file = Some(runtime_config);
        }
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.limits.max_instances = 64;
        config.cron = false;
        Self { dir, config }
    }

    pub async fn load(&self) -> Result<App, LoadError> {
        App::load(&self.config).await
    }

    /// Loads and serves; panics with the load error.
    pub async fn start(&self) -> Running {
        let app = self
            .load()
            .await
            .unwrap_or_else(|e| panic!("load failed: {e}"));
        let server = app.bind_and_serve().await.expect("bind");
        Running {
            base: format!("http://{}", server.local_addr()),
            app,
            server,
            client: reqwest::Client::new(),
        }
    }
}

fn copy_templated(from: &Path, to: &Path, extra: &[(&str, String)]) {
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_templated(&entry.path(), &target, extra);
            continue;
        }
        let mut text = std::fs::read_to_string(entry.path()).expect("read scenario file");
        while let Some(start) = text.find("%{guest:") {
            let end = start + text[start..].find('}').expect("closed placeholder");
            let name = &text[start + 8..end];
            let path = guest(name);
            text.replace_range(start..=end, &path.to_string_lossy());
        }
        for (k, v) in extra {
            text = text.replace(&format!("%{{{k}}}"), v);
        }
        std::fs::write(&target, text).expect("write scenario file");
    }
}

/// A running host.
pub struct Running {
    pub base: String,
    pub app: App,
    pub server: ServerHandle,
    pub client: reqwest::Client,
}

impl Running {
    pub async fn get(&self, path_and_query: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    pub async fn get_json(&self, path_and_query: &str) -> serde_json::Value {
        let (status, body) = self.get(path_and_query).await;
        assert_eq!(status, 200, "{path_and_query}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}
