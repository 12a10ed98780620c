//! Cross-process CAS: two host processes share one SQLite file and one Redis server; many
//! clients do CAS read-modify-write increments on the same keys through both; the final count
//! must equal the number of successful requests exactly.

use crate::harness::{Scenario, unique};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// A `kiloclaw-host-serve` child process on 127.0.0.1.
pub struct HostProcess {
    pub base: String,
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<String>,
}

impl HostProcess {
    pub async fn spawn(
        manifest: &Path,
        state_dir: &Path,
        runtime_config: Option<&Path>,
        env: &[(&str, &str)],
        extra_args: &[&str],
    ) -> Self {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kiloclaw-host-serve"));
        command
            .arg(manifest)
            .args(["--listen", "127.0.0.1:0", "--no-cron", "--state-dir"])
            .arg(state_dir)
            .args(extra_args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(rc) = runtime_config {
            command.arg("--runtime-config-file").arg(rc);
        }
        let mut child = command.spawn().expect("spawn kiloclaw-host-serve");
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr_pipe.read_to_string(&mut s).await;
            s
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .expect("host process ready within 120 s")
            .expect("read stdout")
            .expect("a ready line");
        let base = ready
            .strip_prefix("kiloclaw-host: ready on ")
            .unwrap_or_else(|| panic!("unexpected first line: {ready}"))
            .to_string();
        Self {
            base,
            child,
            stderr,
        }
    }

    /// Closes stdin (the child shuts down gracefully) and returns its log.
    pub async fn stop(mut self) -> String {
        drop(self.child.stdin.take());
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => assert!(status.expect("wait").success(), "host process failed"),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!("host process did not stop within 20 s");
            }
        }
        self.stderr.await.unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_sqlite_file_and_redis_lose_no_update() {
    let shared = tempfile::tempdir().expect("tempdir");
    let sqlite = shared.path().join("shared_kv.db");
    let s = Scenario::new(
        "concurrency",
        &[
            ("sqlite_path", sqlite.to_string_lossy().into_owned()),
            ("redis_prefix", unique("concurrency")),
        ],
    );
    let rc = s.dir.path().join("runtime-config.toml");
    let a = HostProcess::spawn(
        &s.config.manifest_path,
        &s.dir.path().join("state-a"),
        Some(&rc),
        &[],
        &[],
    )
    .await;
    let b = HostProcess::spawn(
        &s.config.manifest_path,
        &s.dir.path().join("state-b"),
        Some(&rc),
        &[],
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    const CLIENTS: usize = 12;
    const PER_CLIENT: usize = 15;
    for store in ["default", "redis"] {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..CLIENTS {
            let base = if i % 2 == 0 {
                a.base.clone()
            } else {
                b.base.clone()
            };
            let client = client.clone();
            let url = format!("{base}/?op=cas-incr&store={store}&key=shared-counter");
            let incr = format!("{base}/?op=incr&store={store}&key=atomic-counter&delta=1");
            tasks.spawn(async move {
                let mut retries = 0u64;
                for _ in 0..PER_CLIENT {
                    let r = client.get(&url).send().await.expect("request");
                    let status = r.status().as_u16();
                    let body = r.text().await.expect("body");
                    assert_eq!(status, 200, "{body}");
                    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
                    retries += v["retries"].as_u64().unwrap_or(0);
                    let r = client.get(&incr).send().await.expect("request");
                    assert_eq!(r.status().as_u16(), 200);
                }
                retries
            });
        }
        let mut retries = 0;
        let all = async {
            while let Some(r) = tasks.join_next().await {
                retries += r.expect("client task");
            }
        };
        tokio::time::timeout(Duration::from_secs(240), all)
            .await
            .expect("clients finished within 240 s");
        let expected = (CLIENTS * PER_CLIENT).to_string();
        let read = |path: String| {
            let client = client.clone();
            async move {
                client
                    .get(path)
                    .send()
                    .await
                    .expect("request")
                    .text()
                    .await
                    .expect("body")
            }
        };
        assert_eq!(
            read(format!(
                "{}/?op=kv-get&store={store}&key=shared-counter",
                a.base
            ))
            .await,
            expected,
            "CAS counter on {store} lost updates"
        );
        assert_eq!(
            read(format!(
                "{}/?op=incr&store={store}&key=atomic-counter&delta=0",
                b.base
            ))
            .await,
            expected,
            "increment counter on {store} lost updates"
        );
        assert!(
            retries > 0,
            "the test must actually produce CAS conflicts on {store}"
        );
    }
    a.stop().await;
    let log = b.stop().await;
    assert!(
        log.contains("\"tag\":\"access\""),
        "JSON access log expected: {log}"
    );
}
