//! The HTTP edge in the dry-run mode, driven with `oneshot`: no cluster, the repo's folders.

use std::path::Path;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::app::{App, AppBuilder};
use crate::catalog::{self, Catalog, ProfileSelector};

/// The repo's folders in a dry run, spawning into `notebooks`.
pub(super) fn dry_run(hub_token: Option<&str>) -> AppBuilder {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cms = catalog::load_paths(&[root.join("profiles"), root.join("templates")]).unwrap();
    // A user's settings as JSP's spawn page saved them.
    cms.extend(
        catalog::parse_configmaps(
            "user.yaml",
            "kind: ConfigMap\nmetadata: {name: jupyterhub-singleuser-profile-saver}\ndata:\n  profile: |\n    last_selected_size: Medium\n---\nkind: ConfigMap\nmetadata: {name: jupyterhub-singleuser-profile-saver-envs}\ndata: {MY_BUCKET: b}\n",
        )
        .unwrap(),
    );
    let (users, rest) = catalog::UserIndex::split(&ProfileSelector::default(), &cms);
    let catalog = Catalog::build(&ProfileSelector::default(), rest, None);
    App::dry_run(catalog, users, "test folders".into(), "notebooks")
        .auth(Authenticator::new(hub_token.and_then(HubToken::new), vec![]))
}

pub(super) async fn call(app: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn post(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    let request =
        Request::post(path).header("content-type", "application/json").body(Body::from(body.to_string()));
    let (status, text) = call(app, request.unwrap()).await;
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
}

async fn get(app: &Router, path: &str) -> (StatusCode, String) {
    call(app, Request::get(path).body(Body::empty()).unwrap()).await
}

fn app() -> Router {
    dry_run(None).build().router.clone()
}

#[tokio::test]
async fn spawn_in_the_dry_run_answers_the_cluster_and_environment() {
    let (status, answer) = post(&app(), "/api/v1/spawn", json!({"user": "alice", "profile": "ray"})).await;
    assert_eq!(status, StatusCode::OK, "{answer:#}");
    assert_eq!(answer["dry_run"], json!(true));
    assert_eq!(answer["cluster"], json!("ray-alice"));
    assert_eq!(answer["environment"]["RAY_ADDRESS"], json!("ray://ray-alice-head-svc.notebooks.svc:10001"));
    assert_eq!(answer["environment"]["RAY_CLUSTER"], json!("ray-alice"));
    assert_eq!(
        answer["environment"]["RAY_DASHBOARD_URL"],
        json!("http://ray-alice-dashboard.apps.example.com/")
    );
    assert_eq!(answer["pod"]["labels"]["jupyterhub.opendatahub.io/ray-cluster"], json!("ray-alice"));
    let kinds: Vec<&str> =
        answer["objects"].as_array().unwrap().iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["RayCluster", "NetworkPolicy", "Ingress", "NetworkPolicy"]);
    let rc = &answer["objects"][0];
    assert_eq!(rc["metadata"]["namespace"], json!("notebooks"));
    assert_eq!(rc["spec"]["workerGroupSpecs"][0]["replicas"], json!(2), "the option's default");
}

#[tokio::test]
async fn render_takes_the_users_saved_settings() {
    let (status, answer) = post(&app(), "/api/v1/render", json!({"user": "saver"})).await;
    assert_eq!(status, StatusCode::OK, "{answer:#}");
    assert_eq!(answer["pod"]["resources"]["limits"]["cpu"], json!("2"), "the saved size Medium");
    let env = answer["environment"].as_object().unwrap();
    assert_eq!(
        env["MY_BUCKET"]["valueFrom"]["configMapKeyRef"]["name"],
        json!("jupyterhub-singleuser-profile-saver-envs")
    );
    assert_eq!(env["JUPYTERHUB_USER_NAME"], json!("saver"));
    // JSP's order in the JSON itself: the profile env, the user's, MEM_LIMIT, JUPYTERHUB_USER_NAME.
    let request = Request::post("/api/v1/render")
        .header("content-type", "application/json")
        .body(Body::from(json!({"user": "saver"}).to_string()))
        .unwrap();
    let (_, text) = call(&app(), request).await;
    let at = |name: &str| text.find(&format!("\"{name}\":")).unwrap_or_else(|| panic!("{name} in {text}"));
    let order = ["RAY_USAGE_STATS_ENABLED", "MY_BUCKET", "MEM_LIMIT", "JUPYTERHUB_USER_NAME"].map(at);
    assert!(order.is_sorted(), "{order:?} in {text}");
}

