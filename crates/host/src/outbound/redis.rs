//! Outbound Redis for guests: `fermyon:spin/redis@2.0.0`, the interface spin-sdk 5.2's
//! `spin_sdk::redis` imports, with the semantics of Spin's `factor-outbound-redis`.
//!
//! `connection.open(address)` checks the address, as a URL of its own scheme, against the
//! component's `allowed_outbound_hosts` (`redis://host` means port 6379; `rediss://` has no
//! default port, so a URL without one needs a `:*` entry); a denied or unparsable address is
//! `invalid-address`, a failed connection `other(message)`. Results of `execute` are flattened
//! (an array becomes its elements, so a Lua script returning `{1, false}` gives `[int64(1), nil]`)
//! and an error reply is `other(text)`; results over 128 MiB are refused as in Spin.
//!
//! Spin opens a new multiplexed connection per `open`, a TCP (and TLS) handshake per request.
//! Here one reconnecting multiplexed connection per address is shared by every instance, so
//! `open` costs a table insert. A shared connection must not carry per-connection state, so the
//! commands that set some or hold the connection (transactions, `SELECT`, `CLIENT`, blocking pops,
//! pub/sub, `QUIT` …, see [`CONNECTION_BOUND`]) move the guest's connection, from that command on,
//! to a connection of its own, which is what that guest would have had on Spin anyway. Those
//! dedicated connections are capped host-wide; past the cap `execute` returns
//! `too-many-connections`.
//!
//! Nothing may hang a request: connecting is bounded by [`CONNECT_TIMEOUT`] and every command by
//! [`COMMAND_TIMEOUT`] (so a blocking pop longer than that fails, unlike on Spin); a dedicated
//! connection whose command timed out is closed and the guest's connection is unusable after it.
//! A shared connection that the server closed fails the command that finds it closed and then
//! reconnects; one on which a command timed out (a slow script, or a server gone without closing
//! the socket) leaves the pool, so later opens connect afresh.
//!
//! Divergences from Spin 4.0.2: `sadd` on a key of another type is `type-error` as the WIT
//! documents (Spin's check never matches Redis's `WRONGTYPE` reply and returns `other`); Unix
//! socket addresses (`unix://`, `redis+unix://`) are `invalid-address`, since no
//! `allowed_outbound_hosts` entry can name a socket path; `rediss://` is refused with `other`
//! because this build of the `redis` crate has no TLS.

use crate::bindings::spin::fermyon::spin::redis as wit;
use crate::outbound::AllowedHosts;
use crate::state::InstanceState;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, ConnectionAddr, FromRedisValue, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Resource;

/// How long `open` may take to connect (and authenticate) before it fails with `other`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command may take before it fails with `other`.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Addresses whose shared connection is kept; others get a connection per `open`.
const MAX_POOLED_ADDRESSES: usize = 64;
/// Dedicated connections alive at once, host-wide.
const MAX_DEDICATED_CONNECTIONS: usize = 256;
/// Spin's `MAX_HOST_BUFFERED_BYTES`.
const MAX_RESULT_BYTES: usize = 128 * 1024 * 1024;

/// Commands that leave state on their connection or hold it (blocking, subscribing, closing);
/// a guest connection that sends one gets a connection of its own from then on.
pub const CONNECTION_BOUND: &[&str] = &[
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    "SELECT",
    "AUTH",
    "HELLO",
    "RESET",
    "QUIT",
    "CLIENT",
    "READONLY",
    "READWRITE",
    "ASKING",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    "MONITOR",
    "SYNC",
    "PSYNC",
    "REPLCONF",
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BLMOVE",
    "BLMPOP",
    "BZPOPMIN",
    "BZPOPMAX",
    "BZMPOP",
    "XREAD",
    "XREADGROUP",
    "WAIT",
    "WAITAOF",
];

fn is_connection_bound(command: &str) -> bool {
    CONNECTION_BOUND
        .iter()
        .any(|c| c.eq_ignore_ascii_case(command.trim()))
}

/// Connect and command time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisTimeouts {
    /// See [`CONNECT_TIMEOUT`].
    pub connect: Duration,
    /// See [`COMMAND_TIMEOUT`].
    pub command: Duration,
}

