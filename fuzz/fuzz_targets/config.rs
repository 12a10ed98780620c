//! Platform request bodies and deployment settings: `kiloclaw_core::requests::{parse_provision,
//! parse_kilocode_patch, parse_channels_patch, parse_user_id_request}` and
//! `kiloclaw_core::settings::{Settings::from_lookup, validate_regions, parse_regions}`.
//!
//! Properties, beyond "never panics": a parse never accepts what its validation rules reject —
//! an accepted body has a non-empty `userId`, shell-identifier env names outside the reserved
//! prefixes, `rsa-aes-256-gcm` v1 envelopes, a valid region list, a positive machine size and a
//! `kilocode/<provider>/<model>` default model on PATCH; a body is malformed exactly when it is not
//! JSON; accepted settings carry a non-empty secret, an app or org and valid regions; and
//! `validate_regions` accepts exactly the lists `parse_regions` splits into region codes.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use kiloclaw_core::record::Envelope;
use kiloclaw_core::requests::{
    Patch, RequestError, env_var_name_problem, is_kilocode_model_id, parse_channels_patch,
    parse_kilocode_patch, parse_provision, parse_user_id_request,
};
use kiloclaw_core::settings::{Settings, parse_regions, validate_regions};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const SETTING_NAMES: [&str; 12] = [
    "gateway_token_secret",
    "fly_app_name",
    "fly_org_slug",
    "fly_region",
    "fly_registry_app",
    "fly_image_tag",
    "worker_env",
    "dev_mode",
    "kilocode_api_base_url",
    "telegram_dm_policy",
    "discord_dm_policy",
    "openclaw_allowed_origins",
];

fn envelope_ok(envelope: &Envelope) -> bool {
    envelope.algorithm == "rsa-aes-256-gcm" && envelope.version == 1
}

fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok()
}

/// Every parser: `MalformedJson` exactly for non-JSON bodies, and a non-object is never accepted.
fn check_error<T>(body: &[u8], result: &Result<T, RequestError>) {
    let object = matches!(serde_json::from_slice::<Value>(body), Ok(Value::Object(_)));
    match result {
        Err(RequestError::MalformedJson) => assert!(!is_json(body), "JSON called malformed"),
        Err(RequestError::Invalid(errors)) => assert!(!errors.is_empty()),
        Ok(_) => assert!(object, "accepted a body that is not a JSON object"),
    }
    if !is_json(body) {
        assert!(matches!(result, Err(RequestError::MalformedJson)));
    }
}

fn check_body(body: &[u8]) {
    let provision = parse_provision(body);
    check_error(body, &provision);
    if let Ok(request) = &provision {
        assert!(!request.user_id.is_empty());
        let config = &request.config;
        for name in config.env_vars.iter().flat_map(BTreeMap::keys) {
            assert_eq!(
                env_var_name_problem(name),
                None,
                "accepted env var {name:?}"
            );
        }
        for (name, envelope) in config.encrypted_secrets.iter().flatten() {
            assert_eq!(env_var_name_problem(name), None, "accepted secret {name:?}");
            assert!(envelope_ok(envelope), "accepted envelope {envelope:?}");
        }
        if let Some(channels) = &config.channels {
            assert!(channels.count() > 0);
            for envelope in [
                &channels.telegram_bot_token,
                &channels.discord_bot_token,
                &channels.slack_bot_token,
                &channels.slack_app_token,
            ]
            .into_iter()
            .flatten()
            {
                assert!(
                    envelope_ok(envelope),
                    "accepted channel envelope {envelope:?}"
                );
            }
        }
        if let Some(size) = &config.machine_size {
            assert!(
                size.cpus >= 1 && size.memory_mb >= 1,
                "accepted size {size:?}"
            );
        }
        if let Some(region) = &config.region {
            assert!(
                validate_regions(region).is_ok(),
                "accepted region {region:?}"
            );
        }
        // A new key without an expiry clears the old one; an omitted key keeps both.
        if config.kilocode_api_key != Patch::Keep {
            assert_ne!(config.kilocode_api_key_expires_at, Patch::Keep);
        }
        assert_ne!(config.kilocode_default_model, Patch::Keep);
        assert_ne!(config.kilocode_models, Patch::Keep);
    }

    let kilocode = parse_kilocode_patch(body);
    check_error(body, &kilocode);
    if let Ok(patch) = &kilocode {
        assert!(!patch.user_id.is_empty());
        if let Patch::Set(model) = &patch.kilocode_default_model {
            assert!(is_kilocode_model_id(model), "accepted model {model:?}");
        }
    }

    let channels = parse_channels_patch(body);
    check_error(body, &channels);
    if let Ok(patch) = &channels {
        assert!(!patch.user_id.is_empty());
        for token in [
            &patch.telegram_bot_token,
            &patch.discord_bot_token,
            &patch.slack_bot_token,
            &patch.slack_app_token,
        ] {
            if let Patch::Set(envelope) = token {
                assert!(
                    envelope_ok(envelope),
                    "accepted channel envelope {envelope:?}"
                );
            }
        }
        let value: Value = serde_json::from_slice(body).expect("accepted body is JSON");
        assert!(
            value["channels"].is_object(),
            "accepted without a channels object"
        );
    }

    let user = parse_user_id_request(body);
    check_error(body, &user);
    if let Ok(user_id) = &user {
        let value: Value = serde_json::from_slice(body).expect("accepted body is JSON");
        assert_eq!(value["userId"].as_str(), Some(user_id.as_str()));
        assert!(!user_id.is_empty());
    }
    // Every parser reads `userId` the same way.
    if let (Ok(provision), Ok(user_id)) = (&provision, &user) {
        assert_eq!(&provision.user_id, user_id);
    }
}

