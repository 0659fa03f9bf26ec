//! JSP 0.7.0's spawner API, which its spawn page (the ODH launcher) calls: the same paths and
//! JSON shapes (`api/swagger.yaml` of JSP's sdist) under a configurable prefix, answered from
//! the catalog ([`crate::launcher`]) and the user's saved settings ([`crate::settings`]).
//!
//! Auth as a JupyterHub service: a token in `Authorization` (checked as for `/api/v1`), or in
//! the browser a cookie of this service's own holding the token the hub's OAuth flow gave; a
//! browser without one is sent through the hub's login. A user reads and writes only their own
//! settings; an admin (or the hub's token) names the user with `For-User`, as JSP did.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Caller, HubToken};
use super::{ApiError, AppState};
use crate::launcher::{self, ImageList, SettingsError};
use crate::profile::ProfileSet;
use crate::settings::{SaveError, SettingsStore};

/// JupyterHub's name for the service (`c.JupyterHub.services`), as JSP's UI calls it.
pub const DEFAULT_PREFIX: &str = "/services/jsp-api/api";
/// The browser's session: the hub's OAuth token for this service.
const SESSION_COOKIE: &str = "singleuser-profiles-session";
/// `<this>-<state>` holds where to go after the login whose OAuth `state` it names: one cookie
/// per login, since a page's calls start several at once (as JupyterHub's HubOAuth does).
const STATE_COOKIE: &str = "singleuser-profiles-oauth-state";

/// The launcher API's configuration and where it saves settings.
pub struct Launcher {
    /// Path prefix of the API, e.g. [`DEFAULT_PREFIX`]; no trailing slash.
    pub prefix: String,
    pub images: ImageList,
    pub store: SettingsStore,
    /// The hub's OAuth flow for browsers; `None`: tokens only (401 without one).
    pub oauth: Option<OAuth>,
}

/// This service as a JupyterHub OAuth client.
pub struct OAuth {
    /// `oauth_client_id` of the service in `c.JupyterHub.services` (`service-<name>`).
    pub client_id: String,
    /// The service's `api_token`, which is its OAuth client secret.
    pub client_secret: HubToken,
    /// The callback path as the browser reaches it, registered as `oauth_redirect_uri`.
    pub callback_path: String,
    /// Where the browser logs in, e.g. `/hub/api/oauth2/authorize`.
    pub authorize_url: String,
    /// Where this service trades a code for a token, e.g. `http://hub:8081/hub/api/oauth2/token`.
    pub token_url: String,
    pub http: reqwest::Client,
}

impl OAuth {
    /// The cookies' path: the folder of the callback (`/services/jsp-api/`), which holds the API.
    fn cookie_path(&self) -> &str {
        self.callback_path
            .rsplit_once('/')
            .map_or("/", |(folder, _)| if folder.is_empty() { "/" } else { folder })
    }
}

/// Who called, and whom they named in `For-User`.
#[derive(Debug, Clone)]
struct Identity {
    caller: Caller,
    for_user: Option<String>,
}

/// Whose settings a request reads or writes.
#[derive(Debug, Clone)]
struct Acting {
    user: String,
    /// An admin acting for themselves (JSP cleared it when an admin acted for someone).
    admin: bool,
}

pub fn router(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let api = Router::new()
        .route("/whoami", get(whoami))
        .route("/instance", get(instance))
        .route("/user/configmap", get(user_configmap).post(save_user_configmap))
        .route("/ui/config", get(ui_config))
        .route("/images", get(images))
        .route("/images/default", get(default_image))
        .route("/sizes", get(sizes))
        .route("/size/{size_name}", get(size))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let router = Router::new().nest(&state.launcher.prefix, api);
    match &state.launcher.oauth {
        Some(oauth) => router.route(&oauth.callback_path, get(oauth_callback)),
        None => router,
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name && !value.is_empty()).then_some(value))
}

async fn authenticate(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let in_header = auth::presented(&request).is_some();
    let token = auth::presented(&request).or_else(|| cookie(request.headers(), SESSION_COOKIE));
    let caller = match state.auth.caller(token).await {
        Ok(caller) => caller,
        // A browser page load without a (valid) session logs in through the hub, as JSP did.
        Err(err)
            if err.status == StatusCode::UNAUTHORIZED && !in_header && request.method() == Method::GET =>
        {
            match &state.launcher.oauth {
                // Nested under the prefix, the request's own URI lost it; the browser's has it.
                Some(oauth) => {
                    let uri = request.extensions().get::<OriginalUri>().map_or(request.uri(), |o| &o.0);
                    return login_redirect(oauth, uri);
                }
                None => return err.into_response(),
            }
        }
        Err(err) => return err.into_response(),
    };
    let for_user = request.headers().get("for-user").and_then(|v| v.to_str().ok()).map(str::trim);
    let for_user = for_user.filter(|u| !u.is_empty()).map(str::to_owned);
    request.extensions_mut().insert(Identity { caller, for_user });
    next.run(request).await
}

