//! The core's Redis store adapter ([`RedisKeyValue`]) over the bench's own connections: a synchronous
//! one for reads, and a pipelining one for seeding that produces the same commands the adapter sends.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;

use kiloclaw_core::kv::KvError;
use kiloclaw_core::redis_store::{RedisArg, RedisCommands, RedisKeyValue, RedisValue};

/// One synchronous connection, replies flattened as Spin's outbound Redis flattens them.
pub struct SyncConn(Mutex<redis::Connection>);

impl SyncConn {
    pub fn connect(url: &str) -> anyhow::Result<Self> {
        Ok(Self(Mutex::new(
            redis::Client::open(url)?.get_connection()?,
        )))
    }

    /// The store adapter over a new connection to `url`, keys under `prefix`.
    pub fn store(url: &str, prefix: &str) -> anyhow::Result<RedisKeyValue<Self>> {
        Ok(RedisKeyValue::new(Self::connect(url)?, prefix))
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

fn command(name: &str, args: Vec<RedisArg>) -> redis::Cmd {
    let mut cmd = redis::cmd(name);
    for arg in args {
        match arg {
            RedisArg::Int(v) => cmd.arg(v),
            RedisArg::Bytes(v) => cmd.arg(v),
        };
    }
    cmd
}

impl RedisCommands for SyncConn {
    fn execute(&self, name: &str, args: Vec<RedisArg>) -> Result<Vec<RedisValue>, KvError> {
        let mut connection = self
            .0
            .lock()
            .map_err(|_| KvError::Other("connection poisoned".to_owned()))?;
        let value: redis::Value = command(name, args)
            .query(&mut *connection)
            .map_err(|e| KvError::Other(e.to_string()))?;
        let mut out = Vec::new();
        flatten(value, &mut out)?;
        Ok(out)
    }
}

/// Queues the adapter's writes for a pipeline instead of sending them one by one. It answers `INCRBY`
/// from its own counters, which is exact while it is the only writer of a freshly flushed prefix (the
/// seeding step); any other command than `SET` and `INCRBY` is refused.
#[derive(Default)]
pub struct PipeConn {
    counters: RefCell<HashMap<Vec<u8>, i64>>,
    queue: RefCell<Vec<(String, Vec<RedisArg>)>>,
}

impl PipeConn {
    /// Commands waiting to be sent.
    pub fn pending(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Sends everything queued in one pipeline.
    pub fn flush(&self, connection: &mut redis::Connection) -> anyhow::Result<()> {
        let queued = std::mem::take(&mut *self.queue.borrow_mut());
        if queued.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (name, args) in queued {
            pipe.add_command(command(&name, args)).ignore();
        }
        pipe.query::<()>(connection)?;
        Ok(())
    }
}

impl RedisCommands for &PipeConn {
    fn execute(&self, name: &str, args: Vec<RedisArg>) -> Result<Vec<RedisValue>, KvError> {
        let reply = match (name, args.as_slice()) {
            ("INCRBY", [RedisArg::Bytes(key), RedisArg::Int(delta)]) => {
                let mut counters = self.counters.borrow_mut();
                let value = counters.entry(key.clone()).or_insert(0);
                *value += delta;
                RedisValue::Int(*value)
            }
            ("SET", [RedisArg::Bytes(_), RedisArg::Bytes(_)]) => {
                RedisValue::Status("OK".to_owned())
            }
            _ => {
                return Err(KvError::Other(format!(
                    "the seeding pipeline does not run {name}"
                )));
            }
        };
        self.queue.borrow_mut().push((name.to_owned(), args));
        Ok(vec![reply])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiloclaw_core::kv::KeyValue;

    #[test]
    fn the_pipeline_answers_increments_from_its_counters_and_queues_the_adapters_commands() {
        let pipe = PipeConn::default();
        let kv = RedisKeyValue::new(&pipe, "p:");
        assert_eq!(kv.increment("n", 1).expect("incr"), 1);
        assert_eq!(kv.increment("n", 1).expect("incr"), 2);
        kv.set("k", b"v").expect("set");
        assert!(kv.get("k").is_err(), "reads are refused");
        assert_eq!(pipe.pending(), 3);
        let queue = pipe.queue.borrow();
        assert_eq!(queue[2].0, "SET");
        assert_eq!(queue[2].1[0], RedisArg::Bytes(b"p:k".to_vec()));
    }
}
