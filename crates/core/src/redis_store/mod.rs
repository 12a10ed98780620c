//! The instance store as keys in a Redis server, over any client that can run one command and
//! return its reply ([`RedisCommands`]): Spin's outbound Redis interface in the `instances`
//! component, the `redis` crate in native tests against a real server.
//!
//! Why not Spin's own Redis key-value backend: measured on Spin 4.0.2 with Redis 7, its
//! compare-and-swap sends `UNWATCH <key>` after `EXEC`, Redis rejects the argument, and every swap
//! is reported as failed although it was written. Here a compare-and-swap is one Lua script, so
//! the comparison and the write are atomic in Redis, and a conflict comes back with the value
//! that won in the same round trip. Counters are Redis integers (`INCRBY`), which, as on every
//! backend, are only ever read through `increment(key, 0)`.

use crate::kv::{CasOutcome, KeyValue, KeyValues, KvError};

/// One argument of a Redis command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisArg {
    Int(i64),
    Bytes(Vec<u8>),
}

/// One value of a Redis reply, flattened as Spin's `execute` returns it (an array reply becomes
/// its elements; a nil reply is one `Nil`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisValue {
    Nil,
    Status(String),
    Int(i64),
    Bytes(Vec<u8>),
}

/// A connection that runs one command and returns its flattened reply.
pub trait RedisCommands {
    /// Runs `command` with `args`. A Redis error reply or a connection failure is
    /// [`KvError::Other`]; an address the host refuses is [`KvError::AccessDenied`].
    fn execute(&self, command: &str, args: Vec<RedisArg>) -> Result<Vec<RedisValue>, KvError>;
}

/// Writes `ARGV[3]` when the key's value is `ARGV[2]` (`ARGV[1] == "1"`), or when the key is
/// absent (`ARGV[1] == "0"`). Returns 1 when written, else the current value (nil when absent).
const COMPARE_AND_SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
local matches
if ARGV[1] == '1' then matches = (current == ARGV[2]) else matches = (current == false) end
if matches then
  redis.call('SET', KEYS[1], ARGV[3])
  return 1
end
return current
";

/// [`KeyValue`] over Redis, every key under `prefix` (so several apps can share one server).
pub struct RedisKeyValue<C> {
    connection: C,
    prefix: String,
}

fn bytes(value: &[u8]) -> RedisArg {
    RedisArg::Bytes(value.to_vec())
}

fn unexpected(command: &str, reply: &[RedisValue]) -> KvError {
    KvError::Other(format!(
        "redis: unexpected reply to {command} ({} value(s))",
        reply.len()
    ))
}

impl<C: RedisCommands> RedisKeyValue<C> {
    /// The store over `connection`, keys under `prefix`.
    pub fn new(connection: C, prefix: &str) -> Self {
        Self {
            connection,
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, key: &str) -> RedisArg {
        RedisArg::Bytes(format!("{}{key}", self.prefix).into_bytes())
    }

    fn integer(&self, command: &str, args: Vec<RedisArg>) -> Result<i64, KvError> {
        match self.connection.execute(command, args)?.as_slice() {
            [RedisValue::Int(value)] => Ok(*value),
            other => Err(unexpected(command, other)),
        }
    }
}

impl<C: RedisCommands> KeyValue for RedisKeyValue<C> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        match self
            .connection
            .execute("GET", vec![self.key(key)])?
            .as_slice()
        {
            [RedisValue::Nil] => Ok(None),
            [RedisValue::Bytes(value)] => Ok(Some(value.clone())),
            other => Err(unexpected("GET", other)),
        }
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        match self
            .connection
            .execute("SET", vec![self.key(key), bytes(value)])?
            .as_slice()
        {
            [RedisValue::Status(_)] => Ok(()),
            other => Err(unexpected("SET", other)),
        }
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.integer("DEL", vec![self.key(key)]).map(|_| ())
    }

    fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.integer("EXISTS", vec![self.key(key)])? > 0)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.integer("INCRBY", vec![self.key(key), RedisArg::Int(delta)])
    }

    fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let args = keys.iter().map(|key| self.key(key)).collect();
        let reply = self.connection.execute("MGET", args)?;
        if reply.len() != keys.len() {
            return Err(unexpected("MGET", &reply));
        }
        keys.iter()
            .zip(reply)
            .map(|(key, value)| match value {
                RedisValue::Nil => Ok((key.clone(), None)),
                RedisValue::Bytes(value) => Ok((key.clone(), Some(value))),
                other => Err(unexpected("MGET", &[other])),
            })
            .collect()
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<CasOutcome, KvError> {
        let (mode, expected) = match expected {
            Some(value) => ("1", value),
            None => ("0", &[][..]),
        };
        let args = vec![
            bytes(COMPARE_AND_SWAP.as_bytes()),
            RedisArg::Int(1),
            self.key(key),
            bytes(mode.as_bytes()),
            bytes(expected),
            bytes(new),
        ];
        match self.connection.execute("EVAL", args)?.as_slice() {
            [RedisValue::Int(1)] => Ok(CasOutcome::Swapped),
            [RedisValue::Nil] => Ok(CasOutcome::Conflict { current: None }),
            [RedisValue::Bytes(current)] => Ok(CasOutcome::Conflict {
                current: Some(current.clone()),
            }),
            other => Err(unexpected("EVAL", other)),
        }
    }
}

#[cfg(test)]
mod tests;
