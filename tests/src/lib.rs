//! Test harness for the end-to-end suite: builds the four wasm components exactly as `.ci/run`
//! and `spin.toml` do, and hands back where they are.
//!
//! Components are built with `cargo build --target wasm32-wasip2 --release -p …` in one invocation,
//! once per test process, honouring `CARGO_TARGET_DIR`; artifact paths come from cargo's JSON
//! messages, never guessed. (`spin.toml` names them under `target/wasm32-wasip2/release/`; with
//! another target directory, point the manifest at these paths — `kiloclaw up` does.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// The target every component is built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The component packages and their artifact file names.
pub const COMPONENTS: [(&str, &str); 4] = [
    ("kiloclaw-auth", "kiloclaw_auth.wasm"),
    ("kiloclaw-instances", "kiloclaw_instances.wasm"),
    ("kiloclaw-router", "kiloclaw_router.wasm"),
    ("kiloclaw-reconciler", "kiloclaw_reconciler.wasm"),
];

/// The built components.
#[derive(Debug, Clone)]
pub struct Components {
    /// `kiloclaw-auth`: exports `kiloclaw:auth/auth`.
    pub auth: PathBuf,
    /// `kiloclaw-instances`: exports `kiloclaw:instances/instances`.
    pub instances: PathBuf,
    /// `kiloclaw-router`: the HTTP entry.
    pub router: PathBuf,
    /// `kiloclaw-reconciler`: the cron entry.
    pub reconciler: PathBuf,
}

impl Components {
    /// `(package name, path)` for each component.
    pub fn all(&self) -> [(&'static str, &Path); 4] {
        [
            (COMPONENTS[0].0, &self.auth),
            (COMPONENTS[1].0, &self.instances),
            (COMPONENTS[2].0, &self.router),
            (COMPONENTS[3].0, &self.reconciler),
        ]
    }
}

/// The workspace root (the directory holding `spin.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(manifest_dir)
}

/// Builds the components once per process and returns their paths. Later calls return the same
/// result without rebuilding.
pub fn components() -> anyhow::Result<&'static Components> {
    static BUILT: OnceLock<Result<Components, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_all().map_err(|error| format!("{error:#}")))
        .as_ref()
        .map_err(|message| anyhow::anyhow!("building the components failed: {message}"))
}

fn build_all() -> anyhow::Result<Components> {
    let [auth, instances, router, reconciler]: [PathBuf; 4] = build(&workspace_root())?
        .try_into()
        .map_err(|_| anyhow::anyhow!("expected four components"))?;
    Ok(Components {
        auth,
        instances,
        router,
        reconciler,
    })
}

/// Runs the one cargo invocation that builds all four components; returns their paths in
/// [`COMPONENTS`] order.
fn build(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command.current_dir(root).args([
        "build",
        "--target",
        WASM_TARGET,
        "--release",
        "--message-format=json-render-diagnostics",
    ]);
    for (package, _) in COMPONENTS {
        command.args(["-p", package]);
    }
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", PathBuf::from(&cargo).display()))?;
    if !output.status.success() {
        bail!(
            "cargo build for {WASM_TARGET} exited with {}",
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut paths: Vec<Option<PathBuf>> = vec![None; COMPONENTS.len()];
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(target_name) = message["target"]["name"].as_str() else {
            continue;
        };
        let Some(index) = COMPONENTS
            .iter()
            .position(|(package, _)| package.replace('-', "_") == target_name)
        else {
            continue;
        };
        let wasm = message["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let Some(wasm) = wasm {
            paths[index] = Some(PathBuf::from(wasm));
        }
    }
    COMPONENTS
        .iter()
        .zip(paths)
        .map(|((package, _), path)| {
            path.with_context(|| format!("cargo reported no .wasm for {package}"))
        })
        .collect()
}
