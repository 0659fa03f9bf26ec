//! JSP's spawner API in the dry run, driven with `oneshot`. User tokens and the OAuth code
//! exchange go to a stand-in for JupyterHub's REST API on loopback (the real hub is in
//! tests/e2e): it knows the tokens of `alice`, of the admin `ann`, and one login code.

use std::time::Duration;

use axum::body::Body;
use axum::routing::{get, post};
use http::{Request, StatusCode, header};
use serde_json::{Value, json};

use super::super::tests::{call, dry_run};
use super::super::*;
use super::local_path;
use crate::app::LauncherSetup;
use crate::launcher::ImageList;

const HUB_SECRET: &str = "hub-secret";
const API: &str = "/services/jsp-api/api";
const RAY_IMAGE: &str = "docker.io/rayproject/ray:2.60.0-py311";
const MINIMAL_IMAGE: &str = "quay.io/jupyter/minimal-notebook:2024-11";

/// A loopback JupyterHub REST API: `GET /hub/api/user` and `POST /hub/api/oauth2/token`.
async fn stand_in_hub() -> String {
    async fn user(headers: http::HeaderMap) -> Response {
        let token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        match token {
            "token alice-token" => {
                axum::Json(json!({"name": "alice", "kind": "user", "admin": false})).into_response()
            }
            "token ann-token" => {
                axum::Json(json!({"name": "ann", "kind": "user", "admin": true})).into_response()
            }
            _ => StatusCode::FORBIDDEN.into_response(),
        }
    }
    async fn token(body: String) -> Response {
        let form: std::collections::HashMap<String, String> =
            form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        let field = |k: &str| form.get(k).map(String::as_str);
        let good = field("client_id") == Some("service-jsp-api")
            && field("client_secret") == Some(HUB_SECRET)
            && field("grant_type") == Some("authorization_code")
            && field("code") == Some("good-code")
            && field("redirect_uri") == Some("/services/jsp-api/oauth_callback");
        match good {
            true => {
                axum::Json(json!({"access_token": "alice-token", "token_type": "Bearer"})).into_response()
            }
            false => StatusCode::BAD_REQUEST.into_response(),
        }
    }
    let hub = Router::new().route("/hub/api/user", get(user)).route("/hub/api/oauth2/token", post(token));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hub/api", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hub).await.unwrap() });
    url
}

fn images() -> ImageList {
    ImageList {
        images: vec![RAY_IMAGE.into(), "quay.io/jupyter/minimal-notebook:2024-11".into()],
        default: None,
    }
}

/// The launcher with two images and the browser login against the hub API at `api`.
pub(in crate::api) fn launcher(api: &str) -> LauncherSetup {
    let oauth = OAuth {
        client_id: "service-jsp-api".into(),
        client_secret: HubToken::new(HUB_SECRET).unwrap(),
        callback_path: "/services/jsp-api/oauth_callback".into(),
        authorize_url: "/hub/api/oauth2/authorize".into(),
        token_url: format!("{api}/oauth2/token"),
        http: reqwest::Client::new(),
    };
    LauncherSetup { prefix: API.into(), images: images(), oauth: Some(oauth) }
}

/// The repo's folders, the hub's token, user tokens checked by the stand-in, the browser login.
async fn app() -> Router {
    let api = stand_in_hub().await;
    let verifier = Verifier::jupyterhub(&api, Duration::from_secs(5)).unwrap();
    dry_run(None)
        .auth(Authenticator::new(HubToken::new(HUB_SECRET), vec![verifier]))
        .launcher(launcher(&api))
        .build()
        .router
        .clone()
}

/// A JSP API call as the spawn page makes it, with a token and `For-User` when given.
fn jsp(
    method: &str,
    path: &str,
    token: Option<&str>,
    for_user: Option<&str>,
    body: Option<Value>,
) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(format!("{API}/{path}"));
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("token {token}"));
    }
    if let Some(user) = for_user {
        request = request.header("For-User", user);
    }
    match body {
        Some(body) => {
            request.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string()))
        }
        None => request.body(Body::empty()),
    }
    .unwrap()
}

async fn json_call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let (status, text) = call(app, request).await;
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
}

