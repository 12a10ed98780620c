//! Outbound PostgreSQL for guests: `spin:postgres/postgres@4.0.0`, the interface spin-sdk 5.2's
//! `spin_sdk::pg4` imports, with the semantics of Spin's `factor-outbound-pg`.
//!
//! # Addresses and the allow-list
//!
//! `connection.open(address)` takes a libpq connection string, a URL
//! (`postgres://user:pw@host:port/db`) or key=value (`host=… user=… dbname=…`), parsed by
//! `tokio_postgres::Config`. Every host in it is checked, as Spin does, as `postgres://host:port`
//! (port 5432 when none is given) against the component's `allowed_outbound_hosts`; so is every
//! `hostaddr`, which Spin ignores although that is where the connection actually goes. A denied
//! or unparsable address, a Unix socket path and a string naming no host fail at once with
//! `connection-failed` (Spin's text: `address postgres://host:port is not permitted`), and a
//! `warn` line is logged without credentials. There is no TLS here (`NoTls`): the default
//! `sslmode=prefer` connects in plain text and `sslmode=require` is refused with
//! `connection-failed`.
//!
//! # Pooling and transactions
//!
//! Connections are pooled per address string (credentials included, so two strings differing in
//! user, password or database never share a connection; never logged): one `deadpool-postgres`
//! pool of at most [`MAX_CONNECTIONS_PER_ADDRESS`] connections per address, for at most
//! [`MAX_POOLED_ADDRESSES`] addresses (beyond that an `open` gets a connection that closes when
//! the guest drops it). A guest `connection` holds one pooled connection from `open` until the
//! guest drops it, so `BEGIN` … `COMMIT` sent through separate `execute`/`query` calls run in one
//! session, as on Spin.
//!
//! What goes back to the pool must carry nothing of the guest that used it:
//!
//! * a connection that may still be inside a transaction — the guest ran `BEGIN`/`START
//!   TRANSACTION` (or `COMMIT AND CHAIN` …) without a later successful `COMMIT`/`ROLLBACK`/`END`/
//!   `ABORT`, or a statement failed inside one — is never pooled: `drop` sends `ROLLBACK` (so the
//!   locks are gone before the guest's next call) and closes it. So is one on which the guest ran
//!   `PREPARE`, `DEALLOCATE` or `DISCARD`, which would collide with or drop the driver's own
//!   prepared statements.
//! * any other connection is reset before it is pooled, in one round trip: `CLOSE ALL; SET SESSION
//!   AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP;
//!   DISCARD SEQUENCES` (`DISCARD ALL` without `DEALLOCATE ALL`, which would break the driver's
//!   cached type-lookup statements; deadpool's `RecyclingMethod::Clean`, which Spin runs when it
//!   hands a connection out). The same round trip asks the server whether it is inside a
//!   transaction block (`statement_timestamp() = transaction_timestamp()` holds only in the first
//!   statement of a transaction); if it is, or the reset fails, the connection is closed instead.
//!   Spin resets only on checkout and never checks for an open transaction, so on Spin a guest
//!   that drops its connection mid-transaction leaves that transaction, and its locks, to the
//!   next user of the pooled connection.
//! * a handle the guest never dropped (the instance trapped or was torn down mid-call) closes its
//!   connection, cancelling a query still running on it.
//!
//! On checkout the pool checks the connection with an empty query (`RecyclingMethod::Verified`)
//! and connects afresh if the server has gone away.
//!
//! # Timeouts
//!
//! Nothing may hang a request. Connecting (or waiting for a free pooled connection) is bounded by
//! [`CONNECT_TIMEOUT`] → `connection-failed`; nothing listening fails at once. Each `query` and
//! `execute` is bounded by [`QUERY_TIMEOUT`]: a statement that overruns it is cancelled on the
//! server (a cancel request with the connection's key, sent in the background) and its connection
//! closed; the call fails with `query-failed(text(…timed out…))` and later calls on that guest
//! connection with `connection-failed`. Spin has neither limit. Both are set per host through
//! [`PgTimeouts`] ([`crate::HostConfig::postgres_timeouts`]).
//!
//! # Values
//!
//! Parameters are always bound (`$1`, `$2` …; the extended protocol, so one statement per call)
//! and typed as in Spin: each `parameter-value` becomes the Rust type tokio-postgres binds, which
//! must match the type the server infers for its placeholder (`int32` for `int4`, `int64` for
//! `int8`, `str` for text types, `datetime` for `timestamp`, `timestamp` (Unix seconds) for
//! `timestamptz`, `int8` for `"char"` …); a mismatch is `query-failed(text(…WrongType…))`. A value
//! that cannot be converted at all (an invalid date, UUID, JSON or decimal) fails before anything
//! is sent: `bad-parameter` from `query`, `value-conversion-failed` from `execute`, as in Spin.
//! `db-null` binds NULL for any type. Results map `bool`, `int2/4/8`, `float4/8`, `text`,
//! `varchar`, `bpchar`, `name`, `bytea`, `date`, `time`, `timestamp`, `timestamptz` (as a UTC
//! `datetime`), `uuid` (hyphenated lower case), `jsonb` (re-serialised compactly by serde_json, as
//! Spin), `numeric` (`decimal`, its exact text), `int4range`/`int8range`/`numrange`,
//! `int4[]`/`int8[]`/`numeric[]`/`text[]`/`varchar[]`/`bpchar[]` and `interval`; NULL is
//! `db-null`; any other type is `unsupported(its binary encoding)` with column type
//! `other(type name)`. Database errors are `query-failed(db-error{…})` with the SQLSTATE `code`,
//! `severity`, `message`, `detail` and the other fields in `extras`; other failures are
//! `query-failed(text(…))`, their `Debug` text as in Spin. Results over 128 MiB are refused.
//!
//! # Divergences from Spin 4.0.2
//!
//! Measured by running `tests/guests/pg-probe` on the bundled Spin 4.0.2 (which provides
//! `spin:postgres@4.2.0`; a `4.0.0` import links to it) and on this host against the same
//! database. Database errors (`db-error` fields and SQLSTATE), `WrongType`/parameter-count texts,
//! row counts, the allow-list texts and the session reset of a pooled connection matched; so did
//! the error variants, once `execute`'s conversion failures were made `value-conversion-failed`.
//! Where they differ, Spin is either broken or unsafe, and this host does the useful thing:
//!
//! * **A `query` that returns no rows never returns on Spin**: the guest hangs (the request
//!   with it). Here it returns the columns and no rows. Portable components must not `query`
//!   for rows that may be absent: select something that always yields a row (`SELECT count(*)`,
//!   `SELECT EXISTS (…)`, an aggregate) or use `execute`'s row count.
//! * `timestamptz` columns are read as UTC `datetime`s. Spin declares them `datetime` but decodes
//!   them as a naive timestamp, which tokio-postgres refuses, so any query returning one fails
//!   with `query-failed(text(…cannot convert … timestamptz…))`; portable components select
//!   `col AT TIME ZONE 'UTC'` (a `timestamp`) or `extract(epoch from col)`.
//! * A connection dropped inside a transaction goes back to Spin's pool still inside it: the
//!   next request that gets it from the pool runs in that transaction, holding its locks (seen:
//!   the next guest's `SELECT … FOR UPDATE NOWAIT` succeeded on the row the abandoned
//!   transaction had updated and saw the uncommitted value; a later request's statements all
//!   failed with `25P02` once one of them failed). Likewise a guest's `PREPARE` outlives it and
//!   collides with the next guest's. Here neither connection is pooled.
//! * `numeric` values are exact at any precision and `NaN`/`Infinity` pass through; Spin converts
//!   through `rust_decimal` (28 digits) and refuses more (`value-conversion-failed`).
//! * No TLS here: with the default `sslmode=prefer` Spin negotiates TLS when the server offers
//!   it and fails on a certificate it cannot verify (a self-signed or IP-addressed server), where
//!   this host connects in plain text; `sslmode=disable` behaves the same on both.
//! * `hostaddr` is checked against the allow-list (Spin connects to it unchecked); a string with
//!   no host at all is refused before connecting (Spin: after, with tokio-postgres's message).
//! * `name` columns are `str` (Spin: `unsupported`).
//! * Error texts: Spin's carry anyhow's `Caused by:` chain (and a backtrace when
//!   `RUST_BACKTRACE` is set); here they are one line. `as-text` of a `db-error` is the same.
//! * The connect and query timeouts above (Spin has none).

