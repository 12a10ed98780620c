//! The catch-all proxy (original-behaviour.md §3, with §10 #20 fixed): resolve the user's machine,
//! rewrite the headers, forward to `{fly_proxy_base_url}{path}?{query}` pinned with
//! `fly-force-instance-id`, and recover from a crashed machine at most once.
//!
//! Recovery is asked for on a transport error and on a 502/503/504 (what Fly Proxy answers when it
//! cannot reach the machine). `instances.recover-route` restarts the machine only when its stored
//! status is `running`; a forwarded request is replayed only when the machine really was restarted,
//! or when it never got an answer at all — a 5xx the app itself produced is passed through.

use kiloclaw_core::edge::errors::EdgeError;
use kiloclaw_core::edge::headers::{Header, downstream_response_headers, upstream_request_headers};
use kiloclaw_core::edge::proxy::{
    direct_gateway_url, is_websocket_upgrade, may_be_unreachable_machine, upstream_url,
};
use spin_sdk::http::conversions::TryIntoOutgoingRequest;
use spin_sdk::http::{IncomingResponse, Method, OutgoingRequest, Scheme, SendError};

use crate::bindings::kiloclaw::instances::instances::{InstanceError, ProxyRoute};
use crate::dispatch::log_event;
use crate::http::{self, Body, Reply, Request};
use crate::imports::{Principal, instances};
use crate::settings;

/// Serves a proxied request for an authenticated user.
pub async fn serve(request: &Request, principal: &Principal) -> Reply {
    let template = settings::proxy_base_template();
    if is_websocket_upgrade(&request.headers) {
        let direct_url = instances::route(&principal.user_id)
            .ok()
            .map(|route| direct_gateway_url(&template, &route.app_name));
        return Reply::error(&EdgeError::WebSocketNotProxied { direct_url });
    }
    let route = match instances::route(&principal.user_id) {
        Ok(route) => route,
        Err(error) => return Reply::error(&EdgeError::from(error)),
    };
    match send(request, &route, &template).await {
        Ok(response) if !may_be_unreachable_machine(response.status()) => pass_through(response),
        Ok(response) => {
            let status = response.status().to_string();
            log_event(
                "proxy",
                &[
                    ("action", "upstream_5xx"),
                    ("status", &status),
                    ("machine_id", &route.machine_id),
                ],
            );
            match instances::recover_route(&principal.user_id, &route.machine_id) {
                Ok(recovered) if recovered.restarted => {
                    drop(response);
                    retry(request, &recovered.route, &template).await
                }
                Ok(_) => pass_through(response),
                // Not running, or recovery failed: the machine's (or Fly's) answer stands.
                Err(error) => {
                    log_event(
                        "proxy",
                        &[
                            ("action", "recovery_not_done"),
                            ("reason", &format!("{error:?}")),
                            ("machine_id", &route.machine_id),
                        ],
                    );
                    pass_through(response)
                }
            }
        }
        Err(error) => {
            log_event(
                "proxy",
                &[
                    ("action", "transport_error"),
                    ("machine_id", &route.machine_id),
                    ("detail", &error),
                ],
            );
            match instances::recover_route(&principal.user_id, &route.machine_id) {
                Ok(recovered) => retry(request, &recovered.route, &template).await,
                Err(InstanceError::NotRunning) => Reply::error(&EdgeError::InstanceUnreachable {
                    after_restart: false,
                }),
                Err(InstanceError::NotProvisioned) => Reply::error(&EdgeError::NotProvisioned),
                Err(error) => Reply::error(&EdgeError::from(error)),
            }
        }
    }
}

/// The single retry after recovery.
async fn retry(request: &Request, route: &ProxyRoute, template: &str) -> Reply {
    log_event(
        "proxy",
        &[
            ("action", "retry_after_recovery"),
            ("machine_id", &route.machine_id),
        ],
    );
    match send(request, route, template).await {
        Ok(response) => pass_through(response),
        Err(_) => Reply::error(&EdgeError::InstanceUnreachable {
            after_restart: true,
        }),
    }
}

fn pass_through(response: IncomingResponse) -> Reply {
    let headers = downstream_response_headers(&response.headers().entries());
    Reply {
        status: response.status(),
        headers,
        body: Body::Upstream(response),
    }
}

/// One outgoing request to the user's machine.
struct Upstream {
    method: Method,
    url: String,
    headers: Vec<Header>,
    body: Vec<u8>,
}

impl TryIntoOutgoingRequest for Upstream {
    type Error = String;

    fn try_into_outgoing_request(self) -> Result<(OutgoingRequest, Option<Vec<u8>>), Self::Error> {
        let (scheme, rest) = self
            .url
            .split_once("://")
            .ok_or("proxy URL has no scheme")?;
        let scheme = match scheme {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            other => Scheme::Other(other.to_owned()),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let request = OutgoingRequest::new(http::fields(&self.headers));
        request
            .set_method(&self.method)
            .map_err(|()| "method rejected")?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| "scheme rejected")?;
        request
            .set_authority(Some(authority))
            .map_err(|()| "authority rejected")?;
        request
            .set_path_with_query(Some(if path.is_empty() { "/" } else { path }))
            .map_err(|()| "path rejected")?;
        Ok((request, Some(self.body)))
    }
}

fn method(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    }
}

/// Forwards the request; `Err` carries a description of a transport failure (no response at all).
async fn send(
    request: &Request,
    route: &ProxyRoute,
    template: &str,
) -> Result<IncomingResponse, String> {
    let upstream = Upstream {
        method: method(&request.method),
        url: upstream_url(template, &route.app_name, &request.path_and_query()),
        headers: upstream_request_headers(&request.headers, &route.machine_id),
        body: request.body.clone(),
    };
    spin_sdk::http::send::<_, IncomingResponse>(upstream)
        .await
        .map_err(|error| match error {
            SendError::Http(code) => format!("{code:?}"),
            other => other.to_string(),
        })
}
