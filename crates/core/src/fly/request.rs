//! Pure request building: one method per Fly call, each returning a complete [`HttpRequest`].
//!
//! Path segments (app names, ids, secret names) and query values are percent-encoded. `/wait` timeouts are
//! clamped to Fly's 1–60 s and `state=stopped` without `instance_id` is refused before sending, because
//! Fly answers both with 400.

use std::fmt;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

use super::error::FlyError;
use super::transport::{HttpMethod, HttpRequest};
use super::types::{
    AllocateIpRequest, CreateAppRequest, CreateMachineRequest, CreateVolumeRequest, ExecRequest,
    MachineListFilter, OrgMachineQuery, SetSecretRequest, UpdateMachineRequest, WaitRequest,
    WaitState,
};

/// Fly's public Machines API.
pub const DEFAULT_BASE_URL: &str = "https://api.machines.dev";
/// `/wait` accepts 1..=60 seconds.
pub const MIN_WAIT_TIMEOUT_S: u32 = 1;
pub const MAX_WAIT_TIMEOUT_S: u32 = 60;

/// Budget for ordinary calls; Fly answers them in well under a second, exec takes 1–2 s.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Margin on top of a long-poll's server-side timeout.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(15);

/// Everything but RFC 3986 unreserved characters is encoded, in path segments and query components.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Builds requests for one Fly API endpoint and token.
#[derive(Clone)]
pub struct FlyRequests {
    base_url: String,
    authorization: String,
    user_agent: String,
}

impl fmt::Debug for FlyRequests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlyRequests")
            .field("base_url", &self.base_url)
            .field("authorization", &"<redacted>")
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

