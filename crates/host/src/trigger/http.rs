//! The HTTP trigger: a hyper server that routes like Spin and runs each request in a fresh
//! instance of the matched component (`wasi:http/incoming-handler@0.2.x`).
//!
//! Per request: `Connection` is dropped; client `spin-*` headers are replaced by Spin's; the
//! well-known endpoints answer (`/.well-known/spin/health` → `OK`, `/info` → JSON, anything
//! else under it → 404); no route → 404 with an empty body; a trap or missing response → 500
//! with an empty body; no free instance slot within the admission wait → 503 with a JSON error and
//! `Retry-After` ([`crate::admission`]). Request headers are limited by hyper's buffer size and bodies by
//! [`crate::Limits::max_request_body_bytes`] (413 when `Content-Length` says so up front; a
//! streamed body that overruns fails the guest's read). A client gets
//! [`crate::Limits::header_read_timeout`] to send its request head, and a body that stalls longer
//! than [`crate::Limits::body_idle_timeout`] fails the guest's read, so a slow client cannot hold
//! an instance slot or a connection indefinitely. One JSON access-log line per request.
//! Shutdown stops accepting, lets in-flight requests finish within a grace period, then returns.

use crate::AppInner;
use crate::manifest::{HttpTarget, StaticResponse};
use crate::state::InstanceState;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// How long in-flight requests may run after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn empty(status: StatusCode) -> Response<HyperOutgoingBody> {
    let mut r = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *r.status_mut() = status;
    r
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<HyperOutgoingBody> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<HyperOutgoingBody> {
    let mut r = full(status, body.to_string());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Accepts connections until `shutdown` flips, then drains.
pub(crate) async fn serve(
    app: Arc<AppInner>,
    listener: TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(app.limits.max_request_header_bytes.max(8192))
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(app.limits.header_read_timeout)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(tag = "http", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(app, req, client, local).await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(tag = "http", client = %client, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            tag = "http",
            action = "shutdown",
            reason = "grace period over; in-flight requests dropped"
        );
    }
}

/// Handles one request end to end and writes its access-log line.
pub(crate) async fn handle(
    app: Arc<AppInner>,
    mut req: Request<Incoming>,
    client: SocketAddr,
    local: Option<SocketAddr>,
) -> Response<HyperOutgoingBody> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let http1 = req.version() <= http::Version::HTTP_11;
    req.headers_mut().remove(http::header::CONNECTION);
    let (mut response, component) = dispatch(&app, req, client, local).await;
    if http1 && let Some(keep_alive) = &app.keep_alive {
        response.headers_mut().insert(
            http::HeaderName::from_static("keep-alive"),
            keep_alive.clone(),
        );
    }
    app.metrics.observe_request(
        &method,
        &path,
        component.as_deref(),
        response.status().as_u16(),
        started.elapsed(),
    );
    tracing::info!(
        tag = "access",
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        component = component.as_deref().unwrap_or(""),
    );
    response
}

