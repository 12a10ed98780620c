//! Operations that run a command on the user's machine through Fly exec (original-behaviour.md §4.3):
//! channel pairing list (cached 120 s in the key-value store) and approval, and `openclaw doctor`.
//! They read the record without a lease: they change nothing the store protocol guards.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fly::{ExecRequest, ExecResponse};
use crate::store::StoreError;

use super::resources::running_with_machine;
use super::{Instances, LifecycleError};

/// How long a pairing list stays cached.
pub const PAIRING_CACHE_TTL_MS: i64 = 120_000;
const EXEC_TIMEOUT_S: u32 = 60;

/// `POST /pairing/approve` result (HTTP 500 with the same body when `success` is false).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairingApproval {
    /// Exit code 0.
    pub success: bool,
    /// `Pairing approved`, else the command's stderr, stdout or `Approval failed`.
    pub message: String,
}

/// `POST /doctor` result (always HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorOutcome {
    /// Exit code 0.
    pub success: bool,
    /// stdout, plus a newline and stderr when there is any.
    pub output: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CachedPairing {
    expires_at_ms: i64,
    requests: Vec<Value>,
}

/// `^[a-z][a-z0-9_-]{0,63}$`.
pub fn is_valid_channel_name(channel: &str) -> bool {
    let mut chars = channel.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && channel.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `^[A-Za-z0-9]{1,32}$`.
pub fn is_valid_pairing_code(code: &str) -> bool {
    (1..=32).contains(&code.len()) && code.chars().all(|c| c.is_ascii_alphanumeric())
}

fn env_home(command: &[&str]) -> Vec<String> {
    ["/usr/bin/env", "HOME=/root"]
        .iter()
        .chain(command)
        .map(|s| (*s).to_owned())
        .collect()
}

impl Instances<'_> {
    fn running_target(&self, user_id: &str) -> Result<Option<(String, String)>, LifecycleError> {
        let Some(record) = self.record(user_id)? else {
            return Ok(None);
        };
        let Some(machine_id) = running_with_machine(&record) else {
            return Ok(None);
        };
        let app = record
            .fly_app_name
            .clone()
            .or_else(|| self.settings.legacy_fly_app_name.clone())
            .ok_or(LifecycleError::NoFlyApp)?;
        Ok(Some((app, machine_id)))
    }

    fn exec(
        &self,
        app: &str,
        machine_id: &str,
        command: Vec<String>,
    ) -> Result<ExecResponse, LifecycleError> {
        let request = ExecRequest {
            command,
            timeout: Some(EXEC_TIMEOUT_S),
            ..ExecRequest::default()
        };
        self.fly
            .exec_machine(app, machine_id, &request)
            .map_err(|e| LifecycleError::fly("exec", e))
    }

    /// `listPairingRequests(forceRefresh)`: pending channel pairing requests, cached per app and machine.
    pub fn pairing_requests(
        &self,
        user_id: &str,
        force_refresh: bool,
    ) -> Result<Vec<Value>, LifecycleError> {
        let Some((app, machine_id)) = self.running_target(user_id)? else {
            return Ok(Vec::new());
        };
        let cache_key = format!("pairing:{app}:{machine_id}");
        let now = self.now();
        if !force_refresh
            && let Some(bytes) = self.kv.get(&cache_key).map_err(StoreError::from)?
            && let Ok(cached) = serde_json::from_slice::<CachedPairing>(&bytes)
            && cached.expires_at_ms > now
        {
            return Ok(cached.requests);
        }
        let command = env_home(&["node", "/usr/local/bin/openclaw-pairing-list.js"]);
        let response = self.exec(&app, &machine_id, command)?;
        if response.exit_code != 0 {
            tracing::warn!(
                tag = "lifecycle",
                action = "pairing_list_failed",
                user_id,
                exit_code = response.exit_code
            );
            return Ok(Vec::new());
        }
        let requests = match serde_json::from_str::<Value>(response.stdout.trim()) {
            Ok(value) => value
                .get("requests")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            Err(error) => {
                tracing::warn!(tag = "lifecycle", action = "pairing_list_unparseable", user_id, error = %error);
                Vec::new()
            }
        };
        let cached = CachedPairing {
            expires_at_ms: now + PAIRING_CACHE_TTL_MS,
            requests: requests.clone(),
        };
        let bytes = serde_json::to_vec(&cached).unwrap_or_default();
        if let Err(error) = self.kv.set(&cache_key, &bytes) {
            tracing::warn!(tag = "lifecycle", action = "pairing_cache_write_failed", user_id, error = %error);
        }
        Ok(requests)
    }

    /// `approvePairingRequest(channel, code)`.
    pub fn approve_pairing(
        &self,
        user_id: &str,
        channel: &str,
        code: &str,
    ) -> Result<PairingApproval, LifecycleError> {
        let Some((app, machine_id)) = self.running_target(user_id)? else {
            return Ok(PairingApproval {
                success: false,
                message: "Instance is not running".into(),
            });
        };
        if !is_valid_channel_name(channel) {
            return Ok(PairingApproval {
                success: false,
                message: "Invalid channel name".into(),
            });
        }
        if !is_valid_pairing_code(code) {
            return Ok(PairingApproval {
                success: false,
                message: "Invalid pairing code".into(),
            });
        }
        let command = env_home(&["openclaw", "pairing", "approve", channel, code, "--notify"]);
        let response = self.exec(&app, &machine_id, command)?;
        let success = response.exit_code == 0;
        if success && let Err(error) = self.kv.delete(&format!("pairing:{app}:{machine_id}")) {
            tracing::warn!(tag = "lifecycle", action = "pairing_cache_delete_failed", user_id, error = %error);
        }
        tracing::info!(
            tag = "lifecycle",
            action = "approve_pairing",
            user_id,
            channel,
            success
        );
        let message = if success {
            "Pairing approved".to_owned()
        } else if !response.stderr.is_empty() {
            response.stderr
        } else if !response.stdout.is_empty() {
            response.stdout
        } else {
            "Approval failed".to_owned()
        };
        Ok(PairingApproval { success, message })
    }

    /// `runDoctor()`: `openclaw doctor --fix --non-interactive` on the machine.
    pub fn run_doctor(&self, user_id: &str) -> Result<DoctorOutcome, LifecycleError> {
        let Some((app, machine_id)) = self.running_target(user_id)? else {
            return Ok(DoctorOutcome {
                success: false,
                output: "Instance is not running".into(),
            });
        };
        let response = self.exec(
            &app,
            &machine_id,
            env_home(&["openclaw", "doctor", "--fix", "--non-interactive"]),
        )?;
        let mut output = response.stdout;
        if !response.stderr.is_empty() {
            output.push('\n');
            output.push_str(&response.stderr);
        }
        tracing::info!(
            tag = "lifecycle",
            action = "run_doctor",
            user_id,
            exit_code = response.exit_code
        );
        Ok(DoctorOutcome {
            success: response.exit_code == 0,
            output,
        })
    }
}
