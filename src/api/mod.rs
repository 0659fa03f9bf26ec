//! The HTTP edge: the REST API JupyterHub's hooks, the ODH dashboard and curl call.

mod auth;
mod error;
mod extract;
mod handlers;
pub mod jsp;
pub mod listener;
pub mod renders;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::sync::watch;
use tower_http::LatencyUnit;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use auth::{Authenticator, Caller, HubToken, Verifier};
pub use error::{ApiError, ErrorBody};
pub use jsp::{Launcher, OAuth};

use crate::catalog::watch::Snapshot;
use crate::metrics::{Metrics, RequestLabels};
use crate::spawn::{Backend, Planner};
use renders::Renders;

/// The service's OpenAPI document.
pub const OPENAPI_YAML: &str = include_str!("openapi.yaml");

/// Everything handlers share, built by [`crate::app`] only. The router keeps it behind one
/// `Arc`: axum clones the state into every request's middleware and handler, and a deep clone
/// per request showed as ~29 KB of heap per in-flight request in a 1,000-user spawn storm.
pub struct AppState {
    pub snapshot: watch::Receiver<Snapshot>,
    pub backend: Backend,
    /// Where spawns and renders plan, a few at a time (see [`Planner`]).
    pub planner: Planner,
    /// JSON render answers already given, for the same configuration.
    pub renders: Renders,
    /// Where notebooks (and their clusters) live unless a request names another namespace.
    pub namespace: String,
    /// Who may call: the hub's token, user tokens, or nobody checked (open dry run).
    pub auth: Authenticator,
    pub metrics: Metrics,
    /// JSP's spawner API: its images and where users' settings are saved.
    pub launcher: Launcher,
    /// Set on SIGTERM: readiness turns false so load balancers stop sending work.
    pub shutting_down: Arc<AtomicBool>,
}

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub body_bytes: usize,
    /// The whole body must arrive within this; a slow one gets a 408.
    pub body_timeout: Duration,
    pub request_timeout: Duration,
    /// Spawns may wait for the Ray head, so they get their own, longer bound.
    pub spawn_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            spawn_timeout: Duration::from_secs(600),
        }
    }
}

pub fn router(state: Arc<AppState>, limits: Limits) -> Router {
    let spawn = Router::new()
        .route("/api/v1/spawn", post(handlers::spawn))
        .layer(middleware::from_fn(move |request, next| deadline(limits.spawn_timeout, request, next)));
    let api = Router::new()
        .route("/api/v1/render", post(handlers::render))
        .route("/api/v1/stop", post(handlers::stop))
        .route("/api/v1/profiles", get(handlers::profiles))
        .route("/api/v1/status", get(handlers::status))
        .route("/api/v1/users/{user}/clusters", get(handlers::clusters))
        .route("/api/v1/users/{user}/server", delete(handlers::stop_default_server))
        .route("/api/v1/users/{user}/servers/{server}", delete(handlers::stop_named_server))
        .layer(middleware::from_fn(move |request, next| deadline(limits.request_timeout, request, next)))
        .merge(spawn)
        .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate));
    // JSP's API authenticates on its own (browser sessions, For-User).
    let launcher = jsp::router(&state)
        .layer(middleware::from_fn(move |request, next| deadline(limits.request_timeout, request, next)));
    let api = api.merge(launcher).layer(
        TraceLayer::new_for_http()
            .make_span_with(|request: &Request| {
                let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
            })
            // One line per answered request (status, latency) for whoever reads the log.
            .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Micros)),
    );
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.yaml", get(handlers::openapi_yaml))
        .route("/openapi.json", get(handlers::openapi_json))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(middleware::from_fn(move |request, next| read_body(limits, request, next)))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Reads the whole body, within the size limit and the body timeout, before anything else runs.
/// So a slow body gets a JSON 408 (and a large one a JSON 413) whatever the route, and an
/// answer given before the handler reads the body (a 401, a 404) never leaves unread bytes on
/// a kept-alive connection: hyper closes such a connection after the answer, and a client that
/// reuses it meanwhile sees "server disconnected".
async fn read_body(limits: Limits, request: Request, next: Next) -> Response {
    use http_body_util::{BodyExt, LengthLimitError, Limited};

    let (parts, body) = request.into_parts();
    let declared =
        parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let too_large = || {
        let message =
            format!("the request body is larger than {} bytes; send a smaller one", limits.body_bytes);
        closing(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message))
    };
    if declared.is_some_and(|n: usize| n > limits.body_bytes) {
        return too_large();
    }
    let bytes = match tokio::time::timeout(
        limits.body_timeout,
        Limited::new(body, limits.body_bytes).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(err)) => {
            tracing::info!(error = %err, "the client stopped sending its request body");
            let message = "the request body could not be read to its end; send it again";
            return closing(ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message));
        }
        Err(_) => {
            let message = format!(
                "the request body did not arrive within {} s; send it in one go",
                limits.body_timeout.as_secs()
            );
            return closing(ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message));
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// Bounds a request's handling; past `limit` the handler is dropped and the caller gets a JSON
/// 504 (tower-http's timeout answered with an empty body).
async fn deadline(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("the request took longer than {} s and was abandoned; try again later", limit.as_secs()),
        )
        .into_response(),
    }
}

/// An error answer after which the connection closes: its request body was not read.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}

/// HTTP methods that get a label of their own; any other is counted as `other`, as is a path
/// that matches no route, so a caller cannot grow the metrics without bound.
const KNOWN_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

async fn count_requests(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let method = request.method().as_str();
    let method = KNOWN_METHODS.into_iter().find(|known| *known == method).unwrap_or("other");
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = RequestLabels { method, route, status: response.status().as_u16() };
    state.metrics.requests.get_or_create(&labels).inc();
    response
}

impl AppState {
    /// Ready means loaded, usable and not draining (kubert's rule). A failing ConfigMap watch
    /// does not count: the last good profiles keep serving, and every replica would fail
    /// together. Profiles that cannot give anyone a Ray cluster do: the spawns would be refused.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Some("shutting down".to_owned());
        }
        let snapshot = self.snapshot.borrow();
        if !snapshot.loaded {
            return Some("profiles are not loaded yet".to_owned());
        }
        snapshot.catalog.unusable().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests;