#[tokio::test]
async fn render_applies_size_and_options() {
    let body = json!({"user": "bob", "size": "Medium", "options": {"workers": 3}, "server": "big"});
    let (status, answer) = post(&app(), "/api/v1/render", body).await;
    assert_eq!(status, StatusCode::OK, "{answer:#}");
    assert_eq!(answer["pod"]["resources"]["limits"]["cpu"], json!("2"));
    // The same, in the units KubeSpawner takes.
    assert_eq!(answer["pod"]["kubespawner"]["cpu_limit"], json!(2.0));
    assert_eq!(answer["pod"]["kubespawner"]["mem_limit"], json!(4u64 << 30));
    assert_eq!(answer["objects"][0]["spec"]["workerGroupSpecs"][0]["replicas"], json!(3));
    assert!(answer["owner"].as_str().unwrap().ends_with("bob--big"), "{}", answer["owner"]);
}

#[tokio::test]
async fn errors_say_what_to_fix_with_a_stable_code() {
    let app = app();
    let request =
        Request::post("/api/v1/spawn").header("content-type", "application/json").body(Body::from("{"));
    let (status, text) = call(&app, request.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["code"], json!("invalid_body"));

    let (status, err) = post(&app, "/api/v1/spawn", json!({"user": "a", "colour": "red"})).await;
    assert_eq!((status, err["code"].clone()), (StatusCode::BAD_REQUEST, json!("invalid_body")));
    assert!(err["message"].as_str().unwrap().contains("colour"), "{err}");

    let (status, err) = post(&app, "/api/v1/spawn", json!({"user": "a", "options": {"workers": 5}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["code"], json!("invalid_option"));
    assert_eq!(err["field"], json!("options.workers"));

    let (status, err) = post(&app, "/api/v1/spawn", json!({"user": " "})).await;
    assert_eq!((status, err["field"].clone()), (StatusCode::BAD_REQUEST, json!("user")));

    let (status, err) = post(&app, "/api/v1/spawn", json!({"user": "a", "namespace": "Not_Valid"})).await;
    assert_eq!((status, err["field"].clone()), (StatusCode::BAD_REQUEST, json!("namespace")));

    let (status, text) = get(&app, "/api/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(text.contains("openapi"), "{text}");
}

#[tokio::test]
async fn a_configured_token_is_required_and_compared_exactly() {
    let app = dry_run(Some("s3cret")).build().router.clone();
    let spawn = |auth: Option<&str>| {
        let mut request = Request::post("/api/v1/render").header("content-type", "application/json");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.body(Body::from(json!({"user": "a"}).to_string())).unwrap()
    };
    assert_eq!(call(&app, spawn(None)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, spawn(Some("token wrong"))).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, spawn(Some("Basic s3cret"))).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, spawn(Some("token s3cret"))).await.0, StatusCode::OK);
    assert_eq!(call(&app, spawn(Some("Bearer s3cret"))).await.0, StatusCode::OK);
    // Probes and metrics stay open for the kubelet and Prometheus.
    assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);
    assert_eq!(get(&app, "/metrics").await.0, StatusCode::OK);
}

