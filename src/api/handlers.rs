//! Request handlers: parse, call the domain and the cluster edge, shape the answer.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::extract::{JsonObject, PathParams, ServerPath, UserPath};
use super::renders::Generation;
use super::{ApiError, AppState, Caller, OPENAPI_YAML};
use crate::catalog::Catalog;
use crate::metrics::OutcomeLabels;
use crate::plan::{Owner, SpawnRequest};
use crate::profile::Requester;
use crate::spawn::{self, Backend};

impl AppState {
    fn catalog(&self) -> Result<Arc<Catalog>, ApiError> {
        Ok(spawn::config(&self.snapshot)?.0)
    }
}

fn wants_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/yaml") || v.contains("text/yaml"))
}

/// JSON by default; YAML when the caller asks for it (handy for manifests with curl).
fn respond<T: Serialize>(headers: &HeaderMap, status: StatusCode, body: &T) -> Response {
    if wants_yaml(headers) {
        match crate::yaml::to_string(body) {
            Ok(text) => (status, [(header::CONTENT_TYPE, "application/yaml")], text).into_response(),
            Err(err) => ApiError::internal(&err).into_response(),
        }
    } else {
        (status, Json(body)).into_response()
    }
}

fn outcome<T>(result: &Result<T, ApiError>) -> OutcomeLabels {
    OutcomeLabels { outcome: result.as_ref().map_or_else(|e| e.body.code.to_owned(), |_| "ok".to_owned()) }
}

pub async fn spawn(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonObject(request): JsonObject<SpawnRequest>,
) -> Result<Response, ApiError> {
    caller.may_act_for(&request.user)?;
    let started = Instant::now();
    let result = state
        .backend
        .spawn(&state.planner, &state.snapshot, &request, &state.namespace)
        .await
        .map_err(ApiError::from);
    state.metrics.spawn_seconds.get_or_create(&outcome(&result)).observe(started.elapsed().as_secs_f64());
    let answer = result?;
    tracing::info!(
        user = %request.user,
        server = %request.server,
        cluster = %answer.cluster,
        objects = answer.objects.len(),
        dry_run = answer.dry_run,
        "spawned"
    );
    Ok(respond(&headers, StatusCode::OK, &answer))
}

pub async fn render(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonObject(request): JsonObject<SpawnRequest>,
) -> Result<Response, ApiError> {
    caller.may_act_for(&request.user)?;
    let started = Instant::now();
    let result = render_answer(&state, &headers, &request).await;
    state.metrics.render_seconds.get_or_create(&outcome(&result)).observe(started.elapsed().as_secs_f64());
    result
}

