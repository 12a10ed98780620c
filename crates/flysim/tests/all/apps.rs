//! Apps, IP assignments and secrets.

use kiloclaw_core::fly::{AllocateIpRequest, CreateAppRequest, FlyApi, IpAssignmentType};

use crate::support::*;

#[test]
fn app_create_get_list_delete_and_name_rules() {
    let env = start();
    let created = env
        .fly
        .create_app(&CreateAppRequest::new(
            "acct-abc",
            ORG,
            Some("acct-abc".into()),
        ))
        .expect("201");
    assert!(!created.id.is_empty());
    assert!(created.created_at > 0);
    let app = env.fly.get_app("acct-abc").expect("get").expect("exists");
    assert_eq!(app.organization.expect("org").slug, ORG);
    assert_eq!(app.network, Some(serde_json::json!("acct-abc")));
    let taken = env
        .fly
        .create_app(&CreateAppRequest::new("acct-abc", ORG, None))
        .expect_err("422");
    assert_eq!(taken.http_status(), Some(422));
    assert!(taken.is_name_taken());
    assert_eq!(taken.fly_status(), Some("name_taken"));
    let invalid = env
        .fly
        .create_app(&CreateAppRequest::new("Bad_Name", ORG, None))
        .expect_err("422");
    assert!(!invalid.is_name_taken());
    let listed = env.fly.list_apps(ORG).expect("list");
    assert_eq!(
        listed.total_apps, 2,
        "the preconfigured app and the new one"
    );
    assert!(
        env.fly
            .list_apps("other-org")
            .expect("list")
            .apps
            .is_empty()
    );
    assert_eq!(env.fly.get_app("no-such-app").expect("404 is None"), None);

    // Delete cascades to machines and volumes.
    let volume = env
        .fly
        .create_volume(
            "acct-abc",
            &kiloclaw_core::fly::CreateVolumeRequest {
                name: "v".into(),
                region: "dfw".into(),
                size_gb: 1,
                ..Default::default()
            },
        )
        .expect("volume");
    env.fly.delete_app("acct-abc").expect("202");
    assert_eq!(env.fly.get_app("acct-abc").expect("get"), None);
    assert!(
        env.fly
            .get_volume("acct-abc", &volume.id)
            .expect_err("gone")
            .is_not_found()
    );
    assert!(
        !env.admin().volume_dir(&volume.id).exists(),
        "volume data is removed with the app"
    );
    assert!(
        env.fly
            .delete_app("acct-abc")
            .expect_err("404")
            .is_not_found()
    );
}

#[test]
fn ip_assignments_allocate_once_per_type() {
    let env = start();
    let v6 = env
        .fly
        .allocate_ip(APP, &AllocateIpRequest::of(IpAssignmentType::V6))
        .expect("v6");
    assert!(v6.ip.as_deref().is_some_and(|ip| ip.contains(':')));
    let shared = env
        .fly
        .allocate_ip(APP, &AllocateIpRequest::of(IpAssignmentType::SharedV4))
        .expect("v4");
    assert!(shared.shared);
    let again = env
        .fly
        .allocate_ip(APP, &AllocateIpRequest::of(IpAssignmentType::V6))
        .expect_err("dup");
    assert!(again.is_already_exists());
    assert_eq!(env.fly.list_ips(APP).expect("list").len(), 2);
    let missing = env
        .fly
        .allocate_ip("no-app", &AllocateIpRequest::of(IpAssignmentType::V6))
        .expect_err("404");
    assert!(missing.is_not_found());
}

#[test]
fn secrets_bump_the_version_and_never_list_values() {
    let env = start();
    assert_eq!(
        env.fly
            .set_secret(APP, "KILOCLAW_ENV_KEY", "s3cr3t")
            .expect("set")
            .version,
        1
    );
    assert_eq!(
        env.fly.set_secret(APP, "OTHER", "x").expect("set").version,
        2
    );
    let listed = env.fly.list_secrets(APP).expect("list");
    assert_eq!(
        listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["KILOCLAW_ENV_KEY", "OTHER"]
    );
    assert!(listed.iter().all(|s| !s.digest.is_empty()));
    let raw = env
        .http
        .get(env.url(&format!("/v1/apps/{APP}/secrets")))
        .bearer_auth(TOKEN)
        .send()
        .expect("send")
        .text()
        .expect("text");
    assert!(!raw.contains("s3cr3t"), "values are not listed: {raw}");
    assert_eq!(
        env.fly.delete_secret(APP, "OTHER").expect("delete").version,
        3
    );
    assert!(
        env.fly
            .delete_secret(APP, "OTHER")
            .expect_err("404")
            .is_not_found()
    );
    // Many at once, with null unsetting.
    let response: serde_json::Value = env
        .http
        .post(env.url(&format!("/v1/apps/{APP}/secrets")))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"values": {"A": "1", "KILOCLAW_ENV_KEY": null}}))
        .send()
        .expect("send")
        .json()
        .expect("json");
    assert_eq!(response["version"], 4);
    assert_eq!(env.fly.list_secrets(APP).expect("list").len(), 1);
}
