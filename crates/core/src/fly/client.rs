//! [`FlyClient`]: [`FlyApi`] over any [`HttpTransport`], built from the pure request and response halves.
//!
//! No retries here: the caller decides (the reconciler backs off on transient errors, a user request
//! reports them). Not retrying also keeps non-idempotent calls (create) from being duplicated.

use std::fmt;

use super::api::FlyApi;
use super::error::FlyError;
use super::request::{DEFAULT_BASE_URL, FlyRequests};
use super::response;
use super::transport::{HttpRequest, HttpResponse, HttpTransport};
use super::types::{
    AllocateIpRequest, App, AppList, CreateAppRequest, CreateAppResponse, CreateMachineRequest,
    CreateVolumeRequest, DeleteSecretResponse, ExecRequest, ExecResponse, IpAssignment,
    IpAssignmentList, Machine, MachineListFilter, OrgMachinePage, OrgMachineQuery, SecretInfo,
    SecretList, SetSecretResponse, StartMachineResponse, UpdateMachineRequest, Volume,
    VolumeSnapshot, WaitRequest, WaitResponse,
};

/// Where and as whom the client talks to Fly.
#[derive(Clone)]
pub struct FlyClientConfig {
    /// Without `/v1`; default [`DEFAULT_BASE_URL`].
    pub base_url: String,
    pub api_token: String,
    pub user_agent: String,
}