/// Whose settings: the caller's own, or (admins and the hub) the user named in `For-User`.
fn acting(identity: Identity) -> Result<Acting, ApiError> {
    match (identity.caller, identity.for_user.as_deref()) {
        (Caller::User(name), None) => Ok(Acting { user: name, admin: false }),
        (Caller::User(name), Some(other)) if other == name => Ok(Acting { user: name, admin: false }),
        (Caller::User(name), Some(other)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("`{name}` may read and change only their own settings, not `{other}`'s (For-User is for admins)"),
        )
        .field("For-User")),
        (Caller::Admin(name), None) => Ok(Acting { user: name, admin: true }),
        (Caller::Admin(_) | Caller::Hub | Caller::Open, Some(other)) => {
            Ok(Acting { user: other.to_owned(), admin: false })
        }
        (Caller::Hub | Caller::Open, None) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "for_user_required",
            "this caller is no user: name the user whose settings to use in the For-User header",
        )
        .field("For-User")),
    }
}

/// A redirect target of our own: a path on this host, never another site.
pub(super) fn local_path(next: &str) -> Option<&str> {
    (next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\")).then_some(next)
}

fn random_state() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(&e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn login_redirect(oauth: &OAuth, uri: &Uri) -> Response {
    let state = match random_state() {
        Ok(state) => state,
        Err(err) => return err.into_response(),
    };
    let next = uri.path_and_query().map_or("/", |p| p.as_str());
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &oauth.client_id)
        .append_pair("redirect_uri", &oauth.callback_path)
        .append_pair("response_type", "code")
        .append_pair("state", &state)
        .finish();
    // The state is hex and `next` form-encoded: both cookie-safe.
    let cookie = format!(
        "{STATE_COOKIE}-{state}={}; Path={}; HttpOnly; SameSite=Lax; Max-Age=600",
        form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>(),
        oauth.cookie_path()
    );
    redirect(&format!("{}?{query}", oauth.authorize_url), Some(cookie))
}

fn redirect(location: &str, cookie: Option<String>) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    match HeaderValue::from_str(location) {
        Ok(location) => headers.insert(header::LOCATION, location),
        Err(err) => return ApiError::internal(&err).into_response(),
    };
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The hub sends the browser back here with a code; trading it for a token (with the service's
/// secret) proves the login, and the token becomes the session cookie.
async fn oauth_callback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(callback): Query<Callback>,
) -> Result<Response, ApiError> {
    let oauth = state.launcher.oauth.as_ref().expect("routed only with OAuth");
    let refused = |message: &str| ApiError::new(StatusCode::BAD_REQUEST, "oauth_failed", message.to_owned());
    if let Some(error) = callback.error {
        return Err(refused(&format!("the hub refused the login ({error}); go back and log in again")));
    }
    let (Some(code), Some(given)) = (callback.code, callback.state) else {
        return Err(refused(
            "the login did not come back complete (code or state missing); start again from the spawn page",
        ));
    };
    // Only a state this browser was given has its cookie: that is the check.
    let state_cookie = format!("{STATE_COOKIE}-{given}");
    let Some(next) =
        given.bytes().all(|b| b.is_ascii_hexdigit()).then(|| cookie(&headers, &state_cookie)).flatten()
    else {
        return Err(refused(
            "this login was not started by this browser (or is older than 10 minutes); start again from the spawn page",
        ));
    };
    let next =
        form_urlencoded::parse(format!("n={next}").as_bytes()).next().map(|(_, next)| next.into_owned());
    let next = next.as_deref().and_then(local_path).unwrap_or("/hub/");
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &oauth.client_id)
        .append_pair("client_secret", oauth.client_secret.secret())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", &code)
        .append_pair("redirect_uri", &oauth.callback_path)
        .finish();
    let answer = oauth
        .http
        .post(&oauth.token_url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| ApiError::internal(&format!("JupyterHub's token endpoint unreachable: {e}")))?;
    if !answer.status().is_success() {
        let status = answer.status();
        tracing::warn!(%status, "JupyterHub refused an OAuth code");
        return Err(refused(
            "the hub did not accept this login (expired or used code); start again from the spawn page",
        ));
    }
    #[derive(Deserialize)]
    struct Token {
        access_token: String,
    }
    let token: Token =
        answer.json().await.map_err(|e| ApiError::internal(&format!("JupyterHub's token answer: {e}")))?;
    let secure =
        headers.get("x-forwarded-proto").is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let session = format!(
        "{SESSION_COOKIE}={}; Path={}; HttpOnly; SameSite=Lax{}",
        token.access_token,
        oauth.cookie_path(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = redirect(next, Some(session));
    let clear = format!("{state_cookie}=; Path={}; Max-Age=0", oauth.cookie_path());
    if let Ok(clear) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    Ok(response)
}

fn profiles(state: &AppState) -> Result<Arc<crate::catalog::Catalog>, ApiError> {
    Ok(crate::spawn::config(&state.snapshot)?.0)
}

fn not_found(what: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
}

async fn whoami(Extension(identity): Extension<Identity>) -> Result<Json<Value>, ApiError> {
    let acting = acting(identity)?;
    Ok(Json(json!({ "name": acting.user, "admin": acting.admin, "kind": "user" })))
}

/// JSP read a segment key Secret and OpenShift's cluster id; neither exists here.
async fn instance() -> Json<Value> {
    Json(json!({ "segment_key": null, "cluster_id": null }))
}

async fn user_configmap(
    State(state): State<Arc<AppState>>,
    Extension(identity): Extension<Identity>,
) -> Result<Json<Value>, ApiError> {
    let acting = acting(identity)?;
    let (catalog, users) = crate::spawn::config(&state.snapshot)?;
    let default = state.launcher.images.default_image(catalog.profiles());
    Ok(Json(launcher::user_view(users.get(&acting.user), default.as_deref())))
}

async fn save_user_configmap(
    State(state): State<Arc<AppState>>,
    Extension(identity): Extension<Identity>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let acting = acting(identity)?;
    let Json(body) = body?;
    let change = launcher::parse_change(&body, &acting.user).map_err(ApiError::from)?;
    let (catalog, users) = crate::spawn::config(&state.snapshot)?;
    let saved = state.launcher.store.save(&acting.user, users.get(&acting.user), &change).await?;
    let mut changed: Vec<&str> = change.presets.keys().map(String::as_str).collect();
    if change.env.is_some() {
        changed.push("env");
    }
    tracing::info!(user = %acting.user, changed = ?changed, "user settings saved");
    let default = state.launcher.images.default_image(catalog.profiles());
    Ok(Json(launcher::user_view(Some(&saved), default.as_deref())))
}

async fn ui_config(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(launcher::ui_config(profiles(&state)?.profiles())))
}

async fn images(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let catalog = profiles(&state)?;
    Ok(Json(json!(state.launcher.images.offered(catalog.profiles()))))
}

async fn default_image(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let catalog = profiles(&state)?;
    match state.launcher.images.default_image(catalog.profiles()) {
        Some(image) => Ok(Json(json!(image))),
        None => Err(not_found(
            "no images to offer: list some with --launcher-images or name exact images in the profiles"
                .into(),
        )),
    }
}

#[derive(Deserialize)]
struct SizesQuery {
    #[serde(default)]
    pure_json: bool,
}

async fn sizes(
    State(state): State<Arc<AppState>>,
    query: Result<Query<SizesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query?;
    let catalog = profiles(&state)?;
    let set: &ProfileSet = catalog.profiles();
    if set.offered_sizes().is_empty() {
        return Err(not_found("the profiles define no sizes".into()));
    }
    Ok(Json(match query.pure_json {
        true => json!(launcher::sizes(set)),
        false => json!(launcher::size_names(set)),
    }))
}

async fn size(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let catalog = profiles(&state)?;
    launcher::size(catalog.profiles(), &name).map(Json).ok_or_else(|| {
        let known = launcher::size_names(catalog.profiles()).join(", ");
        not_found(format!("no size named {name:?}; the sizes are: {known}"))
    })
}

impl From<SettingsError> for ApiError {
    fn from(err: SettingsError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_settings", err.message).field(err.field)
    }
}

impl From<SaveError> for ApiError {
    fn from(err: SaveError) -> Self {
        match err {
            SaveError::ReadOnly => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "read_only", err.to_string())
            }
            SaveError::Kube(err) => ApiError::internal(&err),
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