async fn dispatch(
    app: &Arc<AppInner>,
    req: Request<Incoming>,
    client: SocketAddr,
    local: Option<SocketAddr>,
) -> (Response<HyperOutgoingBody>, Option<String>) {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/.well-known/spin/") {
        return (well_known(app, rest), None);
    }
    let Some(matched) = app.router.route(&path) else {
        return (empty(StatusCode::NOT_FOUND), None);
    };
    let trigger = &app.manifest.http_triggers[matched.target.trigger_index];
    let component_id = match &trigger.target {
        HttpTarget::Static(s) => return (static_response(s), None),
        HttpTarget::Component(id) => id.clone(),
    };
    if let Some(length) = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > app.limits.max_request_body_bytes
    {
        return (empty(StatusCode::PAYLOAD_TOO_LARGE), Some(component_id));
    }
    let Some(prepared) = app.http_components.get(&component_id) else {
        return (empty(StatusCode::INTERNAL_SERVER_ERROR), Some(component_id));
    };

    let (mut parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let computed =
        crate::headers::spin_headers("http", host.as_deref(), &path_and_query, &matched, client);
    crate::headers::apply(&mut parts.headers, computed);
    // wasi:http reads the authority from the URI; rebuild it as Spin's `set_req_uri` does.
    let authority = host
        .clone()
        .or_else(|| local.map(|l| l.to_string()))
        .unwrap_or_else(|| "localhost".into());
    match http::Uri::builder()
        .scheme("http")
        .authority(authority.as_str())
        .path_and_query(path_and_query.as_str())
        .build()
    {
        Ok(uri) => parts.uri = uri,
        Err(_) => return (empty(StatusCode::BAD_REQUEST), Some(component_id)),
    }
    let limit = usize::try_from(app.limits.max_request_body_bytes).unwrap_or(usize::MAX);
    let body = Limited::new(body, limit).map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            wasmtime_wasi_http::Error::HttpRequestBodySize(None)
        } else {
            wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))
        }
    });
    let body = crate::outbound::BetweenBytesTimeout::new(body, app.limits.body_idle_timeout);
    let req = Request::from_parts(parts, body);

    let slot = match app.slots.take().await {
        Ok(slot) => slot,
        Err(busy) => {
            app.metrics.observe_refused();
            tracing::warn!(tag = "http", component = %component_id, action = "refuse", reason = %busy);
            return (busy_response(&busy), Some(component_id));
        }
    };
    let mut store = wasmtime::Store::new(
        prepared.pre.engine(),
        InstanceState::new(prepared.runtime.clone(), app.outbound.clone()),
    );
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let incoming = match store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(tag = "http", component = %component_id, error = %e, "cannot create the incoming request");
            return (empty(StatusCode::BAD_REQUEST), Some(component_id));
        }
    };
    let outparam = match store.data_mut().http().new_response_outparam(sender) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(tag = "http", component = %component_id, error = %e, "cannot create the response outparam");
            return (empty(StatusCode::INTERNAL_SERVER_ERROR), Some(component_id));
        }
    };
    let pre = prepared.pre.clone();
    let task_component = component_id.clone();
    // The guest may keep streaming the body after sending the head, so it runs in its own task.
    // The slot is held until the guest is done, not just until the head.
    let task = tokio::spawn(async move {
        let result = async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await
        }
        .await;
        // The pooled instance goes back before the slot does: a slot promises pool space.
        drop(store);
        drop(slot);
        result
    });
    match receiver.await {
        Ok(Ok(mut response)) => {
            response.headers_mut().remove(http::header::CONNECTION);
            (response, Some(component_id))
        }
        Ok(Err(code)) => {
            tracing::error!(tag = "http", component = %component_id, error = ?code, "guest returned an error code");
            (empty(StatusCode::INTERNAL_SERVER_ERROR), Some(component_id))
        }
        Err(_) => {
            let reason = match task.await {
                Ok(Ok(())) => "guest never set a response".to_string(),
                Ok(Err(e)) => format!("{e:?}"),
                Err(e) => e.to_string(),
            };
            tracing::error!(tag = "http", component = %task_component, error = %reason, "request failed");
            (empty(StatusCode::INTERNAL_SERVER_ERROR), Some(component_id))
        }
    }
}

/// 503 for a request that found no free instance slot: a JSON error like the app's own, and a
/// hint to retry, since slots free up as requests finish.
fn busy_response(busy: &crate::admission::Busy) -> Response<HyperOutgoingBody> {
    let body = serde_json::json!({
        "error": format!("the server is at capacity ({busy}); retry shortly"),
    });
    let mut r = json(StatusCode::SERVICE_UNAVAILABLE, &body);
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn well_known(app: &AppInner, rest: &str) -> Response<HyperOutgoingBody> {
    match rest {
        "health" => full(StatusCode::OK, "OK"),
        "info" => {
            let body = serde_json::json!({
                "name": app.manifest.app_name,
                "version": app.manifest.app_version,
                "oci_image_digest": null,
            });
            json(StatusCode::OK, &body)
        }
        _ => empty(StatusCode::NOT_FOUND),
    }
}

fn static_response(s: &StaticResponse) -> Response<HyperOutgoingBody> {
    let status = StatusCode::from_u16(s.status).unwrap_or(StatusCode::OK);
    let mut r = full(status, s.body.clone());
    for (k, v) in &s.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(name, value);
        }
    }
    r
}
