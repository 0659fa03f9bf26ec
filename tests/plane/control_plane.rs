//! Acceptance tests of the test control plane itself: each checks one promise
//! the service relies on (KubeRay reconciles, PodSecurity enforces, CRD schema
//! validates, garbage collection collects, RBAC refuses) against the real
//! components that `scripts/cluster up` runs.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use singleuser_profiles::ray::RayCluster;

use crate::support::{User, api_error_code, rayclusters, token_client, user_client, wait_for, with_temp_ns};

const RECONCILE_TIMEOUT: Duration = Duration::from_secs(60);

/// A container security context that satisfies PodSecurity `restricted`.
fn restricted_container_security() -> Value {
    json!({
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// A RayCluster (head only) whose head container has `security_context`.
fn raycluster(name: &str, security_context: Value) -> RayCluster {
    serde_json::from_value(json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": {
            "rayVersion": "2.46.0",
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {"spec": {
                    "containers": [{
                        "name": "ray-head",
                        "image": "rayproject/ray:2.46.0",
                        "resources": {
                            "requests": {"cpu": "1", "memory": "2Gi"},
                            "limits": {"cpu": "1", "memory": "2Gi"},
                        },
                        "securityContext": security_context,
                    }],
                }},
            },
        },
    }))
    .expect("RayCluster object")
}

async fn head_pods(client: &Client, ns: &str, cluster: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("ray.io/cluster={cluster},ray.io/node-type=head");
    pods.list(&ListParams::default().labels(&selector)).await.expect("list pods").items
}

fn pod_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn raycluster_in_restricted_namespace_is_reconciled_by_kuberay() {
    with_temp_ns(|client, ns| async move {
        let name = "demo";
        rayclusters(&client, &ns)
            .create(&PostParams::default(), &raycluster(name, restricted_container_security()))
            .await
            .expect("create RayCluster");

        let pod = wait_for(RECONCILE_TIMEOUT, "a Running/Ready head pod", || {
            let (client, ns) = (client.clone(), ns.clone());
            async move { head_pods(&client, &ns, name).await.into_iter().find(pod_ready) }
        })
        .await;
        let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        assert!(pod_ip.is_some_and(|ip| !ip.is_empty()), "head pod has no pod IP: {pod:?}");
        assert!(pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some(), "head pod not scheduled");

        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let svc = services.get(&format!("{name}-head-svc")).await.expect("the head Service exists");
        assert!(svc.owner_references().iter().any(|o| o.kind == "RayCluster" && o.name == name));

        let api = rayclusters(&client, &ns);
        wait_for(RECONCILE_TIMEOUT, "KubeRay to report the head ready (HeadPodReady)", || {
            let api = api.clone();
            async move { api.get(name).await.ok()?.head_ready().then_some(()) }
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn raycluster_violating_restricted_level_gets_no_head_pod() {
    with_temp_ns(|client, ns| async move {
        let name = "privileged";
        let violating = json!({"privileged": true, "allowPrivilegeEscalation": true});
        rayclusters(&client, &ns)
            .create(&PostParams::default(), &raycluster(name, violating))
            .await
            .expect("create RayCluster (the CRD itself accepts it)");

        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let api = rayclusters(&client, &ns);
        let reason = wait_for(RECONCILE_TIMEOUT, "a PodSecurity rejection in events or conditions", || {
            let (events, api) = (events.clone(), api.clone());
            async move {
                let from_events = events
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .filter_map(|e| e.message);
                let rc = api.get(name).await.ok()?;
                let from_conditions = rc
                    .status
                    .unwrap_or_default()
                    .conditions
                    .into_iter()
                    .filter_map(|c| c.other.get("message")?.as_str().map(str::to_owned));
                from_events.chain(from_conditions).find(|m| m.contains("violates PodSecurity"))
            }
        })
        .await;
        assert!(reason.contains("restricted"), "rejection names the level: {reason}");
        assert!(head_pods(&client, &ns, name).await.is_empty(), "a violating head pod was created");
    })
    .await;
}

#[tokio::test]
async fn raycluster_without_head_group_spec_is_rejected_by_crd_schema() {
    with_temp_ns(|client, ns| async move {
        let headless: RayCluster = serde_json::from_value(json!({
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": "headless"},
            "spec": {"rayVersion": "2.46.0"},
        }))
        .unwrap();
        let err = rayclusters(&client, &ns)
            .create(&PostParams::default(), &headless)
            .await
            .expect_err("a RayCluster without headGroupSpec must be refused");
        assert_eq!(api_error_code(&err), Some(422), "{err}");
        assert!(err.to_string().contains("headGroupSpec"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn deleting_a_configmap_garbage_collects_its_dependents() {
    with_temp_ns(|client, ns| async move {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap();
        let owner = cms.create(&PostParams::default(), &owner).await.expect("create owner");
        let dependent: ConfigMap = serde_json::from_value(json!({
            "metadata": {
                "name": "dependent",
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "name": "owner", "uid": owner.metadata.uid.clone().unwrap(),
                }],
            },
        }))
        .unwrap();
        cms.create(&PostParams::default(), &dependent).await.expect("create dependent");
        // A bystander without an ownerReference must survive.
        let bystander: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "bystander"}})).unwrap();
        cms.create(&PostParams::default(), &bystander).await.expect("create bystander");

        cms.delete("owner", &DeleteParams::background()).await.expect("delete owner");
        wait_for(Duration::from_secs(60), "the garbage collector to delete the dependent", || {
            let cms = cms.clone();
            async move { matches!(cms.get_opt("dependent").await, Ok(None)).then_some(()) }
        })
        .await;
        assert!(cms.get_opt("bystander").await.expect("get bystander").is_some());
    })
    .await;
}

fn view_binding(name: &str, subject: Value) -> RoleBinding {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [subject],
    }))
    .unwrap()
}

/// Polls until `client` may list ConfigMaps in `ns` (RBAC changes apply within moments).
async fn wait_until_allowed(client: &Client, ns: &str, who: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    wait_for(Duration::from_secs(30), &format!("{who} to be allowed after the RoleBinding"), || {
        let cms = cms.clone();
        async move { cms.list(&ListParams::default()).await.ok().map(|_| ()) }
    })
    .await;
}

async fn list_configmaps_code(client: &Client, ns: &str) -> Option<u16> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.list(&ListParams::default()).await.err().map(|e| api_error_code(&e).unwrap_or(0))
}

