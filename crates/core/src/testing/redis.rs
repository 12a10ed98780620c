//! A native client for the Redis store adapter ([`crate::redis_store`]) over the `redis` crate, with
//! replies flattened the way Spin's outbound Redis `execute` flattens them: for tests against the
//! real server at 127.0.0.1:6379 (the adapter's own, and end-to-end tests that read the records the
//! components wrote).

use std::sync::Mutex;

use crate::kv::KvError;
use crate::redis_store::{RedisArg, RedisCommands, RedisKeyValue, RedisValue};

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
        let client = redis::Client::open("redis://127.0.0.1:6379")
            .map_err(|e| KvError::Other(e.to_string()))?;
        let connection = client
            .get_connection()
            .map_err(|e| KvError::Other(format!("Redis at 127.0.0.1:6379: {e}")))?;
        Ok(Self(Mutex::new(connection)))
    }

    /// The store adapter over a new connection, under `prefix`.
    pub fn store(prefix: &str) -> Result<RedisKeyValue<Self>, KvError> {
        Ok(RedisKeyValue::new(Self::connect()?, prefix))
    }
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
        let mut cmd = redis::cmd(command);
        for arg in args {
            match arg {
                RedisArg::Int(v) => cmd.arg(v),
                RedisArg::Bytes(v) => cmd.arg(v),
            };
        }
        let mut connection = self
            .0
            .lock()
            .map_err(|_| KvError::Other("poisoned".to_owned()))?;
        let value: redis::Value = cmd
            .query(&mut *connection)
            .map_err(|e| KvError::Other(e.to_string()))?;
        let mut out = Vec::new();
        flatten(value, &mut out)?;
        Ok(out)
    }
}
