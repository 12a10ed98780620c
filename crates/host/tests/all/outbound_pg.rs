//! Outbound PostgreSQL (`spin:postgres/postgres@4.0.0`, spin-sdk 5.2's `pg4`) against the
//! PostgreSQL at 127.0.0.1:5432 (user `postgres`, trust auth, database `test`): the type mapping
//! both ways, row counts, SQL errors, transactions across calls, what pooling may and may not
//! carry over, the allow-list, unreachable and silent servers, and the query timeout. Each test
//! creates its own uniquely named tables and drops them, even when it fails.

use crate::harness::{Running, Scenario};
use kiloclaw_host::outbound::postgres::PgTimeouts;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const PG_KEY_VALUE: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// A direct connection for setting up and checking what the guests did.
async fn admin() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(ADMIN, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (user postgres, database test)");
    tokio::spawn(connection);
    client
}

/// A name no other test run uses.
fn unique_name(tag: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("kc_pg_{tag}_{}_{nanos}", std::process::id())
}

/// A table of this test's own; dropped when the value is, even when the test panics.
struct Table {
    name: String,
}

impl Table {
    async fn create(tag: &str, columns: &str) -> Self {
        let name = unique_name(tag);
        admin()
            .await
            .batch_execute(&format!("CREATE TABLE {name} ({columns})"))
            .await
            .expect("create table");
        Self { name }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A thread of its own: Drop cannot await, and the test's runtime may be unwinding.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                // A lock a failed test left behind must not hang the drop.
                admin()
                    .await
                    .batch_execute(&format!(
                        "SET lock_timeout = '5s'; DROP TABLE IF EXISTS {name}"
                    ))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop table {}", self.name);
        }
    }
}

fn scenario(timeouts: Option<PgTimeouts>, silent_port: Option<u16>) -> Scenario {
    let mut s = Scenario::new("outbound-pg", &[]);
    if let Some(timeouts) = timeouts {
        s.config.postgres_timeouts = timeouts;
    }
    if let Some(port) = silent_port {
        s.config
            .variables
            .push(("silent_port".into(), port.to_string()));
    }
    s
}

async fn start() -> Running {
    scenario(None, None).start().await
}

/// Percent-encodes a query parameter value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn op(host: &Running, route: &str, op: &str, address: &str, extra: &[(&str, &str)]) -> Value {
    let mut query = format!("{route}?op={op}&address={}", enc(address));
    for (k, v) in extra {
        query.push_str(&format!("&{k}={}", enc(v)));
    }
    host.get_json(&query).await
}

/// The `ok` payload of a guest result, or a panic naming the error.
fn ok(v: &Value) -> &Value {
    v.get("ok")
        .unwrap_or_else(|| panic!("expected ok, got {v}"))
}

/// The guest's error object.
fn error(v: &Value) -> &Value {
    v.get("error")
        .unwrap_or_else(|| panic!("expected an error, got {v}"))
}

/// The `db-error` record of a `query-failed(db-error)`.
fn db_error(v: &Value) -> &Value {
    error(v)
        .pointer("/query-failed/db-error")
        .unwrap_or_else(|| panic!("expected query-failed(db-error), got {v}"))
}

fn text_error<'a>(v: &'a Value, variant: &str) -> &'a str {
    let path = if variant == "query-failed" {
        "/query-failed/text".to_string()
    } else {
        format!("/{variant}")
    };
    error(v)
        .pointer(&path)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("expected {variant}, got {v}"))
}

