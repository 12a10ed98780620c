//! Deployment settings, read once from Spin variables and validated when the component starts, with
//! messages that name the offending variable (original-behaviour.md §7.1).

use std::time::Duration;

use crate::store::StoreSettings;

/// Region priority list used when neither the user nor the deployment names one (`DEFAULT_FLY_REGION`).
pub const DEFAULT_FLY_REGIONS: &str = "dfw,yyz,cdg";

/// Fly's `/wait` endpoint caps at 60 s, so that is the longest single wait (`STARTUP_TIMEOUT_SECONDS`).
pub const STARTUP_TIMEOUT_S: u32 = 60;

/// Settings derived from Spin variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `gateway_token_secret`: HMAC key for gateway tokens.
    pub gateway_token_secret: String,
    /// `fly_app_name`: the legacy shared app, used for records without a per-user app.
    pub legacy_fly_app_name: Option<String>,
    /// `fly_org_slug`: org in which per-user apps are created. Without it, new instances use the legacy app.
    pub fly_org_slug: Option<String>,
    /// `fly_region`, parsed: region priority list.
    pub fly_regions: Vec<String>,
    /// `fly_registry_app` (else `fly_app_name`, else `kiloclaw-machines`): image registry app.
    pub registry_app: String,
    /// `fly_image_tag` (default `latest`).
    pub image_tag: String,
    /// `worker_env` (`production` / `development`).
    pub worker_env: Option<String>,
    /// `dev_mode == "true"`.
    pub dev_mode: bool,
    /// `kilocode_api_base_url`, forwarded to the machine.
    pub kilocode_api_base_url: Option<String>,
    /// `telegram_dm_policy`, forwarded to the machine.
    pub telegram_dm_policy: Option<String>,
    /// `discord_dm_policy`, forwarded to the machine.
    pub discord_dm_policy: Option<String>,
    /// `openclaw_allowed_origins`, forwarded to the machine.
    pub openclaw_allowed_origins: Option<String>,
    /// Store protocol timing.
    pub store: StoreSettings,
    /// Longest single Fly wait, seconds.
    pub startup_timeout_s: u32,
}

