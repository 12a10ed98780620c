//! The Next.js app's PostgreSQL tables (original-behaviour.md §7.6; `db/schema.sql`) behind the
//! core's boundaries, over `spin:postgres/postgres@4.0.0` (spin-sdk's `pg4`):
//! - `kilocode_users` → [`UserDirectory`] (the pepper check and the session JWT's pepper);
//! - `kiloclaw_access_codes` → [`AccessCodeStore`] (redemption; issuing retires the user's older
//!   active codes);
//! - `kiloclaw_instances` → [`InstanceRegistry`] (restoring a lost record, §4.6).
//!
//! Every statement is parameterised. The connection is opened on first use, so a request that
//! the key-value cache answers never connects. Errors never carry the connection string.
//!
//! Written for what Spin 4.0.2 does (measured with the host's `pg-probe` guest on both hosts):
//! - a `query` whose result has no rows never returns there, so every query here is shaped to
//!   return exactly one row (`count(*)` with `max(…)`);
//! - a connection dropped inside a transaction goes back into Spin's pool still inside it, so
//!   redemption is one conditional `UPDATE` rather than the original's `BEGIN; SELECT … FOR
//!   UPDATE; UPDATE; COMMIT`. The `UPDATE` takes the same row lock, and a concurrent redemption
//!   waiting on it re-checks `status = 'active'` once the first commits, so exactly one wins —
//!   with no transaction a failure could leave open. Only issuing a code (a local convenience;
//!   Next.js issues its own) uses a transaction, ended by `ROLLBACK` on any error.

use std::cell::OnceCell;

use kiloclaw_core::lifecycle::InstanceRegistry;
use kiloclaw_core::signin::{AccessCodeStore, PepperLookup, Unavailable, UserDirectory};
use spin_sdk::pg4::{Connection, DbValue, ParameterValue, PgError, QueryError};

/// A database named by `database_url`, connected lazily.
pub struct Database {
    url: String,
    connection: OnceCell<Result<Connection, Unavailable>>,
}

impl std::fmt::Debug for Database {
    // The URL holds credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

/// A driver error as a message without the address or parameters.
fn describe(error: &PgError) -> String {
    match error {
        PgError::ConnectionFailed(message) => format!("connection failed: {message}"),
        PgError::BadParameter(message) => format!("bad parameter: {message}"),
        PgError::QueryFailed(QueryError::Text(message)) => format!("query failed: {message}"),
        PgError::QueryFailed(QueryError::DbError(db)) => {
            format!("query failed: {} ({})", db.message, db.code)
        }
        PgError::ValueConversionFailed(message) => format!("value conversion failed: {message}"),
        PgError::Other(message) => message.clone(),
    }
}

fn unavailable(error: PgError) -> Unavailable {
    Unavailable(describe(&error))
}

fn text(value: impl Into<String>) -> ParameterValue {
    ParameterValue::Str(value.into())
}

impl Database {
    /// The database at `url` (a `postgres://` URL that `allowed_outbound_hosts` covers).
    pub fn new(url: String) -> Self {
        Self {
            url,
            connection: OnceCell::new(),
        }
    }

    /// The database the `database_url` variable names, if set.
    pub fn configured() -> Option<Self> {
        crate::variable("database_url").map(Self::new)
    }

