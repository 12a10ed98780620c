//! Spin's `spin` key-value backend: SQLite, table `spin_key_value(store, key, value)`.
//!
//! The file layout is Spin's own, so a state file is shared with real `spin up`. We add one
//! column, `kc_version` (default 0, so Spin's inserts still work), bumped on every write through
//! this host and seeded randomly on insert, which lets CAS detect ABA among our writers. The
//! connection runs in WAL mode with a 5 s busy timeout; blocking calls run on tokio's blocking
//! pool. Every CAS step is a single conditional statement, atomic across processes through
//! SQLite's file locking; `increment` runs in an IMMEDIATE transaction.

use super::{KvError, Snapshot, SwapError, decode_counter};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A SQLite-backed store for one label.
#[derive(Debug)]
pub struct SqliteStore {
    label: String,
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
}

fn backend(e: impl std::fmt::Display) -> KvError {
    KvError::Backend(e.to_string())
}

/// A random starting version for inserted rows, so a delete + re-insert of the same value is
/// not mistaken for "unchanged" (the ABA case).
fn fresh_version() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (h.finish() >> 2) as i64
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and the table.
    pub fn open(path: &Path, label: &str) -> Result<Self, KvError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                KvError::Backend(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let connection = Connection::open(path)
            .map_err(|e| KvError::Backend(format!("cannot open {}: {e}", path.display())))?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(backend)?;
        // WAL lets readers proceed while another process writes.
        let _mode: String = connection
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(backend)?;
        connection
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS spin_key_value (
                    store TEXT NOT NULL,
                    key   TEXT NOT NULL,
                    value BLOB NOT NULL,
                    PRIMARY KEY (store, key)
                )",
            )
            .map_err(backend)?;
        if !has_version_column(&connection)?
            && let Err(e) = connection.execute_batch(
                "ALTER TABLE spin_key_value ADD COLUMN kc_version INTEGER NOT NULL DEFAULT 0",
            )
            // Another process may have added it between our check and the ALTER.
            && !has_version_column(&connection)?
        {
            return Err(backend(e));
        }
        Ok(Self {
            label: label.to_string(),
            path: path.to_path_buf(),
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let connection = self.connection.clone();
        let label = self.label.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = connection
                .lock()
                .map_err(|_| KvError::Backend("sqlite connection poisoned".into()))?;
            f(&mut guard, &label)
        })
        .await
        .map_err(backend)?
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let key = key.to_string();
        self.with(move |c, store| {
            c.query_row(
                "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                params![store, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let (key, value) = (key.to_string(), value.to_vec());
        self.with(move |c, store| upsert(c, store, &key, &value))
            .await
    }

    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        let key = key.to_string();
        self.with(move |c, store| {
            c.execute(
                "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2",
                params![store, key],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    pub async fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.get(key).await?.is_some())
    }

    pub async fn keys(&self) -> Result<Vec<String>, KvError> {
        self.with(|c, store| {
            let mut statement = c
                .prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")
                .map_err(backend)?;
            let rows = statement
                .query_map(params![store], |r| r.get::<_, String>(0))
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    pub async fn get_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        let keys = keys.to_vec();
        self.with(move |c, store| {
            let tx = c.transaction().map_err(backend)?;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                let value = tx
                    .query_row(
                        "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                        params![store, key],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend)?;
                out.push((key, value));
            }
            tx.commit().map_err(backend)?;
            Ok(out)
        })
        .await
    }

    pub async fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let pairs = pairs.to_vec();
        self.with(move |c, store| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            for (key, value) in &pairs {
                upsert(&tx, store, key, value)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    pub async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        let keys = keys.to_vec();
        self.with(move |c, store| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            for key in &keys {
                tx.execute(
                    "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2",
                    params![store, key],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let key = key.to_string();
        self.with(move |c, store| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let current: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                    params![store, key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            let current = match current {
                Some(bytes) => decode_counter(&key, &bytes)?,
                None => 0,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| KvError::Invalid(format!("increment: counter `{key}` overflows")))?;
            upsert(&tx, store, &key, &next.to_le_bytes())?;
            tx.commit().map_err(backend)?;
            Ok(next)
        })
        .await
    }

    pub async fn snapshot(&self, key: &str) -> Result<Snapshot, KvError> {
        let key = key.to_string();
        self.with(move |c, store| {
            let row: Option<(Vec<u8>, i64)> = c
                .query_row(
                    "SELECT value, kc_version FROM spin_key_value WHERE store = ?1 AND key = ?2",
                    params![store, key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(backend)?;
            Ok(match row {
                Some((value, version)) => Snapshot {
                    value: Some(value),
                    version: Some(version),
                },
                None => Snapshot {
                    value: None,
                    version: None,
                },
            })
        })
        .await
    }

    pub async fn swap(
        &self,
        key: &str,
        expected: &Snapshot,
        value: &[u8],
    ) -> Result<(), SwapError> {
        let (key, expected, value) = (key.to_string(), expected.clone(), value.to_vec());
        let changed = self
            .with(move |c, store| {
                let changed = match (&expected.value, expected.version) {
                    (Some(old), Some(version)) => c.execute(
                        "UPDATE spin_key_value SET value = ?1, kc_version = kc_version + 1
                         WHERE store = ?2 AND key = ?3 AND value = ?4 AND kc_version = ?5",
                        params![value, store, key, old, version],
                    ),
                    (Some(old), None) => c.execute(
                        "UPDATE spin_key_value SET value = ?1, kc_version = kc_version + 1
                         WHERE store = ?2 AND key = ?3 AND value = ?4",
                        params![value, store, key, old],
                    ),
                    (None, _) => c.execute(
                        "INSERT INTO spin_key_value (store, key, value, kc_version)
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (store, key) DO NOTHING",
                        params![store, key, value, fresh_version()],
                    ),
                };
                changed.map_err(backend)
            })
            .await?;
        if changed == 1 {
            Ok(())
        } else {
            Err(SwapError::CasFailed)
        }
    }
}

fn has_version_column(c: &Connection) -> Result<bool, KvError> {
    let mut statement = c
        .prepare(
            "SELECT COUNT(*) FROM pragma_table_info('spin_key_value') WHERE name = 'kc_version'",
        )
        .map_err(backend)?;
    let count: i64 = statement.query_row([], |r| r.get(0)).map_err(backend)?;
    Ok(count > 0)
}

fn upsert(c: &Connection, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
    c.execute(
        "INSERT INTO spin_key_value (store, key, value, kc_version) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value, kc_version = kc_version + 1",
        params![store, key, value, fresh_version()],
    )
    .map(|_| ())
    .map_err(backend)
}

#[cfg(test)]
mod tests {
    use super::super::{Store, contract};
    use super::*;

    #[tokio::test]
    async fn contract_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::Sqlite(Arc::new(
            SqliteStore::open(&dir.path().join("kv.db"), "default").expect("open"),
        ));
        contract::basic_crud(&store).await;
        contract::cas_semantics(&store).await;
    }

    #[tokio::test]
    async fn aba_is_detected_and_labels_are_separate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kv.db");
        let a = SqliteStore::open(&path, "a").expect("open");
        let b = SqliteStore::open(&path, "b").expect("open second label, same file");
        a.set("k", b"x").await.expect("set");
        let snap = a.snapshot("k").await.expect("snap");
        a.set("k", b"y").await.expect("set");
        a.set("k", b"x").await.expect("set back");
        assert!(matches!(
            a.swap("k", &snap, b"z").await,
            Err(SwapError::CasFailed)
        ));
        assert_eq!(b.get("k").await.expect("get"), None);
    }

    #[tokio::test]
    async fn table_layout_matches_spin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kv.db");
        let s = SqliteStore::open(&path, "default").expect("open");
        s.increment("n", 7).await.expect("incr");
        // Read it back the way Spin does.
        let c = Connection::open(&path).expect("open raw");
        let v: Vec<u8> = c
            .query_row(
                "SELECT value FROM spin_key_value WHERE store = 'default' AND key = 'n'",
                [],
                |r| r.get(0),
            )
            .expect("row");
        assert_eq!(v, 7i64.to_le_bytes().to_vec());
        // A Spin-style insert without our column still works.
        c.execute(
            "INSERT INTO spin_key_value (store, key, value) VALUES ('default', 's', x'01')",
            [],
        )
        .expect("spin insert");
        assert_eq!(s.get("s").await.expect("get"), Some(vec![1]));
        s.set("bad", b"abc").await.expect("set");
        assert!(matches!(
            s.increment("bad", 1).await,
            Err(KvError::Invalid(_))
        ));
    }
}