impl Default for RedisTimeouts {
    fn default() -> Self {
        Self {
            connect: CONNECT_TIMEOUT,
            command: COMMAND_TIMEOUT,
        }
    }
}

/// The host-wide connections, keyed by the address string the guest passed (credentials and
/// database included, so two URLs differing in either never share a connection). Cheap to clone.
#[derive(Clone)]
pub struct RedisPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    timeouts: RedisTimeouts,
    shared: Mutex<HashMap<String, Arc<OnceCell<ConnectionManager>>>>,
    dedicated: Arc<Semaphore>,
}

impl std::fmt::Debug for RedisPool {
    // Keys may hold passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("timeouts", &self.inner.timeouts)
            .finish_non_exhaustive()
    }
}

impl Default for RedisPool {
    fn default() -> Self {
        Self::new(RedisTimeouts::default())
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The address is not a Redis URL the host can connect to.
    #[error("invalid redis address")]
    InvalidAddress,
    /// Connecting failed or timed out.
    #[error("{0}")]
    Connect(String),
}

impl RedisPool {
    /// An empty pool.
    pub fn new(timeouts: RedisTimeouts) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                timeouts,
                shared: Mutex::new(HashMap::new()),
                dedicated: Arc::new(Semaphore::new(MAX_DEDICATED_CONNECTIONS)),
            }),
        }
    }

    fn shared_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OnceCell<ConnectionManager>>>> {
        // The map stays consistent whatever panicked while it was held.
        self.inner
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A guest connection to `address` on the shared connection, connecting it first if needed.
    /// The caller has checked the address against the allow-list.
    pub async fn open(&self, address: &str) -> Result<RedisConnection, OpenError> {
        let client = redis::Client::open(address).map_err(|_| OpenError::InvalidAddress)?;
        match client.get_connection_info().addr {
            ConnectionAddr::Tcp(..) => {}
            ConnectionAddr::TcpTls { .. } => {
                return Err(OpenError::Connect(
                    "rediss:// (TLS) is not supported by this host".into(),
                ));
            }
            ConnectionAddr::Unix(_) => return Err(OpenError::InvalidAddress),
        }
        let cell = {
            let mut map = self.shared_map();
            match map.get(address) {
                Some(cell) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    if map.len() < MAX_POOLED_ADDRESSES {
                        map.insert(address.to_string(), cell.clone());
                    }
                    cell
                }
            }
        };
        let timeouts = self.inner.timeouts;
        let connect = cell.get_or_try_init(|| {
            // One attempt per (re)connect: the next command retries, and `open` stays within
            // its timeout. Commands are timed by `Target::run`, which knows what a timeout
            // leaves behind.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(timeouts.connect)
                .set_number_of_retries(0);
            ConnectionManager::new_with_config(client.clone(), config)
        });
        let outcome = match tokio::time::timeout(timeouts.connect, connect).await {
            Ok(Ok(manager)) => Ok(manager.clone()),
            Ok(Err(e)) => Err(OpenError::Connect(e.to_string())),
            Err(_) => Err(OpenError::Connect(format!(
                "timed out connecting after {} ms",
                timeouts.connect.as_millis()
            ))),
        };
        match outcome {
            Ok(shared) => Ok(RedisConnection {
                client,
                shared,
                pooled: (Arc::from(address), cell),
                dedicated: Dedicated::None,
                pool: self.clone(),
            }),
            Err(e) => {
                // A later `open` must try again rather than find a cell that never fills.
                self.forget(address, &cell, false);
                Err(e)
            }
        }
    }

    /// Removes `address`'s entry if it is still `cell` (and, unless `connected`, still empty).
    fn forget(&self, address: &str, cell: &Arc<OnceCell<ConnectionManager>>, connected: bool) {
        let mut map = self.shared_map();
        if map
            .get(address)
            .is_some_and(|c| Arc::ptr_eq(c, cell) && (connected || !c.initialized()))
        {
            map.remove(address);
        }
    }

    #[cfg(test)]
    fn pooled(&self) -> usize {
        self.shared_map().len()
    }
}

