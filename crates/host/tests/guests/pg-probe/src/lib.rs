//! Test guest for outbound PostgreSQL (`spin_sdk::pg4`, `spin:postgres/postgres@4.0.0`): the `op`
//! query parameter picks a scenario, `address` the connection string, `table` the table the test
//! created for it; the answer is JSON describing every result (`{"ok": …}` or `{"error": …}`).

use probe_support::{params, respond};
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_component;
use spin_sdk::pg4::{
    Connection, DbValue, Interval, ParameterValue as P, PgError, QueryError, RangeBoundKind, RowSet,
};
use std::collections::BTreeMap;

fn err(e: &PgError) -> Value {
    match e {
        PgError::ConnectionFailed(s) => json!({ "connection-failed": s }),
        PgError::BadParameter(s) => json!({ "bad-parameter": s }),
        PgError::QueryFailed(QueryError::Text(s)) => json!({ "query-failed": { "text": s } }),
        PgError::QueryFailed(QueryError::DbError(d)) => {
            let extras: serde_json::Map<String, Value> = d
                .extras
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            json!({ "query-failed": { "db-error": {
                "code": d.code,
                "severity": d.severity,
                "message": d.message,
                "detail": d.detail,
                "as-text": d.as_text,
                "extras": extras,
            } } })
        }
        PgError::ValueConversionFailed(s) => json!({ "value-conversion-failed": s }),
        PgError::Other(s) => json!({ "other": s }),
    }
}

fn bound<T: Into<Value> + Clone>(b: &Option<(T, RangeBoundKind)>) -> Value {
    match b {
        None => Value::Null,
        Some((v, kind)) => json!([
            v.clone().into(),
            match kind {
                RangeBoundKind::Inclusive => "inclusive",
                RangeBoundKind::Exclusive => "exclusive",
            }
        ]),
    }
}

fn render(v: &DbValue) -> Value {
    match v {
        DbValue::Boolean(b) => json!({ "boolean": b }),
        DbValue::Int8(i) => json!({ "int8": i }),
        DbValue::Int16(i) => json!({ "int16": i }),
        DbValue::Int32(i) => json!({ "int32": i }),
        DbValue::Int64(i) => json!({ "int64": i }),
        DbValue::Floating32(f) => json!({ "floating32": f }),
        DbValue::Floating64(f) => json!({ "floating64": f }),
        DbValue::Str(s) => json!({ "str": s }),
        DbValue::Binary(b) => json!({ "binary": b }),
        DbValue::Date((y, m, d)) => json!({ "date": [y, m, d] }),
        DbValue::Time((h, m, s, ns)) => json!({ "time": [h, m, s, ns] }),
        DbValue::Datetime((y, mo, d, h, mi, s, ns)) => {
            json!({ "datetime": [y, mo, d, h, mi, s, ns] })
        }
        DbValue::Timestamp(t) => json!({ "timestamp": t }),
        DbValue::Uuid(s) => json!({ "uuid": s }),
        DbValue::Jsonb(b) => json!({ "jsonb": String::from_utf8_lossy(b) }),
        DbValue::Decimal(s) => json!({ "decimal": s }),
        DbValue::RangeInt32((lo, hi)) => json!({ "range-int32": [bound(lo), bound(hi)] }),
        DbValue::RangeInt64((lo, hi)) => json!({ "range-int64": [bound(lo), bound(hi)] }),
        DbValue::RangeDecimal((lo, hi)) => json!({ "range-decimal": [bound(lo), bound(hi)] }),
        DbValue::ArrayInt32(v) => json!({ "array-int32": v }),
        DbValue::ArrayInt64(v) => json!({ "array-int64": v }),
        DbValue::ArrayDecimal(v) => json!({ "array-decimal": v }),
        DbValue::ArrayStr(v) => json!({ "array-str": v }),
        DbValue::Interval(i) => json!({ "interval": [i.micros, i.days, i.months] }),
        DbValue::DbNull => json!({ "db-null": null }),
        DbValue::Unsupported(b) => json!({ "unsupported": b }),
    }
}

