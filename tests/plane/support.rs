//! Support for tests against the real control plane that `scripts/cluster up`
//! starts (see tests/controlplane/README.md).
//!
//! Tests never skip silently: without the plane's environment they fail and say
//! how to start it. Each test gets its own namespace (labelled for the
//! PodSecurity `restricted` level) that is deleted afterwards, even when the test
//! panics, so tests run in parallel and leave nothing behind.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use singleuser_profiles::ray::RayCluster;

/// How to get the environment these tests need.
const HOW_TO_START: &str = "run `scripts/cluster up && eval \"$(scripts/cluster env)\"` first, \
                            or run the whole suite with `scripts/test`";

/// The value of an environment variable that `scripts/cluster env` exports;
/// panics with instructions when it is missing.
pub fn cluster_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: these tests need the test control plane; {HOW_TO_START}"),
    }
}

/// A client with the admin identity of the test control plane (KUBECONFIG).
///
/// Refuses a KUBECONFIG that points anywhere but the test plane's API server,
/// so a developer's real cluster is never touched.
pub async fn admin_client() -> Client {
    let _ = cluster_env("KUBECONFIG");
    let apiserver = cluster_env("SUP_TEST_APISERVER");
    let config = Config::from_kubeconfig(&KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot load KUBECONFIG: {e}; {HOW_TO_START}"));
    let url = config.cluster_url.to_string();
    assert_eq!(
        url.trim_end_matches('/'),
        apiserver.trim_end_matches('/'),
        "KUBECONFIG does not point at the test control plane (SUP_TEST_APISERVER); {HOW_TO_START}"
    );
    Client::try_from(config).expect("build admin client")
}

/// The ordinary users of the test plane: authenticated, with no rights until a
/// test grants them some.
#[derive(Clone, Copy, Debug)]
pub enum User {
    Alice,
    Bob,
}

impl User {
    pub fn name(self) -> &'static str {
        match self {
            User::Alice => "alice",
            User::Bob => "bob",
        }
    }

    pub fn token(self) -> String {
        match self {
            User::Alice => cluster_env("SUP_TEST_TOKEN_ALICE"),
            User::Bob => cluster_env("SUP_TEST_TOKEN_BOB"),
        }
    }
}

/// A client for a user of the test plane.
pub async fn user_client(user: User) -> Client {
    token_client(&user.token()).await
}

/// A client that authenticates with a bearer token (a user's static token or a
/// ServiceAccount token) against the test plane's API server.
pub async fn token_client(token: &str) -> Client {
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sup-test", "cluster": {
            "server": cluster_env("SUP_TEST_APISERVER"),
            "certificate-authority": cluster_env("SUP_TEST_CA"),
        }}],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [{"name": "token", "context": {"cluster": "sup-test", "user": "token"}}],
        "current-context": "token",
    });
    let kubeconfig = Kubeconfig::from_yaml(&kubeconfig.to_string()).expect("token kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("token client config");
    Client::try_from(config).expect("build token client")
}

/// A name unique to this process and call: `<prefix>-<random suffix>`, valid as
/// a DNS-1123 label for prefixes of up to 40 characters.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // A cheap mix (splitmix64) of the time, the pid and a counter.
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    format!("{prefix}-{:08x}", x as u32)
}

/// Polls `condition` every 250 ms until it returns `Some`, and returns that
/// value; panics naming `what` when `timeout` passes first.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `test` with an admin client and a fresh namespace labelled
/// `pod-security.kubernetes.io/enforce=restricted`, then deletes the namespace,
/// also when `test` panics (the panic is resumed after the deletion).
pub async fn with_temp_ns<F, Fut>(test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = admin_client().await;
    let ns = create_temp_ns(&client, serde_json::json!({})).await;
    run_then_delete_ns(client, ns, test).await;
}

/// Like [`with_temp_ns`], for a namespace whose pods run on the plane's real
/// node: its annotations make the PodNodeSelector and PodTolerationRestriction
/// admission plugins give every pod created in it (by a test, KubeRay or
/// KubeSpawner alike) the real node's selector and the toleration of its taint,
/// so no template needs to know. Also PodSecurity `restricted`.
pub async fn with_real_node_ns<F, Fut>(test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let label = cluster_env("SUP_TEST_REAL_NODE_LABEL");
    let toleration = serde_json::json!([{
        "key": label, "operator": "Equal", "value": "true", "effect": "NoSchedule",
    }]);
    let annotations = serde_json::json!({
        "scheduler.alpha.kubernetes.io/node-selector": format!("{label}=true"),
        "scheduler.alpha.kubernetes.io/defaultTolerations": toleration.to_string(),
    });
    let client = admin_client().await;
    let ns = create_temp_ns(&client, annotations).await;
    run_then_delete_ns(client, ns, test).await;
}

async fn run_then_delete_ns<F, Fut>(client: Client, ns: String, test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let outcome = AssertUnwindSafe(test(client.clone(), ns.clone())).catch_unwind().await;
    let namespaces: Api<Namespace> = Api::all(client);
    let deleted = namespaces.delete(&ns, &DeleteParams::background()).await;
    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(()) => {
            deleted.unwrap_or_else(|e| panic!("delete namespace {ns}: {e}"));
        }
    }
}

async fn create_temp_ns(client: &Client, annotations: serde_json::Value) -> String {
    let name = unique_name("sup-test");
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "annotations": annotations,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
                "app.kubernetes.io/created-by": "singleuser-profiles-tests",
            },
        },
    }))
    .expect("namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    // Pods are refused until the service-account controller has made `default`.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_for(Duration::from_secs(30), "the default ServiceAccount", || {
        let accounts = accounts.clone();
        async move { accounts.get_opt("default").await.ok().flatten() }
    })
    .await;
    name
}

/// The RayClusters of `ns`.
pub fn rayclusters(client: &Client, ns: &str) -> Api<RayCluster> {
    Api::namespaced(client.clone(), ns)
}

/// The HTTP status code of a failed API call, if the API server answered.
pub fn api_error_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Runs `kubectl` (on PATH from `scripts/cluster env`) and returns its status,
/// stdout and stderr.
pub fn kubectl(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl (on PATH from `scripts/cluster env`) runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// While alive, a failing test prints what an operator would look at first:
/// `kubectl describe` of the namespace's pods, its events and the last lines of
/// every component log of the plane.
pub struct DescribeOnPanic(pub String);

impl Drop for DescribeOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let ns = self.0.as_str();
        for args in [
            &["describe", "pods", "-n", ns][..],
            &["get", "events", "-n", ns, "--sort-by=.lastTimestamp"][..],
        ] {
            let (_, out, err) = kubectl(args);
            eprintln!("----- kubectl {} -----\n{out}{err}", args.join(" "));
        }
        let cluster = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster");
        if let Ok(out) = std::process::Command::new(cluster).args(["logs", "30"]).output() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
