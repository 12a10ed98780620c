//! The [`FlyApi`] trait: one synchronous method per Fly call the control plane makes.
//!
//! Every method takes the app name, because each user has a Fly app of their own. Errors keep Fly's
//! status and body; see [`FlyError`] for how to classify them.

use super::error::FlyError;
use super::types::{
    AllocateIpRequest, App, AppList, CreateAppRequest, CreateAppResponse, CreateMachineRequest,
    CreateVolumeRequest, DeleteSecretResponse, ExecRequest, ExecResponse, IpAssignment, Machine,
    MachineListFilter, OrgMachinePage, OrgMachineQuery, SecretInfo, SetSecretResponse,
    StartMachineResponse, UpdateMachineRequest, Volume, VolumeSnapshot, WaitRequest, WaitResponse,
};

/// The Fly Machines API as the control plane uses it.
pub trait FlyApi {
    // ---- machines ----

    /// `POST /v1/apps/{app}/machines` (200, machine in state `created`).
    fn create_machine(
        &self,
        app: &str,
        request: &CreateMachineRequest,
    ) -> Result<Machine, FlyError>;
    /// `GET /v1/apps/{app}/machines/{id}`.
    fn get_machine(&self, app: &str, machine_id: &str) -> Result<Machine, FlyError>;
    /// `GET /v1/apps/{app}/machines?metadata.{k}={v}…`; all metadata pairs must match.
    fn list_machines(
        &self,
        app: &str,
        filter: &MachineListFilter,
    ) -> Result<Vec<Machine>, FlyError>;
    /// `GET /v1/orgs/{org}/machines`: one page of the org-wide listing, oldest `updated_at` first.
    fn list_org_machines(
        &self,
        org_slug: &str,
        query: &OrgMachineQuery,
    ) -> Result<OrgMachinePage, FlyError>;
    /// `POST /v1/apps/{app}/machines/{id}` with the whole new config; returns the machine (new `instance_id`).
    fn update_machine(
        &self,
        app: &str,
        machine_id: &str,
        request: &UpdateMachineRequest,
    ) -> Result<Machine, FlyError>;
    /// `POST …/start`.
    fn start_machine(&self, app: &str, machine_id: &str) -> Result<StartMachineResponse, FlyError>;
    /// `POST …/stop` with no body (Fly's default signal and timeout).
    fn stop_machine(&self, app: &str, machine_id: &str) -> Result<(), FlyError>;
    /// `DELETE …/{id}[?force=true]`.
    fn destroy_machine(&self, app: &str, machine_id: &str, force: bool) -> Result<(), FlyError>;
    /// `GET …/wait?state=&timeout=&instance_id=`; timeout clamped to 1–60 s; 408 when not reached.
    fn wait_machine(
        &self,
        app: &str,
        machine_id: &str,
        request: &WaitRequest,
    ) -> Result<WaitResponse, FlyError>;
    /// `POST …/exec`; 200 even when the command fails (check `exit_code`).
    fn exec_machine(
        &self,
        app: &str,
        machine_id: &str,
        request: &ExecRequest,
    ) -> Result<ExecResponse, FlyError>;

    // ---- volumes ----

    /// `GET /v1/apps/{app}/volumes` (may include soft-deleted volumes; see `VolumeState::is_deleted`).
    fn list_volumes(&self, app: &str) -> Result<Vec<Volume>, FlyError>;
    /// `POST /v1/apps/{app}/volumes`.
    fn create_volume(&self, app: &str, request: &CreateVolumeRequest) -> Result<Volume, FlyError>;
    /// `GET /v1/apps/{app}/volumes/{id}`.
    fn get_volume(&self, app: &str, volume_id: &str) -> Result<Volume, FlyError>;
    /// `DELETE /v1/apps/{app}/volumes/{id}`.
    fn delete_volume(&self, app: &str, volume_id: &str) -> Result<(), FlyError>;
    /// `GET /v1/apps/{app}/volumes/{id}/snapshots`.
    fn list_volume_snapshots(
        &self,
        app: &str,
        volume_id: &str,
    ) -> Result<Vec<VolumeSnapshot>, FlyError>;

    // ---- apps ----

    /// `POST /v1/apps` (201). A taken name is 422 `name_taken` (`FlyError::is_name_taken`).
    fn create_app(&self, request: &CreateAppRequest) -> Result<CreateAppResponse, FlyError>;
    /// `GET /v1/apps/{app}`; 404 → `None`.
    fn get_app(&self, app: &str) -> Result<Option<App>, FlyError>;
    /// `GET /v1/apps?org_slug=`.
    fn list_apps(&self, org_slug: &str) -> Result<AppList, FlyError>;
    /// `DELETE /v1/apps/{app}` (202); cascades to machines and volumes.
    fn delete_app(&self, app: &str) -> Result<(), FlyError>;
    /// `POST /v1/apps/{app}/ip_assignments`; an existing assignment is 409/422 (`is_already_exists`).
    fn allocate_ip(&self, app: &str, request: &AllocateIpRequest)
    -> Result<IpAssignment, FlyError>;
    /// `GET /v1/apps/{app}/ip_assignments`.
    fn list_ips(&self, app: &str) -> Result<Vec<IpAssignment>, FlyError>;

    // ---- secrets ----

    /// `POST /v1/apps/{app}/secrets/{name}` (201); returns the app's new secrets version.
    fn set_secret(&self, app: &str, name: &str, value: &str)
    -> Result<SetSecretResponse, FlyError>;
    /// `DELETE /v1/apps/{app}/secrets/{name}`.
    fn delete_secret(&self, app: &str, name: &str) -> Result<DeleteSecretResponse, FlyError>;
    /// `GET /v1/apps/{app}/secrets` (names and digests, never values).
    fn list_secrets(&self, app: &str) -> Result<Vec<SecretInfo>, FlyError>;
}