    fn connection(&self) -> Result<&Connection, Unavailable> {
        self.connection
            .get_or_init(|| Connection::open(&self.url).map_err(unavailable))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Runs `statement`, which must return exactly one row (see the module doc), and returns it.
    fn one_row(
        &self,
        statement: &str,
        params: &[ParameterValue],
    ) -> Result<Vec<DbValue>, Unavailable> {
        let rows = self
            .connection()?
            .query(statement, params)
            .map_err(unavailable)?;
        rows.rows
            .into_iter()
            .next()
            .ok_or_else(|| Unavailable("a one-row query returned no row".to_owned()))
    }

    fn execute(&self, statement: &str, params: &[ParameterValue]) -> Result<u64, Unavailable> {
        self.connection()?
            .execute(statement, params)
            .map_err(unavailable)
    }

    /// Runs `body` between `BEGIN` and `COMMIT`; any failure rolls back (and a connection dropped
    /// mid-transaction is closed by the host, which rolls back too).
    fn transaction<T>(
        &self,
        body: impl FnOnce(&Self) -> Result<T, Unavailable>,
    ) -> Result<T, Unavailable> {
        self.execute("BEGIN", &[])?;
        match body(self) {
            Ok(value) => {
                self.execute("COMMIT", &[])?;
                Ok(value)
            }
            Err(error) => {
                let _ = self.execute("ROLLBACK", &[]);
                Err(error)
            }
        }
    }
}

fn optional_text(value: Option<&DbValue>) -> Result<Option<String>, Unavailable> {
    match value {
        None | Some(DbValue::DbNull) => Ok(None),
        Some(DbValue::Str(text)) => Ok(Some(text.clone())),
        Some(other) => Err(Unavailable(format!("expected text, got {other:?}"))),
    }
}

/// The `count(*)` of a `SELECT count(*), max(…)` row.
fn count(value: Option<&DbValue>) -> Result<i64, Unavailable> {
    match value {
        Some(DbValue::Int64(count)) => Ok(*count),
        other => Err(Unavailable(format!("expected a count, got {other:?}"))),
    }
}

impl UserDirectory for Database {
    fn pepper(&self, user_id: &str) -> Result<PepperLookup, Unavailable> {
        // `id` is the primary key: zero rows or one.
        let row = self.one_row(
            "SELECT count(*), max(api_token_pepper) FROM kilocode_users WHERE id = $1",
            &[text(user_id)],
        )?;
        Ok(match count(row.first())? {
            0 => PepperLookup::UserNotFound,
            _ => PepperLookup::Pepper(optional_text(row.get(1))?),
        })
    }
}

impl AccessCodeStore for Database {
    fn issue(
        &self,
        user_id: &str,
        code: &str,
        _now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), Unavailable> {
        self.transaction(|db| {
            db.execute(
                "UPDATE kiloclaw_access_codes SET status = 'expired' \
                 WHERE kilo_user_id = $1 AND status = 'active'",
                &[text(user_id)],
            )?;
            db.execute(
                "INSERT INTO kiloclaw_access_codes (code, kilo_user_id, status, expires_at) \
                 VALUES ($1, $2, 'active', to_timestamp($3::double precision / 1000.0))",
                &[
                    text(code),
                    text(user_id),
                    ParameterValue::Floating64(expires_at_ms as f64),
                ],
            )?;
            Ok(())
        })
    }

    fn redeem(&self, code: &str, user_id: &str, _now_ms: i64) -> Result<bool, Unavailable> {
        // The database's clock decides expiry, as in the original and in Next.js.
        let redeemed = self.execute(
            "UPDATE kiloclaw_access_codes SET status = 'redeemed', redeemed_at = now() \
             WHERE code = $1 AND kilo_user_id = $2 AND status = 'active' AND expires_at > now()",
            &[text(code), text(user_id)],
        )?;
        Ok(redeemed == 1)
    }
}

impl InstanceRegistry for Database {
    fn active_sandbox_id(&self, user_id: &str) -> Result<Option<String>, String> {
        // At most one active row per user (Next.js's partial unique index).
        let row = self
            .one_row(
                "SELECT count(*), max(sandbox_id) FROM kiloclaw_instances \
                 WHERE user_id = $1 AND destroyed_at IS NULL",
                &[text(user_id)],
            )
            .map_err(|Unavailable(reason)| reason)?;
        match count(row.first()).map_err(|Unavailable(reason)| reason)? {
            0 => Ok(None),
            _ => optional_text(row.get(1)).map_err(|Unavailable(reason)| reason),
        }
    }
}
