//! WASI setup per component: environment, `files`, and guest stdout/stderr into the host log.
//!
//! Guest output is split into lines and logged with the component id (`tag = "guest"`), so it
//! lands in the same JSON log as the host's own lines. `files` are mounted read-only as in
//! Spin: glob patterns and single files are copied into a per-component staging directory under
//! the state dir, mounted at `/`; `{ source = dir, destination }` mounts the directory itself.

use crate::clock::{OffsetWallClock, WallClockOffset};
use crate::manifest::{Component, FileMount};
use crate::metrics::Metrics;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// What every instance of a component gets.
#[derive(Debug, Clone, Default)]
pub struct WasiSetup {
    env: Vec<(String, String)>,
    /// (host directory, guest path)
    preopens: Vec<(PathBuf, String)>,
    /// Added to the guests' wall clock (`HostConfig::clock_offset`); `None`: the real clock.
    clock_offset: Option<WallClockOffset>,
}

impl WasiSetup {
    /// Prepares environment and files for a component; `staging_root` is wiped and refilled.
    pub fn prepare(
        component: &Component,
        base_dir: &Path,
        staging_root: &Path,
    ) -> Result<Self, String> {
        let env = component
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut preopens = Vec::new();
        let staging = staging_root.join(&*component.id);
        let mut staged_any = false;
        if !component.files.is_empty() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        for mount in &component.files {
            match mount {
                FileMount::Placement {
                    source,
                    destination,
                } if source.is_dir() => {
                    preopens.push((source.clone(), destination.clone()));
                }
                FileMount::Placement {
                    source,
                    destination,
                } => {
                    let target = staging.join(destination.trim_start_matches('/'));
                    copy_file(source, &target)?;
                    staged_any = true;
                }
                FileMount::Pattern(pattern) => {
                    let full = base_dir.join(pattern);
                    let matches = glob::glob(&full.to_string_lossy())
                        .map_err(|e| format!("files pattern `{pattern}`: {e}"))?;
                    for entry in matches {
                        let path = entry.map_err(|e| format!("files pattern `{pattern}`: {e}"))?;
                        if path.is_file() {
                            let relative = path.strip_prefix(base_dir).map_err(|_| {
                                format!("files pattern `{pattern}` escapes the app directory")
                            })?;
                            copy_file(&path, &staging.join(relative))?;
                            staged_any = true;
                        }
                    }
                }
            }
        }
        if staged_any {
            preopens.push((staging, "/".to_string()));
        }
        Ok(Self {
            env,
            preopens,
            clock_offset: None,
        })
    }

    /// Gives every instance built from now on the real wall clock plus `offset` (`None`: the real clock).
    pub(crate) fn set_clock_offset(&mut self, offset: Option<WallClockOffset>) {
        self.clock_offset = offset;
    }

    /// A fresh WASI context for one instance.
    pub fn build_ctx(&self, component_id: &Arc<str>, metrics: &Arc<Metrics>) -> WasiCtx {
        let mut builder = WasiCtxBuilder::new();
        builder
            .envs(&self.env[..])
            .stdout(GuestLog::new(
                component_id.clone(),
                "stdout",
                metrics.clone(),
            ))
            .stderr(GuestLog::new(
                component_id.clone(),
                "stderr",
                metrics.clone(),
            ));
        if let Some(offset) = &self.clock_offset {
            builder.wall_clock(OffsetWallClock::new(offset.clone()));
        }
        for (host, guest) in &self.preopens {
            if let Err(e) = builder.preopened_dir(host, guest, FsPerms::ReadOnly) {
                tracing::error!(tag = "wasi", component = %component_id, error = %e, "cannot mount files");
            }
        }
        builder.build()
    }
}

fn copy_file(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("cannot stage {}: {e}", from.display()))
}

/// Guest stdout/stderr as host log lines (and structured lines as metrics).
#[derive(Clone)]
struct GuestLog {
    component: Arc<str>,
    stream: &'static str,
    metrics: Arc<Metrics>,
}

impl GuestLog {
    fn new(component: Arc<str>, stream: &'static str, metrics: Arc<Metrics>) -> Self {
        Self {
            component,
            stream,
            metrics,
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            log: self.clone(),
            pending: Vec::new(),
        })
    }
}

struct LineWriter {
    log: GuestLog,
    pending: Vec<u8>,
}

impl LineWriter {
    /// One host event per guest line. A JSON object line is passed whole as
    /// [`crate::logging::GUEST_FIELDS`] (merged into the event by the log format) at the level its
    /// `level` field names; any other line is the event's message. Without a `level`, stdout is
    /// `info` and stderr `warn`.
    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let component = &*self.log.component;
        let stream = self.log.stream;
        let default_level = if stream == "stderr" {
            tracing::Level::WARN
        } else {
            tracing::Level::INFO
        };
        let Some(fields) = guest_json_object(text) else {
            macro_rules! plain {
                ($level:expr) => {
                    tracing::event!($level, tag = "guest", component, stream, "{text}")
                };
            }
            match default_level {
                tracing::Level::WARN => plain!(tracing::Level::WARN),
                _ => plain!(tracing::Level::INFO),
            }
            return;
        };
        macro_rules! structured {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    tag = "guest",
                    component,
                    stream,
                    guest_fields = text
                )
            };
        }
        self.log.metrics.observe_guest_event(component, &fields);
        match level_of(&fields).unwrap_or(default_level) {
            tracing::Level::ERROR => structured!(tracing::Level::ERROR),
            tracing::Level::WARN => structured!(tracing::Level::WARN),
            tracing::Level::INFO => structured!(tracing::Level::INFO),
            tracing::Level::DEBUG => structured!(tracing::Level::DEBUG),
            tracing::Level::TRACE => structured!(tracing::Level::TRACE),
        }
    }
}

/// The line's fields when it is one JSON object.
fn guest_json_object(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(fields)) => Some(fields),
        _ => None,
    }
}

/// The level a guest's `level` field names, if it names one.
fn level_of(fields: &serde_json::Map<String, serde_json::Value>) -> Option<tracing::Level> {
    let level = fields.get("level")?.as_str()?;
    match level.to_ascii_lowercase().as_str() {
        "error" => Some(tracing::Level::ERROR),
        "warn" | "warning" => Some(tracing::Level::WARN),
        "info" => Some(tracing::Level::INFO),
        "debug" => Some(tracing::Level::DEBUG),
        "trace" => Some(tracing::Level::TRACE),
        _ => None,
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            self.emit(&line[..line.len() - 1]);
        }
        // Bound memory for a guest that never writes a newline.
        if self.pending.len() > 16 * 1024 {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{guest_json_object, level_of};
    use tracing::Level;

    fn level(line: &str) -> Option<Option<Level>> {
        guest_json_object(line).map(|fields| level_of(&fields))
    }

    #[test]
    fn a_guest_line_names_its_level_only_as_a_json_object() {
        assert_eq!(level("plain text"), None);
        assert_eq!(level("{not json"), None);
        assert_eq!(level(r#"["an array"]"#), None);
        assert_eq!(level(r#"{"tag":"x"}"#), Some(None));
        assert_eq!(
            level(r#"{"level":"DEBUG","tag":"x"}"#),
            Some(Some(Level::DEBUG))
        );
        assert_eq!(level(r#"{"level":"warning"}"#), Some(Some(Level::WARN)));
        assert_eq!(level(r#"{"level":"loud"}"#), Some(None));
        assert_eq!(level(r#"{"level":3}"#), Some(None));
    }
}
