//! A PostgreSQL database of the test's own on the real server at 127.0.0.1:5432 (trust auth),
//! created from `db/schema.sql` and dropped when the test ends, plus the writes Next.js would make
//! (users and their peppers, access codes, instance rows).

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

/// Where the server is; `.ci/run` starts it when it is not running.
const SERVER: &str = "host=127.0.0.1 port=5432 user=postgres";

/// The allow-list entry that covers the server.
pub const OUTBOUND_HOST: &str = "postgres://127.0.0.1:5432";

async fn connect(dbname: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(&format!("{SERVER} dbname={dbname}"), NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at 127.0.0.1:5432/{dbname}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A fresh database with the three tables; dropped (connections and all) with this value.
pub struct TestDatabase {
    name: String,
    client: Client,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .finish()
    }
}

impl TestDatabase {
    /// Creates `kiloclaw_{tag}_{unique}` and applies the schema.
    pub async fn create(tag: &str) -> anyhow::Result<Self> {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("kiloclaw_{tag}_{}_{unique}", std::process::id());
        connect("test")
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating database {name}"))?;
        let client = connect(&name).await?;
        let schema = std::fs::read_to_string(kiloclaw_e2e::workspace_root().join("db/schema.sql"))?;
        client
            .batch_execute(&schema)
            .await
            .context("applying db/schema.sql")?;
        Ok(Self { name, client })
    }

    /// The `database_url` the app gets.
    pub fn url(&self) -> String {
        // The local server offers TLS with a self-signed certificate, which Spin would insist on
        // verifying.
        format!(
            "postgres://postgres@127.0.0.1:5432/{}?sslmode=disable",
            self.name
        )
    }

    /// The app's variables for this database, with the revocation cache kept for `ttl_s`.
    pub fn variables(&self, ttl_s: u64) -> Vec<(String, String)> {
        vec![
            ("database_url".to_owned(), self.url()),
            (
                "database_outbound_host".to_owned(),
                OUTBOUND_HOST.to_owned(),
            ),
            ("revocation_cache_ttl_seconds".to_owned(), ttl_s.to_string()),
        ]
    }

    /// The connection the test writes with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A `kilocode_users` row.
    pub async fn add_user(&self, id: &str, pepper: Option<&str>) -> anyhow::Result<()> {
        self.client
            .execute(
                "INSERT INTO kilocode_users (id, api_token_pepper) VALUES ($1, $2)",
                &[&id, &pepper],
            )
            .await?;
        Ok(())
    }

    /// Changes a user's pepper, as signing out everywhere does in the Next.js app.
    pub async fn set_pepper(&self, id: &str, pepper: Option<&str>) -> anyhow::Result<()> {
        self.client
            .execute(
                "UPDATE kilocode_users SET api_token_pepper = $2 WHERE id = $1",
                &[&id, &pepper],
            )
            .await?;
        Ok(())
    }

    /// An active access code expiring `expires_in_s` seconds from the database's now (negative:
    /// already expired), as Next.js makes them: the user's older active codes expire first.
    pub async fn add_code(&self, user: &str, code: &str, expires_in_s: i64) -> anyhow::Result<()> {
        self.client
            .execute(
                "UPDATE kiloclaw_access_codes SET status = 'expired' \
                 WHERE kilo_user_id = $1 AND status = 'active'",
                &[&user],
            )
            .await?;
        self.client
            .execute(
                "INSERT INTO kiloclaw_access_codes (code, kilo_user_id, expires_at) \
                 VALUES ($1, $2, now() + make_interval(secs => $3::double precision))",
                &[&code, &user, &(expires_in_s as f64)],
            )
            .await?;
        Ok(())
    }

    /// A code's `status` column.
    pub async fn code_status(&self, code: &str) -> anyhow::Result<Option<String>> {
        let row = self
            .client
            .query_opt(
                "SELECT status FROM kiloclaw_access_codes WHERE code = $1",
                &[&code],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// The active `kiloclaw_instances` row Next.js writes before provisioning.
    pub async fn add_instance(&self, user: &str) -> anyhow::Result<()> {
        let sandbox_id = kiloclaw_core::ids::sandbox_id_from_user_id(user)?;
        self.client
            .execute(
                "INSERT INTO kiloclaw_instances (user_id, sandbox_id) VALUES ($1, $2)",
                &[&user, &sandbox_id],
            )
            .await?;
        Ok(())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside async context; a thread of its own may block on a small runtime.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = connect("test").await.ok()?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: test database {} was not dropped", self.name);
        }
    }
}
