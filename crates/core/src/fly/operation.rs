//! The name of the Machines API operation a request performs, recovered from its method and path, so
//! that a host that only sees outbound HTTP (metrics) can count Fly calls by operation. The names are
//! [`super::FlyRequests`]' method names.

/// `None` for a path outside `/v1/apps` and `/v1/orgs` (user traffic through the Fly proxy, say); `other_fly_call`
/// for a Machines API path this client never builds.
pub fn operation_of(method: &str, path: &str) -> Option<&'static str> {
    if let Some(org) = path.strip_prefix("/v1/orgs/") {
        let segments: Vec<&str> = org.split('/').filter(|s| !s.is_empty()).collect();
        return Some(match (method, segments.as_slice()) {
            ("GET", [_, "machines"]) => "list_org_machines",
            _ => "other_fly_call",
        });
    }
    let rest = path.strip_prefix("/v1/apps")?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    Some(match (method, segments.as_slice()) {
        ("POST", []) => "create_app",
        ("GET", []) => "list_apps",
        ("GET", [_]) => "get_app",
        ("DELETE", [_]) => "delete_app",
        ("POST", [_, "machines"]) => "create_machine",
        ("GET", [_, "machines"]) => "list_machines",
        ("GET", [_, "machines", _]) => "get_machine",
        ("POST", [_, "machines", _]) => "update_machine",
        ("DELETE", [_, "machines", _]) => "destroy_machine",
        ("POST", [_, "machines", _, "start"]) => "start_machine",
        ("POST", [_, "machines", _, "stop"]) => "stop_machine",
        ("GET", [_, "machines", _, "wait"]) => "wait_machine",
        ("POST", [_, "machines", _, "exec"]) => "exec_machine",
        ("GET", [_, "volumes"]) => "list_volumes",
        ("POST", [_, "volumes"]) => "create_volume",
        ("GET", [_, "volumes", _]) => "get_volume",
        ("DELETE", [_, "volumes", _]) => "delete_volume",
        ("GET", [_, "volumes", _, "snapshots"]) => "list_volume_snapshots",
        ("POST", [_, "ip_assignments"]) => "allocate_ip",
        ("GET", [_, "ip_assignments"]) => "list_ips",
        ("GET", [_, "secrets"]) => "list_secrets",
        ("POST", [_, "secrets", _]) => "set_secret",
        ("DELETE", [_, "secrets", _]) => "delete_secret",
        _ => "other_fly_call",
    })
}

#[cfg(test)]
mod tests {
    use super::operation_of;
    use crate::fly::{
        CreateMachineRequest, CreateVolumeRequest, ExecRequest, FlyRequests, HttpRequest,
        MachineListFilter, UpdateMachineRequest, WaitRequest, WaitState,
    };

    fn named(request: &HttpRequest) -> Option<&'static str> {
        let after_scheme = request.url.split_once("://").map_or("", |(_, rest)| rest);
        let path = after_scheme
            .find('/')
            .map_or("", |i| &after_scheme[i..])
            .split('?')
            .next()
            .unwrap_or_default();
        operation_of(request.method.as_str(), path)
    }

    #[test]
    fn every_request_the_client_builds_is_named_after_its_builder()
    -> Result<(), crate::fly::FlyError> {
        let fly = FlyRequests::new("https://api.machines.dev", "token", "test");
        let (app, machine, volume) = ("acct-1", "m 1", "vol/1");
        let wait = WaitRequest {
            state: WaitState::Started,
            timeout_s: 30,
            instance_id: None,
        };
        let built = [
            (
                fly.create_machine(app, &CreateMachineRequest::default())?,
                "create_machine",
            ),
            (fly.get_machine(app, machine), "get_machine"),
            (
                fly.list_org_machines("org", &crate::fly::OrgMachineQuery::default()),
                "list_org_machines",
            ),
            (
                fly.list_machines(app, &MachineListFilter::default()),
                "list_machines",
            ),
            (
                fly.update_machine(app, machine, &UpdateMachineRequest::default())?,
                "update_machine",
            ),
            (fly.start_machine(app, machine), "start_machine"),
            (fly.stop_machine(app, machine), "stop_machine"),
            (fly.destroy_machine(app, machine, true), "destroy_machine"),
            (fly.wait_machine(app, machine, &wait)?, "wait_machine"),
            (
                fly.exec_machine(app, machine, &ExecRequest::default())?,
                "exec_machine",
            ),
            (fly.list_volumes(app), "list_volumes"),
            (
                fly.create_volume(app, &CreateVolumeRequest::default())?,
                "create_volume",
            ),
            (fly.get_volume(app, volume), "get_volume"),
            (fly.delete_volume(app, volume), "delete_volume"),
            (
                fly.list_volume_snapshots(app, volume),
                "list_volume_snapshots",
            ),
            (fly.get_app(app), "get_app"),
            (fly.list_apps("org"), "list_apps"),
            (fly.delete_app(app), "delete_app"),
            (fly.list_ips(app), "list_ips"),
            (fly.set_secret(app, "NAME", "value")?, "set_secret"),
            (fly.delete_secret(app, "NAME"), "delete_secret"),
            (fly.list_secrets(app), "list_secrets"),
        ];
        for (request, name) in &built {
            assert_eq!(
                named(request),
                Some(*name),
                "{} {}",
                request.method.as_str(),
                request.url
            );
        }
        Ok(())
    }

    #[test]
    fn paths_outside_the_machines_api_have_no_operation() {
        assert_eq!(operation_of("GET", "/"), None);
        assert_eq!(operation_of("GET", "/hello"), None);
        assert_eq!(operation_of("GET", "/v1/appsx"), None);
        assert_eq!(
            operation_of("PUT", "/v1/apps/a/machines"),
            Some("other_fly_call")
        );
        assert_eq!(operation_of("POST", "/v1/apps"), Some("create_app"));
    }
}