/// One problem with the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingProblem {
    /// A required variable is unset or empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A variable has an unusable value.
    #[error("{name} is invalid: {reason}")]
    Invalid {
        /// Variable name.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

/// Every problem found, so an operator fixes them in one go. Not retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct SettingsError(pub Vec<SettingProblem>);

/// Splits a comma-separated region list, trimming and dropping empty entries (`parseRegions`).
pub fn parse_regions(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A Fly region code: 3 lowercase letters (4 for a few newer ones).
fn is_region_code(region: &str) -> bool {
    (3..=4).contains(&region.len()) && region.chars().all(|c| c.is_ascii_lowercase())
}

/// Validates a region list; returns the parsed regions or a reason.
pub fn validate_regions(list: &str) -> Result<Vec<String>, String> {
    let regions = parse_regions(list);
    if regions.is_empty() {
        return Err("must name at least one region".into());
    }
    if let Some(bad) = regions.iter().find(|r| !is_region_code(r)) {
        return Err(format!("'{bad}' is not a Fly region code (e.g. dfw)"));
    }
    Ok(regions)
}

/// The longest `lease_ttl_seconds` accepted: a day.
pub const MAX_LEASE_TTL_S: u64 = 86_400;

/// Parses `lease_ttl_seconds`: a whole number of seconds, 1 to [`MAX_LEASE_TTL_S`]. Production keeps
/// the default (150 s, longer than Fly's longest single wait of 60 s); tests that kill the host set
/// a few seconds so that a dead holder's lease expires quickly.
pub fn parse_lease_ttl(value: &str) -> Result<Duration, String> {
    match value.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1 second".into()),
        Ok(seconds) if seconds > MAX_LEASE_TTL_S => {
            Err(format!("{seconds} is more than {MAX_LEASE_TTL_S} seconds"))
        }
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => Err(format!("'{value}' is not a whole number of seconds")),
    }
}

impl Settings {
    /// Reads settings through `lookup` (variable name → value; empty counts as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();
        let gateway_token_secret = get("gateway_token_secret").unwrap_or_else(|| {
            problems.push(SettingProblem::Missing("gateway_token_secret"));
            String::new()
        });
        let legacy_fly_app_name = get("fly_app_name");
        let fly_org_slug = get("fly_org_slug");
        if legacy_fly_app_name.is_none() && fly_org_slug.is_none() {
            problems.push(SettingProblem::Invalid {
                name: "fly_org_slug",
                reason: "set fly_org_slug (per-user apps) or fly_app_name (shared legacy app)"
                    .into(),
            });
        }
        let fly_regions = match validate_regions(
            &get("fly_region").unwrap_or_else(|| DEFAULT_FLY_REGIONS.into()),
        ) {
            Ok(regions) => regions,
            Err(reason) => {
                problems.push(SettingProblem::Invalid {
                    name: "fly_region",
                    reason,
                });
                Vec::new()
            }
        };
        let worker_env = get("worker_env");
        let dev_mode = match get("dev_mode").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                problems.push(SettingProblem::Invalid {
                    name: "dev_mode",
                    reason: format!("expected true or false, got '{other}'"),
                });
                false
            }
        };
        let mut store = StoreSettings::default();
        if let Some(value) = get("lease_ttl_seconds") {
            match parse_lease_ttl(&value) {
                Ok(ttl) => store.lease_ttl = ttl,
                Err(reason) => problems.push(SettingProblem::Invalid {
                    name: "lease_ttl_seconds",
                    reason,
                }),
            }
        }
        let settings = Self {
            gateway_token_secret,
            registry_app: get("fly_registry_app")
                .or_else(|| legacy_fly_app_name.clone())
                .unwrap_or_else(|| "kiloclaw-machines".into()),
            legacy_fly_app_name,
            fly_org_slug,
            fly_regions,
            image_tag: get("fly_image_tag").unwrap_or_else(|| "latest".into()),
            worker_env,
            dev_mode,
            kilocode_api_base_url: get("kilocode_api_base_url"),
            telegram_dm_policy: get("telegram_dm_policy"),
            discord_dm_policy: get("discord_dm_policy"),
            openclaw_allowed_origins: get("openclaw_allowed_origins"),
            store,
            startup_timeout_s: STARTUP_TIMEOUT_S,
        };
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(SettingsError(problems))
        }
    }

    /// Minimal valid settings for tests and tools.
    pub fn for_tests() -> Self {
        Self {
            gateway_token_secret: "test-gateway-secret".into(),
            legacy_fly_app_name: None,
            fly_org_slug: Some("test-org".into()),
            fly_regions: parse_regions(DEFAULT_FLY_REGIONS),
            registry_app: "kiloclaw-machines".into(),
            image_tag: "latest".into(),
            worker_env: Some("production".into()),
            dev_mode: false,
            kilocode_api_base_url: None,
            telegram_dm_policy: None,
            discord_dm_policy: None,
            openclaw_allowed_origins: None,
            store: StoreSettings {
                lease_ttl: Duration::from_secs(150),
                lease_wait: Duration::from_secs(90),
                lease_poll: Duration::from_millis(250),
                cas_attempts: 16,
                creation_grace: Duration::from_secs(10),
            },
            startup_timeout_s: STARTUP_TIMEOUT_S,
        }
    }

    /// `worker_env == development` (drives the `dev-` app prefix).
    pub fn is_development(&self) -> bool {
        self.worker_env.as_deref() == Some("development")
    }

    /// Machine image reference.
    pub fn image(&self) -> String {
        format!("registry.fly.io/{}:{}", self.registry_app, self.image_tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn settings_defaults_follow_original() {
        let settings = Settings::from_lookup(lookup(&[
            ("gateway_token_secret", "s"),
            ("fly_app_name", "kiloclaw-machines"),
        ]))
        .expect("valid");
        assert_eq!(settings.fly_regions, vec!["dfw", "yyz", "cdg"]);
        assert_eq!(settings.image(), "registry.fly.io/kiloclaw-machines:latest");
        assert_eq!(settings.startup_timeout_s, 60);
    }

    #[test]
    fn settings_report_every_problem_by_name() {
        let error = Settings::from_lookup(lookup(&[
            ("fly_region", "dfw, eu-west"),
            ("dev_mode", "yes"),
        ]))
        .expect_err("invalid");
        let text = error.to_string();
        assert!(text.contains("gateway_token_secret is required"), "{text}");
        assert!(text.contains("fly_org_slug"), "{text}");
        assert!(text.contains("fly_region is invalid: 'eu-west'"), "{text}");
        assert!(text.contains("dev_mode"), "{text}");
    }

    #[test]
    fn lease_ttl_defaults_to_150_s_and_rejects_zero_and_garbage() {
        let base = [("gateway_token_secret", "s"), ("fly_org_slug", "org")];
        let settings = Settings::from_lookup(lookup(&base)).expect("valid");
        assert_eq!(settings.store.lease_ttl, Duration::from_secs(150));
        let with = |value: &str| {
            let mut pairs = base.to_vec();
            pairs.push(("lease_ttl_seconds", value));
            Settings::from_lookup(lookup(&pairs))
        };
        assert_eq!(
            with(" 3 ").expect("valid").store.lease_ttl,
            Duration::from_secs(3)
        );
        assert_eq!(
            with("").expect("empty is unset").store.lease_ttl,
            Duration::from_secs(150)
        );
        for bad in ["0", "-5", "2.5", "soon", "86401"] {
            let text = with(bad).expect_err(bad).to_string();
            assert!(
                text.contains("lease_ttl_seconds is invalid"),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn region_list_parsing_trims_and_drops_empty_entries() {
        assert_eq!(parse_regions(" dfw, ,yyz ,cdg,"), vec!["dfw", "yyz", "cdg"]);
        assert!(validate_regions(" , ").is_err());
        assert!(
            validate_regions("us,eu").is_err(),
            "the seed's meta-regions are not volume regions"
        );
    }
}
