//! The Spin variables the router reads itself (the dependencies read their own).

/// A Spin variable, `None` when unset, empty, or not visible to this component.
pub fn get(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .ok()
        .filter(|value| !value.is_empty())
}

/// `dev_mode = "true"` skips the settings check and authenticates everyone as the dev user.
pub fn dev_mode() -> bool {
    get("dev_mode").is_some_and(|value| value == "true")
}

/// The proxy base URL template (`https://{app}.fly.dev` unless overridden).
pub fn proxy_base_template() -> String {
    get("fly_proxy_base_url")
        .unwrap_or_else(|| kiloclaw_core::edge::proxy::DEFAULT_PROXY_BASE_URL.to_owned())
}

/// The required settings of a scope that are unset.
pub fn missing(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .filter(|name| get(name).is_none())
        .map(|name| (*name).to_owned())
        .collect()
}