enum Dedicated {
    None,
    Open {
        connection: MultiplexedConnection,
        _permit: OwnedSemaphorePermit,
    },
    /// A command timed out on it; what the server still does with the connection is unknown.
    Closed,
}

/// A guest's `connection` resource.
pub struct RedisConnection {
    client: redis::Client,
    shared: ConnectionManager,
    /// The pool entry `shared` came from.
    pooled: (Arc<str>, Arc<OnceCell<ConnectionManager>>),
    dedicated: Dedicated,
    pool: RedisPool,
}

impl std::fmt::Debug for RedisConnection {
    // The client's connection info holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field(
                "dedicated",
                &matches!(self.dedicated, Dedicated::Open { .. }),
            )
            .finish_non_exhaustive()
    }
}

/// The connection one command runs on.
enum Target {
    Shared(ConnectionManager),
    Dedicated(MultiplexedConnection),
}

impl RedisConnection {
    /// Settles what a command that timed out on `target` leaves behind.
    fn timed_out(&mut self, target: &Target) {
        match target {
            // Drops the socket, which also ends whatever the server still runs for it.
            Target::Dedicated(_) => self.dedicated = Dedicated::Closed,
            // A slow script, or a server gone without closing the socket, which the shared
            // connection would not notice for minutes: later opens connect afresh either way.
            Target::Shared(_) => {
                let (address, cell) = &self.pooled;
                self.pool.forget(address, cell, true);
            }
        }
    }

    fn target(&self) -> Result<Target, wit::Error> {
        match &self.dedicated {
            Dedicated::None => Ok(Target::Shared(self.shared.clone())),
            Dedicated::Open { connection, .. } => Ok(Target::Dedicated(connection.clone())),
            Dedicated::Closed => Err(wit::Error::Other(
                "connection closed after a command timed out".into(),
            )),
        }
    }
}

impl Target {
    async fn run<T: FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
        timeout: Duration,
    ) -> Result<redis::RedisResult<T>, Elapsed> {
        let run = async {
            match self {
                Target::Shared(c) => cmd.query_async(c).await,
                Target::Dedicated(c) => cmd.query_async(c).await,
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| Elapsed)
    }
}

struct Elapsed;

/// Checks `address` against the allow-list the way Spin does: as a URL of its own scheme, the
/// port defaulting by scheme.
pub fn address_allowed(allowed: &AllowedHosts, address: &str) -> Result<(), Denied> {
    let url = url::Url::parse(address).map_err(|_| Denied::Unparsable)?;
    let host = url.host_str().ok_or(Denied::Unparsable)?;
    if allowed.allows_url(url.scheme(), host, url.port()) {
        Ok(())
    } else {
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        Err(Denied::NotAllowed(format!(
            "{}://{host}{port}",
            url.scheme()
        )))
    }
}

/// Why an address was refused before connecting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Not a URL with a host.
    #[error("unparsable redis address")]
    Unparsable,
    /// Not covered by `allowed_outbound_hosts`; holds `scheme://host[:port]` (no credentials).
    #[error("{0} is not in allowed_outbound_hosts")]
    NotAllowed(String),
}

fn other(e: impl std::fmt::Display) -> wit::Error {
    wit::Error::Other(e.to_string())
}

fn too_large() -> wit::Error {
    wit::Error::Other(format!(
        "query result exceeds limit of {MAX_RESULT_BYTES} bytes"
    ))
}