#![allow(
    clippy::result_large_err,
    reason = "the WIT `error` (with its `db-error` record) is what every call returns to the guest"
)]

use crate::bindings::spin::spin::postgres::postgres as wit;
use crate::outbound::AllowedHosts;
use crate::state::InstanceState;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};
use tokio_postgres::{CancelToken, NoTls, Row};
use wasmtime::component::Resource;

/// How long `open` may take to connect (or to wait for a free pooled connection).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one `query` or `execute` may take before it is cancelled.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Addresses whose connections are pooled; others get a connection per `open`.
pub const MAX_POOLED_ADDRESSES: usize = 64;
/// Connections per address, in use or idle (Spin's `CONNECTION_POOL_SIZE`).
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Spin's `MAX_HOST_BUFFERED_BYTES`.
const MAX_RESULT_BYTES: usize = 128 * 1024 * 1024;

/// Run before a connection goes back to the pool: whether it is outside any transaction block,
/// then the session reset (see the module doc).
const RELEASE_SQL: &str = "SELECT statement_timestamp() = transaction_timestamp(); \
     CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
     SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES";

/// Connect and query time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgTimeouts {
    /// See [`CONNECT_TIMEOUT`].
    pub connect: Duration,
    /// See [`QUERY_TIMEOUT`].
    pub query: Duration,
}

impl Default for PgTimeouts {
    fn default() -> Self {
        Self {
            connect: CONNECT_TIMEOUT,
            query: QUERY_TIMEOUT,
        }
    }
}

/// The host-wide connection pools, keyed by the address string the guest passed. Cheap to clone.
#[derive(Clone)]
pub struct PgPool {
    inner: Arc<PgPoolInner>,
}

struct PgPoolInner {
    timeouts: PgTimeouts,
    pools: Mutex<HashMap<String, Pool>>,
}

impl std::fmt::Debug for PgPool {
    // Keys hold passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPool")
            .field("timeouts", &self.inner.timeouts)
            .finish_non_exhaustive()
    }
}

impl Default for PgPool {
    fn default() -> Self {
        Self::new(PgTimeouts::default())
    }
}

/// Why a connection could not be opened; the text is the guest's `connection-failed` message and
/// never holds credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The connection string cannot be parsed, or asks for something this host cannot do.
    #[error("{0}")]
    Config(String),
    /// Connecting failed or timed out.
    #[error("{0}")]
    Connect(String),
}

/// `e` and its sources, joined: tokio-postgres puts the useful part (`Connection refused`, the
/// server's message) in the source.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

