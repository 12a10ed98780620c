//! `kiloclaw status`: the instances in the app's key-value store, each with what Fly says about its
//! machine, read directly (store first, then one Fly call per machine) so it works whether or not
//! the app is running.
//!
//! The store is the one `kiloclaw up` uses: the runtime config's `default` store, else SQLite in
//! the state directory; or Redis when `SPIN_VARIABLE_STORE_REDIS_URL` is set (as for replicas).
//! Fly is the local simulator (`--fly sim`, at `--sim-url`) or the Machines API (`--fly api`, with
//! `SPIN_VARIABLE_FLY_API_TOKEN` and optionally `SPIN_VARIABLE_FLY_API_BASE_URL`).

use std::collections::BTreeMap;

use anyhow::Context;
use kiloclaw_core::fly::response;
use kiloclaw_core::fly::{FlyRequests, HttpMethod, HttpRequest, HttpResponse, Machine};
use kiloclaw_core::record::InstanceRecord;
use kiloclaw_host::kv::{Store, StoreManager};
use kiloclaw_host::runtime_config::{KeyValueStoreConfig, RuntimeConfig};
use serde::Serialize;

use crate::args::{FlyMode, StatusArgs};
use crate::commands::fly_sim::SIM_API_TOKEN;
use crate::project;
use crate::secrets;

/// One line of the listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRow {
    pub user_id: String,
    /// The record's status (`provisioned`, `running`, `stopped`, `destroying`; `-` when unset).
    pub status: String,
    pub app: Option<String>,
    pub machine_id: Option<String>,
    /// What Fly says: the machine's state, `missing` (404), `error: …`, or absent without a machine.
    pub fly_state: Option<String>,
    pub region: Option<String>,
    pub volume_id: Option<String>,
}