fn rows(r: &Result<RowSet, PgError>) -> Value {
    match r {
        Ok(set) => json!({ "ok": {
            "columns": set
                .columns
                .iter()
                .map(|c| json!([c.name, format!("{:?}", c.data_type)]))
                .collect::<Vec<_>>(),
            "rows": set
                .rows
                .iter()
                .map(|row| row.iter().map(render).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        } }),
        Err(e) => json!({ "error": err(e) }),
    }
}

fn count(r: &Result<u64, PgError>) -> Value {
    match r {
        Ok(n) => json!({ "ok": n }),
        Err(e) => json!({ "error": err(e) }),
    }
}

/// The single value of a one-row, one-column result.
fn scalar(r: &Result<RowSet, PgError>) -> Value {
    match r {
        Ok(set) => set
            .rows
            .first()
            .and_then(|row| row.first())
            .map_or(Value::Null, render),
        Err(e) => json!({ "error": err(e) }),
    }
}

fn text(s: &str) -> P {
    P::Str(s.to_string())
}

fn pid(c: &Connection) -> Value {
    scalar(&c.query("SELECT pg_backend_pid()", &[]))
}

fn sleep_ms(ms: u64) {
    if ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

fn open(address: &str) -> Result<Connection, String> {
    Connection::open(address).map_err(|e| err(&e).to_string())
}

/// Every result type the host maps, in one row, and the same columns as NULLs.
const TYPES: &str = r#"SELECT
    true AS b, 1::int2 AS i2, 2::int4 AS i4, 3::int8 AS i8, 1.5::float4 AS f4, 2.25::float8 AS f8,
    'txt'::text AS t, 'vc'::varchar(5) AS vc, 'bp'::char(3) AS bp, 'nm'::name AS nm,
    '\x00ff'::bytea AS by, '2024-02-29'::date AS d, '13:14:15.123456'::time AS tm,
    '2024-02-29 13:14:15.5'::timestamp AS ts, '2024-02-29 13:14:15.5+02'::timestamptz AS tstz,
    'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid AS u, '{"b": [1, 2], "a": null}'::jsonb AS j,
    '12345678901234567890.0123456789'::numeric AS n, ARRAY[1, NULL, 3]::int4[] AS ai4,
    ARRAY[4, 5]::int8[] AS ai8, ARRAY['x', NULL]::text[] AS at, ARRAY[1.5, NULL]::numeric[] AS an,
    '1 year 2 mons 3 days 04:05:06.5'::interval AS iv, '[1,5)'::int4range AS r4,
    '(,10]'::int8range AS r8, '[1.5,2.5)'::numrange AS rn, 'empty'::int4range AS re,
    '10.1.2.3'::inet AS other, NULL::int4 AS null_i4, NULL::text AS null_t,
    NULL::inet AS null_other"#;

/// Runs one scenario on an open connection.
fn scenario(op: &str, c: Connection, p: &BTreeMap<String, String>) -> Result<Value, String> {
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    let (address, table) = (get("address"), get("table"));
    Ok(match op {
        "types" => json!({ "types": rows(&c.query(TYPES, &[])) }),
        // Apart, because a query returning no rows never returns on Spin 4.0.2.
        "empty" => json!({
            "empty": rows(&c.query("SELECT 1::int4 AS one, 'x'::text AS two WHERE false", &[])),
        }),
        "params" => {
            // The test created `table` with one column per parameter kind (see the test).
            let insert = format!(
                "INSERT INTO {table} (id, b, i2, i4, i8, f4, f8, s, by, d, tm, ts, tstz, u, j, n, \
                 ai4, ai8, at, an, iv, r4, r8, rn, c) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                 $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)"
            );
            let inc = RangeBoundKind::Inclusive;
            let exc = RangeBoundKind::Exclusive;
            let values = vec![
                P::Int32(1),
                P::Boolean(true),
                P::Int16(-2),
                P::Int32(2147483647),
                P::Int64(-9007199254740993),
                P::Floating32(0.25),
                P::Floating64(-1.5e300),
                text("héllo 'quoted' $1"),
                P::Binary(vec![0, 1, 254, 255]),
                P::Date((1999, 12, 31)),
                P::Time((23, 59, 58, 999_999_000)),
                P::Datetime((2000, 1, 2, 3, 4, 5, 6_000)),
                P::Timestamp(1_700_000_000),
                P::Uuid("F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6".into()),
                P::Jsonb(br#"{"k": [true, 1.5, "s"]}"#.to_vec()),
                P::Decimal("-0.000123456789012345678901234567890".into()),
                P::ArrayInt32(vec![Some(1), None, Some(-3)]),
                P::ArrayInt64(vec![Some(i64::MAX)]),
                P::ArrayStr(vec![Some("a,b".into()), None, Some("\"q\"".into())]),
                P::ArrayDecimal(vec![Some("1.10".into()), None]),
                P::Interval(Interval {
                    micros: 3_723_000_001,
                    days: -4,
                    months: 14,
                }),
                P::RangeInt32((Some((1, inc)), Some((5, inc)))),
                P::RangeInt64((None, Some((100, exc)))),
                P::RangeDecimal((Some(("0.5".into(), exc)), None)),
                P::Int8(65),
            ];
            let nulls: Vec<P> = std::iter::once(P::Int32(2))
                .chain(std::iter::repeat_with(|| P::DbNull).take(24))
                .collect();
            let inserted = c.execute(&insert, &values);
            // Parameters in WHERE clauses and expressions, not only as column values; only when
            // the row is there (an empty result never returns on Spin 4.0.2).
            let found = inserted.as_ref().ok().map(|_| {
                rows(&c.query(
                    &format!("SELECT id FROM {table} WHERE s = $1 AND u = $2 AND n < $3"),
                    &[
                        text("héllo 'quoted' $1"),
                        P::Uuid("f81d4fae-7dec-11d0-a765-00a0c91e6bf6".into()),
                        P::Decimal("0".into()),
                    ],
                ))
            });
            json!({
                "insert": count(&inserted),
                "insert_nulls": count(&c.execute(&insert, &nulls)),
                "select": rows(&c.query(&format!("SELECT * FROM {table} ORDER BY id"), &[])),
                "where": found,
                "echo": rows(&c.query(
                    "SELECT $1::text || '!' AS s, $2::int8 * 2 AS n, $3::bool AS b, \
                     $4::bytea AS by",
                    &[text("x"), P::Int64(21), P::DbNull, P::Binary(vec![7])],
                )),
            })
        }
        "execute" => {
            let sql = |s: &str| s.replace("{table}", &table);
            let exec = |s: &str, params: &[P]| count(&c.execute(&sql(s), params));
            let insert = "INSERT INTO {table} (code, who) VALUES ($1, $2), ($3, $4), ($5, $6)";
            let rows_in = [
                text("a"),
                text("x"),
                text("b"),
                P::DbNull,
                text("c"),
                text("y"),
            ];
            let update = "UPDATE {table} SET who = $1 WHERE code <> $2";
            let update_none = "UPDATE {table} SET who = 'n' WHERE code = $1";
            let remaining = sql("SELECT code, who FROM {table} ORDER BY code");
            json!({
                "insert": exec(insert, &rows_in),
                "update": exec(update, &[text("z"), text("a")]),
                "update_none": exec(update_none, &[text("nope")]),
                "delete": exec("DELETE FROM {table} WHERE code = $1", &[text("c")]),
                "select": exec("SELECT * FROM {table}", &[]),
                "create_index": exec("CREATE INDEX ON {table} (who)", &[]),
                "remaining": rows(&c.query(&remaining, &[])),
            })
        }
        "errors" => json!({
            "missing_table": rows(&c.query("SELECT * FROM kc_no_such_table_anywhere", &[])),
            "syntax": count(&c.execute("SELEC 1", &[])),
            "unique": count(&c.execute(
                &format!("INSERT INTO {table} (code, who) VALUES ($1, $2), ($1, $2)"),
                &[text("dup"), text("w")],
            )),
            "division": rows(&c.query("SELECT 1 / $1::int4", &[P::Int32(0)])),
            "bad_uuid_query": rows(&c.query("SELECT $1::uuid", &[P::Uuid("nope".into())])),
            "bad_uuid_execute": count(&c.execute("SELECT $1::uuid", &[P::Uuid("nope".into())])),
            "bad_date": rows(&c.query("SELECT $1::date", &[P::Date((2023, 2, 29))])),
            "wrong_type": rows(&c.query("SELECT $1::int8", &[P::Int32(1)])),
            "missing_param": rows(&c.query("SELECT $1::int4", &[])),
            "two_statements": count(&c.execute("SELECT 1; SELECT 2", &[])),
            "still_usable": scalar(&c.query("SELECT 41 + 1", &[])),
        }),
        "redeem" => {
            let (code, who) = (get("code"), get("who"));
            let hold = get("hold_ms").parse().unwrap_or(0);
            let begin = count(&c.execute("BEGIN", &[]));
            let current = c.query(
                &format!("SELECT who FROM {table} WHERE code = $1 FOR UPDATE"),
                &[text(&code)],
            );
            let seen = scalar(&current);
            sleep_ms(hold);
            let updated = if seen == json!({ "db-null": null }) {
                count(&c.execute(
                    &format!("UPDATE {table} SET who = $1 WHERE code = $2"),
                    &[text(&who), text(&code)],
                ))
            } else {
                json!({ "ok": 0 })
            };
            let commit = count(&c.execute("COMMIT", &[]));
            json!({ "begin": begin, "seen": seen, "updated": updated, "commit": commit })
        }
        "abandon" | "abandon_failed" => {
            let code = get("code");
            let pid_before = pid(&c);
            let begin = count(&c.execute("BEGIN", &[]));
            let update = count(&c.execute(
                &format!("UPDATE {table} SET who = 'abandoned' WHERE code = $1"),
                &[text(&code)],
            ));
            let locked = rows(&c.query(
                &format!("SELECT who FROM {table} WHERE code = $1 FOR UPDATE"),
                &[text(&code)],
            ));
            let failed = if op == "abandon_failed" {
                rows(&c.query("SELECT 1 / 0", &[]))
            } else {
                Value::Null
            };
            // Dropped inside the transaction, without COMMIT or ROLLBACK.
            drop(c);
            let again = open(&address)?;
            json!({
                "pid_before": pid_before,
                "begin": begin,
                "update": update,
                "locked": locked,
                "failed": failed,
                "pid_after": pid(&again),
                "nowait": rows(&again.query(
                    &format!("SELECT who FROM {table} WHERE code = $1 FOR UPDATE NOWAIT"),
                    &[text(&code)],
                )),
            })
        }
        "pooled" => {
            let pid_before = pid(&c);
            let setup = json!([
                scalar(&c.query(
                    "SELECT set_config('statement_timeout', '12345', false)",
                    &[]
                )),
                count(&c.execute("SET search_path TO pg_catalog", &[])),
                scalar(&c.query("SELECT pg_advisory_lock(4242)::text", &[])),
                count(&c.execute("CREATE TEMP TABLE kc_probe_temp (x int4)", &[])),
                count(&c.execute("LISTEN kc_probe_channel", &[])),
                count(&c.execute("BEGIN", &[])),
                count(&c.execute("COMMIT", &[])),
            ]);
            drop(c);
            let again = open(&address)?;
            let one = |sql: &str| scalar(&again.query(sql, &[]));
            json!({
                "setup": setup,
                "pid_before": pid_before,
                "pid_after": pid(&again),
                "statement_timeout": one("SELECT current_setting('statement_timeout')"),
                "search_path": one("SELECT current_setting('search_path')"),
                "advisory_locks": one(
                    "SELECT count(*) FROM pg_locks \
                     WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                ),
                "temp_table_gone": one("SELECT to_regclass('kc_probe_temp') IS NULL"),
                "listening": one("SELECT count(*) FROM pg_listening_channels()"),
            })
        }
        "prepare" => {
            let pid_before = pid(&c);
            let prepared = count(&c.execute("PREPARE kc_probe_stmt AS SELECT 1", &[]));
            drop(c);
            let again = open(&address)?;
            json!({
                "prepared": prepared,
                "pid_before": pid_before,
                "pid_after": pid(&again),
                "prepare_again": count(&again.execute("PREPARE kc_probe_stmt AS SELECT 1", &[])),
            })
        }
        "sleep" => {
            let seconds: f64 = get("seconds").parse().unwrap_or(30.0);
            let slept = rows(&c.query("SELECT pg_sleep($1)", &[P::Floating64(seconds)]));
            let after = rows(&c.query("SELECT 1", &[]));
            let fresh = open(&address).map(|f| scalar(&f.query("SELECT 'fresh'::text", &[])));
            json!({
                "sleep": slept,
                "after": after,
                "fresh": fresh.unwrap_or_else(Value::String),
            })
        }
        other => return Err(format!("unknown op {other}")),
    })
}

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let p = params(req.query());
    let op = p.get("op").cloned().unwrap_or_default();
    let address = p.get("address").cloned().unwrap_or_default();
    let connection = match Connection::open(&address) {
        Ok(c) => c,
        Err(e) => return Ok(respond(200, json!({ "open": err(&e) }))),
    };
    if op == "open" {
        return Ok(respond(200, json!({ "open": "ok" })));
    }
    Ok(match scenario(&op, connection, &p) {
        Ok(body) => respond(200, body),
        Err(message) => respond(500, json!({ "failed": message })),
    })
}