impl PgPool {
    /// An empty pool.
    pub fn new(timeouts: PgTimeouts) -> Self {
        Self {
            inner: Arc::new(PgPoolInner {
                timeouts,
                pools: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The time limits connections from this pool run under.
    pub fn timeouts(&self) -> PgTimeouts {
        self.inner.timeouts
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pool>> {
        // The map stays consistent whatever panicked while it was held.
        self.inner
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Addresses with a pool.
    pub fn pooled_addresses(&self) -> usize {
        self.pools().len()
    }

    fn build_pool(&self, mut config: tokio_postgres::Config) -> Result<Pool, OpenError> {
        let connect = self.inner.timeouts.connect;
        // Per socket attempt; the whole of `open` is bounded again below.
        let limit = config
            .get_connect_timeout()
            .map_or(connect, |t| (*t).min(connect));
        config.connect_timeout(limit);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        Pool::builder(manager)
            .max_size(MAX_CONNECTIONS_PER_ADDRESS)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(connect))
            .create_timeout(Some(connect))
            .recycle_timeout(Some(connect))
            .build()
            .map_err(|e| OpenError::Config(format!("building the connection pool: {e}")))
    }

    /// A guest connection to `address`: a pooled connection, or a new one. The caller has
    /// checked the address against the allow-list.
    pub async fn open(&self, address: &str) -> Result<PgConnection, OpenError> {
        let config: tokio_postgres::Config = address
            .parse()
            .map_err(|e: tokio_postgres::Error| OpenError::Config(chain(&e)))?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(OpenError::Config(
                "sslmode=require: this host has no TLS for PostgreSQL".into(),
            ));
        }
        let pool = {
            let mut pools = self.pools();
            match pools.get(address) {
                Some(pool) => pool.clone(),
                None => {
                    let pool = self.build_pool(config)?;
                    if pools.len() < MAX_POOLED_ADDRESSES {
                        pools.insert(address.to_string(), pool.clone());
                    }
                    pool
                }
            }
        };
        let connect = self.inner.timeouts.connect;
        let outcome = match tokio::time::timeout(connect, pool.get()).await {
            Ok(Ok(object)) => Ok(object),
            Ok(Err(deadpool_postgres::PoolError::Timeout(_))) | Err(_) => {
                let status = pool.status();
                let busy = status.size >= MAX_CONNECTIONS_PER_ADDRESS && status.available == 0;
                Err(OpenError::Connect(if busy {
                    format!(
                        "all {MAX_CONNECTIONS_PER_ADDRESS} connections to this address are in use; \
                         none was released within {} ms",
                        connect.as_millis()
                    )
                } else {
                    format!("timed out connecting after {} ms", connect.as_millis())
                }))
            }
            Ok(Err(e)) => Err(OpenError::Connect(chain(&e))),
        };
        match outcome {
            Ok(object) => Ok(PgConnection {
                client: Some(object),
                session: Session::default(),
                timeouts: self.inner.timeouts,
                timed_out: false,
            }),
            Err(e) => {
                // A pool that never connected costs nothing to rebuild; a later `open` starts
                // clean rather than finding an entry for an address that does not answer.
                if pool.status().size == 0 {
                    self.pools().remove(address);
                }
                Err(e)
            }
        }
    }
}

/// Checks every host (and `hostaddr`) of a connection string against the allow-list the way
/// Spin does: as `postgres://host:port`, the port defaulting to 5432.
pub fn address_allowed(allowed: &AllowedHosts, address: &str) -> Result<(), Denied> {
    let config: tokio_postgres::Config = address
        .parse()
        .map_err(|e: tokio_postgres::Error| Denied::Unparsable(chain(&e)))?;
    let ports = config.get_ports();
    // As tokio-postgres connects: one port for every host, or one per host.
    let port_for = |i: usize| {
        if ports.len() == 1 {
            ports.first().copied()
        } else {
            ports.get(i).copied()
        }
    };
    let check = |host: &str, port: Option<u16>| {
        if allowed.allows_url("postgres", host, port) {
            Ok(())
        } else {
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            Err(Denied::NotAllowed(format!("postgres://{host}{port}")))
        }
    };
    let hosts = config.get_hosts();
    let hostaddrs = config.get_hostaddrs();
    if hosts.is_empty() && hostaddrs.is_empty() {
        return Err(Denied::NoHost);
    }
    for (i, host) in hosts.iter().enumerate() {
        match host {
            Host::Tcp(name) => check(name, port_for(i))?,
            #[cfg(unix)]
            Host::Unix(_) => return Err(Denied::UnixSocket),
        }
    }
    for (i, ip) in hostaddrs.iter().enumerate() {
        check(&ip.to_string(), port_for(i))?;
    }
    Ok(())
}

/// Why an address was refused before connecting. The text is the guest's `connection-failed`
/// message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Not a connection string tokio-postgres understands.
    #[error("{0}")]
    Unparsable(String),
    /// A Unix socket path, which no `allowed_outbound_hosts` entry can name.
    #[error("Unix sockets are not supported")]
    UnixSocket,
    /// Neither `host` nor `hostaddr`.
    #[error("the connection string names no host")]
    NoHost,
    /// Not covered by `allowed_outbound_hosts`; holds `postgres://host[:port]` (no credentials).
    #[error("address {0} is not permitted")]
    NotAllowed(String),
}

/// What the guest's statements may have left on their session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Session {
    /// Inside a transaction block, possibly a failed one.
    in_transaction: bool,
    /// Ran something that must not reach another guest and that the reset does not undo.
    unpoolable: bool,
}

/// How a statement moves the session, judged from its leading keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Begin,
    End,
    /// A statement that ends a transaction and starts the next (`COMMIT AND CHAIN`), or a
    /// savepoint rollback: the session stays in a transaction.
    Stay,
    Unpoolable,
    None,
}

/// The first `n` words of `statement`, upper-cased, skipping comments and opening parentheses.
fn leading_words(statement: &str, n: usize) -> Vec<String> {
    let bytes = statement.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < bytes.len() && words.len() < n {
        let b = bytes[i];
        if b.is_ascii_whitespace() || b == b'(' {
            i += 1;
        } else if bytes[i..].starts_with(b"--") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            // PostgreSQL block comments nest.
            let mut depth = 0usize;
            while i < bytes.len() {
                if bytes[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if bytes[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            words.push(statement[start..i].to_ascii_uppercase());
        } else {
            // Anything else (a quoted name, `;`, a literal) ends the statement's keywords.
            break;
        }
    }
    words
}

fn effect(statement: &str) -> Effect {
    let words = leading_words(statement, 8);
    let word = |i: usize| words.get(i).map(String::as_str);
    let chained = words.windows(2).any(|w| w[0] == "AND" && w[1] == "CHAIN");
    match word(0) {
        Some("BEGIN" | "START") => Effect::Begin,
        Some("COMMIT" | "END" | "ROLLBACK" | "ABORT") => {
            if word(1) == Some("PREPARED") {
                // Finishes a prepared transaction; runs outside any transaction block.
                Effect::None
            } else if words.iter().any(|w| w == "TO") || chained {
                Effect::Stay
            } else {
                Effect::End
            }
        }
        // Dissociates the transaction from the session, which is then outside one.
        Some("PREPARE") if word(1) == Some("TRANSACTION") => Effect::End,
        Some("PREPARE" | "DEALLOCATE" | "DISCARD") => Effect::Unpoolable,
        _ => Effect::None,
    }
}

impl Session {
    fn observe(&mut self, statement: &str, succeeded: bool) {
        match effect(statement) {
            Effect::Unpoolable => self.unpoolable = true,
            // A failed statement leaves a transaction (aborted) as it was; the guest must still
            // end it, and a failed COMMIT is judged conservatively.
            _ if !succeeded => {}
            Effect::Begin | Effect::Stay => self.in_transaction = true,
            Effect::End => self.in_transaction = false,
            Effect::None => {}
        }
    }

    fn poolable(self) -> bool {
        !self.in_transaction && !self.unpoolable
    }
}

/// A guest's `connection` resource: one pooled connection for its whole life.
pub struct PgConnection {
    client: Option<Object>,
    session: Session,
    timeouts: PgTimeouts,
    /// A statement timed out and its connection was closed.
    timed_out: bool,
}

impl std::fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnection")
            .field("open", &self.client.is_some())
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// Closes a connection for good instead of pooling it: the server rolls back whatever it was in.
fn discard(object: Object) {
    drop(Object::take(object));
}

/// Asks the server, on a connection of its own, to cancel what `token`'s connection runs.
fn cancel_in_background(token: CancelToken, timeout: Duration) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            match tokio::time::timeout(timeout, token.cancel_query(NoTls)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(
                        tag = "outbound",
                        protocol = "postgres",
                        error = %chain(&e),
                        "cancel failed"
                    );
                }
                Err(_) => {
                    tracing::debug!(tag = "outbound", protocol = "postgres", "cancel timed out");
                }
            }
        });
    }
}

/// The connection while a statement runs on it. If the call is abandoned (the instance is torn
/// down mid-statement) the statement is cancelled and the connection closed rather than pooled.
struct InFlight {
    object: Option<Object>,
    cancel: CancelToken,
    connect_timeout: Duration,
}

impl InFlight {
    fn new(object: Object, connect_timeout: Duration) -> Self {
        let cancel = object.cancel_token();
        Self {
            object: Some(object),
            cancel,
            connect_timeout,
        }
    }

    fn client(&self) -> Option<&tokio_postgres::Client> {
        self.object.as_deref().map(|wrapper| &**wrapper)
    }

    /// The statement finished: the connection is the guest's again.
    fn finish(mut self) -> Option<Object> {
        self.object.take()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            cancel_in_background(self.cancel.clone(), self.connect_timeout);
            discard(object);
        }
    }
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        // Reached with a connection only when the guest never dropped its handle; `release`
        // (the guest's drop) has taken it otherwise. Closing is always safe.
        if let Some(object) = self.client.take() {
            discard(object);
        }
    }
}

impl PgConnection {
    /// Takes the connection for one statement.
    fn begin(&mut self) -> Result<InFlight, wit::Error> {
        match self.client.take() {
            Some(object) => Ok(InFlight::new(object, self.timeouts.connect)),
            // Only a timeout takes the connection away for good.
            None => Err(wit::Error::ConnectionFailed(
                "connection closed after a query timed out".into(),
            )),
        }
    }

    /// Settles a statement's outcome: gives the connection back, or records its loss.
    fn end<T>(
        &mut self,
        statement: &str,
        flight: InFlight,
        outcome: Result<Result<T, wit::Error>, tokio::time::error::Elapsed>,
    ) -> Result<T, wit::Error> {
        match outcome {
            Ok(result) => {
                self.client = flight.finish();
                self.session.observe(statement, result.is_ok());
                result
            }
            Err(_) => {
                // Dropping the flight cancels the statement and closes the connection.
                drop(flight);
                self.timed_out = true;
                Err(wit::Error::QueryFailed(wit::QueryError::Text(format!(
                    "query timed out after {} ms and was cancelled",
                    self.timeouts.query.as_millis()
                ))))
            }
        }
    }