#[tokio::test]
async fn every_mapped_type_comes_back_with_spin_s_mapping() {
    let host = start().await;
    let v = op(&host, "/", "types", PG_KEY_VALUE, &[]).await;
    let set = ok(&v["types"]);
    let expected = [
        ("b", "Boolean", json!({ "boolean": true })),
        ("i2", "Int16", json!({ "int16": 1 })),
        ("i4", "Int32", json!({ "int32": 2 })),
        ("i8", "Int64", json!({ "int64": 3 })),
        ("f4", "Floating32", json!({ "floating32": 1.5 })),
        ("f8", "Floating64", json!({ "floating64": 2.25 })),
        ("t", "Str", json!({ "str": "txt" })),
        ("vc", "Str", json!({ "str": "vc" })),
        ("bp", "Str", json!({ "str": "bp " })),
        ("nm", "Str", json!({ "str": "nm" })),
        ("by", "Binary", json!({ "binary": [0, 255] })),
        ("d", "Date", json!({ "date": [2024, 2, 29] })),
        ("tm", "Time", json!({ "time": [13, 14, 15, 123_456_000] })),
        (
            "ts",
            "Datetime",
            json!({ "datetime": [2024, 2, 29, 13, 14, 15, 500_000_000] }),
        ),
        // +02:00 read as UTC.
        (
            "tstz",
            "Datetime",
            json!({ "datetime": [2024, 2, 29, 11, 14, 15, 500_000_000] }),
        ),
        (
            "u",
            "Uuid",
            json!({ "uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" }),
        ),
        ("j", "Jsonb", json!({ "jsonb": r#"{"a":null,"b":[1,2]}"# })),
        (
            "n",
            "Decimal",
            json!({ "decimal": "12345678901234567890.0123456789" }),
        ),
        ("ai4", "ArrayInt32", json!({ "array-int32": [1, null, 3] })),
        ("ai8", "ArrayInt64", json!({ "array-int64": [4, 5] })),
        ("at", "ArrayStr", json!({ "array-str": ["x", null] })),
        (
            "an",
            "ArrayDecimal",
            json!({ "array-decimal": ["1.5", null] }),
        ),
        // 1 year 2 mons = 14 months; 04:05:06.5 = 14 706 500 000 µs.
        (
            "iv",
            "Interval",
            json!({ "interval": [14_706_500_000_i64, 3, 14] }),
        ),
        (
            "r4",
            "RangeInt32",
            json!({ "range-int32": [[1, "inclusive"], [5, "exclusive"]] }),
        ),
        // PostgreSQL canonicalises (,10] to (,11).
        (
            "r8",
            "RangeInt64",
            json!({ "range-int64": [null, [11, "exclusive"]] }),
        ),
        (
            "rn",
            "RangeDecimal",
            json!({ "range-decimal": [["1.5", "inclusive"], ["2.5", "exclusive"]] }),
        ),
        ("re", "RangeInt32", json!({ "range-int32": [null, null] })),
        // inet's binary form: family, bits, is_cidr, length, address.
        (
            "other",
            "Other(\"inet\")",
            json!({ "unsupported": [2, 32, 0, 4, 10, 1, 2, 3] }),
        ),
        ("null_i4", "Int32", json!({ "db-null": null })),
        ("null_t", "Str", json!({ "db-null": null })),
        ("null_other", "Other(\"inet\")", json!({ "db-null": null })),
    ];
    let columns = set["columns"].as_array().expect("columns");
    let row = set["rows"][0].as_array().expect("one row");
    assert_eq!(columns.len(), expected.len(), "{set}");
    assert_eq!(row.len(), expected.len(), "{set}");
    for (i, (name, data_type, value)) in expected.iter().enumerate() {
        assert_eq!(
            columns[i],
            json!([name, format!("DbDataType::{data_type}")]),
            "column {name}"
        );
        assert_eq!(row[i], *value, "value of {name}");
    }
    // Columns are described even when no row comes back.
    let v = op(&host, "/", "empty", PG_KEY_VALUE, &[]).await;
    assert_eq!(
        ok(&v["empty"]),
        &json!({
            "columns": [["one", "DbDataType::Int32"], ["two", "DbDataType::Str"]],
            "rows": [],
        }),
    );
    host.stop().await;
}

#[tokio::test]
async fn parameters_of_every_kind_round_trip() {
    let table = Table::create(
        "params",
        "id int4 PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, s text, \
         by bytea, d date, tm time, ts timestamp, tstz timestamptz, u uuid, j jsonb, n numeric, \
         ai4 int4[], ai8 int8[], at text[], an numeric[], iv interval, r4 int4range, r8 int8range, \
         rn numrange, c \"char\"",
    )
    .await;
    let host = start().await;
    let v = op(&host, "/", "params", PG, &[("table", &table.name)]).await;
    assert_eq!(ok(&v["insert"]), 1, "{v}");
    assert_eq!(ok(&v["insert_nulls"]), 1, "{v}");
    let rows = ok(&v["select"])["rows"].as_array().expect("rows").clone();
    assert_eq!(rows.len(), 2, "{v}");
    let expected = json!([
        { "int32": 1 },
        { "boolean": true },
        { "int16": -2 },
        { "int32": 2147483647 },
        { "int64": -9007199254740993_i64 },
        { "floating32": 0.25 },
        { "floating64": -1.5e300 },
        { "str": "héllo 'quoted' $1" },
        { "binary": [0, 1, 254, 255] },
        { "date": [1999, 12, 31] },
        { "time": [23, 59, 58, 999_999_000] },
        { "datetime": [2000, 1, 2, 3, 4, 5, 6_000] },
        // Unix second 1 700 000 000.
        { "datetime": [2023, 11, 14, 22, 13, 20, 0] },
        { "uuid": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6" },
        { "jsonb": r#"{"k":[true,1.5,"s"]}"# },
        { "decimal": "-0.000123456789012345678901234567890" },
        { "array-int32": [1, null, -3] },
        { "array-int64": [i64::MAX] },
        { "array-str": ["a,b", null, "\"q\""] },
        { "array-decimal": ["1.10", null] },
        { "interval": [3_723_000_001_i64, -4, 14] },
        // [1,5] canonicalised to [1,6).
        { "range-int32": [[1, "inclusive"], [6, "exclusive"]] },
        { "range-int64": [null, [100, "exclusive"]] },
        { "range-decimal": [["0.5", "exclusive"], null] },
        // "char" has no WIT type: its one byte comes back unsupported.
        { "unsupported": [65] },
    ]);
    assert_eq!(rows[0], expected, "row with every parameter kind");
    let nulls: Vec<Value> = std::iter::once(json!({ "int32": 2 }))
        .chain(std::iter::repeat_n(json!({ "db-null": null }), 24))
        .collect();
    assert_eq!(
        rows[1],
        Value::Array(nulls),
        "db-null binds NULL for every type"
    );
    assert_eq!(ok(&v["where"])["rows"], json!([[{ "int32": 1 }]]), "{v}");
    assert_eq!(
        ok(&v["echo"]),
        &json!({
            "columns": [
                ["s", "DbDataType::Str"],
                ["n", "DbDataType::Int64"],
                ["b", "DbDataType::Boolean"],
                ["by", "DbDataType::Binary"],
            ],
            "rows": [[{ "str": "x!" }, { "int64": 42 }, { "db-null": null }, { "binary": [7] }]],
        }),
    );
    host.stop().await;
}

#[tokio::test]
async fn execute_returns_the_number_of_rows_affected() {
    let table = Table::create("execute", "code text PRIMARY KEY, who text").await;
    let host = start().await;
    let v = op(&host, "/", "execute", PG, &[("table", &table.name)]).await;
    for (field, n) in [
        ("insert", 3),
        ("update", 2),
        ("update_none", 0),
        ("delete", 1),
        ("select", 2),
        ("create_index", 0),
    ] {
        assert_eq!(ok(&v[field]), n, "{field}: {v}");
    }
    assert_eq!(
        ok(&v["remaining"])["rows"],
        json!([[{ "str": "a" }, { "str": "x" }], [{ "str": "b" }, { "str": "z" }]]),
    );
    host.stop().await;
}

#[tokio::test]
async fn sql_errors_are_query_failed_with_the_sqlstate() {
    let table = Table::create("errors", "code text PRIMARY KEY, who text").await;
    let host = start().await;
    let v = op(&host, "/", "errors", PG, &[("table", &table.name)]).await;

    let missing = db_error(&v["missing_table"]);
    assert_eq!(missing["code"], "42P01", "{v}");
    assert_eq!(missing["severity"], "ERROR", "{v}");
    assert!(
        missing["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist")),
        "{missing}"
    );
    assert!(
        missing["as-text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Error { kind: Db")),
        "as-text is the error's Debug text, as in Spin: {missing}"
    );
    assert_eq!(db_error(&v["syntax"])["code"], "42601", "{v}");

    let unique = db_error(&v["unique"]);
    assert_eq!(unique["code"], "23505", "{v}");
    assert!(
        unique["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Key (code)=(dup) already exists")),
        "{unique}"
    );
    assert_eq!(
        unique["extras"]["constraint"],
        format!("{}_pkey", table.name)
    );
    assert_eq!(unique["extras"]["table"], table.name.as_str());
    assert_eq!(unique["extras"]["schema"], "public");

    assert_eq!(db_error(&v["division"])["code"], "22012", "{v}");
    assert!(text_error(&v["bad_uuid_query"], "bad-parameter").contains("invalid UUID"));
    // Spin's variant for the same conversion failure in `execute`.
    assert!(text_error(&v["bad_uuid_execute"], "value-conversion-failed").contains("invalid UUID"));
    assert!(text_error(&v["bad_date"], "bad-parameter").contains("invalid date"));
    // A parameter of the wrong type for its placeholder, as tokio-postgres reports it in Spin.
    let wrong = text_error(&v["wrong_type"], "query-failed");
    assert!(wrong.contains("WrongType"), "{wrong}");
    let missing_param = text_error(&v["missing_param"], "query-failed");
    assert!(
        missing_param.contains("Parameters(0, 1)"),
        "{missing_param}"
    );
    let two = db_error(&v["two_statements"]);
    assert_eq!(two["code"], "42601", "{v}");
    assert!(
        two["message"]
            .as_str()
            .is_some_and(|m| m.contains("multiple commands")),
        "{two}"
    );
    assert_eq!(v["still_usable"], json!({ "int32": 42 }), "{v}");
    host.stop().await;
}

async fn who(admin: &tokio_postgres::Client, table: &Table, code: &str) -> Option<String> {
    admin
        .query_one(
            &format!("SELECT who FROM {} WHERE code = $1", table.name),
            &[&code],
        )
        .await
        .expect("row")
        .get(0)
}

#[tokio::test]
async fn a_transaction_spans_calls_on_one_connection() {
    let table = Table::create("tx", "code text PRIMARY KEY, who text").await;
    let db = admin().await;
    db.execute(
        &format!("INSERT INTO {} (code) VALUES ('gift')", table.name),
        &[],
    )
    .await
    .expect("seed");
    let host = start().await;
    let redeem = |who: &'static str| {
        let host = &host;
        let table = table.name.clone();
        async move {
            op(
                host,
                "/",
                "redeem",
                PG,
                &[("table", &table), ("code", "gift"), ("who", who)],
            )
            .await
        }
    };
    let v = redeem("alice").await;
    assert_eq!(v["seen"], json!({ "db-null": null }), "{v}");
    assert_eq!(ok(&v["updated"]), 1, "{v}");
    assert_eq!(ok(&v["commit"]), 0, "{v}");
    assert_eq!(who(&db, &table, "gift").await.as_deref(), Some("alice"));

    let v = redeem("bob").await;
    assert_eq!(v["seen"], json!({ "str": "alice" }), "{v}");
    assert_eq!(ok(&v["updated"]), 0, "{v}");
    assert_eq!(who(&db, &table, "gift").await.as_deref(), Some("alice"));
    host.stop().await;
}

#[tokio::test]
async fn two_concurrent_redemptions_of_one_row_update_it_once() {
    let table = Table::create("race", "code text PRIMARY KEY, who text").await;
    let db = admin().await;
    db.execute(
        &format!("INSERT INTO {} (code) VALUES ('gift')", table.name),
        &[],
    )
    .await
    .expect("seed");
    let host = std::sync::Arc::new(start().await);
    let mut tasks = Vec::new();
    for who in ["alice", "bob"] {
        let host = host.clone();
        let table = table.name.clone();
        tasks.push(tokio::spawn(async move {
            // Each holds the row lock for a while, so the other waits on it.
            op(
                &host,
                "/",
                "redeem",
                PG,
                &[
                    ("table", &table),
                    ("code", "gift"),
                    ("who", who),
                    ("hold_ms", "300"),
                ],
            )
            .await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("request"));
    }
    let winners: Vec<&Value> = results.iter().filter(|v| ok(&v["updated"]) == 1).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one redemption updates: {results:?}"
    );
    for v in &results {
        assert_eq!(ok(&v["commit"]), 0, "{v}");
    }
    let stored = who(&db, &table, "gift").await.expect("redeemed");
    let loser = results
        .iter()
        .find(|v| ok(&v["updated"]) == 0)
        .expect("a loser");
    assert_eq!(
        loser["seen"],
        json!({ "str": stored }),
        "the loser waited for the winner's commit and saw it"
    );
    if let Ok(host) = std::sync::Arc::try_unwrap(host) {
        host.stop().await;
    }
}

/// Whether the server still has a backend with process id `pid`, polled until it has none.
async fn backend_gone(db: &tokio_postgres::Client, pid: i32) -> bool {
    for _ in 0..40 {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn pid_of(v: &Value) -> i32 {
    v["int32"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or_else(|| panic!("a backend pid, got {v}"))
}

#[tokio::test]
async fn dropping_a_connection_mid_transaction_rolls_back_and_never_pools_it() {
    let table = Table::create("abandon", "code text PRIMARY KEY, who text").await;
    let db = admin().await;
    db.execute(
        &format!("INSERT INTO {} (code) VALUES ('a'), ('b')", table.name),
        &[],
    )
    .await
    .expect("seed");
    let host = start().await;
    for (operation, code) in [("abandon", "a"), ("abandon_failed", "b")] {
        let v = op(
            &host,
            "/",
            operation,
            PG,
            &[("table", &table.name), ("code", code)],
        )
        .await;
        assert_eq!(ok(&v["update"]), 1, "{operation}: {v}");
        assert_eq!(
            ok(&v["locked"])["rows"],
            json!([[{ "str": "abandoned" }]]),
            "{operation}: {v}"
        );
        if operation == "abandon_failed" {
            assert_eq!(db_error(&v["failed"])["code"], "22012", "{v}");
        }
        // The next open gets another server connection, on which the row is unlocked and
        // unchanged: the abandoned transaction was rolled back, not handed on.
        let before = pid_of(&v["pid_before"]);
        assert_ne!(before, pid_of(&v["pid_after"]), "{operation}: {v}");
        assert_eq!(
            ok(&v["nowait"])["rows"],
            json!([[{ "db-null": null }]]),
            "{operation}: {v}"
        );
        assert!(
            backend_gone(&db, before).await,
            "{operation}: the abandoned connection was closed"
        );
        assert_eq!(who(&db, &table, code).await, None, "{operation}");
    }
    let locks: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON l.relation = c.oid \
             WHERE c.relname = $1",
            &[&table.name],
        )
        .await
        .expect("pg_locks")
        .get(0);
    assert_eq!(locks, 0, "no lock on the table survives");
    host.stop().await;
}

#[tokio::test]
async fn a_clean_connection_is_pooled_with_its_session_reset() {
    let host = start().await;
    let v = op(&host, "/", "pooled", PG, &[]).await;
    for step in v["setup"].as_array().expect("setup") {
        assert!(step.get("error").is_none(), "setup step failed: {v}");
    }
    assert_eq!(
        pid_of(&v["pid_before"]),
        pid_of(&v["pid_after"]),
        "the connection was pooled: {v}"
    );
    assert_eq!(v["statement_timeout"], json!({ "str": "0" }), "{v}");
    assert_eq!(
        v["search_path"],
        json!({ "str": "\"$user\", public" }),
        "{v}"
    );
    assert_eq!(v["advisory_locks"], json!({ "int64": 0 }), "{v}");
    assert_eq!(v["temp_table_gone"], json!({ "boolean": true }), "{v}");
    assert_eq!(v["listening"], json!({ "int64": 0 }), "{v}");

    // A guest's PREPARE would collide with the next guest's: such a connection is not pooled.
    let v = op(&host, "/", "prepare", PG, &[]).await;
    assert_eq!(ok(&v["prepared"]), 0, "{v}");
    assert_ne!(pid_of(&v["pid_before"]), pid_of(&v["pid_after"]), "{v}");
    assert_eq!(ok(&v["prepare_again"]), 0, "{v}");
    host.stop().await;
}

#[tokio::test]
async fn addresses_outside_the_allow_list_fail_at_once() {
    let host = start().await;
    let cases = [
        // The component lists another port only.
        (
            "/denied/x",
            PG,
            Some("address postgres://127.0.0.1:5432 is not permitted"),
        ),
        // Allowed host, other port; the password never shows.
        (
            "/",
            "postgres://postgres:s3cret@127.0.0.1:5433/test",
            Some("address postgres://127.0.0.1:5433 is not permitted"),
        ),
        // Host names are compared literally, as in Spin.
        (
            "/",
            "host=localhost user=postgres dbname=test",
            Some("address postgres://localhost is not permitted"),
        ),
        // The connection would go to hostaddr, which is not allowed.
        (
            "/",
            "host=127.0.0.1 hostaddr=127.0.0.2 user=postgres dbname=test",
            Some("address postgres://127.0.0.2 is not permitted"),
        ),
        ("/", "host=/var/run/postgresql user=postgres", None),
        ("/", "dbname=test user=postgres", None),
        ("/", "not a connection string", None),
        ("/", "mysql://127.0.0.1/test", None),
    ];
    for (route, address, message) in cases {
        let started = Instant::now();
        let v = op(&host, route, "open", address, &[]).await;
        let failed = v["open"]["connection-failed"]
            .as_str()
            .unwrap_or_else(|| panic!("{address}: expected connection-failed, got {v}"));
        if let Some(message) = message {
            assert_eq!(failed, message, "{address}");
        }
        assert!(!failed.contains("s3cret"), "{failed}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{address}: denial took {:?}",
            started.elapsed()
        );
    }
    let v = op(&host, "/", "open", PG, &[]).await;
    assert_eq!(v["open"], "ok", "the allowed address opens: {v}");
    host.stop().await;
}

#[tokio::test]
async fn an_unreachable_database_fails_fast_and_a_silent_one_within_the_connect_timeout() {
    let (silent_port, holder) = crate::harness::silent_server().await;
    let connect = Duration::from_secs(1);
    let host = scenario(
        Some(PgTimeouts {
            connect,
            query: Duration::from_secs(5),
        }),
        Some(silent_port),
    )
    .start()
    .await;

    let started = Instant::now();
    let v = op(
        &host,
        "/",
        "open",
        "postgres://postgres@127.0.0.1:1/test",
        &[],
    )
    .await;
    let refused = v["open"]["connection-failed"]
        .as_str()
        .unwrap_or_else(|| panic!("expected connection-failed, got {v}"));
    assert!(refused.contains("refused"), "{refused}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a refused connection took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let address = format!("postgres://postgres@127.0.0.1:{silent_port}/test");
    let v = op(&host, "/", "open", &address, &[]).await;
    let timed_out = v["open"]["connection-failed"]
        .as_str()
        .unwrap_or_else(|| panic!("expected connection-failed, got {v}"));
    assert!(timed_out.contains("timed out"), "{timed_out}");
    let took = started.elapsed();
    assert!(
        took >= connect - Duration::from_millis(100) && took < connect + Duration::from_secs(2),
        "a silent server took {took:?}"
    );
    host.stop().await;
    holder.abort();
}

#[tokio::test]
async fn a_query_over_the_timeout_is_cancelled_on_the_server() {
    let query_timeout = Duration::from_secs(1);
    let host = scenario(
        Some(PgTimeouts {
            connect: Duration::from_secs(5),
            query: query_timeout,
        }),
        None,
    )
    .start()
    .await;
    let application = unique_name("sleep");
    let address = format!("{PG}?application_name={application}");
    let started = Instant::now();
    let v = op(&host, "/", "sleep", &address, &[("seconds", "30")]).await;
    let took = started.elapsed();
    let slept = text_error(&v["sleep"], "query-failed");
    assert!(slept.contains("timed out"), "{slept}");
    assert!(
        took >= query_timeout && took < query_timeout + Duration::from_secs(3),
        "the request took {took:?}"
    );
    // The guest connection is closed from then on; a new one works.
    assert!(
        text_error(&v["after"], "connection-failed").contains("timed out"),
        "{v}"
    );
    assert_eq!(v["fresh"], json!({ "str": "fresh" }), "{v}");
    // Closing the socket alone would leave pg_sleep running for 30 s: it was cancelled.
    let db = admin().await;
    let mut running = i64::MAX;
    for _ in 0..40 {
        running = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = $1 AND query LIKE '%pg_sleep%' AND state = 'active'",
                &[&application],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running, 0, "pg_sleep still runs on the server");
    host.stop().await;
}
