//! Who is calling: the hub (its shared token may act for any user), a user (their own
//! JupyterHub or Kubernetes token may act only for themselves), or anyone (an open dry run).
//! Tokens are compared in constant time, never logged, and verification results are cached
//! briefly so a spawn storm does not become a verification storm.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
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

    /// The token itself, to present to JupyterHub (as the service's OAuth client secret).
    pub(super) fn secret(&self) -> &str {
        std::str::from_utf8(&self.0).expect("made from a str")
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

/// The identity a request acts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The hub: may act for any user.
    Hub,
    /// A JupyterHub admin: may act for any user, and has settings of their own.
    Admin(String),
    /// A user: may act only for their own servers.
    User(String),
    /// Nobody checked: the open dry-run mode.
    Open,
}

impl Caller {
    /// 403 unless this caller may see or change `user`'s servers.
    pub fn may_act_for(&self, user: &str) -> Result<(), ApiError> {
        match self {
            Caller::Hub | Caller::Admin(_) | Caller::Open => Ok(()),
            Caller::User(name) if name == user => Ok(()),
            Caller::User(name) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this token belongs to `{name}` and may act only for `{name}`'s servers, not `{user}`'s"
                ),
            )
            .field("user")),
        }
    }
}

/// Where user tokens are verified.
#[derive(Clone)]
pub enum Verifier {
    /// JupyterHub's REST API (`GET <api>/user` with the token), as JupyterHub services do.
    JupyterHub { api_url: String, http: reqwest::Client },
    /// A Kubernetes TokenReview (the ODH dashboard holds the user's cluster token).
    TokenReview(kube::Client),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verifier::JupyterHub { api_url, .. } => write!(f, "JupyterHub({api_url})"),
            Verifier::TokenReview(_) => f.write_str("TokenReview"),
        }
    }
}

/// Why a token could not be verified now (as opposed to: it is not valid).
#[derive(Debug)]
struct VerifierDown(String);

impl Verifier {
    pub fn jupyterhub(api_url: &str, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // JupyterHub is usually reached through its proxy (configurable-http-proxy, a Node
            // server that closes kept-alive connections after 5 s idle). A pooled connection
            // kept longer may be closed by the server just as a request is sent on it.
            .pool_idle_timeout(HUB_POOL_IDLE)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Verifier::JupyterHub { api_url: api_url.trim_end_matches('/').to_owned(), http })
    }

    /// `GET <api>/user` with the token; once more on a fresh connection when the first attempt
    /// failed in transit (the GET is idempotent, and a kept-alive connection the server closed
    /// meanwhile fails that way).
    async fn hub_user(
        http: &reqwest::Client,
        api_url: &str,
        token: &str,
    ) -> reqwest::Result<reqwest::Response> {
        let send =
            || http.get(format!("{api_url}/user")).header(AUTHORIZATION, format!("token {token}")).send();
        match send().await {
            Err(err) if !err.is_timeout() && (err.is_request() || err.is_connect()) => {
                tracing::debug!(error = %err, "JupyterHub API call failed in transit; retrying once");
                send().await
            }
            other => other,
        }
    }

    async fn verify(&self, token: &str) -> Result<Option<Caller>, VerifierDown> {
        match self {
            Verifier::JupyterHub { api_url, http } => {
                #[derive(Deserialize)]
                struct Model {
                    name: String,
                    #[serde(default)]
                    kind: Option<String>,
                    #[serde(default)]
                    admin: bool,
                }
                let response = Self::hub_user(http, api_url, token)
                    .await
                    .map_err(|e| VerifierDown(format!("JupyterHub API unreachable: {e}")))?;
                match response.status() {
                    s if s.is_success() => {
                        let model: Model = response
                            .json()
                            .await
                            .map_err(|e| VerifierDown(format!("JupyterHub API answered oddly: {e}")))?;
                        Ok(Some(match (model.admin, model.kind.as_deref()) {
                            (true, None | Some("user")) => Caller::Admin(model.name),
                            (true, Some(_)) => Caller::Hub,
                            (false, None | Some("user")) => Caller::User(model.name),
                            // A non-admin service owns no servers.
                            (false, Some(_)) => return Ok(None),
                        }))
                    }
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => Ok(None),
                    other => Err(VerifierDown(format!("JupyterHub API answered {other}"))),
                }
            }
            Verifier::TokenReview(client) => {
                use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
                let review = TokenReview {
                    spec: TokenReviewSpec { token: token.to_owned(), ..Default::default() },
                    ..Default::default()
                };
                let api: kube::Api<TokenReview> = kube::Api::all(client.clone());
                let reviewed = api
                    .create(&Default::default(), &review)
                    .await
                    .map_err(|e| VerifierDown(format!("TokenReview failed: {e}")))?;
                let status = reviewed.status.unwrap_or_default();
                Ok(status
                    .authenticated
                    .unwrap_or(false)
                    .then(|| status.user.and_then(|u| u.username))
                    .flatten()
                    .map(Caller::User))
            }
        }
    }
}