    /// Runs a statement for `execute`: the number of rows it affected.
    pub async fn execute(
        &mut self,
        statement: &str,
        params: Vec<wit::ParameterValue>,
    ) -> Result<u64, wit::Error> {
        let params = to_sql_parameters(params, wit::Error::ValueConversionFailed)?;
        let flight = self.begin()?;
        let outcome = {
            let client = flight.client();
            tokio::time::timeout(self.timeouts.query, async {
                let client = client.ok_or_else(lost_connection)?;
                client
                    .execute_raw(statement, params.iter().map(|p| p.as_ref() as &dyn ToSql))
                    .await
                    .map_err(|e| query_failed(&e))
            })
            .await
        };
        self.end(statement, flight, outcome)
    }

    /// Runs a statement for `query`: its columns and rows.
    pub async fn query(
        &mut self,
        statement: &str,
        params: Vec<wit::ParameterValue>,
    ) -> Result<wit::RowSet, wit::Error> {
        let params = to_sql_parameters(params, wit::Error::BadParameter)?;
        let flight = self.begin()?;
        let outcome = {
            let client = flight.client();
            tokio::time::timeout(self.timeouts.query, async {
                let client = client.ok_or_else(lost_connection)?;
                run_query(client, statement, &params).await
            })
            .await
        };
        self.end(statement, flight, outcome)
    }

    /// The guest dropped its handle: pool the connection if nothing of the guest's session can
    /// reach the next user, close it otherwise.
    pub async fn release(mut self) {
        let Some(object) = self.client.take() else {
            return;
        };
        let timeout = self.timeouts.query;
        if !self.session.poolable() {
            if self.session.in_transaction {
                // Closing alone would roll back too, but only once the server notices; an
                // explicit ROLLBACK frees the locks before the guest's next call.
                let _ = tokio::time::timeout(timeout, object.batch_execute("ROLLBACK")).await;
            }
            discard(object);
            return;
        }
        match tokio::time::timeout(timeout, object.simple_query(RELEASE_SQL)).await {
            Ok(Ok(messages)) if outside_transaction(&messages) => drop(object),
            _ => discard(object),
        }
    }
}

/// Whether `RELEASE_SQL`'s first answer says no transaction block was open.
fn outside_transaction(messages: &[tokio_postgres::SimpleQueryMessage]) -> bool {
    messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0) == Some("t")),
        _ => None,
    }) == Some(true)
}

fn lost_connection() -> wit::Error {
    wit::Error::ConnectionFailed("connection lost".into())
}

async fn run_query(
    client: &tokio_postgres::Client,
    statement: &str,
    params: &[Box<dyn ToSql + Send + Sync>],
) -> Result<wit::RowSet, wit::Error> {
    use futures_util::StreamExt;
    let prepared = client
        .prepare(statement)
        .await
        .map_err(|e| query_failed(&e))?;
    let columns = prepared
        .columns()
        .iter()
        .map(|c| wit::Column {
            name: c.name().to_string(),
            data_type: data_type(c.type_()),
        })
        .collect();
    let stream = client
        .query_raw(&prepared, params.iter().map(|p| p.as_ref() as &dyn ToSql))
        .await
        .map_err(|e| query_failed(&e))?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    let mut size = 0usize;
    while let Some(row) = stream.next().await {
        let row = row.map_err(|e| query_failed(&e))?;
        let values = convert_row(&row)
            .map_err(|e| wit::Error::QueryFailed(wit::QueryError::Text(format!("{e:?}"))))?;
        size += values.iter().map(value_size).sum::<usize>();
        if size > MAX_RESULT_BYTES {
            // Dropping the stream discards the rest; the connection stays usable.
            return Err(wit::Error::QueryFailed(wit::QueryError::Text(format!(
                "query result exceeds limit of {MAX_RESULT_BYTES} bytes"
            ))));
        }
        rows.push(values);
    }
    Ok(wit::RowSet { columns, rows })
}

