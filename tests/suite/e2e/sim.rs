//! Fly's side of the system under test: an in-process `kiloclaw-flysim`, inspected through its
//! admin interface and disturbed "out of band" (behind the control plane's back) through its admin
//! interface or, where Fly itself would allow it, through the Machines API with its own token.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use kiloclaw_flysim::{FaultRule, SimHandle, Simulator};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The token the app uses, the only one the simulator accepts.
const FLY_TOKEN: &str = kiloclaw_cli::commands::fly_sim::SIM_API_TOKEN;

/// A machine as the simulator holds it.
#[derive(Debug, Clone)]
pub struct SimMachine {
    /// Machine id.
    pub id: String,
    /// Fly app it belongs to.
    pub app: String,
    /// Fly state (`started`, `stopped`, `destroyed`, …).
    pub state: String,
    /// Current version (changes on every start and update).
    pub instance_id: String,
    /// `(volume, path)` mounts.
    pub mounts: Vec<(String, String)>,
    /// `config.metadata`.
    pub metadata: BTreeMap<String, String>,
}

impl SimMachine {
    /// True when `volume` is mounted at `/root`.
    pub fn mounts_volume_at_root(&self, volume: &str) -> bool {
        self.mounts.iter().any(|(v, p)| v == volume && p == "/root")
    }

    /// True unless the machine is being or has been destroyed.
    pub fn is_live(&self) -> bool {
        !matches!(self.state.as_str(), "destroying" | "destroyed")
    }

    fn from_json(value: &Value) -> Option<Self> {
        let config = &value["config"];
        Some(Self {
            id: value["id"].as_str()?.to_owned(),
            app: value["app"].as_str().unwrap_or_default().to_owned(),
            state: value["state"].as_str().unwrap_or_default().to_owned(),
            instance_id: value["instance_id"].as_str().unwrap_or_default().to_owned(),
            mounts: config["mounts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    let field = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
                    (field("volume"), field("path"))
                })
                .collect(),
            metadata: config["metadata"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect(),
        })
    }
}

/// Faults the tests inject into Fly's API.
#[derive(Debug, Clone, Copy)]
pub enum FlyFault {
    /// Every `DELETE /machines/{id}` answers this status (until cleared).
    FailMachineDelete {
        /// The HTTP status Fly answers with.
        status: u16,
    },
}

/// The simulator, shared by the Systems that use it (it outlives a host restart).
#[derive(Debug, Clone)]
pub struct Fly {
    handle: Arc<tokio::sync::Mutex<Option<SimHandle>>>,
    admin: kiloclaw_flysim::SimAdmin,
    api_url: String,
    proxy_url: String,
    proxy_addr: std::net::SocketAddr,
    http: reqwest::Client,
}

impl Fly {
    /// Starts a simulator on 127.0.0.1:0 with its default (small) lifecycle delays.
    pub async fn start() -> anyhow::Result<Self> {
        let config = kiloclaw_cli::commands::fly_sim::config("127.0.0.1:0".parse()?, None);
        let handle = Simulator::start(config)
            .await
            .context("starting the Fly simulator")?;
        Ok(Self {
            admin: handle.admin().clone(),
            api_url: handle.api_url(),
            proxy_url: handle.proxy_url(),
            proxy_addr: handle.proxy_addr(),
            handle: Arc::new(tokio::sync::Mutex::new(Some(handle))),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
        })
    }

    /// Fly becomes unreachable: the simulator's listener (API and proxy) goes away.
    pub async fn shut_down(&self) {
        if let Some(handle) = self.handle.lock().await.take() {
            handle.shutdown().await;
        }
    }

    /// The variables that point the app at this simulator (exactly what `kiloclaw up` uses).
    pub fn app_variables(&self) -> Vec<(String, String)> {
        kiloclaw_cli::commands::fly_sim::app_variables(&self.api_url, &self.proxy_url)
    }

    fn admin(&self) -> &kiloclaw_flysim::SimAdmin {
        &self.admin
    }