/// Appends `value` to `out`, an array as its elements (recursively), as Spin does.
fn flatten(value: Value, out: &mut Vec<wit::RedisResult>) -> Result<(), wit::Error> {
    match value {
        Value::Nil => out.push(wit::RedisResult::Nil),
        Value::Int(v) => out.push(wit::RedisResult::Int64(v)),
        Value::BulkString(bytes) => out.push(wit::RedisResult::Binary(bytes)),
        Value::SimpleString(s) => out.push(wit::RedisResult::Status(s)),
        Value::Okay => out.push(wit::RedisResult::Status("OK".into())),
        Value::Array(values) | Value::Set(values) => {
            for v in values {
                flatten(v, out)?;
            }
        }
        Value::Double(v) => out.push(wit::RedisResult::Binary(v.to_string().into_bytes())),
        Value::Boolean(v) => out.push(wit::RedisResult::Int64(i64::from(v))),
        Value::BigNumber(v) => out.push(wit::RedisResult::Binary(v.to_string().into_bytes())),
        Value::ServerError(e) => return Err(other(format!("{e:?}"))),
        Value::Map(_) => return Err(other("redis map replies are not supported")),
        Value::Attribute { .. } => return Err(other("redis attribute replies are not supported")),
        Value::VerbatimString { .. } => {
            return Err(other("redis verbatim string replies are not supported"));
        }
        Value::Push { .. } => return Err(other("redis push replies are not supported")),
    }
    Ok(())
}

fn result_size(results: &[wit::RedisResult]) -> usize {
    results
        .iter()
        .map(|r| {
            std::mem::size_of::<wit::RedisResult>()
                + match r {
                    wit::RedisResult::Binary(b) => b.len(),
                    wit::RedisResult::Status(s) => s.len(),
                    wit::RedisResult::Nil | wit::RedisResult::Int64(_) => 0,
                }
        })
        .sum()
}

impl InstanceState {
    /// Runs `cmd` on the guest connection `r` within the command timeout.
    async fn redis_run<T: FromRedisValue>(
        &mut self,
        r: &Resource<RedisConnection>,
        cmd: redis::Cmd,
    ) -> wasmtime::Result<Result<redis::RedisResult<T>, wit::Error>> {
        let connection = self.table.get(r)?;
        let timeout = connection.pool.inner.timeouts.command;
        let mut target = match connection.target() {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        match target.run(&cmd, timeout).await {
            Ok(result) => Ok(Ok(result)),
            Err(Elapsed) => {
                self.table.get_mut(r)?.timed_out(&target);
                tracing::debug!(
                    tag = "outbound",
                    component = %self.outbound.component_id,
                    protocol = "redis",
                    timeout_ms = timeout.as_millis() as u64,
                    "command timed out"
                );
                Ok(Err(other(format!(
                    "redis command timed out after {} ms",
                    timeout.as_millis()
                ))))
            }
        }
    }

    /// Moves the guest connection `r` to a connection of its own, if it is not on one yet.
    async fn redis_dedicate(
        &mut self,
        r: &Resource<RedisConnection>,
    ) -> wasmtime::Result<Result<(), wit::Error>> {
        let connection = self.table.get(r)?;
        if !matches!(connection.dedicated, Dedicated::None) {
            return Ok(Ok(()));
        }
        let pool = connection.pool.clone();
        let client = connection.client.clone();
        let Ok(permit) = pool.inner.dedicated.clone().try_acquire_owned() else {
            return Ok(Err(wit::Error::TooManyConnections));
        };
        let timeouts = pool.inner.timeouts;
        let config = AsyncConnectionConfig::new().set_connection_timeout(timeouts.connect);
        let connect = client.get_multiplexed_async_connection_with_config(&config);
        let dedicated = match tokio::time::timeout(timeouts.connect, connect).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Ok(Err(other(e))),
            Err(_) => {
                return Ok(Err(other(format!(
                    "timed out connecting after {} ms",
                    timeouts.connect.as_millis()
                ))));
            }
        };
        self.table.get_mut(r)?.dedicated = Dedicated::Open {
            connection: dedicated,
            _permit: permit,
        };
        Ok(Ok(()))
    }
}

/// A reply or the error for the guest: Redis errors become `other`.
fn plain<T>(outcome: Result<redis::RedisResult<T>, wit::Error>) -> Result<T, wit::Error> {
    outcome.and_then(|reply| reply.map_err(other))
}

impl wit::Host for InstanceState {}