#[tokio::test]
async fn profiles_are_listed_for_a_user_and_for_kubespawner() {
    let app = app();
    let (status, text) = get(&app, "/api/v1/profiles?user=alice").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["profiles"][0]["slug"], json!("ray"), "{body:#}");
    assert_eq!(body["sizes"].as_array().unwrap().len(), 3);

    let (status, text) = get(&app, "/api/v1/profiles?user=alice&format=kubespawner").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list[0]["slug"], json!("ray"));
    assert!(list[0]["display_name"].is_string());

    assert_eq!(get(&app, "/api/v1/profiles").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(get(&app, "/api/v1/profiles?user=a&format=xml").await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn yaml_is_answered_on_request() {
    let request = Request::post("/api/v1/render")
        .header("content-type", "application/json")
        .header("accept", "application/yaml")
        .body(Body::from(json!({"user": "alice"}).to_string()))
        .unwrap();
    let (status, text) = call(&app(), request).await;
    assert_eq!(status, StatusCode::OK);
    let parsed: Value = crate::yaml::from_str(&text).unwrap().unwrap();
    assert_eq!(parsed["cluster"], json!("ray-alice"));
}

#[tokio::test]
async fn readiness_follows_loading_and_shutdown() {
    let loaded = dry_run(None).build();
    let app = loaded.router.clone();
    assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);
    loaded.state.shutting_down.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(get(&app, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);

    let (_tx, unloaded) = tokio::sync::watch::channel(crate::catalog::watch::Snapshot::default());
    let app = App::from_snapshot(unloaded, "notebooks").build().router.clone();
    assert_eq!(get(&app, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    let (status, err) = post(&app, "/api/v1/render", json!({"user": "a"})).await;
    assert_eq!((status, err["code"].clone()), (StatusCode::SERVICE_UNAVAILABLE, json!("not_ready")));
}

#[tokio::test]
async fn metrics_count_requests_and_latencies() {
    let app = app();
    post(&app, "/api/v1/render", json!({"user": "a"})).await;
    post(&app, "/api/v1/spawn", json!({"user": "a", "size": "nope"})).await;
    let (_, text) = get(&app, "/metrics").await;
    assert!(
        text.contains(
            r#"singleuser_profiles_http_requests_total{method="POST",route="/api/v1/render",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"singleuser_profiles_spawn_duration_seconds_count{outcome="unknown_size"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"singleuser_profiles_render_duration_seconds_count{outcome="ok"} 1"#), "{text}");
    assert!(text.contains("singleuser_profiles_config_problems 0"), "{text}");
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    // With the launcher's images and browser login, so that each of its routes answers too.
    let launcher = super::jsp::tests::launcher("http://127.0.0.1:9/hub/api");
    let app = dry_run(None).launcher(launcher).build().router.clone();
    let (status, text) = get(&app, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&text).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let routes = [
        ("/api/v1/spawn", "post"),
        ("/api/v1/render", "post"),
        ("/api/v1/stop", "post"),
        ("/api/v1/profiles", "get"),
        ("/api/v1/status", "get"),
        ("/api/v1/users/{user}/clusters", "get"),
        ("/api/v1/users/{user}/server", "delete"),
        ("/api/v1/users/{user}/servers/{server}", "delete"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.yaml", "get"),
        ("/openapi.json", "get"),
        ("/services/jsp-api/api/whoami", "get"),
        ("/services/jsp-api/api/instance", "get"),
        ("/services/jsp-api/api/user/configmap", "get"),
        ("/services/jsp-api/api/user/configmap", "post"),
        ("/services/jsp-api/api/ui/config", "get"),
        ("/services/jsp-api/api/images", "get"),
        ("/services/jsp-api/api/images/default", "get"),
        ("/services/jsp-api/api/sizes", "get"),
        ("/services/jsp-api/api/size/{size_name}", "get"),
        ("/services/jsp-api/oauth_callback", "get"),
    ];
    let methods: usize =
        paths.values().map(|p| p.as_object().unwrap().keys().filter(|k| *k != "parameters").count()).sum();
    assert_eq!(methods, routes.len(), "every documented operation is a route");
    for (path, method) in routes {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not documented");
        // And every documented route answers something other than the fallback's 404.
        let concrete =
            path.replace("{user}", "alice").replace("{server}", "gpu").replace("{size_name}", "Small");
        let request = Request::builder().method(method.to_uppercase().as_str()).uri(&concrete);
        let request =
            request.header("content-type", "application/json").body(Body::from("{\"user\": \"a\"}"));
        let (status, _) = call(&app, request.unwrap()).await;
        assert_ne!(status, StatusCode::NOT_FOUND, "{method} {concrete}");
    }
}

#[tokio::test]
async fn stop_and_status_in_the_dry_run_change_nothing() {
    let app = app();
    let (status, body) = post(&app, "/api/v1/stop", json!({"user": "alice"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"dry_run": true, "stopped": false, "owner": "singleuser-service-ref-alice", "namespace": "notebooks"})
    );
    let (status, text) = get(&app, "/api/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["mode"], json!("dry-run"));
    assert_eq!(body["problems"], json!([]));
}

#[tokio::test]
async fn readyz_names_the_reason_it_computed() {
    let loaded = dry_run(None).build();
    let app = loaded.router.clone();
    assert_eq!(get(&app, "/readyz").await, (StatusCode::OK, "ready".to_owned()));
    loaded.state.shutting_down.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(get(&app, "/readyz").await.1, "not ready: shutting down");

    let (_tx, unloaded) = tokio::sync::watch::channel(crate::catalog::watch::Snapshot::default());
    let app = App::from_snapshot(unloaded, "notebooks").build().router.clone();
    assert_eq!(get(&app, "/readyz").await.1, "not ready: profiles are not loaded yet");
}

/// A watch that fails once and then stays silent, as kube-runtime's watcher does when it
/// resumes from its resourceVersion in a quiet namespace: readiness holds, status tells.
#[tokio::test]
async fn a_watch_error_followed_by_silence_keeps_readiness_and_shows_in_status() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::watcher::{self, Event};

    let profiles: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "jupyter-singleuser-profiles"},
        "data": {crate::profile::PROFILES_KEY: "profiles:\n- name: globals\n  services:\n    ray:\n      resources: [{name: tpl, path: rc.yaml}]\n"},
    }))
    .unwrap();
    let template: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "tpl"},
        "data": {"rc.yaml": "apiVersion: ray.io/v1\nkind: RayCluster\nmetadata: {name: '{{cluster_name}}'}\n"},
    }))
    .unwrap();
    let events = futures::stream::iter([
        Ok(Event::Init),
        Ok(Event::InitApply(profiles)),
        Ok(Event::InitApply(template)),
        Ok(Event::InitDone),
        Err(watcher::Error::WatchFailed(kube::Error::LinesCodecMaxLineLengthExceeded)),
    ])
    .chain(futures::stream::pending());
    let (tx, snapshot) = tokio::sync::watch::channel(crate::catalog::watch::Snapshot::default());
    let metrics = Metrics::default();
    tokio::spawn(crate::catalog::watch::run(
        events,
        tx,
        ProfileSelector::default(),
        crate::catalog::Rules::default(),
        metrics.clone(),
    ));
    let app = App::from_snapshot(snapshot, "notebooks").metrics(metrics).build().router.clone();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        let (_, text) = get(&app, "/api/v1/status").await;
        let status: Value = serde_json::from_str(&text).unwrap();
        if status["watch_error"].is_string() || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(status["watch_error"].as_str().unwrap().contains("watch stream failed"), "{status:#}");
    assert!(status["watch_error_at"].is_string(), "{status:#}");
    assert_eq!((status["loaded"].clone(), status["ready"].clone()), (json!(true), json!(true)));
    assert_eq!(get(&app, "/readyz").await, (StatusCode::OK, "ready".to_owned()));
    let (_, metrics) = get(&app, "/metrics").await;
    assert!(metrics.contains("singleuser_profiles_watch_errors_total 1"), "{metrics}");
}

