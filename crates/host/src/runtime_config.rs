//! `runtime-config.toml`, the subset of Spin's keys this host implements.
//!
//! ```toml
//! state_dir = ".spin"                # default: <app dir>/.spin
//! [key_value_store.default]
//! type = "spin"                      # SQLite; `path` relative to this file; no path = in memory
//! path = "kv.db"
//! [key_value_store.shared]
//! type = "redis"
//! url = "redis://127.0.0.1:6379"
//! prefix = "app1:"                   # our extension: namespace every key
//! [key_value_store.scratch]
//! type = "memory"                    # our extension: process-local, lost on exit
//! [[variables_provider]]
//! type = "static"
//! values = { api_key = "…" }
//! ```
//!
//! As in Spin, any unknown key fails start-up. Spin keys we do not implement (`sqlite_database`,
//! `llm_compute`, `outbound_networking`, `azure_cosmos`/`aws_dynamo` stores, vault providers…)
//! are rejected with a message saying so rather than ignored.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a runtime config file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeConfigError {
    /// The file could not be read.
    #[error("cannot read runtime config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Malformed TOML, an unknown key or an unsupported store/provider type.
    #[error("invalid runtime config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntimeConfig {
    #[serde(default)]
    state_dir: Option<String>,
    #[serde(default)]
    log_dir: Option<String>,
    #[serde(default)]
    key_value_store: BTreeMap<String, RawStore>,
    #[serde(default)]
    variables_provider: Vec<RawProvider>,
    #[serde(default)]
    config_provider: Vec<RawProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum RawStore {
    #[serde(rename = "spin")]
    Spin {
        #[serde(default)]
        path: Option<String>,
    },
    #[serde(rename = "redis")]
    Redis {
        url: String,
        #[serde(default)]
        prefix: Option<String>,
    },
    #[serde(rename = "memory")]
    Memory {},
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum RawProvider {
    #[serde(rename = "static")]
    Static { values: BTreeMap<String, String> },
    #[serde(rename = "env")]
    Env {
        #[serde(default)]
        prefix: Option<String>,
    },
}

/// A key-value store definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValueStoreConfig {
    /// Spin's SQLite store at this file.
    Sqlite { path: PathBuf },
    /// Redis at `url`, with an optional key prefix (our extension; Spin has none).
    Redis { url: String, prefix: String },
    /// Process-local memory (Spin's `spin` type without a path, or our `memory` type).
    Memory,
}

/// A variables provider.
#[derive(Debug, Clone)]
pub enum VariablesProvider {
    /// Fixed values from the file.
    Static { values: BTreeMap<String, String> },
    /// `<PREFIX>_<UPPER_NAME>` environment variables (default prefix `SPIN_VARIABLE`).
    Env { prefix: Option<String> },
}

/// The parsed runtime config.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// `state_dir`, resolved against the file's directory.
    pub state_dir: Option<PathBuf>,
    /// `log_dir`, accepted for compatibility (guest output goes to the host log).
    pub log_dir: Option<PathBuf>,
    /// `[key_value_store.<label>]`.
    pub key_value_stores: BTreeMap<String, KeyValueStoreConfig>,
    /// `[[variables_provider]]` then `[[config_provider]]`, in file order.
    pub variables_providers: Vec<VariablesProvider>,
}

impl RuntimeConfig {
    /// Reads a runtime config file.
    pub fn load(path: &Path) -> Result<Self, RuntimeConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| RuntimeConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir).map_err(|message| RuntimeConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses runtime config text; relative paths resolve against `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<Self, String> {
        let raw: RawRuntimeConfig = toml::from_str(text).map_err(|e| {
            let message = e.to_string();
            if message.contains("unknown field") {
                format!("unused runtime config key(s) or unsupported feature: {message}")
            } else {
                message
            }
        })?;
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };
        let mut key_value_stores = BTreeMap::new();
        for (label, store) in raw.key_value_store {
            let config = match store {
                RawStore::Spin { path: Some(p) } => {
                    KeyValueStoreConfig::Sqlite { path: resolve(&p) }
                }
                RawStore::Spin { path: None } | RawStore::Memory {} => KeyValueStoreConfig::Memory,
                RawStore::Redis { url, prefix } => KeyValueStoreConfig::Redis {
                    url,
                    prefix: prefix.unwrap_or_default(),
                },
            };
            key_value_stores.insert(label, config);
        }
        let variables_providers = raw
            .variables_provider
            .into_iter()
            .chain(raw.config_provider)
            .map(|p| match p {
                RawProvider::Static { values } => VariablesProvider::Static { values },
                RawProvider::Env { prefix } => VariablesProvider::Env { prefix },
            })
            .collect();
        Ok(Self {
            state_dir: raw.state_dir.filter(|s| !s.is_empty()).map(|s| resolve(&s)),
            log_dir: raw.log_dir.filter(|s| !s.is_empty()).map(|s| resolve(&s)),
            key_value_stores,
            variables_providers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_relative_paths() {
        let c = RuntimeConfig::parse(
            "[key_value_store.default]\ntype = \"spin\"\npath = \"kv.db\"\n[key_value_store.r]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n[key_value_store.m]\ntype = \"spin\"\n",
            Path::new("/cfg"),
        )
        .expect("valid");
        assert_eq!(
            c.key_value_stores["default"],
            KeyValueStoreConfig::Sqlite {
                path: PathBuf::from("/cfg/kv.db")
            }
        );
        assert_eq!(c.key_value_stores["m"], KeyValueStoreConfig::Memory);
        assert!(matches!(
            c.key_value_stores["r"],
            KeyValueStoreConfig::Redis { .. }
        ));
    }

    #[test]
    fn unknown_keys_fail() {
        let err = RuntimeConfig::parse(
            "[sqlite_database.default]\ntype = \"spin\"\n",
            Path::new("/"),
        )
        .expect_err("unsupported");
        assert!(err.contains("sqlite_database"), "{err}");
        assert!(
            RuntimeConfig::parse(
                "[key_value_store.x]\ntype = \"azure_cosmos\"\n",
                Path::new("/")
            )
            .is_err()
        );
    }
}
