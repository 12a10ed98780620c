//! A conformance check for [`KeyValue`] implementations: the semantics the store protocol relies on.
//! Run it against every backend adapter (the host's SQLite and Redis stores, a component's wasi adapter).

use crate::kv::{CasOutcome, KeyValue};

/// Checks `kv` (which must be empty under `prefix`) and returns the first violated expectation.
pub fn check_key_value_contract(kv: &dyn KeyValue, prefix: &str) -> Result<(), String> {
    let key = format!("{prefix}contract/value");
    let counter = format!("{prefix}contract/counter");
    let expect = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
    let err = |e: crate::kv::KvError| e.to_string();

    expect(
        kv.get(&key).map_err(err)?.is_none(),
        "get of an absent key returns None",
    )?;
    expect(
        !kv.exists(&key).map_err(err)?,
        "exists of an absent key is false",
    )?;
    kv.set(&key, b"v1").map_err(err)?;
    expect(
        kv.get(&key).map_err(err)? == Some(b"v1".to_vec()),
        "get returns what set wrote",
    )?;
    expect(kv.exists(&key).map_err(err)?, "exists after set")?;

    let swapped = kv.compare_and_swap(&key, Some(b"v1"), b"v2").map_err(err)?;
    expect(
        swapped == CasOutcome::Swapped,
        "CAS with the current value swaps",
    )?;
    let conflict = kv.compare_and_swap(&key, Some(b"v1"), b"v3").map_err(err)?;
    expect(
        conflict
            == CasOutcome::Conflict {
                current: Some(b"v2".to_vec()),
            },
        "CAS with a stale value reports a conflict carrying the current value",
    )?;
    expect(
        kv.get(&key).map_err(err)? == Some(b"v2".to_vec()),
        "a conflicting CAS writes nothing",
    )?;

    expect(
        kv.increment(&counter, 1).map_err(err)? == 1,
        "increment of an absent counter starts at 0",
    )?;
    expect(
        kv.increment(&counter, 2).map_err(err)? == 3,
        "increment adds",
    )?;
    // The store tells an elected creation generation by its counter's existence (store, Flow 1).
    expect(
        kv.exists(&counter).map_err(err)?,
        "a counter exists once incremented",
    )?;
    expect(
        kv.increment(&counter, 0).map_err(err)? == 3,
        "increment by 0 reads the counter",
    )?;

    let many = kv
        .get_many(&[key.clone(), format!("{prefix}contract/absent")])
        .map_err(err)?;
    expect(
        many == vec![
            (key.clone(), Some(b"v2".to_vec())),
            (format!("{prefix}contract/absent"), None),
        ],
        "get_many answers in the order asked, None for absent keys",
    )?;

    kv.delete(&key).map_err(err)?;
    kv.delete(&key).map_err(err)?;
    expect(
        kv.get(&key).map_err(err)?.is_none(),
        "delete removes, and deleting twice succeeds",
    )?;
    kv.delete(&counter).map_err(err)?;
    Ok(())
}