impl wit::HostConnection for InstanceState {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<RedisConnection>, wit::Error>> {
        if let Err(denied) = address_allowed(&self.outbound.allowed, &address) {
            tracing::warn!(
                tag = "outbound",
                component = %self.outbound.component_id,
                action = "deny",
                protocol = "redis",
                reason = %denied,
            );
            return Ok(Err(wit::Error::InvalidAddress));
        }
        match self.outbound.client.redis().open(&address).await {
            Ok(connection) => Ok(Ok(self.table.push(connection)?)),
            Err(OpenError::InvalidAddress) => Ok(Err(wit::Error::InvalidAddress)),
            Err(OpenError::Connect(message)) => {
                tracing::debug!(
                    tag = "outbound",
                    component = %self.outbound.component_id,
                    protocol = "redis",
                    error = %message,
                    "connect failed"
                );
                Ok(Err(wit::Error::Other(message)))
            }
        }
    }

    async fn publish(
        &mut self,
        r: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wit::Error>> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        // Any reply (the subscriber count) is success.
        Ok(plain(self.redis_run::<Value>(&r, cmd).await?).map(drop))
    }

    async fn get(
        &mut self,
        r: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wit::Error>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        Ok(
            plain(self.redis_run::<Option<Vec<u8>>>(&r, cmd).await?).and_then(|v| match v {
                Some(v) if v.len() > MAX_RESULT_BYTES => Err(too_large()),
                v => Ok(v),
            }),
        )
    }

    async fn set(
        &mut self,
        r: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wit::Error>> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(value);
        let result = plain(self.redis_run::<Value>(&r, cmd).await?).map(drop);
        if result.is_ok() {
            crate::crash::point(|| format!("after outbound Redis SET {key}"));
        }
        Ok(result)
    }

    async fn incr(
        &mut self,
        r: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<i64, wit::Error>> {
        let mut cmd = redis::cmd("INCRBY");
        cmd.arg(&key).arg(1);
        let result = plain(self.redis_run(&r, cmd).await?);
        if result.is_ok() {
            crate::crash::point(|| format!("after outbound Redis INCRBY {key}"));
        }
        Ok(result)
    }

    async fn del(
        &mut self,
        r: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, wit::Error>> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&keys);
        let result = plain(self.redis_run(&r, cmd).await?);
        if result.is_ok() {
            crate::crash::point(|| format!("after outbound Redis DEL {}", keys.join(" ")));
        }
        Ok(result)
    }