impl FlyClientConfig {
    pub fn new(api_token: impl Into<String>) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_token: api_token.into(),
            user_agent: concat!("kiloclaw/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }
}

impl fmt::Debug for FlyClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlyClientConfig")
            .field("base_url", &self.base_url)
            .field("api_token", &"<redacted>")
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// The Fly Machines API client.
pub struct FlyClient<T> {
    transport: T,
    requests: FlyRequests,
}

impl<T> fmt::Debug for FlyClient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlyClient")
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl<T: HttpTransport> FlyClient<T> {
    pub fn new(transport: T, config: &FlyClientConfig) -> Self {
        Self {
            transport,
            requests: FlyRequests::new(&config.base_url, &config.api_token, &config.user_agent),
        }
    }

    /// The request builder, for callers that need a raw request (e.g. tests of server-side validation).
    pub fn requests(&self) -> &FlyRequests {
        &self.requests
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    fn send(&self, context: &str, request: HttpRequest) -> Result<HttpResponse, FlyError> {
        self.transport
            .send(request)
            .map_err(|err| FlyError::transport(context, err))
    }
}

impl<T: HttpTransport> FlyApi for FlyClient<T> {
    fn create_machine(
        &self,
        app: &str,
        request: &CreateMachineRequest,
    ) -> Result<Machine, FlyError> {
        const CONTEXT: &str = "create_machine";
        let response = self.send(CONTEXT, self.requests.create_machine(app, request)?)?;
        response::json(CONTEXT, &response)
    }

    fn get_machine(&self, app: &str, machine_id: &str) -> Result<Machine, FlyError> {
        const CONTEXT: &str = "get_machine";
        let response = self.send(CONTEXT, self.requests.get_machine(app, machine_id))?;
        response::json(CONTEXT, &response)
    }

    fn list_machines(
        &self,
        app: &str,
        filter: &MachineListFilter,
    ) -> Result<Vec<Machine>, FlyError> {
        const CONTEXT: &str = "list_machines";
        let response = self.send(CONTEXT, self.requests.list_machines(app, filter))?;
        response::json(CONTEXT, &response)
    }

    fn list_org_machines(
        &self,
        org_slug: &str,
        query: &OrgMachineQuery,
    ) -> Result<OrgMachinePage, FlyError> {
        const CONTEXT: &str = "list_org_machines";
        let response = self.send(CONTEXT, self.requests.list_org_machines(org_slug, query))?;
        response::json(CONTEXT, &response)
    }

    fn update_machine(
        &self,
        app: &str,
        machine_id: &str,
        request: &UpdateMachineRequest,
    ) -> Result<Machine, FlyError> {
        const CONTEXT: &str = "update_machine";
        let response = self.send(
            CONTEXT,
            self.requests.update_machine(app, machine_id, request)?,
        )?;
        response::json(CONTEXT, &response)
    }

    fn start_machine(&self, app: &str, machine_id: &str) -> Result<StartMachineResponse, FlyError> {
        const CONTEXT: &str = "start_machine";
        let response = self.send(CONTEXT, self.requests.start_machine(app, machine_id))?;
        response::lenient_json(CONTEXT, &response)
    }

    fn stop_machine(&self, app: &str, machine_id: &str) -> Result<(), FlyError> {
        const CONTEXT: &str = "stop_machine";
        let response = self.send(CONTEXT, self.requests.stop_machine(app, machine_id))?;
        response::empty(CONTEXT, &response)
    }

    fn destroy_machine(&self, app: &str, machine_id: &str, force: bool) -> Result<(), FlyError> {
        const CONTEXT: &str = "destroy_machine";
        let response = self.send(
            CONTEXT,
            self.requests.destroy_machine(app, machine_id, force),
        )?;
        response::empty(CONTEXT, &response)
    }

    fn wait_machine(
        &self,
        app: &str,
        machine_id: &str,
        request: &WaitRequest,
    ) -> Result<WaitResponse, FlyError> {
        const CONTEXT: &str = "wait_machine";
        let response = self.send(
            CONTEXT,
            self.requests.wait_machine(app, machine_id, request)?,
        )?;
        response::lenient_json(CONTEXT, &response)
    }

    fn exec_machine(
        &self,
        app: &str,
        machine_id: &str,
        request: &ExecRequest,
    ) -> Result<ExecResponse, FlyError> {
        const CONTEXT: &str = "exec";
        let response = self.send(
            CONTEXT,
            self.requests.exec_machine(app, machine_id, request)?,
        )?;
        response::lenient_json(CONTEXT, &response)
    }

    fn list_volumes(&self, app: &str) -> Result<Vec<Volume>, FlyError> {
        const CONTEXT: &str = "list_volumes";
        let response = self.send(CONTEXT, self.requests.list_volumes(app))?;
        response::json(CONTEXT, &response)
    }

    fn create_volume(&self, app: &str, request: &CreateVolumeRequest) -> Result<Volume, FlyError> {
        const CONTEXT: &str = "create_volume";
        let response = self.send(CONTEXT, self.requests.create_volume(app, request)?)?;
        response::json(CONTEXT, &response)
    }

    fn get_volume(&self, app: &str, volume_id: &str) -> Result<Volume, FlyError> {
        const CONTEXT: &str = "get_volume";
        let response = self.send(CONTEXT, self.requests.get_volume(app, volume_id))?;
        response::json(CONTEXT, &response)
    }

    fn delete_volume(&self, app: &str, volume_id: &str) -> Result<(), FlyError> {
        const CONTEXT: &str = "delete_volume";
        let response = self.send(CONTEXT, self.requests.delete_volume(app, volume_id))?;
        response::empty(CONTEXT, &response)
    }

    fn list_volume_snapshots(
        &self,
        app: &str,
        volume_id: &str,
    ) -> Result<Vec<VolumeSnapshot>, FlyError> {
        const CONTEXT: &str = "list_volume_snapshots";
        let response = self.send(CONTEXT, self.requests.list_volume_snapshots(app, volume_id))?;
        response::json(CONTEXT, &response)
    }

    fn create_app(&self, request: &CreateAppRequest) -> Result<CreateAppResponse, FlyError> {
        const CONTEXT: &str = "create_app";
        let response = self.send(CONTEXT, self.requests.create_app(request)?)?;
        response::lenient_json(CONTEXT, &response)
    }

    fn get_app(&self, app: &str) -> Result<Option<App>, FlyError> {
        const CONTEXT: &str = "get_app";
        let response = self.send(CONTEXT, self.requests.get_app(app))?;
        response::optional_json(CONTEXT, &response)
    }

    fn list_apps(&self, org_slug: &str) -> Result<AppList, FlyError> {
        const CONTEXT: &str = "list_apps";
        let response = self.send(CONTEXT, self.requests.list_apps(org_slug))?;
        response::json(CONTEXT, &response)
    }

    fn delete_app(&self, app: &str) -> Result<(), FlyError> {
        const CONTEXT: &str = "delete_app";
        let response = self.send(CONTEXT, self.requests.delete_app(app))?;
        response::empty(CONTEXT, &response)
    }

    fn allocate_ip(
        &self,
        app: &str,
        request: &AllocateIpRequest,
    ) -> Result<IpAssignment, FlyError> {
        const CONTEXT: &str = "allocate_ip";
        let response = self.send(CONTEXT, self.requests.allocate_ip(app, request)?)?;
        response::lenient_json(CONTEXT, &response)
    }

    fn list_ips(&self, app: &str) -> Result<Vec<IpAssignment>, FlyError> {
        const CONTEXT: &str = "list_ips";
        let response = self.send(CONTEXT, self.requests.list_ips(app))?;
        response::json::<IpAssignmentList>(CONTEXT, &response).map(|list| list.ips)
    }

    fn set_secret(
        &self,
        app: &str,
        name: &str,
        value: &str,
    ) -> Result<SetSecretResponse, FlyError> {
        const CONTEXT: &str = "set_secret";
        let response = self.send(CONTEXT, self.requests.set_secret(app, name, value)?)?;
        response::lenient_json(CONTEXT, &response)
    }

    fn delete_secret(&self, app: &str, name: &str) -> Result<DeleteSecretResponse, FlyError> {
        const CONTEXT: &str = "delete_secret";
        let response = self.send(CONTEXT, self.requests.delete_secret(app, name))?;
        response::lenient_json(CONTEXT, &response)
    }

    fn list_secrets(&self, app: &str) -> Result<Vec<SecretInfo>, FlyError> {
        const CONTEXT: &str = "list_secrets";
        let response = self.send(CONTEXT, self.requests.list_secrets(app))?;
        response::json::<SecretList>(CONTEXT, &response).map(|list| list.secrets)
    }
}