#[tokio::test]
async fn user_without_role_binding_is_forbidden_and_allowed_with_one() {
    with_temp_ns(|client, ns| async move {
        let alice = user_client(User::Alice).await;
        let bob = user_client(User::Bob).await;
        assert_eq!(list_configmaps_code(&alice, &ns).await, Some(403), "alice has no rights yet");

        let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
        let subject =
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": User::Alice.name()});
        bindings
            .create(&PostParams::default(), &view_binding("alice-view", subject))
            .await
            .expect("bind alice");

        wait_until_allowed(&alice, &ns, "alice").await;
        assert_eq!(list_configmaps_code(&bob, &ns).await, Some(403), "bob was not granted anything");
    })
    .await;
}

#[tokio::test]
async fn service_account_token_from_token_request_authenticates() {
    with_temp_ns(|client, ns| async move {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "robot"}})).unwrap();
        accounts.create(&PostParams::default(), &sa).await.expect("create ServiceAccount");
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}})).unwrap();
        let token = accounts
            .create_token_request("robot", &PostParams::default(), &request)
            .await
            .expect("TokenRequest")
            .status
            .and_then(|s| s.token)
            .expect("a token in the TokenRequest status");
        let robot = token_client(&token).await;
        // 403, not 401: the token authenticates, the account has no rights yet.
        assert_eq!(list_configmaps_code(&robot, &ns).await, Some(403));

        let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
        let subject = json!({"kind": "ServiceAccount", "name": "robot", "namespace": ns});
        bindings
            .create(&PostParams::default(), &view_binding("robot-view", subject))
            .await
            .expect("bind robot");
        wait_until_allowed(&robot, &ns, "the ServiceAccount").await;
    })
    .await;
}
