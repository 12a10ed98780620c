//! Route classification: the original's routes (original-behaviour.md §1) as a pure function of the
//! method and path, in the original's precedence, with its known mistakes fixed:
//! an unknown `/api/platform/...` path is a 404 (not the proxy's 401), and a known platform path with
//! the wrong method is a 405 (not a proxied request).

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`.
    Health,
    /// `GET /kilo-access-gateway`.
    AccessGatewayForm,
    /// `POST /kilo-access-gateway`.
    AccessGatewayRedeem,
    /// `/debug` and `/debug/*` (any method): 404 text, before any auth.
    DebugGone,
    /// A user route (JWT).
    User(UserRoute),
    /// A platform route (internal API key).
    Platform(PlatformRoute),
    /// `/api/platform/...` that names no platform route: 404 JSON after the key check.
    PlatformNotFound,
    /// A platform path used with a method it does not accept: 405 JSON after the key check.
    PlatformMethodNotAllowed {
        /// The method the path accepts, for the `Allow` header.
        allow: &'static str,
    },
    /// Everything else: authenticated proxy to the user's machine.
    Proxy,
}

/// User routes (authenticated by JWT), under `/api/kiloclaw` and `/api/admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserRoute {
    /// `GET /api/kiloclaw/config`.
    Config,
    /// `GET /api/kiloclaw/status`.
    Status,
    /// `GET /api/admin/storage` and `POST /api/admin/storage/sync`: 410.
    StorageGone,
    /// `POST /api/admin/gateway/restart`.
    GatewayRestart,
}

/// Platform routes (backend to backend, `x-internal-api-key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformRoute {
    /// `POST /api/platform/provision`.
    Provision,
    /// `PATCH /api/platform/kilocode-config`.
    KilocodeConfig,
    /// `PATCH /api/platform/channels`.
    Channels,
    /// `POST /api/platform/start`.
    Start,
    /// `POST /api/platform/stop`.
    Stop,
    /// `POST /api/platform/destroy`.
    Destroy,
    /// `GET /api/platform/status?userId=`.
    Status,
    /// `GET /api/platform/gateway-token?userId=`.
    GatewayToken,
    /// `GET /api/platform/volume-snapshots?userId=`.
    VolumeSnapshots,
    /// `GET /api/platform/pairing?userId=&refresh=true`.
    Pairing,
    /// `POST /api/platform/pairing/approve`.
    PairingApprove,
    /// `POST /api/platform/doctor`.
    Doctor,
    /// `POST /api/platform/reconcile`: run due reconciles within a budget (hosts without cron).
    Reconcile,
    /// `POST /api/platform/access-code`: issue a one-time access code for the access gateway
    /// (`kiloclaw access-code`; Next.js makes its own in PostgreSQL).
    AccessCode,
}

impl Route {
    /// A short stable name for metrics and logs: a small, fixed set (never a path or an id).
    pub fn family(&self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::AccessGatewayForm | Self::AccessGatewayRedeem => "access_gateway",
            Self::DebugGone => "debug",
            Self::User(UserRoute::Config) => "user_config",
            Self::User(UserRoute::Status) => "user_status",
            Self::User(UserRoute::StorageGone) => "user_storage",
            Self::User(UserRoute::GatewayRestart) => "user_gateway_restart",
            Self::Platform(route) => route.family(),
            Self::PlatformNotFound | Self::PlatformMethodNotAllowed { .. } => "platform_other",
            Self::Proxy => "proxy",
        }
    }
}

impl PlatformRoute {
    /// `platform_<route>`, for [`Route::family`].
    pub fn family(self) -> &'static str {
        match self {
            Self::Provision => "platform_provision",
            Self::KilocodeConfig => "platform_kilocode_config",
            Self::Channels => "platform_channels",
            Self::Start => "platform_start",
            Self::Stop => "platform_stop",
            Self::Destroy => "platform_destroy",
            Self::Status => "platform_status",
            Self::GatewayToken => "platform_gateway_token",
            Self::VolumeSnapshots => "platform_volume_snapshots",
            Self::Pairing => "platform_pairing",
            Self::PairingApprove => "platform_pairing_approve",
            Self::Doctor => "platform_doctor",
            Self::Reconcile => "platform_reconcile",
            Self::AccessCode => "platform_access_code",
        }
    }
}

/// The platform routes with the one method each accepts.
const PLATFORM_ROUTES: &[(&str, &str, PlatformRoute)] = &[
    ("provision", "POST", PlatformRoute::Provision),
    ("kilocode-config", "PATCH", PlatformRoute::KilocodeConfig),
    ("channels", "PATCH", PlatformRoute::Channels),
    ("start", "POST", PlatformRoute::Start),
    ("stop", "POST", PlatformRoute::Stop),
    ("destroy", "POST", PlatformRoute::Destroy),
    ("status", "GET", PlatformRoute::Status),
    ("gateway-token", "GET", PlatformRoute::GatewayToken),
    ("volume-snapshots", "GET", PlatformRoute::VolumeSnapshots),
    ("pairing", "GET", PlatformRoute::Pairing),
    ("pairing/approve", "POST", PlatformRoute::PairingApprove),
    ("doctor", "POST", PlatformRoute::Doctor),
    ("reconcile", "POST", PlatformRoute::Reconcile),
    ("access-code", "POST", PlatformRoute::AccessCode),
];

/// Which family of settings a request needs before it is served (original §1.0 step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Routes that need nothing: health, access gateway, debug.
    Public,
    /// `/api/platform` and below.
    Platform,
    /// Everything else (user routes and the proxy).
    User,
}

/// True for `/api/platform` and `/api/platform/...` (not `/api/platformx`).
pub fn is_platform_path(path: &str) -> bool {
    path == "/api/platform" || path.starts_with("/api/platform/")
}

/// Classifies a request. `method` is the upper-case HTTP method, `path` the path without query.
/// A trailing slash is tolerated on the fixed routes (`/health/` is `/health`), as Hono does.
pub fn classify(method: &str, path: &str) -> Route {
    let trimmed = if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    if trimmed == "/debug" || trimmed.starts_with("/debug/") {
        return Route::DebugGone;
    }
    match (method, trimmed) {
        ("GET", "/health") => return Route::Health,
        ("GET", "/kilo-access-gateway") => return Route::AccessGatewayForm,
        ("POST", "/kilo-access-gateway") => return Route::AccessGatewayRedeem,
        ("GET", "/api/kiloclaw/config") => return Route::User(UserRoute::Config),
        ("GET", "/api/kiloclaw/status") => return Route::User(UserRoute::Status),
        ("GET", "/api/admin/storage") | ("POST", "/api/admin/storage/sync") => {
            return Route::User(UserRoute::StorageGone);
        }
        ("POST", "/api/admin/gateway/restart") => return Route::User(UserRoute::GatewayRestart),
        _ => {}
    }
    if is_platform_path(trimmed) {
        let name = trimmed
            .strip_prefix("/api/platform")
            .unwrap_or("")
            .trim_start_matches('/');
        return match PLATFORM_ROUTES.iter().find(|(n, _, _)| *n == name) {
            Some((_, m, route)) if *m == method => Route::Platform(*route),
            Some((_, m, _)) => Route::PlatformMethodNotAllowed { allow: m },
            None => Route::PlatformNotFound,
        };
    }
    Route::Proxy
}

impl Route {
    /// The settings scope of this route.
    pub fn scope(self) -> Scope {
        match self {
            Route::Health
            | Route::AccessGatewayForm
            | Route::AccessGatewayRedeem
            | Route::DebugGone => Scope::Public,
            Route::Platform(_)
            | Route::PlatformNotFound
            | Route::PlatformMethodNotAllowed { .. } => Scope::Platform,
            Route::User(_) | Route::Proxy => Scope::User,
        }
    }
}

/// The Spin variables a scope needs, in the order the original reported them.
///
/// The original also required the Postgres binding on platform routes; here PostgreSQL is optional
/// (`database_url` only enables the token-revocation check and access-code redemption), so it is
/// not listed. `fly_app_name` is not required either: per-user apps need only `fly_org_slug`, and
/// the instances component reports precisely what a given operation lacks.
pub fn required_settings(scope: Scope) -> &'static [&'static str] {
    match scope {
        Scope::Public => &[],
        Scope::Platform => &[
            "internal_api_secret",
            "gateway_token_secret",
            "fly_api_token",
        ],
        Scope::User => &["nextauth_secret", "gateway_token_secret", "fly_api_token"],
    }
}

#[cfg(test)]
mod family_tests {
    use super::*;

    #[test]
    fn every_platform_route_has_its_own_family() {
        let families: std::collections::BTreeSet<&str> = PLATFORM_ROUTES
            .iter()
            .map(|(_, _, route)| Route::Platform(*route).family())
            .collect();
        assert_eq!(families.len(), PLATFORM_ROUTES.len());
        assert_eq!(
            classify("POST", "/api/platform/provision").family(),
            "platform_provision"
        );
        assert_eq!(classify("GET", "/health").family(), "health");
        assert_eq!(classify("GET", "/some/user/path").family(), "proxy");
        assert_eq!(
            classify("GET", "/api/platform/nope").family(),
            "platform_other"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_routes() {
        assert_eq!(classify("GET", "/health"), Route::Health);
        assert_eq!(classify("GET", "/health/"), Route::Health);
        assert_eq!(
            classify("GET", "/kilo-access-gateway"),
            Route::AccessGatewayForm
        );
        assert_eq!(
            classify("POST", "/kilo-access-gateway"),
            Route::AccessGatewayRedeem
        );
        assert_eq!(classify("DELETE", "/debug"), Route::DebugGone);
        assert_eq!(classify("GET", "/debug/env"), Route::DebugGone);
        assert_eq!(classify("GET", "/debugger"), Route::Proxy);
        assert_eq!(Route::Health.scope(), Scope::Public);
    }

    #[test]
    fn user_routes() {
        assert_eq!(
            classify("GET", "/api/kiloclaw/config"),
            Route::User(UserRoute::Config)
        );
        assert_eq!(
            classify("GET", "/api/kiloclaw/status"),
            Route::User(UserRoute::Status)
        );
        assert_eq!(
            classify("GET", "/api/admin/storage"),
            Route::User(UserRoute::StorageGone)
        );
        assert_eq!(
            classify("POST", "/api/admin/storage/sync"),
            Route::User(UserRoute::StorageGone)
        );
        assert_eq!(
            classify("POST", "/api/admin/gateway/restart"),
            Route::User(UserRoute::GatewayRestart)
        );
        // As in the original, other paths under the user prefixes reach the machine.
        assert_eq!(classify("GET", "/api/kiloclaw/anything"), Route::Proxy);
        assert_eq!(classify("POST", "/api/kiloclaw/config"), Route::Proxy);
        assert_eq!(classify("GET", "/"), Route::Proxy);
        assert_eq!(Route::Proxy.scope(), Scope::User);
    }

    #[test]
    fn platform_routes_unknown_paths_and_wrong_methods() {
        assert_eq!(
            classify("POST", "/api/platform/provision"),
            Route::Platform(PlatformRoute::Provision)
        );
        assert_eq!(
            classify("PATCH", "/api/platform/kilocode-config"),
            Route::Platform(PlatformRoute::KilocodeConfig)
        );
        assert_eq!(
            classify("GET", "/api/platform/status"),
            Route::Platform(PlatformRoute::Status)
        );
        assert_eq!(
            classify("POST", "/api/platform/reconcile"),
            Route::Platform(PlatformRoute::Reconcile)
        );
        assert_eq!(
            classify("GET", "/api/platform/nope"),
            Route::PlatformNotFound
        );
        assert_eq!(classify("GET", "/api/platform"), Route::PlatformNotFound);
        assert_eq!(
            classify("GET", "/api/platform/provision"),
            Route::PlatformMethodNotAllowed { allow: "POST" }
        );
        assert_eq!(classify("GET", "/api/platformx"), Route::Proxy);
        assert_eq!(Route::PlatformNotFound.scope(), Scope::Platform);
    }

    #[test]
    fn settings_per_scope() {
        assert!(required_settings(Scope::Public).is_empty());
        assert!(required_settings(Scope::Platform).contains(&"internal_api_secret"));
        assert!(required_settings(Scope::User).contains(&"nextauth_secret"));
        assert!(!required_settings(Scope::User).contains(&"internal_api_secret"));
    }
}
