//! Spin variables: application variables resolved from providers, and component variables as
//! `{{ name }}` templates over them.
//!
//! Resolution order, first hit wins, as in Spin (`runtime-factors/src/build.rs`):
//! 1. overrides passed by the embedder ([`crate::HostConfig::variables`], Spin's `--variable`);
//! 2. runtime-config `[[variables_provider]]` entries in file order (`static` and `env`);
//! 3. the always-on `SPIN_VARIABLE_<UPPER_NAME>` environment provider;
//! 4. the manifest `default`.
//!
//! Every provider here is static, so the whole set is resolved once at load time and a missing
//! required variable is a load error. Values of `secret = true` variables are never logged:
//! [`ResolvedVariables`] has no `Debug` output for values.

use crate::manifest::Manifest;
use crate::runtime_config::VariablesProvider;
pub use kiloclaw_manifest::template::{Template, validate_name};
use std::collections::BTreeMap;

/// Application variable values after resolution. Values are deliberately not `Debug`.
#[derive(Clone, Default)]
pub struct ResolvedVariables {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for ResolvedVariables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.values.keys()).finish()
    }
}

impl ResolvedVariables {
    /// The value of an application variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

/// Where variable values come from, in precedence order.
pub struct VariableSources<'a> {
    /// Highest precedence: explicit overrides.
    pub overrides: &'a [(String, String)],
    /// Runtime-config providers, in file order.
    pub providers: &'a [VariablesProvider],
    /// Reads an environment variable (injectable for tests).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// Resolves every application variable; fails listing all required variables nobody provided.
pub fn resolve(
    manifest: &Manifest,
    sources: &VariableSources<'_>,
) -> Result<ResolvedVariables, String> {
    for (name, _) in sources.overrides {
        validate_name(name)?;
    }
    let mut values = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, decl) in &manifest.variables {
        let upper = name.to_ascii_uppercase();
        let from_override = sources
            .overrides
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone());
        let from_providers = || {
            sources.providers.iter().find_map(|p| match p {
                VariablesProvider::Static { values } => values.get(name).cloned(),
                VariablesProvider::Env { prefix } => (sources.env)(&format!(
                    "{}_{upper}",
                    prefix.as_deref().unwrap_or("SPIN_VARIABLE")
                )),
            })
        };
        let value = from_override
            .or_else(from_providers)
            .or_else(|| (sources.env)(&format!("SPIN_VARIABLE_{upper}")))
            .or_else(|| decl.default.clone());
        match value {
            Some(v) => {
                values.insert(name.clone(), v);
            }
            None => missing.push(name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "no provider resolved required variable(s): {}",
            missing.join(", ")
        ));
    }
    Ok(ResolvedVariables { values })
}

/// The variables one component can read: its own `[component.x.variables]`, rendered.
#[derive(Clone, Default)]
pub struct ComponentVariables {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for ComponentVariables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.values.keys()).finish()
    }
}

impl ComponentVariables {
    /// Renders a component's variable templates.
    pub fn render(
        templates: &BTreeMap<String, Template>,
        app: &ResolvedVariables,
    ) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        for (name, t) in templates {
            values.insert(name.clone(), t.try_render(|name| app.get(name))?);
        }
        Ok(Self { values })
    }

    /// Looks a variable up the way `fermyon:spin/variables.get` does.
    pub fn get(&self, name: &str) -> Result<&str, VariableLookupError> {
        validate_name(name).map_err(VariableLookupError::InvalidName)?;
        self.values
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| VariableLookupError::Undefined(format!("no variable for {name:?}")))
    }
}

/// Why a guest's variable lookup failed (maps 1:1 to the WIT `error` variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariableLookupError {
    InvalidName(String),
    Undefined(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest() -> Manifest {
        Manifest::parse(
            "spin_manifest_version = 2\n[application]\nname = \"t\"\n[variables]\napi_key = { required = true, secret = true }\nregion = { default = \"ams\" }\n",
            Path::new("/app"),
        )
        .expect("valid manifest")
    }

    #[test]
    fn precedence_override_then_provider_then_env_then_default() {
        let m = manifest();
        let env = |k: &str| match k {
            "SPIN_VARIABLE_API_KEY" => Some("from-env".to_string()),
            "SPIN_VARIABLE_REGION" => Some("env-region".to_string()),
            _ => None,
        };
        let none: [VariablesProvider; 0] = [];
        let r = resolve(
            &m,
            &VariableSources {
                overrides: &[],
                providers: &none,
                env: &env,
            },
        )
        .expect("resolves");
        assert_eq!(r.get("api_key"), Some("from-env"));
        assert_eq!(r.get("region"), Some("env-region"));
        let providers = [VariablesProvider::Static {
            values: [("api_key".to_string(), "static".to_string())].into(),
        }];
        let overrides = [("region".to_string(), "cli".to_string())];
        let r = resolve(
            &m,
            &VariableSources {
                overrides: &overrides,
                providers: &providers,
                env: &env,
            },
        )
        .expect("resolves");
        assert_eq!(r.get("api_key"), Some("static"));
        assert_eq!(r.get("region"), Some("cli"));
    }

    #[test]
    fn missing_required_is_an_error_naming_it() {
        let m = manifest();
        let none: [VariablesProvider; 0] = [];
        let err = resolve(
            &m,
            &VariableSources {
                overrides: &[],
                providers: &none,
                env: &|_| None,
            },
        )
        .expect_err("api_key missing");
        assert!(err.contains("api_key"), "{err}");
        assert!(!err.contains("region"), "{err}");
    }

    #[test]
    fn resolved_values_are_not_in_debug_output() {
        let m = manifest();
        let none: [VariablesProvider; 0] = [];
        let r = resolve(
            &m,
            &VariableSources {
                overrides: &[("api_key".into(), "s3cr3t".into())],
                providers: &none,
                env: &|_| None,
            },
        )
        .expect("resolves");
        assert!(!format!("{r:?}").contains("s3cr3t"));
    }
}