/// Spin's `query-failed`: the server's structured error when there is one; `as-text` and the
/// `text` form are the error's `Debug` text, as in Spin.
fn query_failed(e: &tokio_postgres::Error) -> wit::Error {
    let as_text = format!("{e:?}");
    wit::Error::QueryFailed(match e.as_db_error() {
        None => wit::QueryError::Text(as_text),
        Some(db) => {
            let mut extras = Vec::new();
            let mut extra = |name: &str, value: Option<String>| {
                if let Some(value) = value {
                    extras.push((name.to_string(), value));
                }
            };
            // Spin's order and names.
            extra("column", db.column().map(str::to_string));
            extra("constraint", db.constraint().map(str::to_string));
            extra("routine", db.routine().map(str::to_string));
            extra("hint", db.hint().map(str::to_string));
            extra("table", db.table().map(str::to_string));
            extra("datatype", db.datatype().map(str::to_string));
            extra("schema", db.schema().map(str::to_string));
            extra("file", db.file().map(str::to_string));
            extra("line", db.line().map(|l| l.to_string()));
            extra("where_", db.where_().map(str::to_string));
            wit::QueryError::DbError(wit::DbError {
                as_text,
                severity: db.severity().to_string(),
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                extras,
            })
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Values: WIT ↔ PostgreSQL binary formats.

type BoxError = Box<dyn StdError + Sync + Send>;

/// OIDs of the built-in types whose binary format is encoded here.
const NUMERIC_OID: u32 = 1700;
const INTERVAL_OID: u32 = 1186;
const INT4RANGE_OID: u32 = 3904;
const NUMRANGE_OID: u32 = 3906;
const INT8RANGE_OID: u32 = 3926;

/// A parameter already in its binary format, accepted for the type with OID `OID` only.
#[derive(Debug)]
struct Encoded<const OID: u32>(Vec<u8>);

impl<const OID: u32> ToSql for Encoded<OID> {
    fn to_sql(&self, _: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        ty.oid() == OID
    }

    to_sql_checked!();
}

/// `db-null`: NULL for whatever type the server expects.
#[derive(Debug)]
struct PgNull;

impl ToSql for PgNull {
    fn to_sql(&self, _: &Type, _: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        Ok(IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn date_param((y, m, d): (i32, u8, u8)) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::from_ymd_opt(y, m.into(), d.into())
        .ok_or_else(|| format!("invalid date y={y}, m={m}, d={d}"))
}

fn time_param((h, min, s, ns): (u8, u8, u8, u32)) -> Result<chrono::NaiveTime, String> {
    chrono::NaiveTime::from_hms_nano_opt(h.into(), min.into(), s.into(), ns)
        .ok_or_else(|| format!("invalid time {h}:{min}:{s}.{ns:09}"))
}

fn datetime_param(
    (y, mo, d, h, mi, s, ns): (i32, u8, u8, u8, u8, u8, u32),
) -> Result<chrono::NaiveDateTime, String> {
    Ok(chrono::NaiveDateTime::new(
        date_param((y, mo, d))?,
        time_param((h, mi, s, ns))?,
    ))
}

/// PostgreSQL's range flags (`rangetypes.h`).
const RANGE_EMPTY: u8 = 0x01;
const RANGE_LB_INC: u8 = 0x02;
const RANGE_UB_INC: u8 = 0x04;
const RANGE_LB_INF: u8 = 0x08;
const RANGE_UB_INF: u8 = 0x10;

type WitBound<T> = Option<(T, wit::RangeBoundKind)>;

fn encode_range<T>(
    (lower, upper): (WitBound<T>, WitBound<T>),
    encode: impl Fn(T) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let mut flags = 0u8;
    let mut body = Vec::new();
    for (bound, infinite, inclusive) in [
        (lower, RANGE_LB_INF, RANGE_LB_INC),
        (upper, RANGE_UB_INF, RANGE_UB_INC),
    ] {
        match bound {
            None => flags |= infinite,
            Some((value, kind)) => {
                if matches!(kind, wit::RangeBoundKind::Inclusive) {
                    flags |= inclusive;
                }
                let bytes = encode(value)?;
                let len = i32::try_from(bytes.len()).map_err(|_| "range bound too large")?;
                body.extend_from_slice(&len.to_be_bytes());
                body.extend_from_slice(&bytes);
            }
        }
    }
    let mut out = vec![flags];
    out.extend_from_slice(&body);
    Ok(out)
}

fn to_sql_parameter(value: wit::ParameterValue) -> Result<Box<dyn ToSql + Send + Sync>, String> {
    use wit::ParameterValue as P;
    Ok(match value {
        P::Boolean(v) => Box::new(v),
        P::Int8(v) => Box::new(v),
        P::Int16(v) => Box::new(v),
        P::Int32(v) => Box::new(v),
        P::Int64(v) => Box::new(v),
        P::Floating32(v) => Box::new(v),
        P::Floating64(v) => Box::new(v),
        P::Str(v) => Box::new(v),
        P::Binary(v) => Box::new(v),
        P::Date(v) => Box::new(date_param(v)?),
        P::Time(v) => Box::new(time_param(v)?),
        P::Datetime(v) => Box::new(datetime_param(v)?),
        P::Timestamp(v) => Box::new(
            chrono::DateTime::<chrono::Utc>::from_timestamp(v, 0)
                .ok_or_else(|| format!("invalid epoch timestamp {v}"))?,
        ),
        P::Uuid(v) => {
            Box::new(uuid::Uuid::parse_str(&v).map_err(|e| format!("invalid UUID {v}: {e}"))?)
        }
        P::Jsonb(v) => Box::new(
            serde_json::from_slice::<serde_json::Value>(&v)
                .map_err(|e| format!("invalid JSON {}: {e}", String::from_utf8_lossy(&v)))?,
        ),
        P::Decimal(v) => Box::new(Encoded::<NUMERIC_OID>(numeric_from_str(&v)?)),
        P::RangeInt32(v) => Box::new(Encoded::<INT4RANGE_OID>(encode_range(v, |b: i32| {
            Ok(b.to_be_bytes().to_vec())
        })?)),
        P::RangeInt64(v) => Box::new(Encoded::<INT8RANGE_OID>(encode_range(v, |b: i64| {
            Ok(b.to_be_bytes().to_vec())
        })?)),
        P::RangeDecimal(v) => Box::new(Encoded::<NUMRANGE_OID>(encode_range(v, |b: String| {
            numeric_from_str(&b)
        })?)),
        P::ArrayInt32(v) => Box::new(v),
        P::ArrayInt64(v) => Box::new(v),
        P::ArrayDecimal(v) => Box::new(
            v.into_iter()
                .map(|d| {
                    d.map(|d| numeric_from_str(&d).map(Encoded::<NUMERIC_OID>))
                        .transpose()
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        P::ArrayStr(v) => Box::new(v),
        P::Interval(v) => {
            let mut bytes = Vec::with_capacity(16);
            bytes.extend_from_slice(&v.micros.to_be_bytes());
            bytes.extend_from_slice(&v.days.to_be_bytes());
            bytes.extend_from_slice(&v.months.to_be_bytes());
            Box::new(Encoded::<INTERVAL_OID>(bytes))
        }
        P::DbNull => Box::new(PgNull),
    })
}

/// Converts every parameter, or fails with `failed(message)`: Spin 4.0.2 reports a value it
/// cannot convert as `bad-parameter` from `query` and `value-conversion-failed` from `execute`.
fn to_sql_parameters(
    params: Vec<wit::ParameterValue>,
    failed: fn(String) -> wit::Error,
) -> Result<Vec<Box<dyn ToSql + Send + Sync>>, wit::Error> {
    params
        .into_iter()
        .map(|p| to_sql_parameter(p).map_err(failed))
        .collect()
}

/// PostgreSQL `NUMERIC` sign words.
const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
/// PostgreSQL's `NUMERIC_DSCALE_MAX`.
const NUMERIC_DSCALE_MAX: usize = 0x3FFF;

fn numeric_header(ndigits: i16, weight: i16, sign: u16, dscale: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 2 * ndigits.max(0) as usize);
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    out
}

/// The binary `NUMERIC` for a base-10 string (`-12.50`, `.5`, `NaN`, `Infinity`); the scale is
/// the number of digits after the point, as when PostgreSQL parses the same text.
fn numeric_from_str(text: &str) -> Result<Vec<u8>, String> {
    let invalid = || format!("invalid decimal {text}");
    let trimmed = text.trim();
    match trimmed.to_ascii_lowercase().as_str() {
        "nan" => return Ok(numeric_header(0, 0, NUMERIC_NAN, 0)),
        "infinity" | "+infinity" | "inf" | "+inf" => {
            return Ok(numeric_header(0, 0, NUMERIC_PINF, 0));
        }
        "-infinity" | "-inf" => return Ok(numeric_header(0, 0, NUMERIC_NINF, 0)),
        _ => {}
    }
    let (negative, unsigned) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits_only(int) || !digits_only(frac) {
        return Err(invalid());
    }
    if frac.len() > NUMERIC_DSCALE_MAX {
        return Err(format!(
            "decimal {text} has too many digits after the point"
        ));
    }
    let int = int.trim_start_matches('0');
    // Base-10000 groups, aligned on the decimal point.
    let int_padded = format!("{}{int}", "0".repeat((4 - int.len() % 4) % 4));
    let frac_padded = format!("{frac}{}", "0".repeat((4 - frac.len() % 4) % 4));
    let mut groups: Vec<i16> = int_padded
        .as_bytes()
        .chunks(4)
        .chain(frac_padded.as_bytes().chunks(4))
        .map(|chunk| {
            chunk
                .iter()
                .fold(0i16, |acc, b| acc * 10 + i16::from(b - b'0'))
        })
        .collect();
    let mut weight = (int_padded.len() / 4) as i64 - 1;
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= leading as i64;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let sign = if negative && !groups.is_empty() {
        NUMERIC_NEG
    } else {
        NUMERIC_POS
    };
    if groups.is_empty() {
        weight = 0;
    }
    let too_large = || format!("decimal {text} is out of range");
    let ndigits = i16::try_from(groups.len()).map_err(|_| too_large())?;
    let weight = i16::try_from(weight).map_err(|_| too_large())?;
    // Bounded by NUMERIC_DSCALE_MAX above.
    let mut out = numeric_header(ndigits, weight, sign, frac.len() as u16);
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}

/// The exact text of a binary `NUMERIC`, as PostgreSQL prints it.
fn numeric_to_string(raw: &[u8]) -> Result<String, BoxError> {
    use std::fmt::Write;
    let word = |i: usize| -> Result<[u8; 2], BoxError> {
        raw.get(i..i + 2)
            .and_then(|s| <[u8; 2]>::try_from(s).ok())
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = usize::from(u16::from_be_bytes(word(0)?));
    let weight = i64::from(i16::from_be_bytes(word(2)?));
    let sign = u16::from_be_bytes(word(4)?);
    let dscale = usize::from(u16::from_be_bytes(word(6)?));
    if raw.len() != 8 + 2 * ndigits {
        return Err("malformed numeric".into());
    }
    match sign {
        NUMERIC_NAN => return Ok("NaN".into()),
        NUMERIC_PINF => return Ok("Infinity".into()),
        NUMERIC_NINF => return Ok("-Infinity".into()),
        NUMERIC_POS | NUMERIC_NEG => {}
        _ => return Err("malformed numeric sign".into()),
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let d = i16::from_be_bytes(word(8 + 2 * i)?);
        if !(0..10000).contains(&d) {
            return Err("malformed numeric digit".into());
        }
        digits.push(d);
    }
    let digit = |i: i64| {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == NUMERIC_NEG {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            // Writing to a String cannot fail.
            let _ = if i == 0 {
                write!(out, "{}", digit(i))
            } else {
                write!(out, "{:04}", digit(i))
            };
        }
    }
    if dscale > 0 {
        let mut frac = String::with_capacity(dscale + 4);
        let mut i = weight + 1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", digit(i));
            i += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

/// A `NUMERIC` value read as its text.
struct NumericText(String);

impl<'a> FromSql<'a> for NumericText {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        numeric_to_string(raw).map(NumericText)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// An `INTERVAL` as its three fields.
struct IntervalValue(wit::Interval);

impl<'a> FromSql<'a> for IntervalValue {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let (Some(micros), Some(days), Some(months)) = (
            raw.get(0..8).and_then(|b| <[u8; 8]>::try_from(b).ok()),
            raw.get(8..12).and_then(|b| <[u8; 4]>::try_from(b).ok()),
            raw.get(12..16).and_then(|b| <[u8; 4]>::try_from(b).ok()),
        ) else {
            return Err("unexpected binary format for Postgres INTERVAL".into());
        };
        if raw.len() != 16 {
            return Err("unexpected binary format for Postgres INTERVAL".into());
        }
        Ok(IntervalValue(wit::Interval {
            micros: i64::from_be_bytes(micros),
            days: i32::from_be_bytes(days),
            months: i32::from_be_bytes(months),
        }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// A range of `T`; an empty range reads as two absent bounds, as in Spin.
struct RangeValue<T>(WitBound<T>, WitBound<T>);

impl<'a, T: FromSql<'a>> FromSql<'a> for RangeValue<T> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let Kind::Range(element) = ty.kind() else {
            return Err("not a range type".into());
        };
        let (&flags, mut rest) = raw.split_first().ok_or("truncated range")?;
        if flags & RANGE_EMPTY != 0 {
            return Ok(RangeValue(None, None));
        }
        let mut bound = |infinite: u8, inclusive: u8| -> Result<WitBound<T>, BoxError> {
            if flags & infinite != 0 {
                return Ok(None);
            }
            let (len, after) = rest.split_at_checked(4).ok_or("truncated range")?;
            let len = i32::from_be_bytes(<[u8; 4]>::try_from(len)?);
            let len = usize::try_from(len).map_err(|_| "range bound is NULL")?;
            let (value, after) = after.split_at_checked(len).ok_or("truncated range")?;
            rest = after;
            let kind = if flags & inclusive != 0 {
                wit::RangeBoundKind::Inclusive
            } else {
                wit::RangeBoundKind::Exclusive
            };
            Ok(Some((T::from_sql(element, value)?, kind)))
        };
        let lower = bound(RANGE_LB_INF, RANGE_LB_INC)?;
        let upper = bound(RANGE_UB_INF, RANGE_UB_INC)?;
        Ok(RangeValue(lower, upper))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Range(element) if T::accepts(element))
    }
}

/// Any value in its binary format, for types without a WIT mapping.
struct RawValue(Vec<u8>);

impl<'a> FromSql<'a> for RawValue {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(RawValue(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// The WIT column type of a PostgreSQL type.
fn data_type(ty: &Type) -> wit::DbDataType {
    use wit::DbDataType as D;
    match *ty {
        Type::BOOL => D::Boolean,
        Type::BYTEA => D::Binary,
        Type::FLOAT4 => D::Floating32,
        Type::FLOAT8 => D::Floating64,
        Type::INT2 => D::Int16,
        Type::INT4 => D::Int32,
        Type::INT8 => D::Int64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => D::Str,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => D::Datetime,
        Type::DATE => D::Date,
        Type::TIME => D::Time,
        Type::UUID => D::Uuid,
        Type::JSONB => D::Jsonb,
        Type::NUMERIC => D::Decimal,
        Type::INT4_RANGE => D::RangeInt32,
        Type::INT8_RANGE => D::RangeInt64,
        Type::NUM_RANGE => D::RangeDecimal,
        Type::INT4_ARRAY => D::ArrayInt32,
        Type::INT8_ARRAY => D::ArrayInt64,
        Type::NUMERIC_ARRAY => D::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => D::ArrayStr,
        Type::INTERVAL => D::Interval,
        _ => D::Other(ty.name().to_string()),
    }
}

/// Reads column `i` as `T` and maps it, NULL as `db-null`.
fn read<'a, T: FromSql<'a>>(
    row: &'a Row,
    i: usize,
    map: impl FnOnce(T) -> wit::DbValue,
) -> Result<wit::DbValue, tokio_postgres::Error> {
    Ok(row
        .try_get::<_, Option<T>>(i)?
        .map_or(wit::DbValue::DbNull, map))
}

// chrono keeps month, day, hour, minute and second within u8; a leap second's nanoseconds
// (≥ 1e9) pass through as chrono holds them.
fn date_value(d: chrono::NaiveDate) -> (i32, u8, u8) {
    use chrono::Datelike;
    (d.year(), d.month() as u8, d.day() as u8)
}

fn time_value(t: chrono::NaiveTime) -> (u8, u8, u8, u32) {
    use chrono::Timelike;
    (
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.nanosecond(),
    )
}

fn datetime_value(dt: chrono::NaiveDateTime) -> (i32, u8, u8, u8, u8, u8, u32) {
    let (y, mo, d) = date_value(dt.date());
    let (h, mi, s, ns) = time_value(dt.time());
    (y, mo, d, h, mi, s, ns)
}

fn convert_value(row: &Row, i: usize) -> Result<wit::DbValue, tokio_postgres::Error> {
    use wit::DbValue as V;
    let ty = row.columns()[i].type_();
    match *ty {
        Type::BOOL => read(row, i, V::Boolean),
        Type::BYTEA => read(row, i, V::Binary),
        Type::FLOAT4 => read(row, i, V::Floating32),
        Type::FLOAT8 => read(row, i, V::Floating64),
        Type::INT2 => read(row, i, V::Int16),
        Type::INT4 => read(row, i, V::Int32),
        Type::INT8 => read(row, i, V::Int64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => read(row, i, V::Str),
        Type::TIMESTAMP => read(row, i, |v| V::Datetime(datetime_value(v))),
        Type::TIMESTAMPTZ => read(row, i, |v: chrono::DateTime<chrono::Utc>| {
            V::Datetime(datetime_value(v.naive_utc()))
        }),
        Type::DATE => read(row, i, |v| V::Date(date_value(v))),
        Type::TIME => read(row, i, |v| V::Time(time_value(v))),
        Type::UUID => read(row, i, |v: uuid::Uuid| V::Uuid(v.to_string())),
        Type::JSONB => read(row, i, |v: serde_json::Value| {
            // Serialising a parsed Value cannot fail.
            V::Jsonb(serde_json::to_vec(&v).unwrap_or_default())
        }),
        Type::NUMERIC => read(row, i, |v: NumericText| V::Decimal(v.0)),
        Type::INT4_RANGE => read(row, i, |v: RangeValue<i32>| V::RangeInt32((v.0, v.1))),
        Type::INT8_RANGE => read(row, i, |v: RangeValue<i64>| V::RangeInt64((v.0, v.1))),
        Type::NUM_RANGE => read(row, i, |v: RangeValue<NumericText>| {
            let text = |b: WitBound<NumericText>| b.map(|(n, kind)| (n.0, kind));
            V::RangeDecimal((text(v.0), text(v.1)))
        }),
        Type::INT4_ARRAY => read(row, i, V::ArrayInt32),
        Type::INT8_ARRAY => read(row, i, V::ArrayInt64),
        Type::NUMERIC_ARRAY => read(row, i, |v: Vec<Option<NumericText>>| {
            V::ArrayDecimal(v.into_iter().map(|n| n.map(|n| n.0)).collect())
        }),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => read(row, i, V::ArrayStr),
        Type::INTERVAL => read(row, i, |v: IntervalValue| V::Interval(v.0)),
        _ => read(row, i, |v: RawValue| V::Unsupported(v.0)),
    }
}

fn convert_row(row: &Row) -> Result<Vec<wit::DbValue>, tokio_postgres::Error> {
    (0..row.len()).map(|i| convert_value(row, i)).collect()
}

/// Roughly what a value costs the guest, for the result limit.
fn value_size(value: &wit::DbValue) -> usize {
    use wit::DbValue as V;
    let opt_str = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    std::mem::size_of::<wit::DbValue>()
        + match value {
            V::Str(s) | V::Uuid(s) | V::Decimal(s) => s.len(),
            V::Binary(b) | V::Jsonb(b) | V::Unsupported(b) => b.len(),
            V::ArrayInt32(v) => v.len() * std::mem::size_of::<Option<i32>>(),
            V::ArrayInt64(v) => v.len() * std::mem::size_of::<Option<i64>>(),
            V::ArrayDecimal(v) | V::ArrayStr(v) => v
                .iter()
                .map(|s| std::mem::size_of::<Option<String>>() + opt_str(s))
                .sum(),
            V::RangeDecimal((lower, upper)) => {
                lower.as_ref().map_or(0, |b| b.0.len()) + upper.as_ref().map_or(0, |b| b.0.len())
            }
            _ => 0,
        }
}

impl wit::Host for InstanceState {}

impl wit::HostConnection for InstanceState {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<PgConnection>, wit::Error>> {
        if let Err(denied) = address_allowed(&self.outbound.allowed, &address) {
            tracing::warn!(
                tag = "outbound",
                component = %self.outbound.component_id,
                action = "deny",
                protocol = "postgres",
                reason = %denied,
            );
            return Ok(Err(wit::Error::ConnectionFailed(denied.to_string())));
        }
        match self.outbound.client.postgres().open(&address).await {
            Ok(connection) => Ok(Ok(self.table.push(connection)?)),
            Err(e) => {
                tracing::debug!(
                    tag = "outbound",
                    component = %self.outbound.component_id,
                    protocol = "postgres",
                    error = %e,
                    "connect failed"
                );
                Ok(Err(wit::Error::ConnectionFailed(e.to_string())))
            }
        }
    }

    async fn query(
        &mut self,
        r: Resource<PgConnection>,
        statement: String,
        params: Vec<wit::ParameterValue>,
    ) -> wasmtime::Result<Result<wit::RowSet, wit::Error>> {
        let connection = self.table.get_mut(&r)?;
        let was_open = !connection.timed_out;
        let result = connection.query(&statement, params).await;
        if was_open && connection.timed_out {
            self.pg_log_timeout();
        }
        Ok(result)
    }

    async fn execute(
        &mut self,
        r: Resource<PgConnection>,
        statement: String,
        params: Vec<wit::ParameterValue>,
    ) -> wasmtime::Result<Result<u64, wit::Error>> {
        let connection = self.table.get_mut(&r)?;
        let was_open = !connection.timed_out;
        let result = connection.execute(&statement, params).await;
        if was_open && connection.timed_out {
            self.pg_log_timeout();
        }
        Ok(result)
    }

    async fn drop(&mut self, r: Resource<PgConnection>) -> wasmtime::Result<()> {
        let connection = self.table.delete(r)?;
        connection.release().await;
        Ok(())
    }
}

impl InstanceState {
    fn pg_log_timeout(&self) {
        tracing::warn!(
            tag = "outbound",
            component = %self.outbound.component_id,
            protocol = "postgres",
            timeout_ms = self.outbound.client.postgres().timeouts().query.as_millis() as u64,
            "query timed out; cancelled and its connection closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid entries")
    }

    #[test]
    fn every_host_and_hostaddr_is_checked_with_the_default_port() {
        let allowed = hosts(&["postgres://127.0.0.1", "postgres://db.internal:6000"]);
        for ok in [
            "postgres://postgres@127.0.0.1/test",
            "postgres://u:secret@127.0.0.1:5432/test",
            "host=127.0.0.1 user=postgres dbname=test",
            "host=127.0.0.1 port=5432 password=secret",
            "postgres://db.internal:6000,127.0.0.1:5432/x",
            "host=db.internal,db.internal port=6000",
            "host=127.0.0.1 hostaddr=127.0.0.1",
        ] {
            assert_eq!(address_allowed(&allowed, ok), Ok(()), "{ok}");
        }
        let denied = address_allowed(&allowed, "postgres://u:secret@127.0.0.1:5433/test")
            .expect_err("other port");
        assert_eq!(
            denied,
            Denied::NotAllowed("postgres://127.0.0.1:5433".into())
        );
        assert_eq!(
            denied.to_string(),
            "address postgres://127.0.0.1:5433 is not permitted"
        );
        assert!(!denied.to_string().contains("secret"));
        assert_eq!(
            address_allowed(&allowed, "host=localhost"),
            Err(Denied::NotAllowed("postgres://localhost".into()))
        );
        assert_eq!(
            address_allowed(&allowed, "postgres://127.0.0.1:5432,evil.example:5432/x"),
            Err(Denied::NotAllowed("postgres://evil.example:5432".into()))
        );
        // The connection goes to hostaddr, whatever `host` says.
        assert_eq!(
            address_allowed(&allowed, "host=127.0.0.1 hostaddr=10.1.2.3"),
            Err(Denied::NotAllowed("postgres://10.1.2.3".into()))
        );
        assert_eq!(
            address_allowed(&allowed, "host=/var/run/postgresql"),
            Err(Denied::UnixSocket)
        );
        assert_eq!(
            address_allowed(&allowed, "dbname=test"),
            Err(Denied::NoHost)
        );
        assert!(matches!(
            address_allowed(&allowed, "host='unterminated"),
            Err(Denied::Unparsable(_))
        ));
        assert!(matches!(
            address_allowed(&allowed, "mysql://127.0.0.1/x"),
            Err(Denied::Unparsable(_))
        ));
        let v6 = hosts(&["postgres://[::1]"]);
        assert_eq!(address_allowed(&v6, "host=::1"), Ok(()));
        assert_eq!(
            address_allowed(&v6, "host=::1 port=1"),
            Err(Denied::NotAllowed("postgres://[::1]:1".into()))
        );
    }

    #[test]
    fn transaction_state_follows_the_statements() {
        let mut s = Session::default();
        s.observe("SELECT 1", true);
        assert!(s.poolable());
        s.observe("  -- comment\n/* a /* nested */ one */ begin", true);
        assert!(s.in_transaction);
        s.observe("SELECT * FROM t FOR UPDATE", true);
        s.observe("UPDATE t SET x = 1", false);
        assert!(
            s.in_transaction,
            "a failure keeps the (aborted) transaction"
        );
        s.observe("ROLLBACK TO SAVEPOINT a", true);
        assert!(s.in_transaction);
        s.observe("commit", true);
        assert!(s.poolable());
        s.observe("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", true);
        s.observe("COMMIT AND CHAIN", true);
        assert!(s.in_transaction);
        s.observe("COMMIT AND NO CHAIN", true);
        assert!(!s.in_transaction);
        s.observe("BEGIN", true);
        s.observe("COMMIT", false);
        assert!(s.in_transaction, "a failed COMMIT is judged conservatively");
        s.observe("end", true);
        assert!(s.poolable());
        s.observe("BEGIN", true);
        s.observe("PREPARE TRANSACTION 'x'", true);
        assert!(s.poolable());
        s.observe("ABORT", true);
        s.observe("(SELECT 1)", true);
        assert!(s.poolable());
        s.observe("PREPARE q AS SELECT 1", false);
        assert!(!s.poolable(), "a guest's PREPARE never reaches the pool");
        let mut d = Session::default();
        d.observe("DEALLOCATE ALL", true);
        assert!(!d.poolable());
    }

    const PG: &str = "host=127.0.0.1 user=postgres dbname=test";

    async fn backend_pid(c: &PgConnection) -> i32 {
        c.client
            .as_ref()
            .expect("open")
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0)
    }

    #[tokio::test]
    async fn the_server_is_asked_whether_a_transaction_is_open_before_pooling() {
        let pool = PgPool::default();
        let clean = pool.open(PG).await.expect("PostgreSQL at 127.0.0.1:5432");
        let pid = backend_pid(&clean).await;
        clean.release().await;
        let reused = pool.open(PG).await.expect("reopen");
        assert_eq!(
            backend_pid(&reused).await,
            pid,
            "a clean connection is pooled"
        );
        // A transaction the statement tracking cannot see, opened behind its back.
        reused
            .client
            .as_ref()
            .expect("open")
            .batch_execute("BEGIN")
            .await
            .expect("begin");
        assert!(reused.session.poolable());
        reused.release().await;
        let fresh = pool.open(PG).await.expect("reopen");
        assert_ne!(
            backend_pid(&fresh).await,
            pid,
            "the server's answer kept it out of the pool"
        );
        fresh.release().await;
        assert_eq!(pool.pooled_addresses(), 1);
        let refused = pool.open("host=127.0.0.1 port=1 user=postgres").await;
        assert!(matches!(refused, Err(OpenError::Connect(_))), "{refused:?}");
        assert_eq!(
            pool.pooled_addresses(),
            1,
            "a pool that never connected is not kept"
        );
    }

    fn numeric_roundtrip(text: &str) -> String {
        numeric_to_string(&numeric_from_str(text).expect("valid")).expect("decodes")
    }

    #[test]
    fn numeric_text_round_trips_exactly() {
        for (input, output) in [
            ("0", "0"),
            ("-0", "0"),
            ("0.00", "0.00"),
            ("1", "1"),
            ("10000", "10000"),
            ("123.4500", "123.4500"),
            ("-0.5", "-0.5"),
            (".5", "0.5"),
            ("+7.", "7"),
            ("0.0001", "0.0001"),
            ("0.00001", "0.00001"),
            (
                "00012345678901234567890.0123456789",
                "12345678901234567890.0123456789",
            ),
            (
                "99999999999999999999999999999999999999.99999999999999999999",
                "99999999999999999999999999999999999999.99999999999999999999",
            ),
            ("NaN", "NaN"),
            ("-Infinity", "-Infinity"),
        ] {
            assert_eq!(numeric_roundtrip(input), output, "{input}");
        }
        for invalid in ["", ".", "-", "1e5", "1.2.3", "abc", "1 2", "0x10"] {
            assert!(numeric_from_str(invalid).is_err(), "{invalid}");
        }
        // PostgreSQL's own encoding of 12345.678 (weight 1, dscale 3, digits 1 2345 6780).
        let pg = [0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c];
        assert_eq!(numeric_to_string(&pg).expect("decodes"), "12345.678");
        assert_eq!(numeric_from_str("12345.678").expect("valid"), pg);
        assert!(numeric_to_string(&pg[..10]).is_err());
    }

    #[test]
    fn ranges_encode_their_bounds_and_flags() {
        let inc = wit::RangeBoundKind::Inclusive;
        let exc = wit::RangeBoundKind::Exclusive;
        let encoded = encode_range((Some((1i32, inc)), Some((5, exc))), |b| {
            Ok(b.to_be_bytes().to_vec())
        })
        .expect("encodes");
        assert_eq!(
            encoded,
            [0x02, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 5]
        );
        let unbounded =
            encode_range::<i32>((None, None), |b| Ok(b.to_be_bytes().to_vec())).expect("encodes");
        assert_eq!(unbounded, [RANGE_LB_INF | RANGE_UB_INF]);
        let decoded = RangeValue::<i32>::from_sql(&Type::INT4_RANGE, &encoded).expect("decodes");
        assert_eq!((decoded.0, decoded.1), (Some((1, inc)), Some((5, exc))));
        let empty = RangeValue::<i32>::from_sql(&Type::INT4_RANGE, &[RANGE_EMPTY]).expect("empty");
        assert_eq!((empty.0, empty.1), (None, None));
        assert!(RangeValue::<i32>::from_sql(&Type::INT4_RANGE, &encoded[..6]).is_err());
    }

    #[test]
    fn parameters_that_cannot_be_converted_fail_before_reaching_the_server() {
        use wit::ParameterValue as P;
        for p in [
            P::Date((2023, 2, 29)),
            P::Time((24, 0, 0, 0)),
            P::Datetime((2024, 13, 1, 0, 0, 0, 0)),
            P::Uuid("not-a-uuid".into()),
            P::Jsonb(b"{not json".to_vec()),
            P::Decimal("1.2.3".into()),
            P::ArrayDecimal(vec![Some("1".into()), Some("x".into())]),
            P::RangeDecimal((Some(("a".into(), wit::RangeBoundKind::Inclusive)), None)),
            P::Timestamp(i64::MAX),
        ] {
            let debug = format!("{p:?}");
            assert!(
                matches!(
                    to_sql_parameters(vec![p], wit::Error::BadParameter),
                    Err(wit::Error::BadParameter(_))
                ),
                "{debug}"
            );
        }
        let fine = vec![P::DbNull, P::Int32(1), P::Str("x".into())];
        assert!(to_sql_parameters(fine, wit::Error::BadParameter).is_ok());
    }
}