impl FlyRequests {
    /// `base_url` without `/v1` (e.g. `https://api.machines.dev` or `http://127.0.0.1:4280`). A token that
    /// already carries Fly's `FlyV1 ` macaroon prefix is sent as is (as fly-go does), others as `Bearer`.
    pub fn new(base_url: &str, api_token: &str, user_agent: &str) -> Self {
        let authorization = if api_token.starts_with("FlyV1 ") {
            api_token.to_owned()
        } else {
            format!("Bearer {api_token}")
        };
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            authorization,
            user_agent: user_agent.to_owned(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    // ---- machines ----

    pub fn create_machine(
        &self,
        app: &str,
        body: &CreateMachineRequest,
    ) -> Result<HttpRequest, FlyError> {
        self.json(
            HttpMethod::Post,
            &[app, "machines"],
            &[],
            "create_machine",
            body,
        )
    }

    pub fn get_machine(&self, app: &str, machine_id: &str) -> HttpRequest {
        self.bare(HttpMethod::Get, &[app, "machines", machine_id], &[])
    }

    pub fn list_machines(&self, app: &str, filter: &MachineListFilter) -> HttpRequest {
        let mut query: Vec<(String, String)> = filter
            .metadata
            .iter()
            .map(|(key, value)| (format!("metadata.{key}"), value.clone()))
            .collect();
        if let Some(region) = &filter.region {
            query.push(("region".to_owned(), region.clone()));
        }
        if filter.include_deleted {
            query.push(("include_deleted".to_owned(), "true".to_owned()));
        }
        self.bare(HttpMethod::Get, &[app, "machines"], &query)
    }

    pub fn list_org_machines(&self, org_slug: &str, query: &OrgMachineQuery) -> HttpRequest {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(updated_after) = &query.updated_after {
            pairs.push(("updated_after".to_owned(), updated_after.clone()));
        }
        if let Some(cursor) = &query.cursor {
            pairs.push(("cursor".to_owned(), cursor.clone()));
        }
        if let Some(limit) = query.limit {
            pairs.push(("limit".to_owned(), limit.to_string()));
        }
        if query.include_deleted {
            pairs.push(("include_deleted".to_owned(), "true".to_owned()));
        }
        let mut request = self.bare(HttpMethod::Get, &[], &[]);
        request.url = self.url_under("orgs", &[org_slug, "machines"], &pairs);
        request
    }

    pub fn update_machine(
        &self,
        app: &str,
        machine_id: &str,
        body: &UpdateMachineRequest,
    ) -> Result<HttpRequest, FlyError> {
        self.json(
            HttpMethod::Post,
            &[app, "machines", machine_id],
            &[],
            "update_machine",
            body,
        )
    }

    pub fn start_machine(&self, app: &str, machine_id: &str) -> HttpRequest {
        self.bare(
            HttpMethod::Post,
            &[app, "machines", machine_id, "start"],
            &[],
        )
    }

    pub fn stop_machine(&self, app: &str, machine_id: &str) -> HttpRequest {
        self.bare(
            HttpMethod::Post,
            &[app, "machines", machine_id, "stop"],
            &[],
        )
    }

    pub fn destroy_machine(&self, app: &str, machine_id: &str, force: bool) -> HttpRequest {
        let query = if force {
            vec![("force".to_owned(), "true".to_owned())]
        } else {
            Vec::new()
        };
        self.bare(HttpMethod::Delete, &[app, "machines", machine_id], &query)
    }

    pub fn wait_machine(
        &self,
        app: &str,
        machine_id: &str,
        wait: &WaitRequest,
    ) -> Result<HttpRequest, FlyError> {
        if wait.state == WaitState::Stopped && wait.instance_id.as_deref().is_none_or(str::is_empty)
        {
            return Err(FlyError::invalid_request(
                "wait_machine",
                "instance_id required when waiting for stopped machine",
            ));
        }
        let timeout_s = wait.timeout_s.clamp(MIN_WAIT_TIMEOUT_S, MAX_WAIT_TIMEOUT_S);
        let mut query = vec![
            ("state".to_owned(), wait.state.as_str().to_owned()),
            ("timeout".to_owned(), timeout_s.to_string()),
        ];
        if let Some(instance_id) = wait.instance_id.as_deref().filter(|id| !id.is_empty()) {
            query.push(("instance_id".to_owned(), instance_id.to_owned()));
        }
        let mut request = self.bare(
            HttpMethod::Get,
            &[app, "machines", machine_id, "wait"],
            &query,
        );
        request.timeout = Duration::from_secs(u64::from(timeout_s)) + LONG_POLL_MARGIN;
        Ok(request)
    }

    pub fn exec_machine(
        &self,
        app: &str,
        machine_id: &str,
        body: &ExecRequest,
    ) -> Result<HttpRequest, FlyError> {
        let mut request = self.json(
            HttpMethod::Post,
            &[app, "machines", machine_id, "exec"],
            &[],
            "exec",
            body,
        )?;
        if let Some(timeout_s) = body.timeout {
            request.timeout = Duration::from_secs(u64::from(timeout_s)) + LONG_POLL_MARGIN;
        }
        Ok(request)
    }

    // ---- volumes ----

    pub fn list_volumes(&self, app: &str) -> HttpRequest {
        self.bare(HttpMethod::Get, &[app, "volumes"], &[])
    }

    pub fn create_volume(
        &self,
        app: &str,
        body: &CreateVolumeRequest,
    ) -> Result<HttpRequest, FlyError> {
        self.json(
            HttpMethod::Post,
            &[app, "volumes"],
            &[],
            "create_volume",
            body,
        )
    }

    pub fn get_volume(&self, app: &str, volume_id: &str) -> HttpRequest {
        self.bare(HttpMethod::Get, &[app, "volumes", volume_id], &[])
    }

    pub fn delete_volume(&self, app: &str, volume_id: &str) -> HttpRequest {
        self.bare(HttpMethod::Delete, &[app, "volumes", volume_id], &[])
    }

    pub fn list_volume_snapshots(&self, app: &str, volume_id: &str) -> HttpRequest {
        self.bare(
            HttpMethod::Get,
            &[app, "volumes", volume_id, "snapshots"],
            &[],
        )
    }

    // ---- apps ----

    pub fn create_app(&self, body: &CreateAppRequest) -> Result<HttpRequest, FlyError> {
        self.json(HttpMethod::Post, &[], &[], "create_app", body)
    }

    pub fn get_app(&self, app: &str) -> HttpRequest {
        self.bare(HttpMethod::Get, &[app], &[])
    }

    pub fn list_apps(&self, org_slug: &str) -> HttpRequest {
        self.bare(
            HttpMethod::Get,
            &[],
            &[("org_slug".to_owned(), org_slug.to_owned())],
        )
    }

    pub fn delete_app(&self, app: &str) -> HttpRequest {
        self.bare(HttpMethod::Delete, &[app], &[])
    }

    pub fn allocate_ip(
        &self,
        app: &str,
        body: &AllocateIpRequest,
    ) -> Result<HttpRequest, FlyError> {
        self.json(
            HttpMethod::Post,
            &[app, "ip_assignments"],
            &[],
            "allocate_ip",
            body,
        )
    }

    pub fn list_ips(&self, app: &str) -> HttpRequest {
        self.bare(HttpMethod::Get, &[app, "ip_assignments"], &[])
    }

    // ---- secrets ----

    pub fn set_secret(&self, app: &str, name: &str, value: &str) -> Result<HttpRequest, FlyError> {
        let body = SetSecretRequest {
            value: value.to_owned(),
        };
        self.json(
            HttpMethod::Post,
            &[app, "secrets", name],
            &[],
            "set_secret",
            &body,
        )
    }

    pub fn delete_secret(&self, app: &str, name: &str) -> HttpRequest {
        self.bare(HttpMethod::Delete, &[app, "secrets", name], &[])
    }

    pub fn list_secrets(&self, app: &str) -> HttpRequest {
        self.bare(HttpMethod::Get, &[app, "secrets"], &[])
    }

    // ---- helpers ----

    /// `{base}/v1/apps/{segments…}?{query}` with every segment and query part encoded.
    fn url(&self, segments: &[&str], query: &[(String, String)]) -> String {
        self.url_under("apps", segments, query)
    }

    /// `{base}/v1/{collection}/{segments…}?{query}` with every segment and query part encoded.
    fn url_under(&self, collection: &str, segments: &[&str], query: &[(String, String)]) -> String {
        let mut url = format!("{}/v1/{collection}", self.base_url);
        for segment in segments {
            url.push('/');
            url.push_str(&encode(segment));
        }
        for (index, (key, value)) in query.iter().enumerate() {
            url.push(if index == 0 { '?' } else { '&' });
            url.push_str(&encode(key));
            url.push('=');
            url.push_str(&encode(value));
        }
        url
    }

    fn bare(
        &self,
        method: HttpMethod,
        segments: &[&str],
        query: &[(String, String)],
    ) -> HttpRequest {
        HttpRequest {
            method,
            url: self.url(segments, query),
            headers: vec![
                ("authorization".to_owned(), self.authorization.clone()),
                ("accept".to_owned(), "application/json".to_owned()),
                ("user-agent".to_owned(), self.user_agent.clone()),
            ],
            body: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    fn json<B: Serialize>(
        &self,
        method: HttpMethod,
        segments: &[&str],
        query: &[(String, String)],
        context: &str,
        body: &B,
    ) -> Result<HttpRequest, FlyError> {
        let bytes = serde_json::to_vec(body).map_err(|err| {
            FlyError::invalid_request(context, format!("body does not serialise: {err}"))
        })?;
        let mut request = self.bare(method, segments, query);
        request
            .headers
            .push(("content-type".to_owned(), "application/json".to_owned()));
        request.body = Some(bytes);
        Ok(request)
    }
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}