/// A JSON answer comes from the cache of answers when this configuration gave it already.
async fn render_answer(
    state: &AppState,
    headers: &HeaderMap,
    request: &SpawnRequest,
) -> Result<Response, ApiError> {
    let (catalog, users) = spawn::config(&state.snapshot)?;
    let render = |catalog, users| state.planner.render(catalog, users, request, &state.namespace);
    if wants_yaml(headers) {
        return Ok(respond(headers, StatusCode::OK, &render(catalog, users).await?));
    }
    let generation = Generation::new(&catalog, &users);
    let key = serde_json::to_string(request).map_err(|e| ApiError::internal(&e))?;
    let body = match state.renders.get(&generation, &key) {
        Some(body) => {
            state.metrics.render_cache_hits.inc();
            body
        }
        None => {
            let answer = render(catalog, users).await?;
            let body = Bytes::from(serde_json::to_vec(&answer).map_err(|e| ApiError::internal(&e))?);
            state.renders.put(&generation, key, body.clone());
            body
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    pub user: String,
    #[serde(default)]
    pub server: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceQuery {
    #[serde(default)]
    pub namespace: Option<String>,
}

pub async fn stop(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    JsonObject(request): JsonObject<StopRequest>,
) -> Result<Response, ApiError> {
    stop_server(&state, &caller, request).await
}

pub async fn stop_default_server(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    PathParams(UserPath { user }): PathParams<UserPath>,
    query: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    stop_server(&state, &caller, StopRequest { user, server: String::new(), namespace: query.namespace })
        .await
}

pub async fn stop_named_server(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    PathParams(ServerPath { user, server }): PathParams<ServerPath>,
    query: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    stop_server(&state, &caller, StopRequest { user, server, namespace: query.namespace }).await
}

async fn stop_server(state: &AppState, caller: &Caller, request: StopRequest) -> Result<Response, ApiError> {
    caller.may_act_for(&request.user)?;
    let owner =
        Owner::checked(&request.user, &request.server, request.namespace.as_deref(), &state.namespace)?;
    let Backend::Cluster(cluster) = &state.backend else {
        return Ok(Json(json!({"dry_run": true, "stopped": false, "owner": owner.configmap_name(), "namespace": owner.namespace})).into_response());
    };
    let existed = cluster.clusters.stop(&owner).await?;
    tracing::info!(user = %owner.user, server = %owner.server, existed, "stopped");
    Ok(Json(json!({"dry_run": false, "stopped": existed, "owner": owner.configmap_name(), "namespace": owner.namespace})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesQuery {
    pub user: Option<String>,
    /// Comma-separated JupyterHub groups.
    #[serde(default)]
    pub groups: String,
    pub image: Option<String>,
    /// `kubespawner` for KubeSpawner `profile_list` entries.
    pub format: Option<String>,
}

pub async fn profiles(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    query: Result<Query<ProfilesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let user = query.user.filter(|u| !u.is_empty()).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "user: add `?user=<JupyterHub user name>`")
            .field("user")
    })?;
    caller.may_act_for(&user)?;
    let who = Requester {
        user,
        groups: query.groups.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_owned).collect(),
    };
    let catalog = state.catalog()?;
    let image = query.image.as_deref().filter(|i| !i.is_empty());
    match query.format.as_deref() {
        None | Some("") => {
            let body = json!({
                "profiles": catalog.profiles().choices(&who, image),
                "sizes": catalog.profiles().sizes(),
            });
            Ok(respond(&headers, StatusCode::OK, &body))
        }
        Some("kubespawner") => {
            Ok(respond(&headers, StatusCode::OK, &catalog.profiles().kubespawner_profile_list(&who, image)))
        }
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("format `{other}` is unknown; leave it out or use `kubespawner`"),
        )
        .field("format")),
    }
}

pub async fn clusters(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    PathParams(UserPath { user }): PathParams<UserPath>,
    query: Result<Query<NamespaceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    caller.may_act_for(&user)?;
    let Owner { user, namespace, .. } =
        Owner::checked(&user, "", query.namespace.as_deref(), &state.namespace)?;
    let Backend::Cluster(cluster) = &state.backend else {
        return Ok(respond(
            &headers,
            StatusCode::OK,
            &json!({"dry_run": true, "user": user, "clusters": []}),
        ));
    };
    let found = cluster.clusters.status(&user, &namespace).await?;
    Ok(respond(&headers, StatusCode::OK, &json!({"dry_run": false, "user": user, "clusters": found})))
}

pub async fn status(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snapshot = state.snapshot.borrow().clone();
    let reason = state.not_ready_reason();
    let body = json!({
        "mode": match state.backend { Backend::Cluster(_) => "cluster", Backend::DryRun => "dry-run" },
        "source": snapshot.source,
        "loaded": snapshot.loaded,
        "watch_error": snapshot.watch_error.as_ref().map(|e| &e.message),
        "watch_error_at": snapshot.watch_error.as_ref().map(|e| &e.at),
        "ready": reason.is_none(),
        "not_ready_reason": reason,
        "profile_configmaps": snapshot.catalog.profile_sources().collect::<Vec<_>>(),
        "templates": snapshot.catalog.template_count(),
        "user_settings": snapshot.users.len(),
        "problems": snapshot.catalog.problems(),
    });
    respond(&headers, StatusCode::OK, &body)
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.not_ready_reason() {
        None => (StatusCode::OK, "ready").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}")).into_response(),
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}

pub async fn openapi_yaml() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML).into_response()
}

pub async fn openapi_json() -> Response {
    match crate::yaml::from_str::<Value>(OPENAPI_YAML) {
        Ok(doc) => Json(doc).into_response(),
        Err(err) => ApiError::internal(&err).into_response(),
    }
}

/// A route that exists, called with a method it does not serve; axum adds the `Allow` header.
pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{:?} is not served here; the Allow header lists the methods that are (see /openapi.yaml)",
            method.as_str()
        ),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; the API is described at /openapi.yaml",
    )
}