#[tokio::test]
async fn the_catalog_is_answered_in_jsp_shapes() {
    let app = app().await;
    let alice = Some("alice-token");
    let (status, sizes) = json_call(&app, jsp("GET", "sizes", alice, None, None)).await;
    assert_eq!((status, sizes), (StatusCode::OK, json!(["Small", "Medium", "Large"])));
    let (_, full) = json_call(&app, jsp("GET", "sizes?pure_json=true", alice, None, None)).await;
    assert_eq!(full[1]["name"], "Medium");
    let (status, small) = json_call(&app, jsp("GET", "size/Small", alice, None, None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        small["resources"],
        json!({"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}})
    );
    let (status, missing) = json_call(&app, jsp("GET", "size/Huge", alice, None, None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(missing["message"].as_str().unwrap().contains("Small, Medium, Large"), "{missing}");

    let (status, images) = json_call(&app, jsp("GET", "images", alice, None, None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(images[0]["name"], "docker.io/rayproject/ray");
    assert_eq!(
        images[0]["tags"][0],
        json!({"name": "2.60.0-py311", "content": {"software": [], "dependencies": []},
        "recommended": true, "build_status": "Unknown", "default": true})
    );
    assert_eq!(images[1]["display_name"], "minimal-notebook");
    let (_, default) = json_call(&app, jsp("GET", "images/default", alice, None, None)).await;
    assert_eq!(default, json!(RAY_IMAGE));
    let (_, ui) = json_call(&app, jsp("GET", "ui/config", alice, None, None)).await;
    assert_eq!(ui["sizeConfig"], json!({"enabled": true}));
    assert_eq!(ui["gpuConfig"]["enabled"], json!(false));
    let (status, _) = json_call(&app, jsp("GET", "instance", alice, None, None)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn saved_settings_are_answered_back_and_spawn_with_them() {
    let app = app().await;
    let alice = Some("alice-token");
    let (status, fresh) = json_call(&app, jsp("GET", "user/configmap", alice, None, None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fresh,
        json!({"gpu": 0, "last_selected_image": RAY_IMAGE, "last_selected_size": "", "env": []})
    );

    // One field per call, as the spawn page saves them.
    for change in [
        json!({"last_selected_size": "Medium"}),
        json!({"last_selected_image": MINIMAL_IMAGE}),
        json!({"env": [{"name": "MY_VAR", "type": "text", "value": "from-the-launcher"}]}),
    ] {
        let (status, answer) =
            json_call(&app, jsp("POST", "user/configmap", alice, None, Some(change))).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let expected = json!({"gpu": 0, "last_selected_image": MINIMAL_IMAGE, "last_selected_size": "Medium",
        "env": [{"name": "MY_VAR", "type": "text", "value": "from-the-launcher"}]});
    let (_, saved) = json_call(&app, jsp("GET", "user/configmap", alice, None, None)).await;
    assert_eq!(saved, expected, "each save merged over the one before");

    // The spawn takes them: the size's resources, the image, the user's env by reference.
    let request = Request::post("/api/v1/render")
        .header(header::AUTHORIZATION, format!("token {HUB_SECRET}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"user": "alice"}).to_string()))
        .unwrap();
    let (status, answer) = json_call(&app, request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["profile"]["size"], "Medium");
    assert_eq!(answer["pod"]["resources"]["limits"]["cpu"], "2");
    let env = answer["profile"]["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "MY_VAR"
            && e["valueFrom"]["configMapKeyRef"]["name"] == "jupyterhub-singleuser-profile-alice-envs"),
        "{env:?}"
    );
}

#[tokio::test]
async fn users_read_and_write_only_their_own_settings() {
    let app = app().await;
    let change = || Some(json!({"last_selected_size": "Small"}));
    let (status, err) =
        json_call(&app, jsp("GET", "user/configmap", Some("alice-token"), Some("bob"), None)).await;
    assert_eq!((status, err["field"].clone()), (StatusCode::FORBIDDEN, json!("For-User")));
    let (status, _) =
        json_call(&app, jsp("POST", "user/configmap", Some("alice-token"), Some("bob"), change())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        json_call(&app, jsp("GET", "user/configmap", Some("alice-token"), Some("alice"), None)).await;
    assert_eq!(status, StatusCode::OK, "naming oneself is fine");

    // An admin acts for anyone with For-User, and is themselves without it.
    let (status, _) =
        json_call(&app, jsp("POST", "user/configmap", Some("ann-token"), Some("bob"), change())).await;
    assert_eq!(status, StatusCode::OK);
    let (_, bob) = json_call(&app, jsp("GET", "user/configmap", Some("ann-token"), Some("bob"), None)).await;
    assert_eq!(bob["last_selected_size"], "Small");
    let (_, who) = json_call(&app, jsp("GET", "whoami", Some("ann-token"), Some("bob"), None)).await;
    assert_eq!(who, json!({"name": "bob", "admin": false, "kind": "user"}));
    let (_, who) = json_call(&app, jsp("GET", "whoami", Some("ann-token"), None, None)).await;
    assert_eq!(who, json!({"name": "ann", "admin": true, "kind": "user"}));
    let (_, ann) = json_call(&app, jsp("GET", "user/configmap", Some("ann-token"), None, None)).await;
    assert_eq!(ann["last_selected_size"], "", "bob's save is not ann's");

    // The hub's token is no user: it must say whom.
    let (status, err) = json_call(&app, jsp("GET", "user/configmap", Some(HUB_SECRET), None, None)).await;
    assert_eq!((status, err["code"].clone()), (StatusCode::BAD_REQUEST, json!("for_user_required")));
    let (status, _) = json_call(&app, jsp("GET", "user/configmap", Some("forged"), None, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a bad token in a header is refused, not redirected");
}

#[tokio::test]
async fn bad_settings_are_refused_saying_what_to_fix() {
    let app = app().await;
    let post = |body: Value| jsp("POST", "user/configmap", Some("alice-token"), None, Some(body));
    let secret = json!({"env": [{"name": "AWS_SECRET", "type": "password", "value": "hunter2"}]});
    let (status, err) = json_call(&app, post(secret)).await;
    assert_eq!((status, err["field"].clone()), (StatusCode::BAD_REQUEST, json!("env[0].type")));
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("Secret `jupyterhub-singleuser-profile-alice-envs`") && !message.contains("hunter2"),
        "{message}"
    );
    let (status, err) = json_call(&app, post(json!({"resources": {"limits": {"cpu": "64"}}}))).await;
    assert_eq!((status, err["field"].clone()), (StatusCode::BAD_REQUEST, json!("resources")));
    // Nothing of the refused calls was saved.
    let (_, saved) = json_call(&app, jsp("GET", "user/configmap", Some("alice-token"), None, None)).await;
    assert_eq!(saved["env"], json!([]));
}

fn set_cookies(response: &Response) -> Vec<String> {
    response.headers().get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap()
}

#[tokio::test]
async fn a_browser_without_a_session_logs_in_through_the_hub() {
    use tower::ServiceExt;
    let app = app().await;
    let page = format!("{API}/user/configmap");
    let response = app.clone().oneshot(Request::get(&page).body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[header::LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with("/hub/api/oauth2/authorize?client_id=service-jsp-api&redirect_uri=%2Fservices%2Fjsp-api%2Foauth_callback&response_type=code&state="), "{location}");
    let state = location.rsplit_once("state=").unwrap().1.to_owned();
    let cookies = set_cookies(&response);
    assert!(cookies[0].contains("HttpOnly") && cookies[0].contains("Path=/services/jsp-api"), "{cookies:?}");
    // The page's other calls start logins of their own meanwhile; each keeps its own state.
    let other =
        app.clone().oneshot(Request::get(format!("{API}/sizes")).body(Body::empty()).unwrap()).await.unwrap();
    let state_cookie = format!("{}; {}", cookie_pair(&set_cookies(&other)[0]), cookie_pair(&cookies[0]));

    // A POST without a session is refused, not redirected (fetch would follow it blindly).
    let (status, _) = call(&app, jsp("POST", "user/configmap", None, None, Some(json!({})))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The hub sends the browser back with a code; a state that is not this browser's fails.
    let callback = |state: &str, code: &str| {
        Request::get(format!("/services/jsp-api/oauth_callback?code={code}&state={state}"))
            .header(header::COOKIE, &state_cookie)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(call(&app, callback("someone-elses", "good-code")).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(call(&app, callback(&state, "stale-code")).await.0, StatusCode::BAD_REQUEST);
    let response = app.clone().oneshot(callback(&state, "good-code")).await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[header::LOCATION], page.as_str(), "back where the browser was going");
    let session =
        set_cookies(&response).into_iter().find(|c| c.starts_with("singleuser-profiles-session=")).unwrap();
    assert!(session.contains("HttpOnly"), "{session}");

    let with_session =
        Request::get(&page).header(header::COOKIE, cookie_pair(&session)).body(Body::empty()).unwrap();
    let (status, settings) = json_call(&app, with_session).await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    let with_session = Request::get(format!("{API}/whoami"))
        .header(header::COOKIE, cookie_pair(&session))
        .body(Body::empty())
        .unwrap();
    assert_eq!(json_call(&app, with_session).await.1["name"], "alice");
}

#[test]
fn only_local_paths_are_followed_after_a_login() {
    assert_eq!(local_path("/hub/spawn"), Some("/hub/spawn"));
    assert_eq!(local_path("//evil.example/x"), None);
    assert_eq!(local_path("/\\evil.example"), None);
    assert_eq!(local_path("https://evil.example/"), None);
}
