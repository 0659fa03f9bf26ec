//! The one error type of the HTTP edge. 4xx bodies tell the caller what to fix; 5xx bodies are
//! opaque and the cause is logged inside the request span.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::cluster::ClusterError;
use crate::lifecycle::QuotaError;
use crate::plan::PlanError;
use crate::profile::ResolveError;
use crate::spawn::SpawnError;

/// The JSON body of every error answer.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable, machine-readable: callers may branch on it.
    pub code: &'static str,
    /// What went wrong and what to change.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configmap: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Boxed: errors travel through every handler's `Result`, keep them small.
    pub body: Box<ErrorBody>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: Box::new(ErrorBody {
                code,
                message: message.into(),
                field: None,
                configmap: None,
                key: None,
                line: None,
            }),
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.body.field = Some(field.into());
        self
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid token: send `Authorization: token <hub token>` (or `Bearer <token>`)",
        )
    }

    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "profiles are not loaded yet; retry in a few seconds",
        )
    }

    /// Ours or the cluster's fault: the caller learns nothing but that, the log learns the cause.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the service log has the details (look up this request's x-request-id)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            tracing::info!(code = self.body.code, message = %self.body.message, "request refused");
        }
        (self.status, Json(*self.body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = match rejection {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        let hint = match status {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "send the body with `Content-Type: application/json`",
            StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large",
            _ => "fix the JSON body; see /openapi.yaml for its fields",
        };
        Self::new(status, "invalid_body", format!("{}; {hint}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", rejection.body_text())
    }
}

impl From<ResolveError> for ApiError {
    fn from(err: ResolveError) -> Self {
        let status = match err {
            ResolveError::ProfileNotAllowed { .. } => StatusCode::FORBIDDEN,
            // Two services declare the same option differently: the admin's to fix.
            ResolveError::ConflictingOption { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        let field = err.field();
        let mut api = Self::new(status, err.code(), err.to_string());
        api.body.field = field;
        api
    }
}

impl From<PlanError> for ApiError {
    fn from(err: PlanError) -> Self {
        match err {
            PlanError::Profile(e) => e.into(),
            PlanError::Template(e) => {
                let mut api = Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string());
                api.body.configmap = Some(e.configmap.clone());
                api.body.key = Some(e.key.clone());
                api.body.line = e.line;
                api
            }
            PlanError::MissingTemplate { ref configmap, ref key, .. } => {
                let mut api =
                    Self::new(StatusCode::UNPROCESSABLE_ENTITY, "template_missing", err.to_string());
                api.body.configmap = Some(configmap.clone());
                api.body.key = Some(key.clone());
                api
            }
            PlanError::UserSettings { ref configmap, .. } => {
                let mut api =
                    Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_settings", err.to_string());
                api.body.configmap = Some(configmap.clone());
                api
            }
            PlanError::Volume { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_volume", err.to_string())
            }
            PlanError::ServiceWithoutResources { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "service_without_resources", err.to_string())
            }
            PlanError::ServiceEnv { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_service_env", err.to_string())
            }
            PlanError::InvalidRequest { field, .. } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_request", err.to_string()).field(field)
            }
        }
    }
}

impl From<SpawnError> for ApiError {
    fn from(err: SpawnError) -> Self {
        match err {
            SpawnError::NotLoaded => Self::not_ready(),
            SpawnError::NoProfiles(reason) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_profiles",
                format!("{reason}; an admin must fix the profile ConfigMaps"),
            ),
            SpawnError::Plan(e) => e.into(),
            SpawnError::Quota(e) => e.into(),
            SpawnError::Cluster(e) => e.into(),
        }
    }
}

impl From<QuotaError> for ApiError {
    fn from(err: QuotaError) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", err.to_string())
    }
}

impl From<ClusterError> for ApiError {
    fn from(err: ClusterError) -> Self {
        match &err {
            // The service's own credentials lack a right: the operator's to fix, not the caller's.
            ClusterError::Rejected { code: 401 | 403, .. } => Self::internal(&err),
            ClusterError::Rejected { code: 409, .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", err.to_string())
            }
            ClusterError::Rejected { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "object_rejected", err.to_string())
            }
            ClusterError::UnknownKind { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_kind", err.to_string())
            }
            ClusterError::NotReady { .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "cluster_not_ready", err.to_string())
            }
            ClusterError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "Kubernetes API unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cluster_unavailable",
                    "the Kubernetes API server is unavailable; nothing was changed, try again shortly",
                )
            }
            ClusterError::Kube(_) => Self::internal(&err),
        }
    }
}
