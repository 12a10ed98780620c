//! What KiloClaw's metrics call its routes and outbound calls: the router's route families and the
//! Machines API's operations, so that `kiloclaw_http_requests_total` and
//! `kiloclaw_outbound_http_requests_total` are labelled by a small, fixed set of names.

use kiloclaw_core::edge::routes::classify;
use kiloclaw_host::metrics::MetricLabels;

/// The labels for the KiloClaw app.
#[derive(Debug, Default, Clone, Copy)]
pub struct KiloClawLabels;

impl MetricLabels for KiloClawLabels {
    fn route_family(&self, method: &http::Method, path: &str) -> Option<&'static str> {
        Some(classify(method.as_str(), path).family())
    }

    /// A Machines API operation, or `proxy`: the only other HTTP the components send is user
    /// traffic to a machine through the Fly proxy.
    fn outbound_operation(
        &self,
        method: &http::Method,
        _host: &str,
        path: &str,
    ) -> Option<&'static str> {
        Some(kiloclaw_core::fly::operation_of(method.as_str(), path).unwrap_or("proxy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_fly_calls_get_their_names() {
        let labels = KiloClawLabels;
        assert_eq!(
            labels.route_family(&http::Method::POST, "/api/platform/start"),
            Some("platform_start")
        );
        assert_eq!(
            labels.route_family(&http::Method::GET, "/anything"),
            Some("proxy")
        );
        assert_eq!(
            labels.outbound_operation(
                &http::Method::POST,
                "api.machines.dev",
                "/v1/apps/a/machines/m/start"
            ),
            Some("start_machine")
        );
        assert_eq!(
            labels.outbound_operation(&http::Method::GET, "acct-1.fly.dev", "/hello"),
            Some("proxy")
        );
    }
}