/// Verdicts by SHA-256 of the token, so the cache never holds a token itself.
type VerdictCache = HashMap<[u8; 32], (Option<Caller>, Instant)>;

const VALID_FOR: Duration = Duration::from_secs(60);
const INVALID_FOR: Duration = Duration::from_secs(5);
const CACHE_LIMIT: usize = 10_000;
/// Below the 5 s keep-alive of Node's HTTP server (JupyterHub's proxy).
const HUB_POOL_IDLE: Duration = Duration::from_secs(4);

/// Turns a presented token into a [`Caller`].
#[derive(Clone, Default)]
pub struct Authenticator {
    hub_token: Option<HubToken>,
    verifiers: Vec<Verifier>,
    cache: Arc<Mutex<VerdictCache>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hub_token", &self.hub_token)
            .field("verifiers", &self.verifiers)
            .finish()
    }
}

impl Authenticator {
    pub fn new(hub_token: Option<HubToken>, verifiers: Vec<Verifier>) -> Self {
        Self { hub_token, verifiers, cache: Arc::default() }
    }

    /// True when nobody is checked: no hub token and no user verification.
    pub fn is_open(&self) -> bool {
        self.hub_token.is_none() && self.verifiers.is_empty()
    }

    pub(super) async fn caller(&self, presented: Option<&str>) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller::Open);
        }
        let token = presented.filter(|t| !t.is_empty()).ok_or_else(ApiError::unauthorized)?;
        if self.hub_token.as_ref().is_some_and(|hub| hub.matches(token)) {
            return Ok(Caller::Hub);
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((known, at)) = self.cache.lock().expect("cache lock").get(&key).cloned() {
            let ttl = if known.is_some() { VALID_FOR } else { INVALID_FOR };
            if at.elapsed() < ttl {
                return known.ok_or_else(ApiError::unauthorized);
            }
        }
        let mut verdict = None;
        let mut down = None;
        for verifier in &self.verifiers {
            match verifier.verify(token).await {
                Ok(Some(caller)) => {
                    verdict = Some(caller);
                    break;
                }
                Ok(None) => {}
                Err(VerifierDown(why)) => down = Some(why),
            }
        }
        if verdict.is_none()
            && let Some(why) = down
        {
            tracing::warn!(reason = %why, "cannot verify a user token");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "the token cannot be verified right now (JupyterHub or Kubernetes unreachable); try again shortly",
            ));
        }
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, (_, at)| at.elapsed() < VALID_FOR);
        }
        cache.insert(key, (verdict.clone(), Instant::now()));
        verdict.ok_or_else(ApiError::unauthorized)
    }
}

/// Accepts `Authorization: token <t>` (JupyterHub's style) and `Bearer <t>`.
pub(super) fn presented(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")).then(|| token.trim())
}

/// Puts the [`Caller`] into the request's extensions, or answers 401/503.
pub async fn authenticate(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    match state.auth.caller(presented(&request)).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
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
        let auth = Authenticator::new(HubToken::new("s3cret"), vec![]);
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn users_act_only_for_themselves() {
        assert!(Caller::Hub.may_act_for("bob").is_ok());
        assert!(Caller::Admin("ann".into()).may_act_for("bob").is_ok());
        assert!(Caller::Open.may_act_for("bob").is_ok());
        assert!(Caller::User("alice".into()).may_act_for("alice").is_ok());
        let refused = Caller::User("alice".into()).may_act_for("bob").unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.body.message.contains("`alice`") && refused.body.message.contains("`bob`"));
    }

    #[tokio::test]
    async fn the_hub_token_is_the_hub_and_unknown_tokens_are_refused() {
        let auth = Authenticator::new(HubToken::new("s3cret"), vec![]);
        assert_eq!(auth.caller(Some("s3cret")).await.unwrap(), Caller::Hub);
        assert_eq!(auth.caller(Some("other")).await.unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert_eq!(auth.caller(None).await.unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert_eq!(Authenticator::default().caller(None).await.unwrap(), Caller::Open);
    }

    #[tokio::test]
    async fn an_unreachable_verifier_is_a_503_not_a_401() {
        // Nothing listens on port 9 of loopback: the connection is refused at once.
        let hub = Verifier::jupyterhub("http://127.0.0.1:9/hub/api", Duration::from_secs(2)).unwrap();
        let auth = Authenticator::new(HubToken::new("s3cret"), vec![hub]);
        let err = auth.caller(Some("user-token")).await.unwrap_err();
        assert_eq!((err.status, err.body.code), (StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable"));
    }
}
