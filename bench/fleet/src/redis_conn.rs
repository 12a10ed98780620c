//! A pipelining connection for seeding: the core's Redis store adapter (`RedisKeyValue`) over it
//! produces exactly the commands the adapter sends, queued instead of sent one by one. Reads go through
//! the core's own native connection (`kiloclaw_core::testing::NativeRedis`).

use std::cell::RefCell;
use std::collections::HashMap;

use kiloclaw_core::kv::KvError;
use kiloclaw_core::redis_store::{RedisArg, RedisCommands, RedisValue};
use kiloclaw_core::testing::native_command;

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
            pipe.add_command(native_command(&name, args)).ignore();
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
    use kiloclaw_core::redis_store::RedisKeyValue;

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
