//! The Redis store adapter (`kiloclaw_core::redis_store`) against the real Redis at
//! 127.0.0.1:6379, through the `redis` crate with replies flattened the way Spin's outbound Redis
//! `execute` flattens them: the key-value contract, insert-if-absent, and compare-and-swap
//! increments from many threads losing nothing. Keys live under a per-run prefix.

use super::RedisKeyValue;
use crate::kv::{CasOutcome, KeyValue};
use crate::testing::{NativeRedis, check_key_value_contract};

fn store(prefix: &str) -> RedisKeyValue<NativeRedis> {
    NativeRedis::store(prefix).expect("Redis must run on 127.0.0.1:6379 (.ci/run starts it)")
}

fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("kiloclaw-core-test-{}-{nanos}-{test}:", std::process::id())
}

#[test]
fn the_redis_adapter_meets_the_key_value_contract() {
    let kv = store(&unique_prefix("contract"));
    check_key_value_contract(&kv, "").expect("contract");
}

#[test]
fn compare_and_swap_from_absent_inserts_once() {
    let kv = store(&unique_prefix("insert"));
    assert_eq!(
        kv.compare_and_swap("k", None, b"first").expect("cas"),
        CasOutcome::Swapped
    );
    assert_eq!(
        kv.compare_and_swap("k", None, b"second").expect("cas"),
        CasOutcome::Conflict {
            current: Some(b"first".to_vec())
        }
    );
    assert_eq!(
        kv.compare_and_swap("absent", Some(b"x"), b"y")
            .expect("cas"),
        CasOutcome::Conflict { current: None }
    );
    assert_eq!(
        kv.get("absent").expect("get"),
        None,
        "a failed CAS writes nothing"
    );
    kv.delete("k").expect("cleanup");
}

#[test]
fn concurrent_compare_and_swap_increments_lose_nothing() {
    const THREADS: usize = 8;
    const INCREMENTS: usize = 40;
    let prefix = unique_prefix("race");
    store(&prefix).set("n", b"0").expect("seed");
    let conflicts: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let prefix = prefix.clone();
                scope.spawn(move || {
                    let kv = store(&prefix);
                    let mut conflicts = 0;
                    for _ in 0..INCREMENTS {
                        let mut current = kv.get("n").expect("get").expect("seeded");
                        loop {
                            let n: u64 = String::from_utf8_lossy(&current).parse().expect("number");
                            let next = (n + 1).to_string();
                            match kv.compare_and_swap("n", Some(&current), next.as_bytes()) {
                                Ok(CasOutcome::Swapped) => break,
                                Ok(CasOutcome::Conflict {
                                    current: Some(seen),
                                }) => {
                                    conflicts += 1;
                                    current = seen;
                                }
                                other => panic!("unexpected {other:?}"),
                            }
                        }
                    }
                    conflicts
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("worker")).sum()
    });
    let kv = store(&prefix);
    let total = kv.get("n").expect("get").expect("value");
    assert_eq!(
        String::from_utf8_lossy(&total),
        (THREADS * INCREMENTS).to_string(),
        "every increment counted ({conflicts} conflicts retried)"
    );
    kv.delete("n").expect("cleanup");
}