fn is_region_code(region: &str) -> bool {
    (3..=4).contains(&region.len()) && region.bytes().all(|b| b.is_ascii_lowercase())
}

fn check_regions(list: &str) {
    let parsed = parse_regions(list);
    for region in &parsed {
        assert!(!region.is_empty() && !region.contains(','));
        assert_eq!(region.trim(), region);
    }
    match validate_regions(list) {
        Ok(regions) => {
            assert_eq!(regions, parsed);
            assert!(!regions.is_empty() && regions.iter().all(|r| is_region_code(r)));
        }
        Err(reason) => {
            assert!(!reason.is_empty());
            assert!(parsed.is_empty() || parsed.iter().any(|r| !is_region_code(r)));
        }
    }
}

fn check_settings(pairs: &[(u8, String)]) {
    let mut values = BTreeMap::new();
    for (index, value) in pairs {
        values.insert(
            SETTING_NAMES[usize::from(*index) % SETTING_NAMES.len()],
            value.clone(),
        );
    }
    let get = |name: &str| {
        values
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    match Settings::from_lookup(|name| values.get(name).cloned()) {
        Ok(settings) => {
            assert!(!settings.gateway_token_secret.is_empty());
            assert_eq!(
                settings.gateway_token_secret,
                settings.gateway_token_secret.trim()
            );
            assert!(settings.legacy_fly_app_name.is_some() || settings.fly_org_slug.is_some());
            assert!(!settings.fly_regions.is_empty());
            assert!(settings.fly_regions.iter().all(|r| is_region_code(r)));
            assert_eq!(
                settings.dev_mode,
                get("dev_mode").as_deref() == Some("true")
            );
            assert!(matches!(
                get("dev_mode").as_deref(),
                None | Some("true" | "false")
            ));
            assert!(!settings.registry_app.is_empty() && !settings.image_tag.is_empty());
            assert_eq!(settings.worker_env, get("worker_env"));
        }
        Err(error) => {
            assert!(!error.0.is_empty());
            let _ = error.to_string();
        }
    }
}

// The first byte picks the check (so the hand-written seeds are plain JSON after one byte):
// 0 request bodies, 1 a region list, 2 settings (the rest read as `arbitrary` name/value pairs).
fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => check_body(rest),
        1 => check_regions(&String::from_utf8_lossy(rest)),
        _ => {
            if let Ok(pairs) = Vec::<(u8, String)>::arbitrary_take_rest(Unstructured::new(rest)) {
                check_settings(&pairs);
            }
        }
    }
});