    async fn sadd(
        &mut self,
        r: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, wit::Error>> {
        let mut cmd = redis::cmd("SADD");
        cmd.arg(key).arg(values);
        Ok(match self.redis_run::<u32>(&r, cmd).await? {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e))
                if e.kind() == redis::ErrorKind::TypeError || e.code() == Some("WRONGTYPE") =>
            {
                Err(wit::Error::TypeError)
            }
            Ok(Err(e)) => Err(other(e)),
            Err(e) => Err(e),
        })
    }

    async fn smembers(
        &mut self,
        r: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<String>, wit::Error>> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(key);
        Ok(plain(self.redis_run(&r, cmd).await?))
    }

    async fn srem(
        &mut self,
        r: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, wit::Error>> {
        let mut cmd = redis::cmd("SREM");
        cmd.arg(key).arg(values);
        Ok(plain(self.redis_run(&r, cmd).await?))
    }

    async fn execute(
        &mut self,
        r: Resource<RedisConnection>,
        command: String,
        arguments: Vec<wit::RedisParameter>,
    ) -> wasmtime::Result<Result<Vec<wit::RedisResult>, wit::Error>> {
        if is_connection_bound(&command)
            && let Err(e) = self.redis_dedicate(&r).await?
        {
            return Ok(Err(e));
        }
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                wit::RedisParameter::Int64(v) => cmd.arg(v),
                wit::RedisParameter::Binary(v) => cmd.arg(v),
            };
        }
        let value = match plain(self.redis_run::<Value>(&r, cmd).await?) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let mut results = Vec::new();
        if let Err(e) = flatten(value, &mut results) {
            return Ok(Err(e));
        }
        if executed_a_write(&command, &results) {
            crate::crash::point(|| format!("after outbound Redis {}", command.to_uppercase()));
        }
        if result_size(&results) > MAX_RESULT_BYTES {
            return Ok(Err(too_large()));
        }
        Ok(Ok(results))
    }

    async fn drop(&mut self, r: Resource<RedisConnection>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

/// Whether `execute` ran a write the test-only crash points count (see [`crate::crash`]): `SET`,
/// `DEL` and `INCRBY`/`INCR`, and an `EVAL` that answered the integer 1 (the instance store's
/// compare-and-swap script reports a swap that way).
fn executed_a_write(command: &str, results: &[wit::RedisResult]) -> bool {
    let is = |name: &str| command.trim().eq_ignore_ascii_case(name);
    if is("EVAL") || is("EVALSHA") {
        return matches!(results, [wit::RedisResult::Int64(1)]);
    }
    ["SET", "DEL", "INCR", "INCRBY"].into_iter().any(is)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIS: &str = "redis://127.0.0.1:6379";

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid entries")
    }

    #[test]
    fn addresses_are_checked_as_urls_of_their_scheme() {
        let allowed = hosts(&["redis://127.0.0.1", "redis://cache.internal:7000"]);
        assert_eq!(address_allowed(&allowed, "redis://127.0.0.1"), Ok(()));
        assert_eq!(
            address_allowed(&allowed, "redis://127.0.0.1:6379/2"),
            Ok(())
        );
        assert_eq!(
            address_allowed(&allowed, "redis://user:secret@127.0.0.1:6379"),
            Ok(())
        );
        assert_eq!(
            address_allowed(&allowed, "redis://cache.internal:7000"),
            Ok(())
        );
        let denied =
            address_allowed(&allowed, "redis://:secret@127.0.0.1:6380").expect_err("other port");
        assert_eq!(denied, Denied::NotAllowed("redis://127.0.0.1:6380".into()));
        assert!(!denied.to_string().contains("secret"));
        assert!(address_allowed(&allowed, "rediss://127.0.0.1:6379").is_err());
        assert!(address_allowed(&allowed, "redis://cache.internal").is_err());
        assert_eq!(
            address_allowed(&allowed, "not a url"),
            Err(Denied::Unparsable)
        );
        assert_eq!(
            address_allowed(&allowed, "127.0.0.1:6379"),
            Err(Denied::Unparsable)
        );
    }

    #[test]
    fn connection_bound_commands_are_matched_case_insensitively() {
        assert!(is_connection_bound("multi"));
        assert!(is_connection_bound("Select"));
        assert!(is_connection_bound("BLPOP"));
        assert!(!is_connection_bound("GET"));
        assert!(!is_connection_bound("EVAL"));
    }

    #[test]
    fn arrays_flatten_into_their_elements() {
        let value = Value::Array(vec![
            Value::Int(1),
            Value::Nil,
            Value::Array(vec![Value::BulkString(b"x".to_vec()), Value::Okay]),
            Value::Boolean(true),
            Value::Double(1.5),
        ]);
        let mut out = Vec::new();
        flatten(value, &mut out).expect("supported");
        let rendered: Vec<String> = out.iter().map(|r| format!("{r:?}")).collect();
        assert_eq!(
            rendered,
            [
                "RedisResult::Int64(1)",
                "RedisResult::Nil",
                "RedisResult::Binary([120])",
                "RedisResult::Status(\"OK\")",
                "RedisResult::Int64(1)",
                "RedisResult::Binary([49, 46, 53])",
            ]
        );
        assert!(flatten(Value::Map(Vec::new()), &mut Vec::new()).is_err());
    }

    #[tokio::test]
    async fn one_shared_connection_per_address_and_failures_are_not_kept() {
        let pool = RedisPool::default();
        let a = pool.open(REDIS).await.expect("redis at 127.0.0.1:6379");
        let b = pool.open(REDIS).await.expect("second open");
        let id = |c: &RedisConnection| {
            let mut m = c.shared.clone();
            async move {
                redis::cmd("CLIENT")
                    .arg("ID")
                    .query_async::<i64>(&mut m)
                    .await
                    .expect("client id")
            }
        };
        assert_eq!(
            id(&a).await,
            id(&b).await,
            "both opens share one connection"
        );
        assert_eq!(pool.pooled(), 1);

        let started = std::time::Instant::now();
        let refused = pool.open("redis://127.0.0.1:1").await;
        assert!(matches!(refused, Err(OpenError::Connect(_))), "{refused:?}");
        assert!(started.elapsed() < CONNECT_TIMEOUT);
        assert_eq!(pool.pooled(), 1, "a failed address is not kept");
        assert!(matches!(
            pool.open("redis+unix:///tmp/redis.sock").await,
            Err(OpenError::InvalidAddress)
        ));
        assert!(matches!(
            pool.open("http://127.0.0.1:6379").await,
            Err(OpenError::InvalidAddress)
        ));
    }

    #[tokio::test]
    async fn a_silent_server_times_out_instead_of_hanging() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // Accepts and never answers, like a blackholed proxy.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let pool = RedisPool::new(RedisTimeouts {
            connect: Duration::from_millis(300),
            command: Duration::from_millis(300),
        });
        let started = std::time::Instant::now();
        let result = pool.open(&format!("redis://127.0.0.1:{port}")).await;
        assert!(matches!(result, Err(OpenError::Connect(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        silent.abort();
    }

    /// A server that answers `+OK` to every command while `answering` is set, and then goes
    /// silent without closing; counts the connections it accepted.
    async fn fake_server(
        answering: Arc<std::sync::atomic::AtomicBool>,
        accepted: Arc<std::sync::atomic::AtomicUsize>,
    ) -> (u16, tokio::task::JoinHandle<()>) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let answering = answering.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        // Clients send arrays of bulk strings; each `*` at a line start
                        // begins one command (no argument here contains one).
                        let commands = buf[..n]
                            .split(|b| *b == b'\n')
                            .filter(|line| line.first() == Some(&b'*'))
                            .count();
                        if answering.load(Ordering::SeqCst) {
                            let reply = "+OK\r\n".repeat(commands);
                            if stream.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (port, task)
    }

    #[tokio::test]
    async fn a_timed_out_shared_connection_is_replaced_for_later_opens() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let answering = Arc::new(AtomicBool::new(true));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (port, server) = fake_server(answering.clone(), accepted.clone()).await;
        let pool = RedisPool::new(RedisTimeouts {
            connect: Duration::from_secs(2),
            command: Duration::from_millis(200),
        });
        let address = format!("redis://127.0.0.1:{port}");
        let mut connection = pool.open(&address).await.expect("handshake answered");
        let mut target = connection.target().expect("open");
        let ok: Result<redis::RedisResult<String>, Elapsed> = target
            .run(redis::cmd("PING").arg("x"), Duration::from_millis(200))
            .await;
        assert!(matches!(ok, Ok(Ok(_))), "the server answers");
        assert_eq!(pool.pooled(), 1);

        answering.store(false, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let silent: Result<redis::RedisResult<String>, Elapsed> = target
            .run(redis::cmd("PING").arg("x"), Duration::from_millis(200))
            .await;
        assert!(silent.is_err(), "a silent server times out");
        assert!(started.elapsed() < Duration::from_secs(1));
        connection.timed_out(&target);
        assert_eq!(pool.pooled(), 0, "the silent connection left the pool");

        answering.store(true, Ordering::SeqCst);
        let _fresh = pool.open(&address).await.expect("reopen");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a new connection was made"
        );
        server.abort();
    }

    #[tokio::test]
    async fn the_shared_connection_reconnects_after_the_server_drops_it() {
        let pool = RedisPool::default();
        let connection = pool.open(REDIS).await.expect("redis at 127.0.0.1:6379");
        let mut shared = connection.shared.clone();
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut shared)
            .await
            .expect("client id");
        let admin = redis::Client::open(REDIS).expect("url");
        let mut admin = admin
            .get_multiplexed_async_connection()
            .await
            .expect("admin connection");
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut admin)
            .await
            .expect("client kill");
        assert_eq!(killed, 1);
        // The command that finds the connection closed may fail; a later one reconnects.
        let mut recovered = false;
        for _ in 0..20 {
            let reopened = pool.open(REDIS).await.expect("open after kill");
            let mut shared = reopened.shared.clone();
            if redis::cmd("PING")
                .query_async::<String>(&mut shared)
                .await
                .is_ok()
            {
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(recovered, "the pooled connection never reconnected");
    }
}