    /// Everything the simulator holds, as its admin `GET /_sim/state` shows it (apps with their
    /// secret names, machines with their configs, volumes, hosts).
    pub fn state(&self) -> Value {
        self.admin().state()
    }

    /// The Machines API request log, oldest first.
    pub fn requests(&self) -> Vec<kiloclaw_flysim::RequestRecord> {
        self.admin().requests()
    }

    /// How many Machines API calls of `operation` (e.g. `set_secret`) the simulator answered.
    pub fn count_requests(&self, operation: &str) -> usize {
        self.admin()
            .requests()
            .iter()
            .filter(|r| r.operation == operation)
            .count()
    }

    /// Every machine the simulator knows (including destroyed ones it still shows).
    pub async fn machines(&self) -> anyhow::Result<Vec<SimMachine>> {
        let state = self.admin().state();
        Ok(state["machines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(SimMachine::from_json)
            .collect())
    }

    /// Machines that are not being or have not been destroyed.
    pub async fn live_machines(&self) -> anyhow::Result<Vec<SimMachine>> {
        Ok(self
            .machines()
            .await?
            .into_iter()
            .filter(SimMachine::is_live)
            .collect())
    }

    /// One machine by id.
    pub async fn machine(&self, id: &str) -> anyhow::Result<Option<SimMachine>> {
        Ok(self.machines().await?.into_iter().find(|m| m.id == id))
    }

    /// Volumes that exist (not deleted or being deleted).
    pub async fn volumes(&self) -> anyhow::Result<Vec<kiloclaw_core::fly::Volume>> {
        Ok(self
            .admin()
            .volumes()
            .into_iter()
            .filter(|v| !v.state.is_deleted())
            .collect())
    }

    /// One existing volume by id.
    pub async fn volume(&self, id: &str) -> anyhow::Result<Option<kiloclaw_core::fly::Volume>> {
        Ok(self.volumes().await?.into_iter().find(|v| v.id == id))
    }

    /// A file in a volume's data directory, read directly from the simulator's disk.
    pub fn volume_file(&self, volume: &str, name: &str) -> anyhow::Result<Option<String>> {
        match std::fs::read_to_string(self.admin.volume_dir(volume).join(name)) {
            Ok(text) => Ok(Some(text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Injects a fault.
    pub async fn inject(&self, fault: FlyFault) -> anyhow::Result<()> {
        let rule = match fault {
            FlyFault::FailMachineDelete { status } => FaultRule::error("destroy_machine", status),
        };
        self.admin().add_fault(rule);
        Ok(())
    }

    /// Removes every injected fault.
    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        self.admin().clear_faults();
        Ok(())
    }

    /// Adds a fault rule as it is (probabilities, after-effect answers, timeouts, capacity).
    pub fn add_fault_rule(&self, rule: FaultRule) {
        self.admin().add_fault(rule);
    }

    /// Turns the seeded random fault mix on (`Some`) or off.
    pub fn set_chaos(&self, profile: Option<kiloclaw_flysim::ChaosProfile>) {
        self.admin().set_chaos(profile);
    }

    /// The machine vanishes (a host failure): 404 from then on.
    pub async fn destroy_machine_out_of_band(&self, id: &str) -> anyhow::Result<()> {
        self.admin()
            .lose_machine(id)
            .map_err(|e| anyhow::anyhow!("lose machine {id}: {e:?}"))
    }

    /// The volume and its data vanish.
    pub async fn delete_volume_out_of_band(&self, id: &str) -> anyhow::Result<()> {
        self.admin()
            .lose_volume(id)
            .map_err(|e| anyhow::anyhow!("lose volume {id}: {e:?}"))
    }

    /// The machine's process exits by itself (`started` → `stopped`) without any API call.
    pub async fn stop_machine_out_of_band(&self, id: &str) -> anyhow::Result<()> {
        self.admin()
            .exit_machine(id, 0)
            .map_err(|e| anyhow::anyhow!("exit machine {id}: {e:?}"))?;
        self.wait_for_state(id, "stopped").await
    }

    /// Someone starts the machine through Fly's API (flyctl, the dashboard).
    pub async fn start_machine_out_of_band(&self, id: &str) -> anyhow::Result<()> {
        let machine = self.machine(id).await?.context("no such machine")?;
        let url = format!(
            "{}/v1/apps/{}/machines/{id}/start",
            self.api_url, machine.app
        );
        let response = self.http.post(url).bearer_auth(FLY_TOKEN).send().await?;
        ensure!(
            response.status().is_success(),
            "start {id}: {}",
            response.status()
        );
        self.wait_for_state(id, "started").await
    }

    /// Someone updates the machine through Fly's API and mounts its volume at `path` (Fly does not
    /// allow swapping the volume itself by an update, so a wrong path is the drift that can happen).
    pub async fn set_mount_path_out_of_band(&self, id: &str, path: &str) -> anyhow::Result<()> {
        let machine = self.machine(id).await?.context("no such machine")?;
        let base = format!("{}/v1/apps/{}/machines/{id}", self.api_url, machine.app);
        let current: Value = self
            .http
            .get(&base)
            .bearer_auth(FLY_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        let mut config = current["config"].clone();
        let Some(mounts) = config["mounts"].as_array_mut() else {
            bail!("machine {id} has no mounts")
        };
        for mount in mounts.iter_mut() {
            mount["path"] = json!(path);
        }
        let response = self
            .http
            .post(&base)
            .bearer_auth(FLY_TOKEN)
            .json(&json!({"config": config}))
            .send()
            .await?;
        let status = response.status();
        ensure!(
            status.is_success(),
            "update {id}: {status} {}",
            response.text().await?
        );
        self.wait_for_state(id, "started").await
    }

    /// Waits (bounded) until the machine reaches `state`.
    pub async fn wait_for_state(&self, id: &str, state: &str) -> anyhow::Result<()> {
        for _ in 0..200 {
            if self.machine(id).await?.is_some_and(|m| m.state == state) {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        bail!("machine {id} did not reach {state}")
    }

    /// Opens the user's gateway WebSocket directly (`{app}.localhost`, as a browser would open
    /// `wss://{app}.fly.dev`), completes OpenClaw's handshake with `token`; true when accepted.
    pub async fn websocket_accepts(&self, app: &str, token: &str) -> anyhow::Result<bool> {
        let addr = self.proxy_addr;
        let mut request = format!("ws://{addr}/").into_client_request()?;
        request
            .headers_mut()
            .insert("host", format!("{app}.localhost:{}", addr.port()).parse()?);
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .context("WebSocket handshake")?;
        let challenge = next_json(&mut socket).await?;
        ensure!(
            challenge["event"] == "connect.challenge",
            "first frame: {challenge}"
        );
        let connect = json!({"type": "req", "id": "1", "method": "connect", "params": {"auth": {"token": token}}});
        socket
            .send(Message::Text(connect.to_string().into()))
            .await?;
        let reply = next_json(&mut socket).await?;
        let accepted = reply["ok"] == true;
        if accepted {
            // Past the handshake the gateway echoes frames.
            socket.send(Message::Text("ping-frame".into())).await?;
            let echoed =
                tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await?;
            ensure!(
                matches!(&echoed, Some(Ok(Message::Text(t))) if t.as_str() == "ping-frame"),
                "echo after hello-ok: {echoed:?}"
            );
        } else {
            let message = reply["error"]["message"].as_str().unwrap_or_default();
            ensure!(
                message.contains("gateway token"),
                "refusal says why: {reply}"
            );
        }
        let _ = socket.close(None).await;
        Ok(accepted)
    }
}

async fn next_json<S>(socket: &mut S) -> anyhow::Result<Value>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
        .await
        .context("no WebSocket frame in time")?
        .context("WebSocket closed")??;
    match frame {
        Message::Text(text) => Ok(serde_json::from_str(text.as_str())?),
        other => bail!("unexpected frame {other:?}"),
    }
}

/// The gateway stand-in's path for a file on the machine's volume.
pub fn volume_file_path(name: &str) -> String {
    format!("/_gateway/files/{name}")
}