/// Runs the command: prints a table, or JSON with `--json`.
pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let rows = runtime.block_on(collect(args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

async fn collect(args: &StatusArgs) -> anyhow::Result<Vec<InstanceRow>> {
    let store = open_store(args).await?;
    let records = read_records(&store).await?;
    let fly = fly_requests(args)?;
    let client = reqwest::Client::new();
    let mut rows = Vec::with_capacity(records.len());
    for record in records {
        let fly_state = match (&record.fly_app_name, &record.fly_machine_id) {
            (Some(app), Some(machine)) => Some(machine_state(&client, &fly, app, machine).await),
            _ => None,
        };
        rows.push(row(&record, fly_state));
    }
    Ok(rows)
}

/// The `default` store as `kiloclaw up` opens it, or the Redis instance store.
async fn open_store(args: &StatusArgs) -> anyhow::Result<Store> {
    if let Some(url) = secrets::from_env("store_redis_url").filter(|url| !url.is_empty()) {
        let prefix =
            secrets::from_env("store_redis_key_prefix").unwrap_or_else(|| "kiloclaw:".to_owned());
        return Store::open("default", &KeyValueStoreConfig::Redis { url, prefix })
            .await
            .context("opening the Redis instance store (SPIN_VARIABLE_STORE_REDIS_URL)");
    }
    let manifest = project::find_manifest(args.location.manifest.as_deref())?;
    let state_dir = project::state_dir(args.location.state_dir.as_deref(), &manifest);
    let configured = match &args.runtime_config_file {
        Some(path) => {
            RuntimeConfig::load(path)
                .with_context(|| format!("reading {}", path.display()))?
                .key_value_stores
        }
        None => BTreeMap::new(),
    };
    let stores = StoreManager::open(&configured, &state_dir)
        .await
        .map_err(|(label, error)| anyhow::anyhow!("opening key-value store `{label}`: {error}"))?;
    stores
        .get("default")
        .cloned()
        .context("no `default` key-value store")
}

/// Every user's current record. A record moved to a later creation generation
/// (`instance-gen/{n}/{user}`) replaces the one under `instance/{user}`; sealed homes are skipped.
async fn read_records(store: &Store) -> anyhow::Result<Vec<InstanceRecord>> {
    let keys: Vec<String> = store
        .keys()
        .await
        .context("listing the store's keys")?
        .into_iter()
        .filter(|key| key.starts_with("instance/") || key.starts_with("instance-gen/"))
        .collect();
    let mut newest: BTreeMap<String, (u32, InstanceRecord)> = BTreeMap::new();
    for (key, value) in store.get_many(&keys).await.context("reading records")? {
        let Some(bytes) = value else { continue };
        if kiloclaw_core::store::is_sealed(&bytes) {
            continue;
        }
        let Ok((record, _)) = InstanceRecord::decode(&bytes) else {
            eprintln!("kiloclaw: skipping {key}: not an instance record");
            continue;
        };
        let generation = generation_of(&key);
        match newest.get(&record.user_id) {
            Some((known, _)) if *known >= generation => {}
            _ => {
                newest.insert(record.user_id.clone(), (generation, record));
            }
        }
    }
    Ok(newest.into_values().map(|(_, record)| record).collect())
}

/// `instance/{user}` is generation 1; `instance-gen/{n}/{user}` is generation `n`.
fn generation_of(key: &str) -> u32 {
    key.strip_prefix("instance-gen/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

fn fly_requests(args: &StatusArgs) -> anyhow::Result<FlyRequests> {
    let user_agent = concat!("kiloclaw-status/", env!("CARGO_PKG_VERSION"));
    Ok(match args.fly {
        FlyMode::Sim => FlyRequests::new(
            args.sim_url.trim_end_matches('/'),
            SIM_API_TOKEN,
            user_agent,
        ),
        FlyMode::Api => {
            let token = secrets::from_env("fly_api_token")
                .context("--fly api needs SPIN_VARIABLE_FLY_API_TOKEN")?;
            let base = secrets::from_env("fly_api_base_url")
                .unwrap_or_else(|| kiloclaw_core::fly::DEFAULT_BASE_URL.to_owned());
            FlyRequests::new(&base, &token, user_agent)
        }
    })
}

/// What Fly says about one machine, as one word or a short error.
async fn machine_state(
    client: &reqwest::Client,
    fly: &FlyRequests,
    app: &str,
    machine_id: &str,
) -> String {
    let response = match send(client, fly.get_machine(app, machine_id)).await {
        Ok(response) => response,
        Err(error) => return format!("error: {error}"),
    };
    match response::optional_json::<Machine>("get_machine", &response) {
        Ok(Some(machine)) => machine.state.as_str().to_owned(),
        Ok(None) => "missing".to_owned(),
        Err(error) => format!("error: {error}"),
    }
}

async fn send(client: &reqwest::Client, request: HttpRequest) -> anyhow::Result<HttpResponse> {
    let method = match request.method {
        HttpMethod::Get => reqwest::Method::GET,
        other => anyhow::bail!("status only reads from Fly, not {other:?}"),
    };
    let mut builder = client
        .request(method, &request.url)
        .timeout(request.timeout);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let response = builder
        .send()
        .await
        .with_context(|| format!("is Fly reachable at {}?", base_of(&request.url)))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    let body = response.bytes().await?.to_vec();
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// `scheme://host:port` of a URL, for error messages (never the path or query).
fn base_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    url[after_scheme..]
        .find('/')
        .map_or(url, |i| &url[..after_scheme + i])
}

fn row(record: &InstanceRecord, fly_state: Option<String>) -> InstanceRow {
    InstanceRow {
        user_id: record.user_id.clone(),
        status: record
            .status
            .map(|status| status.as_str().to_owned())
            .unwrap_or_else(|| "-".to_owned()),
        app: record.fly_app_name.clone(),
        machine_id: record.fly_machine_id.clone(),
        fly_state,
        region: record.fly_region.clone(),
        volume_id: record.fly_volume_id.clone(),
    }
}

/// The rows as an aligned text table with a header line.
pub fn table(rows: &[InstanceRow]) -> String {
    let header = [
        "USER",
        "STATUS",
        "APP",
        "MACHINE",
        "FLY STATE",
        "REGION",
        "VOLUME",
    ];
    let dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    let mut lines: Vec<[String; 7]> = vec![header.map(str::to_owned)];
    for row in rows {
        lines.push([
            row.user_id.clone(),
            row.status.clone(),
            dash(&row.app),
            dash(&row.machine_id),
            dash(&row.fly_state),
            dash(&row.region),
            dash(&row.volume_id),
        ]);
    }
    let mut widths = [0_usize; 7];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no instances)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_come_from_the_key() {
        assert_eq!(generation_of("instance/user-1"), 1);
        assert_eq!(generation_of("instance-gen/3/user-1"), 3);
        assert_eq!(generation_of("instance-gen/x/user-1"), 1);
    }

    #[test]
    fn the_table_aligns_columns_and_dashes_what_is_unknown() {
        let rows = vec![
            InstanceRow {
                user_id: "user-1".into(),
                status: "running".into(),
                app: Some("acct-0123".into()),
                machine_id: Some("m-1".into()),
                fly_state: Some("started".into()),
                region: Some("ams".into()),
                volume_id: Some("vol_1".into()),
            },
            InstanceRow {
                user_id: "a-longer-user".into(),
                status: "provisioned".into(),
                app: None,
                machine_id: None,
                fly_state: None,
                region: None,
                volume_id: None,
            },
        ];
        assert_eq!(
            table(&rows),
            "USER           STATUS       APP        MACHINE  FLY STATE  REGION  VOLUME\n\
             user-1         running      acct-0123  m-1      started    ams     vol_1\n\
             a-longer-user  provisioned  -          -        -          -       -\n"
        );
        assert!(table(&[]).ends_with("(no instances)\n"));
    }

    #[test]
    fn error_messages_name_the_host_only() {
        assert_eq!(
            base_of("http://127.0.0.1:4280/v1/apps/a/machines/m?x=1"),
            "http://127.0.0.1:4280"
        );
        assert_eq!(base_of("no-scheme"), "no-scheme");
    }
}
