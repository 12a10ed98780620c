//! The instance store over Spin's outbound Redis interface (`fermyon:spin/redis@2.0.0`): the
//! core's [`RedisKeyValue`] (compare-and-swap as one Lua script in Redis) on a connection opened
//! with spin-sdk. Spin's own Redis key-value backend is unusable for the store protocol (see the
//! core module's documentation).

use kiloclaw_core::kv::KvError;
use kiloclaw_core::redis_store::{RedisArg, RedisCommands, RedisKeyValue, RedisValue};
use spin_sdk::redis::{Connection, Error, RedisParameter, RedisResult};

/// A connection to the store's Redis.
pub struct SpinRedis(Connection);

/// The store in the Redis at `address`, keys under `prefix`.
pub type RedisBucket = RedisKeyValue<SpinRedis>;

fn kv_error(error: Error) -> KvError {
    match error {
        // Not retryable: the address is malformed or not in `allowed_outbound_hosts`.
        Error::InvalidAddress => KvError::AccessDenied,
        Error::TooManyConnections => KvError::Other("redis: too many connections".to_owned()),
        Error::TypeError => KvError::Other("redis: value of the wrong type".to_owned()),
        Error::Other(message) => KvError::Other(format!("redis: {message}")),
    }
}

/// Connects to `address` (a `redis://` URL that `allowed_outbound_hosts` covers).
pub fn open(address: &str, prefix: &str) -> Result<RedisBucket, KvError> {
    let connection = Connection::open(address).map_err(kv_error)?;
    Ok(RedisKeyValue::new(SpinRedis(connection), prefix))
}

impl RedisCommands for SpinRedis {
    fn execute(&self, command: &str, args: Vec<RedisArg>) -> Result<Vec<RedisValue>, KvError> {
        let args: Vec<RedisParameter> = args
            .into_iter()
            .map(|arg| match arg {
                RedisArg::Int(value) => RedisParameter::Int64(value),
                RedisArg::Bytes(value) => RedisParameter::Binary(value),
            })
            .collect();
        let reply = self.0.execute(command, &args).map_err(kv_error)?;
        Ok(reply
            .into_iter()
            .map(|value| match value {
                RedisResult::Nil => RedisValue::Nil,
                RedisResult::Status(status) => RedisValue::Status(status),
                RedisResult::Int64(value) => RedisValue::Int(value),
                RedisResult::Binary(value) => RedisValue::Bytes(value),
            })
            .collect())
    }
}
