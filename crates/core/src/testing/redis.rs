//! A native client for the Redis store adapter ([`crate::redis_store`]) over the `redis` crate, with
//! replies flattened the way Spin's outbound Redis `execute` flattens them: for tests against the
//! real server at 127.0.0.1:6379 (the adapter's own, and end-to-end tests that read the records the
//! components wrote).

use std::sync::Mutex;

use crate::kv::KvError;
use crate::redis_store::{RedisArg, RedisCommands, RedisKeyValue, RedisValue};

/// The test Redis server's URL.
pub const LOCAL_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The app variables that put the instance store in the test Redis under `prefix` (over Spin's
/// outbound Redis: `store_redis_url`, its `allowed_outbound_hosts` entry, the key prefix).
pub fn local_redis_store_variables(prefix: &str) -> Vec<(String, String)> {
    [
        ("store_redis_url", LOCAL_REDIS_URL),
        ("store_redis_outbound_host", LOCAL_REDIS_URL),
        ("store_redis_key_prefix", prefix),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// One synchronous connection.
pub struct NativeRedis(Mutex<redis::Connection>);

impl std::fmt::Debug for NativeRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeRedis").finish_non_exhaustive()
    }
}

impl NativeRedis {
    /// Connects to `redis://127.0.0.1:6379`.
    pub fn connect() -> Result<Self, KvError> {
        Self::connect_to(LOCAL_REDIS_URL)
    }

    /// Connects to the server at `url` (a benchmark's private server, say).
    pub fn connect_to(url: &str) -> Result<Self, KvError> {
        let client = redis::Client::open(url).map_err(|e| KvError::Other(e.to_string()))?;
        let connection = client
            .get_connection()
            .map_err(|e| KvError::Other(format!("Redis at {url}: {e}")))?;
        Ok(Self(Mutex::new(connection)))
    }

    /// The store adapter over a new connection, under `prefix`.
    pub fn store(prefix: &str) -> Result<RedisKeyValue<Self>, KvError> {
        Ok(RedisKeyValue::new(Self::connect()?, prefix))
    }
}

/// The native client's form of one command of the store adapter.
pub fn native_command(command: &str, args: Vec<RedisArg>) -> redis::Cmd {
    let mut cmd = redis::cmd(command);
    for arg in args {
        match arg {
            RedisArg::Int(v) => cmd.arg(v),
            RedisArg::Bytes(v) => cmd.arg(v),
        };
    }
    cmd
}

fn flatten(value: redis::Value, out: &mut Vec<RedisValue>) -> Result<(), KvError> {
    match value {
        redis::Value::Nil => out.push(RedisValue::Nil),
        redis::Value::Int(v) => out.push(RedisValue::Int(v)),
        redis::Value::BulkString(v) => out.push(RedisValue::Bytes(v)),
        redis::Value::SimpleString(s) => out.push(RedisValue::Status(s)),
        redis::Value::Okay => out.push(RedisValue::Status("OK".to_owned())),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            for item in items {
                flatten(item, out)?;
            }
        }
        other => return Err(KvError::Other(format!("unsupported reply {other:?}"))),
    }
    Ok(())
}

impl RedisCommands for NativeRedis {
    fn execute(&self, command: &str, args: Vec<RedisArg>) -> Result<Vec<RedisValue>, KvError> {
        let mut connection = self
            .0
            .lock()
            .map_err(|_| KvError::Other("poisoned".to_owned()))?;
        let value: redis::Value = native_command(command, args)
            .query(&mut *connection)
            .map_err(|e| KvError::Other(e.to_string()))?;
        let mut out = Vec::new();
        flatten(value, &mut out)?;
        Ok(out)
    }
}
