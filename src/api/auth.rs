//! Caller authentication: the hub's shared token, compared in constant time and never logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// The JupyterHub API token the hub's hooks present.
#[derive(Clone)]
pub struct HubToken(Arc<[u8]>);

impl HubToken {
    /// `None` for an empty token: an empty secret would let anyone in.
    pub fn new(token: &str) -> Option<Self> {
        let token = token.trim();
        (!token.is_empty()).then(|| Self(Arc::from(token.as_bytes())))
    }

    fn matches(&self, presented: &str) -> bool {
        self.0.ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Debug for HubToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubToken(<redacted>)")
    }
}

/// Accepts `Authorization: token <t>` (JupyterHub's style) and `Bearer <t>`.
fn presented(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")).then(|| token.trim())
}

pub async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.hub_token {
        if !presented(&request).is_some_and(|t| expected.matches(t)) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_tokens_are_refused() {
        assert!(HubToken::new("  ").is_none());
        assert!(HubToken::new("s3cret\n").unwrap().matches("s3cret"));
    }

    #[test]
    fn tokens_must_match_exactly() {
        let token = HubToken::new("s3cret").unwrap();
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret2"));
        assert!(!token.matches(""));
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        assert!(!format!("{:?}", HubToken::new("s3cret").unwrap()).contains("s3cret"));
    }
}