/// Series of `http_requests_total` in the exposition.
fn request_series(metrics: &str) -> usize {
    metrics.lines().filter(|l| l.starts_with("singleuser_profiles_http_requests_total{")).count()
}

#[tokio::test]
async fn odd_methods_and_paths_cannot_grow_the_metrics() {
    let app = app();
    let odd =
        |i: usize| Request::builder().method(format!("Z{i}{}", "X".repeat(200)).as_str()).uri("/healthz");
    call(&app, odd(0).body(Body::empty()).unwrap()).await;
    call(&app, Request::get("/no/such/path/0").body(Body::empty()).unwrap()).await;
    let (_, before) = get(&app, "/metrics").await;
    for i in 1..500 {
        call(&app, odd(i).body(Body::empty()).unwrap()).await;
        call(&app, Request::get(format!("/no/such/path/{i}")).body(Body::empty()).unwrap()).await;
    }
    let (_, after) = get(&app, "/metrics").await;
    // Only the /metrics scrape itself adds a series between the two reads.
    assert_eq!(request_series(&after), request_series(&before) + 1, "{after}");
    assert!(after.contains(r#"method="other",route="/healthz",status="405"} 500"#), "{after}");
    assert!(after.contains(r#"method="GET",route="other",status="404"} 500"#), "{after}");
    assert!(!after.contains("Z1X"), "{after}");
}

#[tokio::test]
async fn a_slow_body_gets_a_json_408_and_the_connection_closes() {
    let limits = Limits { body_timeout: std::time::Duration::from_millis(200), ..Limits::default() };
    let app = dry_run(None).limits(limits).build().router.clone();
    let never_ends = futures::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
    let request = Request::post("/api/v1/spawn")
        .header("content-type", "application/json")
        .body(Body::from_stream(never_ends))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(response.headers()["connection"], "close");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["code"], json!("request_timeout"), "{error}");
}

#[tokio::test]
async fn a_large_body_gets_a_json_413_before_anything_else() {
    let limits = Limits { body_bytes: 100, ..Limits::default() };
    let app = dry_run(Some("s3cret")).limits(limits).build().router.clone();
    let big = json!({"user": "a".repeat(200)}).to_string();
    // Declared too large: refused before reading; without a length: refused at the limit.
    let declared = Request::post("/api/v1/render").header("content-type", "application/json");
    let (status, text) = call(&app, declared.body(Body::from(big.clone())).unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["code"], json!("body_too_large"));
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(big))]);
    let streamed = Request::post("/api/v1/render").body(Body::from_stream(chunks)).unwrap();
    let (status, _) = call(&app, streamed).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// An answer's status, headers and body, which must be JSON in the one error shape.
async fn refusal(app: &Router, request: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(parts.headers["content-type"], "application/json", "{} {text:?}", parts.status);
    let error: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    assert!(error["code"].is_string() && error["message"].is_string(), "{error}");
    (parts.status, parts.headers, error)
}

#[tokio::test]
async fn a_method_a_route_does_not_serve_gets_a_json_405_with_allow() {
    let app = app();
    for (method, path, allow) in [
        ("DELETE", "/api/v1/spawn", "POST"),
        ("POST", "/healthz", "GET,HEAD"),
        ("PUT", "/api/v1/status", "GET,HEAD"),
    ] {
        let request = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        let (status, headers, error) = refusal(&app, request).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(headers["allow"], allow, "{method} {path}");
        assert_eq!(error["code"], json!("method_not_allowed"));
    }
}

#[tokio::test]
async fn paths_that_are_not_utf8_or_have_an_empty_name_get_a_json_400() {
    let app = app();
    for (method, path, field) in [
        ("GET", "/api/v1/users/%ff/clusters", None),
        ("DELETE", "/api/v1/users/al%ffice/server", None),
        ("DELETE", "/api/v1/users/alice/servers/%fe%ff", None),
        ("GET", "/api/v1/users//clusters", Some("user")),
        ("DELETE", "/api/v1/users//server", Some("user")),
        ("DELETE", "/api/v1/users/alice/servers/", None),
        ("DELETE", "/api/v1/users//servers/gpu", Some("user")),
    ] {
        let request = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        let (status, _, error) = refusal(&app, request).await;
        assert!(status.is_client_error(), "{method} {path}: {status}");
        if let Some(field) = field {
            assert_eq!(
                (status, &error["field"]),
                (StatusCode::BAD_REQUEST, &json!(field)),
                "{method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_gets_a_422_saying_so() {
    let app = app();
    for path in ["/api/v1/spawn", "/api/v1/render", "/api/v1/stop"] {
        for body in [json!(["alice"]), json!("alice"), json!(3), json!(null)] {
            let request = Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            let (status, _, error) = refusal(&app, request).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}: {error}");
            assert!(error["message"].as_str().unwrap().contains("JSON object"), "{error}");
        }
    }
    let (status, error) = post(&app, "/api/v1/render", json!(["alice"])).await;
    assert!(error["message"].as_str().unwrap().contains("an array"), "{status} {error}");
}

#[tokio::test]
async fn an_object_body_may_come_with_blanks_around_it() {
    // As a shell here-document sends it to curl.
    let request = Request::post("/api/v1/render")
        .header("content-type", "application/json")
        .body(Body::from("\n  {\"user\": \"alice\"}\n\n"))
        .unwrap();
    let (status, text) = call(&app(), request).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

#[tokio::test]
async fn stop_and_status_check_the_user_and_namespace_as_render_does() {
    let app = app();
    for namespace in ["../../kube-system", "Bad NS\n", "kube_system", &"n".repeat(64)] {
        for path in ["/api/v1/render", "/api/v1/stop"] {
            let (status, error) = post(&app, path, json!({"user": "alice", "namespace": namespace})).await;
            assert_eq!((status, &error["field"]), (StatusCode::BAD_REQUEST, &json!("namespace")), "{path}");
            assert!(!error["message"].as_str().unwrap().contains('\n'), "{error}");
        }
        let encoded: String = namespace
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        for (method, path) in [
            ("GET", format!("/api/v1/users/alice/clusters?namespace={encoded}")),
            ("DELETE", format!("/api/v1/users/alice/server?namespace={encoded}")),
            ("DELETE", format!("/api/v1/users/alice/servers/gpu?namespace={encoded}")),
        ] {
            let request = Request::builder().method(method).uri(&path).body(Body::empty()).unwrap();
            let (status, _, error) = refusal(&app, request).await;
            assert_eq!((status, &error["field"]), (StatusCode::BAD_REQUEST, &json!("namespace")), "{path}");
        }
    }
    for user in ["", " "] {
        let (status, error) = post(&app, "/api/v1/stop", json!({"user": user})).await;
        assert_eq!((status, &error["field"]), (StatusCode::BAD_REQUEST, &json!("user")), "{user:?}");
    }
}

#[tokio::test]
async fn a_request_past_its_timeout_gets_a_json_504() {
    let slow = Router::new()
        .route("/slow", axum::routing::get(|| tokio::time::sleep(std::time::Duration::from_secs(60))))
        .layer(middleware::from_fn(|request, next| {
            deadline(std::time::Duration::from_millis(50), request, next)
        }));
    let (status, _, error) = refusal(&slow, Request::get("/slow").body(Body::empty()).unwrap()).await;
    assert_eq!((status, &error["code"]), (StatusCode::GATEWAY_TIMEOUT, &json!("timeout")));
}

/// What the OpenAPI document says of `user` and `namespace` is what the handlers accept.
#[tokio::test]
async fn the_openapi_request_schemas_say_what_the_handlers_accept() {
    let app = app();
    let doc: Value = crate::yaml::from_str(OPENAPI_YAML).unwrap().unwrap();
    let schemas = &doc["components"]["schemas"];
    let admits = |schema: &Value, value: &str| {
        let length = value.chars().count() as u64;
        schema["minLength"].as_u64().is_none_or(|min| length >= min)
            && schema["maxLength"].as_u64().is_none_or(|max| length <= max)
            && schema["pattern"].as_str().is_none_or(|p| regex::Regex::new(p).unwrap().is_match(value))
    };
    for request in ["SpawnRequest", "StopRequest"] {
        let properties = &schemas[request]["properties"];
        assert_eq!(properties["user"]["$ref"], json!("#/components/schemas/User"), "{request}");
        assert_eq!(properties["namespace"]["$ref"], json!("#/components/schemas/Namespace"), "{request}");
    }
    let path = |request: &str| if request == "StopRequest" { "/api/v1/stop" } else { "/api/v1/render" };
    for request in ["SpawnRequest", "StopRequest"] {
        for user in ["", " ", "\t", "alice", "Eje@example.com", "ø"] {
            let (status, error) = post(&app, path(request), json!({"user": user})).await;
            let refused = error["field"] == json!("user");
            assert_eq!(admits(&schemas["User"], user), !refused, "{request} user {user:?}: {status} {error}");
        }
        for namespace in
            ["", "notebooks", "a-b", "-a", "a-", "A", "a.b", "Bad NS\n", &"n".repeat(63), &"n".repeat(64)]
        {
            let (status, error) =
                post(&app, path(request), json!({"user": "alice", "namespace": namespace})).await;
            let refused = error["field"] == json!("namespace");
            assert_eq!(
                admits(&schemas["Namespace"], namespace),
                !refused,
                "{request} namespace {namespace:?}: {status} {error}"
            );
        }
    }
}

#[tokio::test]
async fn no_usable_profiles_is_not_ready_and_refuses_spawns_with_the_reason() {
    let broken = catalog::parse_configmaps(
        "p.yaml",
        "kind: ConfigMap\nmetadata: {name: jupyter-singleuser-profiles}\ndata:\n  profiles: \"profiles: {\"\n",
    )
    .unwrap();
    for cms in [Vec::new(), broken] {
        let catalog = Catalog::build(&ProfileSelector::default(), &cms, None);
        let users = catalog::UserIndex::default();
        let app = App::dry_run(catalog, users, "empty".into(), "notebooks").build().router.clone();
        let (status, text) = get(&app, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.starts_with("not ready: no profile ConfigMap is loaded"), "{text}");
        for path in ["/api/v1/spawn", "/api/v1/render"] {
            let (status, error) = post(&app, path, json!({"user": "alice"})).await;
            assert_eq!(
                (status, &error["code"]),
                (StatusCode::SERVICE_UNAVAILABLE, &json!("no_profiles")),
                "{path}"
            );
            assert!(error["message"].as_str().unwrap().contains("no profile ConfigMap"), "{error}");
        }
        let (_, text) = get(&app, "/api/v1/status").await;
        let status: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status["ready"], json!(false));
        assert!(status["not_ready_reason"].as_str().unwrap().contains("no profile ConfigMap"), "{status}");
    }
}

/// A snapshot of one profile whose RayCluster template sets `rayVersion: <version>`.
fn ray_version_snapshot(version: &str) -> crate::catalog::watch::Snapshot {
    let yaml = format!(
        "kind: ConfigMap\nmetadata: {{name: jupyter-singleuser-profiles}}\ndata:\n  {}: |\n    profiles:\n    - name: globals\n      services:\n        ray:\n          resources: [{{name: tpl, path: rc.yaml}}]\n---\nkind: ConfigMap\nmetadata: {{name: tpl}}\ndata:\n  rc.yaml: |\n    apiVersion: ray.io/v1\n    kind: RayCluster\n    metadata: {{name: '{{{{cluster_name}}}}'}}\n    spec: {{rayVersion: '{version}'}}\n",
        crate::profile::PROFILES_KEY
    );
    let cms = catalog::parse_configmaps("cms.yaml", &yaml).unwrap();
    crate::catalog::watch::Snapshot {
        catalog: std::sync::Arc::new(Catalog::build(&ProfileSelector::default(), &cms, None)),
        loaded: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_render_asked_again_is_answered_alike_until_the_configuration_changes() {
    let (tx, snapshot) = tokio::sync::watch::channel(ray_version_snapshot("2.52.0"));
    let metrics = Metrics::default();
    let app = App::from_snapshot(snapshot, "notebooks").metrics(metrics.clone()).build().router.clone();
    let render = |user: &str| {
        let body = json!({"user": user}).to_string();
        let request = Request::post("/api/v1/render").header("content-type", "application/json");
        call(&app, request.body(Body::from(body)).unwrap())
    };
    let (status, first) = render("alice").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(metrics.render_cache_hits.get(), 0);
    assert_eq!(render("alice").await, (StatusCode::OK, first.clone()));
    assert_eq!(metrics.render_cache_hits.get(), 1);
    let (_, other) = render("bob").await;
    assert!(other.contains("ray-bob") && !other.contains("ray-alice"), "{other}");
    assert_eq!(metrics.render_cache_hits.get(), 1, "another user is rendered, not looked up");

    tx.send_replace(ray_version_snapshot("2.53.0"));
    let (status, changed) = render("alice").await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let answer: Value = serde_json::from_str(&changed).unwrap();
    assert_eq!(answer["objects"][0]["spec"]["rayVersion"], json!("2.53.0"), "the edited template");
    assert_eq!(metrics.render_cache_hits.get(), 1);
}
