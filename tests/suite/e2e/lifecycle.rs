//! The happy paths: health, provision → start → proxy → stop → start → destroy, the gateway
//! token, the Kilo Code config patch and the restart ("Redeploy") button.

use anyhow::ensure;
use reqwest::Method;
use serde_json::json;

use super::system::System;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_public_and_exact() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let reply = sys.get("/health").await?;
    reply.expect_json(
        200,
        json!({"status": "ok", "service": "kiloclaw", "gateway_port": 18789}),
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_through_http_only() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-lifecycle";

    // Provision: 201 with the sandbox id, a record, a volume and no machine yet.
    let reply = sys
        .platform(
            Method::POST,
            "/api/platform/provision",
            Some(json!({"userId": user})),
        )
        .await?;
    let body = reply.expect(201)?;
    ensure!(
        body == json!({"sandboxId": System::sandbox_id(user)}),
        "provision body: {body}"
    );
    let status = sys.status(user).await?;
    ensure!(
        status["status"] == "provisioned",
        "status after provision: {status}"
    );
    ensure!(
        status["flyMachineId"].is_null(),
        "no machine before start: {status}"
    );
    let volume_id = status["flyVolumeId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(!volume_id.is_empty(), "a volume after provision: {status}");
    ensure!(
        sys.sim().volume(&volume_id).await?.is_some(),
        "the simulator has the volume"
    );

    // Start: running, one started machine with the volume at /root.
    sys.start(user).await?;
    let status = sys.status(user).await?;
    ensure!(
        status["status"] == "running",
        "status after start: {status}"
    );
    let machine_id = status["flyMachineId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(!machine_id.is_empty(), "a machine after start: {status}");
    let machine = sys
        .sim()
        .machine(&machine_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("machine missing"))?;
    ensure!(
        machine.state == "started",
        "machine state {}",
        machine.state
    );
    ensure!(
        machine.mounts_volume_at_root(&volume_id),
        "mounts: {:?}",
        machine.mounts
    );
    ensure!(
        machine.metadata.get("kiloclaw_user_id").map(String::as_str) == Some(user),
        "machine metadata: {:?}",
        machine.metadata
    );

    // Proxied GET: path and query reach the user's machine, pinned by fly-force-instance-id,
    // and neither the user's Authorization header nor the auth cookie is forwarded.
    let token = sys.token(user)?;
    let reply = sys
        .send(
            sys.request(Method::GET, "/some/page?alpha=1&beta=two%20words")
                .bearer_auth(&token)
                .header("cookie", format!("kiloclaw-auth={token}; theme=dark"))
                .header("x-custom", "kept"),
        )
        .await?;
    let echo = reply.expect_echo(200)?;
    ensure!(
        echo.machine_id == machine_id,
        "served by {} not {machine_id}",
        echo.machine_id
    );
    ensure!(echo.method == "GET", "method {}", echo.method);
    ensure!(echo.path == "/some/page", "path {}", echo.path);
    ensure!(
        echo.query == "alpha=1&beta=two%20words",
        "query {}",
        echo.query
    );
    ensure!(
        echo.header("fly-force-instance-id").is_none(),
        "Fly Proxy consumes the routing header"
    );
    ensure!(
        echo.header("authorization").is_none(),
        "Authorization leaked: {:?}",
        echo.headers
    );
    let cookie = echo.header("cookie").unwrap_or_default();
    ensure!(
        !cookie.contains("kiloclaw-auth"),
        "auth cookie leaked: {cookie}"
    );
    ensure!(
        echo.header("x-custom") == Some("kept"),
        "other headers are kept: {:?}",
        echo.headers
    );

    // Proxied POST with a body, via the cookie alone.
    let payload = r#"{"message":"hello machine","n":[1,2,3]}"#;
    let reply = sys
        .send(
            sys.request(Method::POST, "/api/chat?stream=false")
                .header("cookie", format!("kiloclaw-auth={token}"))
                .header("content-type", "application/json")
                .body(payload),
        )
        .await?;
    let echo = reply.expect_echo(200)?;
    ensure!(
        echo.method == "POST" && echo.path == "/api/chat" && echo.query == "stream=false",
        "{echo:?}"
    );
    ensure!(echo.body == payload, "body {:?}", echo.body);
    ensure!(
        echo.machine_id == machine_id,
        "served by {}",
        echo.machine_id
    );

    // A file written on the volume through the gateway survives stop and start.
    sys.write_volume_file(user, "keep.txt", "persist me")
        .await?;

    sys.stop(user).await?;
    let status = sys.status(user).await?;
    ensure!(status["status"] == "stopped", "status after stop: {status}");
    let machine = sys
        .sim()
        .machine(&machine_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("machine gone"))?;
    ensure!(
        machine.state == "stopped",
        "machine after stop: {}",
        machine.state
    );

    sys.start(user).await?;
    let status = sys.status(user).await?;
    ensure!(
        status["status"] == "running",
        "status after restart: {status}"
    );
    ensure!(
        status["flyMachineId"] == machine_id.as_str(),
        "start reuses the stopped machine: {status}"
    );
    ensure!(
        status["flyVolumeId"] == volume_id.as_str(),
        "same volume: {status}"
    );
    let content = sys.read_volume_file(user, "keep.txt").await?;
    ensure!(
        content.as_deref() == Some("persist me"),
        "file after restart: {content:?}"
    );

    // Destroy: the user is unknown again and Fly has nothing left, in the one call (the router
    // waits, bounded, for Fly to finish the machine before deleting its volume).
    sys.destroy(user).await?;
    let status = sys.status(user).await?;
    for field in [
        "userId",
        "sandboxId",
        "status",
        "flyMachineId",
        "flyVolumeId",
    ] {
        ensure!(status[field].is_null(), "{field} after destroy: {status}");
    }
    ensure!(
        sys.sim()
            .machine(&machine_id)
            .await?
            .is_none_or(|m| m.state == "destroyed"),
        "machine left behind"
    );
    ensure!(
        sys.sim().volume(&volume_id).await?.is_none(),
        "volume left behind"
    );
    ensure!(
        sys.sim().live_machines().await?.is_empty(),
        "no live machines at all"
    );
    ensure!(sys.sim().volumes().await?.is_empty(), "no volumes at all");

    // And the proxy says so.
    let reply = sys
        .send(sys.request(Method::GET, "/").bearer_auth(&token))
        .await?;
    reply.expect_json(
        404,
        json!({"error": "Instance not provisioned", "hint": "Your instance has not been created yet. Start it from the dashboard."}),
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_token_route_and_direct_websocket() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-gateway";
    sys.provision(user).await?;
    let reply = sys
        .platform(
            Method::GET,
            &format!("/api/platform/gateway-token?userId={user}"),
            None,
        )
        .await?;
    let body = reply.expect(200)?;
    let expected = sys.expected_gateway_token(user);
    // The direct WebSocket URL comes along (the simulator's proxy: no per-app host name).
    let gateway_url = body["gatewayUrl"].as_str().unwrap_or_default();
    ensure!(
        body["gatewayToken"] == json!(expected)
            && gateway_url.starts_with("ws://127.0.0.1:")
            && body.as_object().map(|o| o.len()) == Some(2),
        "gateway token body: {body}"
    );
    ensure!(
        expected.len() == 64
            && expected
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "lower hex"
    );

    // The machine was started with the same token: its WebSocket accepts it and refuses others.
    sys.start(user).await?;
    ensure!(
        sys.gateway_websocket_accepts(user, &expected).await?,
        "the right token is accepted"
    );
    let wrong = "0".repeat(64);
    ensure!(
        !sys.gateway_websocket_accepts(user, &wrong).await?,
        "a wrong token is refused"
    );

    // A WebSocket handshake sent to the router is refused with the direct gateway URL instead of
    // a broken upgrade (Spin cannot carry WebSockets).
    let reply = sys
        .send(
            sys.as_user(user, Method::GET, "/ws")?
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("sec-websocket-version", "13"),
        )
        .await?;
    let body = reply.expect(426)?;
    ensure!(
        body["error"] == "WebSocket connections are not proxied",
        "{body}"
    );
    ensure!(
        body["gatewayUrl"]
            .as_str()
            .is_some_and(|u| u.starts_with("ws")),
        "{body}"
    );

    // Missing userId and unknown users.
    sys.platform(Method::GET, "/api/platform/gateway-token", None)
        .await?
        .expect_json(400, json!({"error": "userId query parameter is required"}))?;
    let body = sys
        .platform(
            Method::GET,
            "/api/platform/gateway-token?userId=nobody",
            None,
        )
        .await?
        .expect(404)?;
    ensure!(
        body["error"] == "Instance not provisioned",
        "unknown user: {body}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kilocode_config_patch_validates_the_model() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-kilocode";
    sys.provision(user).await?;

    let models = json!([{"id": "kilocode/anthropic/claude-opus-4.5", "name": "Opus"}]);
    let reply = sys
        .platform(
            Method::PATCH,
            "/api/platform/kilocode-config",
            Some(json!({
                "userId": user,
                "kilocodeApiKey": "kilo-key-1",
                "kilocodeApiKeyExpiresAt": "2030-01-01T00:00:00.000Z",
                "kilocodeDefaultModel": "kilocode/anthropic/claude-opus-4.5",
                "kilocodeModels": models,
            })),
        )
        .await?;
    reply.expect_json(
        200,
        json!({
            "kilocodeApiKey": "kilo-key-1",
            "kilocodeApiKeyExpiresAt": "2030-01-01T00:00:00.000Z",
            "kilocodeDefaultModel": "kilocode/anthropic/claude-opus-4.5",
            "kilocodeModels": models,
        }),
    )?;

    // A model without the kilocode/ prefix and a provider is a field error; nothing changes.
    for bad in ["gpt-4o", "kilocode/only-provider", "anthropic/claude"] {
        let reply = sys
            .platform(
                Method::PATCH,
                "/api/platform/kilocode-config",
                Some(json!({"userId": user, "kilocodeDefaultModel": bad})),
            )
            .await?;
        let body = reply.expect(400)?;
        ensure!(body["error"] == "Invalid request", "{bad}: {body}");
        let messages = body["details"]["kilocodeDefaultModel"].to_string();
        ensure!(
            messages
                .contains("kilocodeDefaultModel must start with kilocode/ and include a provider"),
            "{bad}: {body}"
        );
    }

    // Omitted fields stay, null clears.
    let reply = sys
        .platform(
            Method::PATCH,
            "/api/platform/kilocode-config",
            Some(json!({"userId": user, "kilocodeApiKey": null})),
        )
        .await?;
    reply.expect_json(
        200,
        json!({
            "kilocodeApiKey": null,
            "kilocodeApiKeyExpiresAt": "2030-01-01T00:00:00.000Z",
            "kilocodeDefaultModel": "kilocode/anthropic/claude-opus-4.5",
            "kilocodeModels": models,
        }),
    )?;

    // The user's own config summary reflects it.
    let reply = sys
        .send(sys.as_user(user, Method::GET, "/api/kiloclaw/config")?)
        .await?;
    let config = reply.expect(200)?;
    ensure!(
        config["kilocodeDefaultModel"] == "kilocode/anthropic/claude-opus-4.5",
        "{config}"
    );
    ensure!(config["hasKiloCodeApiKey"] == false, "{config}");

    // Patching an unknown user never creates an instance.
    let reply = sys
        .platform(
            Method::PATCH,
            "/api/platform/kilocode-config",
            Some(json!({"userId": "nobody", "kilocodeDefaultModel": "kilocode/a/b"})),
        )
        .await?;
    ensure!(
        reply.status == 200 || reply.status == 404,
        "unknown user: {} {}",
        reply.status,
        reply.text
    );
    let status = sys.status("nobody").await?;
    ensure!(
        status["userId"].is_null() && status["status"].is_null(),
        "a patch created an instance: {status}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_redeploys_a_running_machine() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-restart";
    sys.provision(user).await?;

    // Not running yet: the original's `{success:false, error}` body, as a 409 conflict (the
    // original said 500 for what is a state conflict, not a server fault).
    let reply = sys
        .send(sys.as_user(user, Method::POST, "/api/admin/gateway/restart")?)
        .await?;
    reply.expect_json(
        409,
        json!({"success": false, "error": "Instance is not running"}),
    )?;

    sys.start(user).await?;
    let machine_id = sys.status_field(user, "flyMachineId").await?;
    let before = sys
        .sim()
        .machine(&machine_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no machine"))?;
    let reply = sys
        .send(sys.as_user(user, Method::POST, "/api/admin/gateway/restart")?)
        .await?;
    reply.expect_json(
        200,
        json!({"success": true, "message": "Machine restarting with updated configuration..."}),
    )?;
    let after = sys
        .sim()
        .machine(&machine_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("machine gone"))?;
    ensure!(
        after.state == "started",
        "machine after restart: {}",
        after.state
    );
    ensure!(
        after.instance_id != before.instance_id,
        "restart replaced the running instance"
    );
    ensure!(
        sys.status(user).await?["status"] == "running",
        "still running"
    );
    let echo = sys
        .send(sys.as_user(user, Method::GET, "/after-restart")?)
        .await?
        .expect_echo(200)?;
    ensure!(
        echo.machine_id == machine_id,
        "same machine serves after restart"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_gateway_hands_the_control_ui_its_token_and_gateway_url() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-access";
    sys.provision(user).await?;
    sys.start(user).await?;

    let reply = sys.get("/kilo-access-gateway").await?;
    ensure!(
        reply.status == 400 && reply.text == "Missing userId parameter",
        "{} {}",
        reply.status,
        reply.text
    );

    // No session: the access-code form, with the user id HTML-escaped.
    let reply = sys.get("/kilo-access-gateway?userId=%3Cscript%3E").await?;
    ensure!(reply.status == 200, "form status {}", reply.status);
    ensure!(
        reply.text.contains("KiloClaw Access") && reply.text.contains("&lt;script&gt;"),
        "form: {}",
        reply.text
    );
    ensure!(!reply.text.contains("<script>"), "user id not escaped");

    // A session cookie for the same user: straight into the Control UI.
    let token = sys.token(user)?;
    let reply = sys
        .send(
            sys.request(Method::GET, &format!("/kilo-access-gateway?userId={user}"))
                .header("cookie", format!("kiloclaw-auth={token}")),
        )
        .await?;
    ensure!(
        reply.status == 302,
        "redirect expected, got {} {}",
        reply.status,
        reply.text
    );
    let location = reply
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let expected = sys.expected_gateway_token(user);
    ensure!(
        location.starts_with(&format!("/#token={expected}&gatewayUrl=ws")),
        "location: {location}"
    );

    // A session for another user shows the form instead.
    let other = sys.token("someone-else")?;
    let reply = sys
        .send(
            sys.request(Method::GET, &format!("/kilo-access-gateway?userId={user}"))
                .header("cookie", format!("kiloclaw-auth={other}")),
        )
        .await?;
    ensure!(
        reply.status == 200 && reply.text.contains("KiloClaw Access"),
        "{} {}",
        reply.status,
        reply.text
    );
    Ok(())
}
