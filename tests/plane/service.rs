//! The profile service against the real control plane: the repo's profiles and templates
//! applied as ConfigMaps, the service watching them, spawns applied for real and reconciled by
//! the real KubeRay operator.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use singleuser_profiles::api::{Authenticator, HubToken, Verifier};
use singleuser_profiles::app::{App, ClusterSetup};
use singleuser_profiles::catalog;
use singleuser_profiles::cluster;
use singleuser_profiles::lifecycle::{self, Owners, Quota, Reaping};
use singleuser_profiles::metrics::Metrics;
use singleuser_profiles::ray::RayCluster;
use singleuser_profiles::spawn::Backend;
use tower::ServiceExt;

use crate::support::{User, rayclusters, wait_for, with_temp_ns};

const HUB_TOKEN: &str = "hub-token-for-tests";
const MANAGED: &str = "app.kubernetes.io/managed-by=singleuser-profiles";

/// The service as `serve` builds it in cluster mode, watching `ns`.
pub(crate) struct Service {
    app: App,
    owners: Owners,
}

/// The reaper off: most tests run no notebook pods.
const NO_REAPING: Reaping = Reaping { grace: Duration::ZERO, interval: Duration::from_secs(1) };

impl Service {
    pub(crate) async fn start(client: &Client, ns: &str) -> Service {
        Self::start_with(client, ns, Quota::default(), NO_REAPING).await
    }

    async fn start_with(client: &Client, ns: &str, quota: Quota, reaping: Reaping) -> Service {
        let setup = ClusterSetup { quota, reaping, ..ClusterSetup::new(client.clone()) };
        // User tokens (alice's, bob's) are verified the way the ODH dashboard's are.
        let verifiers = vec![Verifier::TokenReview(client.clone())];
        let app =
            App::cluster(setup, ns).auth(Authenticator::new(HubToken::new(HUB_TOKEN), verifiers)).build();
        let mut snapshot = app.state.snapshot.clone();
        tokio::time::timeout(Duration::from_secs(30), snapshot.wait_for(|s| s.loaded))
            .await
            .expect("the first ConfigMap list within 30 s")
            .expect("watch running");
        let Backend::Cluster(cluster) = &app.state.backend else { unreachable!("a cluster-mode app") };
        let owners = cluster.owners.clone();
        Service { owners, app }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_raw(method, path, body.map(|b| b.to_string()), true).await
    }

    async fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        token: bool,
    ) -> (StatusCode, Value) {
        self.call_as(if token { Some(HUB_TOKEN) } else { None }, method, path, body).await
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request.header("content-type", "application/json").body(Body::from(body)),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.app.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        (status, value)
    }

    pub(crate) async fn spawn(&self, body: Value) -> (StatusCode, Value) {
        self.call("POST", "/api/v1/spawn", Some(body)).await
    }
}

/// `kubectl apply` of ConfigMap manifests (text or the repo's folders) into `ns`.
async fn apply_configmaps(client: &Client, ns: &str, sources: &[catalog::ConfigMapSource]) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for cm in sources {
        let object = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": cm.name, "labels": cm.labels},
            "data": cm.data,
        });
        api.patch(&cm.name, &PatchParams::apply("tests").force(), &Patch::Apply(&object))
            .await
            .unwrap_or_else(|e| panic!("apply ConfigMap {}: {e}", cm.name));
    }
}

/// `kubectl apply -f profiles/ -f templates/`, exactly as the README tells admins.
pub(crate) fn apply_repo_content(ns: &str) {
    let output = std::process::Command::new("kubectl")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["apply", "--namespace", ns, "-f", "profiles/", "-f", "templates/"])
        .output()
        .expect("kubectl (on PATH from `scripts/cluster env`) runs");
    assert!(output.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&output.stderr));
}

async fn apply_yaml(client: &Client, ns: &str, text: &str) {
    apply_configmaps(client, ns, &catalog::parse_configmaps("test", text).unwrap()).await;
}

/// Applies a ConfigMap labelled `jupyterhub=singleuser-profiles` holding a profile document.
pub(crate) async fn apply_profiles(client: &Client, ns: &str, name: &str, document: &str) {
    let cm = catalog::ConfigMapSource {
        name: name.to_owned(),
        labels: [("jupyterhub".to_owned(), "singleuser-profiles".to_owned())].into(),
        data: [(singleuser_profiles::profile::PROFILES_KEY.to_owned(), document.to_owned())].into(),
    };
    apply_configmaps(client, ns, &[cm]).await;
}

fn ingresses(client: &Client, ns: &str) -> Api<Ingress> {
    Api::namespaced(client.clone(), ns)
}

fn policies(client: &Client, ns: &str) -> Api<NetworkPolicy> {
    Api::namespaced(client.clone(), ns)
}

/// Names of the objects this service made in `ns`: owner ConfigMaps, RayClusters, Ingresses,
/// NetworkPolicies.
pub(crate) async fn managed_objects(client: &Client, ns: &str) -> Vec<String> {
    let params = ListParams::default().labels(MANAGED);
    let mut names = Vec::new();
    for cm in Api::<ConfigMap>::namespaced(client.clone(), ns).list(&params).await.unwrap() {
        names.push(format!("ConfigMap/{}", cm.metadata.name.unwrap()));
    }
    for rc in rayclusters(client, ns).list(&params).await.unwrap() {
        names.push(format!("RayCluster/{}", rc.metadata.name.unwrap()));
    }
    for ingress in ingresses(client, ns).list(&params).await.unwrap() {
        names.push(format!("Ingress/{}", ingress.metadata.name.unwrap()));
    }
    for policy in Api::<NetworkPolicy>::namespaced(client.clone(), ns).list(&params).await.unwrap() {
        names.push(format!("NetworkPolicy/{}", policy.metadata.name.unwrap()));
    }
    names
}

fn env<'a>(answer: &'a Value, name: &str) -> &'a str {
    answer["environment"][name].as_str().unwrap_or_else(|| panic!("{name} missing in {answer:#}"))
}

#[tokio::test]
async fn spawn_applies_owned_labelled_objects_and_kuberay_brings_the_head_up() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        let service = Service::start(&client, &ns).await;

        let (status, answer) = service
            .spawn(json!({"user": "Eje@RedHat.com", "profile": "ray", "options": {"workers": 1}}))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer:#}");
        assert_eq!(answer["dry_run"], json!(false));
        let cluster = answer["cluster"].as_str().unwrap().to_owned();
        assert_eq!(env(&answer, "RAY_ADDRESS"), format!("ray://{cluster}-head-svc.{ns}.svc:10001"));
        assert_eq!(env(&answer, "RAY_CLUSTER"), cluster);
        assert_eq!(
            env(&answer, "RAY_DASHBOARD_URL"),
            format!("http://{cluster}-dashboard.apps.example.com/")
        );
        let objects = answer["objects"].as_array().unwrap();
        assert!(objects.iter().all(|o| o["metadata"]["uid"].is_string()), "the stored objects are answered");
        assert!(objects.iter().all(|o| o["metadata"].get("managedFields").is_none()), "without bookkeeping");

        let owner_name = answer["owner"].as_str().unwrap();
        let owner = Api::<ConfigMap>::namespaced(client.clone(), &ns).get(owner_name).await.unwrap();
        let owner_uid = owner.metadata.uid.clone().unwrap();
        let owner_labels = owner.metadata.labels.clone().unwrap();
        assert_eq!(owner_labels["app.kubernetes.io/managed-by"], "singleuser-profiles");
        let user_label = owner_labels["jupyterhub.opendatahub.io/user"].clone();

        for metadata in [
            rayclusters(&client, &ns).get(&cluster).await.unwrap().metadata,
            ingresses(&client, &ns).get(&format!("{cluster}-dashboard")).await.unwrap().metadata,
            policies(&client, &ns).get(&cluster).await.unwrap().metadata,
            policies(&client, &ns).get(&format!("{cluster}-dashboard")).await.unwrap().metadata,
        ] {
            let labels = metadata.labels.clone().unwrap();
            assert_eq!(labels["app.kubernetes.io/managed-by"], "singleuser-profiles");
            assert_eq!(labels["jupyterhub.opendatahub.io/user"], user_label);
            let refs = metadata.owner_references.clone().unwrap();
            assert_eq!(refs.len(), 1);
            assert_eq!((refs[0].kind.as_str(), refs[0].name.as_str()), ("ConfigMap", owner_name));
            assert_eq!(refs[0].uid, owner_uid);
        }

        let rcs = rayclusters(&client, &ns);
        wait_for(Duration::from_secs(120), "HeadPodReady on the spawned RayCluster", || {
            let rcs = rcs.clone();
            let cluster = cluster.clone();
            async move { rcs.get(&cluster).await.ok()?.head_ready().then_some(()) }
        })
        .await;

        // KubeRay v1.6.2 gave the head its token from the Secret the notebook refers to.
        let token_ref = json!({"valueFrom": {"secretKeyRef": {"name": cluster, "key": "auth_token"}}});
        assert_eq!(answer["environment"]["RAY_AUTH_TOKEN"], token_ref);
        assert_eq!(env(&answer, "RAY_AUTH_MODE"), "token");
        let pods = Api::<Pod>::namespaced(client.clone(), &ns);
        let head = ListParams::default().labels(&format!("ray.io/cluster={cluster},ray.io/node-type=head"));
        let head = pods.list(&head).await.unwrap().items.remove(0);
        let head_env = serde_json::to_value(&head.spec.unwrap().containers[0].env).unwrap();
        let head_env = head_env.as_array().unwrap();
        assert!(head_env.contains(&json!({"name": "RAY_AUTH_MODE", "value": "token"})), "{head_env:#?}");
        assert!(
            head_env.contains(&json!({"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": cluster, "key": "auth_token"}}})),
            "{head_env:#?}"
        );
        assert!(Api::<Secret>::namespaced(client.clone(), &ns).get(&cluster).await.is_ok(), "KubeRay's token Secret");

        let path = format!("/api/v1/users/{}/clusters", "Eje@RedHat.com".replace('@', "%40"));
        let (status, listing) = service.call("GET", &path, None).await;
        assert_eq!(status, StatusCode::OK, "{listing:#}");
        let clusters = listing["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 1, "{listing:#}");
        assert_eq!(clusters[0]["name"], json!(cluster));
        assert_eq!(clusters[0]["ready"], json!(true), "{listing:#}");
        assert!(clusters[0]["head_pod"].is_string(), "{listing:#}");
    })
    .await;
}

#[tokio::test]
async fn spawning_twice_changes_nothing_and_stop_removes_everything() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        let service = Service::start(&client, &ns).await;
        let request = json!({"user": "alice", "server": "gpu", "size": "Small"});

        let (status, first) = service.spawn(request.clone()).await;
        assert_eq!(status, StatusCode::OK, "{first:#}");
        let before = managed_objects(&client, &ns).await;
        let rc_uid = |answer: &Value| answer["objects"][0]["metadata"]["uid"].clone();
        let (status, second) = service.spawn(request.clone()).await;
        assert_eq!(status, StatusCode::OK, "{second:#}");
        assert_eq!(first["environment"], second["environment"]);
        assert_eq!(first["pod"], second["pod"]);
        assert_eq!(rc_uid(&first), rc_uid(&second), "the same RayCluster, not a new one");
        assert_eq!(managed_objects(&client, &ns).await, before);
        assert_eq!(before.len(), 5, "owner, RayCluster, Ingress, two NetworkPolicies: {before:?}");

        let stop = json!({"user": "alice", "server": "gpu"});
        let (status, stopped) = service.call("POST", "/api/v1/stop", Some(stop.clone())).await;
        assert_eq!(status, StatusCode::OK, "{stopped:#}");
        assert_eq!(stopped["stopped"], json!(true));
        wait_for(Duration::from_secs(60), "garbage collection of the rendered objects", || {
            let client = client.clone();
            let ns = ns.clone();
            async move { managed_objects(&client, &ns).await.is_empty().then_some(()) }
        })
        .await;

        let (status, again) = service.call("DELETE", "/api/v1/users/alice/servers/gpu", None).await;
        assert_eq!(status, StatusCode::OK, "{again:#}");
        assert_eq!(again["stopped"], json!(false));
    })
    .await;
}

#[tokio::test]
async fn profile_edits_apply_without_restart_and_a_broken_edit_keeps_the_last_good() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        let service = Service::start(&client, &ns).await;
        let profile = |marker: &str| {
            format!("profiles:\n- name: team\n  env:\n  - name: TEAM_MARKER\n    value: {marker}\n")
        };
        let render = json!({"user": "bob"});
        let marker = |answer: &Value| answer["environment"]["TEAM_MARKER"].as_str().map(str::to_owned);

        apply_profiles(&client, &ns, "team-profiles", &profile("one")).await;
        wait_for(Duration::from_secs(10), "the new profile ConfigMap to serve", || async {
            let (_, answer) = service.call("POST", "/api/v1/render", Some(render.clone())).await;
            (marker(&answer).as_deref() == Some("one")).then_some(())
        })
        .await;

        apply_profiles(&client, &ns, "team-profiles", &profile("two")).await;
        wait_for(Duration::from_secs(10), "the edit to serve", || async {
            let (_, answer) = service.call("POST", "/api/v1/render", Some(render.clone())).await;
            (marker(&answer).as_deref() == Some("two")).then_some(())
        })
        .await;

        let broken = profile("two").replace("- name: team\n", "- name: team\n broken: [\n");
        apply_profiles(&client, &ns, "team-profiles", &broken).await;
        let problems = wait_for(Duration::from_secs(10), "the broken edit to be reported", || async {
            let (_, status) = service.call("GET", "/api/v1/status", None).await;
            let problems = status["problems"].as_array().cloned().unwrap_or_default();
            (!problems.is_empty()).then_some(problems)
        })
        .await;
        assert_eq!(problems[0]["configmap"], json!("team-profiles"), "{problems:#?}");
        assert_eq!(problems[0]["serving_last_good"], json!(true));
        assert!(problems[0]["line"].is_number(), "{problems:#?}");
        let (status, answer) = service.call("POST", "/api/v1/render", Some(render.clone())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(marker(&answer).as_deref(), Some("two"), "the last good version keeps serving");
    })
    .await;
}

/// An ODH-style JSP profile: `services`, `configuration`, `return`, a `{{ user }}` template.
const JSP_CONFIGMAPS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: jupyter-singleuser-profiles
data:
  jupyterhub-singleuser-profiles.yaml: |
    profiles:
    - name: globals
      env:
        JUPYTER_ENABLE_LAB: "true"
      resources:
        mem_limit: 1Gi
        cpu_limit: 500m
    - name: Spark Notebook
      images:
      - s2i-spark-minimal-notebook:3.6
      services:
        spark:
          resources:
          - name: jsp-spark-templates
            path: sparkClusterTemplate
          configuration:
            worker_instances: 1
            cpu_request: 250m
          return:
            SPARK_CLUSTER: metadata.name
            SPARK_CPU: data.cpu
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: jsp-spark-templates
data:
  sparkClusterTemplate: |
    kind: ConfigMap
    apiVersion: v1
    metadata:
      name: spark-cluster-{{ user }}
    data:
      cpu: {{ cpu_request}}
      workers: "{{ worker_instances }}"
"#;

#[tokio::test]
async fn odh_jsp_configmaps_work_unchanged() {
    with_temp_ns(|client, ns| async move {
        apply_yaml(&client, &ns, JSP_CONFIGMAPS).await;
        let service = Service::start(&client, &ns).await;
        let (status, answer) =
            service.spawn(json!({"user": "Eje@RedHat.com", "image": "s2i-spark-minimal-notebook:3.6"})).await;
        assert_eq!(status, StatusCode::OK, "{answer:#}");
        assert_eq!(env(&answer, "SPARK_CLUSTER"), "spark-cluster--45je-40-52ed-48at-2ecom");
        assert_eq!(env(&answer, "SPARK_CPU"), "250m");
        assert_eq!(env(&answer, "JUPYTER_ENABLE_LAB"), "true");
        assert_eq!(answer["pod"]["resources"]["limits"]["memory"], json!("1Gi"), "{answer:#}");
        let stored = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get("spark-cluster--45je-40-52ed-48at-2ecom")
            .await
            .expect("the rendered object was applied");
        assert_eq!(stored.data.unwrap()["workers"], "1");

        // Another image: the Spark profile does not apply, nothing is rendered.
        let (status, other) =
            service.spawn(json!({"user": "bob", "image": "s2i-minimal-notebook:3.6"})).await;
        assert_eq!(status, StatusCode::OK, "{other:#}");
        assert_eq!(other["objects"], json!([]));
    })
    .await;
}

/// The host a Route gets from the API server here (the CRD's default): OpenShift's router
/// assigns one the same way, after the template left it out.
const ASSIGNED_ROUTE_HOST: &str = "ray-dashboard.apps.plane.example";

/// The CRDs the 2021 ODH Ray demo renders against: the old Ray operator's `cluster.ray.io/v1`
/// RayCluster and OpenShift's Route (the plane runs KubeRay's `ray.io/v1` and no router). Both
/// keep any field; the Route's `spec.host` defaults as the router's assignment would.
async fn install_odh_2021_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (group, kind, plural, host_default) in [
        ("cluster.ray.io", "RayCluster", "rayclusters", false),
        ("route.openshift.io", "Route", "routes", true),
    ] {
        let mut spec = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        if host_default {
            spec["properties"] = json!({"host": {"type": "string", "default": ASSIGNED_ROUTE_HOST}});
        }
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {"group": group, "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase()},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"spec": spec}}}}]},
        });
        let name = format!("{plural}.{group}");
        crds.patch(&name, &PatchParams::apply("tests").force(), &Patch::Apply(&crd)).await.unwrap();
        wait_for(Duration::from_secs(30), "the CRD to be established", || async {
            let crd = crds.get(&name).await.ok()?;
            let established =
                crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        })
        .await;
    }
}

/// The real 2021 ODH Ray profile (erikerlandson/ray-odh-demo, in the JSP corpus): templates
/// with quoted placeholders, `return` with a bracket path, the Route listed last. The spawn
/// applies both objects and gives the environment JSP gave (the differential test's oracle
/// output for `real-ray-odh-demo/ray-demo`), with the Route host the API server assigned.
#[tokio::test]
async fn an_odh_2021_ray_profile_gives_jsps_environment_and_spawns() {
    with_temp_ns(|client, ns| async move {
        install_odh_2021_crds(&client).await;
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jsp/corpus/real-ray-odh-demo/configmaps");
        apply_configmaps(&client, &ns, &catalog::load_paths(&[corpus]).unwrap()).await;
        let service = Service::start(&client, &ns).await;

        // The user's own settings, as JSP's spawn page saves them, reach the spawn through the
        // ConfigMap watch.
        apply_yaml(&client, &ns, "kind: ConfigMap\nmetadata: {name: jupyterhub-singleuser-profile-eje-40redhat-2ecom}\ndata:\n  profile: |\n    gpu: '0'\n    last_selected_image: ray-ml-notebook:demo\n    last_selected_size: ''\n---\nkind: ConfigMap\nmetadata: {name: jupyterhub-singleuser-profile-eje-40redhat-2ecom-envs}\ndata: {MY_BUCKET: b}\n").await;
        let request = json!({"user": "eje@redhat.com", "namespace": ns});
        let answer = wait_for(Duration::from_secs(30), "the user's settings in a spawn", || async {
            let (status, answer) = service.spawn(request.clone()).await;
            assert_eq!(status, StatusCode::OK, "{answer:#}");
            answer["environment"].get("MY_BUCKET").is_some().then_some(answer)
        })
        .await;

        // JSP's environment, in JSP's order (the JSON answer keeps it): the return values
        // first (the Route, listed last, decides both), the profile env, the user's env,
        // MEM_LIMIT, JUPYTERHUB_USER_NAME.
        let request_body = Request::post("/api/v1/spawn")
            .header("authorization", format!("Bearer {HUB_TOKEN}"))
            .header("content-type", "application/json")
            .body(Body::from(request.to_string()))
            .unwrap();
        let response = service.app.router.clone().oneshot(request_body).await.unwrap();
        let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        let jsp_order = ["RAY_CLUSTER", "RAY_DASH_HOST", "S3_ENDPOINT_URL", "RAY_CLIENT_MODE", "RAY_DASH_URL",
            "MY_BUCKET", "MEM_LIMIT", "JUPYTERHUB_USER_NAME"];
        let at = jsp_order.map(|n| text.find(&format!("\"{n}\":")).unwrap_or_else(|| panic!("{n} in {text}")));
        assert!(at.is_sorted(), "JSP's order {jsp_order:?}, positions {at:?} in {text}");
        assert_eq!(env(&answer, "RAY_CLUSTER"), "ray-cluster-eje-40redhat-2ecom-ray-head");
        assert_eq!(env(&answer, "RAY_DASH_HOST"), ASSIGNED_ROUTE_HOST, "read from the applied Route");
        assert_eq!(env(&answer, "RAY_CLIENT_MODE"), "1");
        assert_eq!(env(&answer, "RAY_DASH_URL"), "http://$(RAY_DASH_HOST)");
        assert_eq!(env(&answer, "MEM_LIMIT"), "2147483648");
        assert_eq!(env(&answer, "JUPYTERHUB_USER_NAME"), "eje@redhat.com");
        assert_eq!(
            answer["environment"]["MY_BUCKET"]["valueFrom"]["configMapKeyRef"]["name"],
            json!("jupyterhub-singleuser-profile-eje-40redhat-2ecom-envs")
        );
        assert_eq!(answer["pod"]["labels"]["jupyterhub.opendatahub.io/user"], json!("eje-40redhat-2ecom"));

        // Both objects were applied, named and typed as JSP rendered them.
        let kinds = [("cluster.ray.io", "RayCluster", "rayclusters"), ("route.openshift.io", "Route", "routes")];
        let mut stored = Vec::new();
        for (group, kind, plural) in kinds {
            let resource = kube::api::ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk(group, "v1", kind),
                plural,
            );
            let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
            let object = api.list(&ListParams::default().labels(MANAGED)).await.unwrap().items;
            assert_eq!(object.len(), 1, "{kind}: {object:?}");
            stored.push(serde_json::to_value(&object[0]).unwrap());
        }
        assert_eq!(stored[0]["metadata"]["name"], json!("ray-cluster-eje-40redhat-2ecom"));
        assert_eq!(
            stored[0]["metadata"]["labels"]["odh-ray-cluster-service"],
            json!("ray-cluster-eje-40redhat-2ecom-ray-head")
        );
        let head = &stored[0]["spec"]["podTypes"][0]["podConfig"]["spec"]["containers"][0];
        // Quoted placeholders stay strings, as in JSP.
        assert_eq!(head["resources"]["requests"], json!({"cpu": "1", "memory": "1024Mi"}));
        assert_eq!(head["image"], json!("quay.io/erikerlandson/ray-ml-ubi:py-3.8-ray-1.4.0"));
        assert_eq!(stored[1]["metadata"]["name"], json!("ray-dashboard-eje-40redhat-2ecom"));
        assert_eq!(stored[1]["spec"]["host"], json!(ASSIGNED_ROUTE_HOST));
        assert_eq!(stored[1]["metadata"]["ownerReferences"][0]["kind"], json!("ConfigMap"));

        // Stop: the owner ConfigMap goes and garbage collection takes both objects.
        let (status, _) = service
            .call("POST", "/api/v1/stop", Some(json!({"user": "eje@redhat.com", "namespace": ns})))
            .await;
        assert_eq!(status, StatusCode::OK);
    })
    .await;
}

/// Profiles whose templates are broken in each way an admin can break them.
const BROKEN_CONFIGMAPS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: broken-profiles
  labels: {jupyterhub: singleuser-profiles}
data:
  jupyterhub-singleuser-profiles.yaml: |
    profiles:
    - {name: Unknown variable, slug: unknown-var, services: {s: {resources: [{name: broken-templates, path: unknown-var.yaml}]}}}
    - {name: Invalid YAML, slug: bad-yaml, services: {s: {resources: [{name: broken-templates, path: bad-yaml.yaml}]}}}
    - {name: Rejected, slug: rejected, services: {s: {resources: [{name: ray-cluster-templates, path: ray-dashboard-ingress.yaml}, {name: broken-templates, path: no-head.yaml}], configuration: {dashboard_domain: example.com}}}}
    - {name: Missing key, slug: missing-key, services: {s: {resources: [{name: broken-templates, path: nope.yaml}]}}}
    - {name: Missing ConfigMap, slug: missing-cm, services: {s: {resources: [{name: no-such-templates, path: x.yaml}]}}}
    - {name: Fixed name, slug: fixed-name, services: {s: {resources: [{name: broken-templates, path: fixed-name.yaml}]}}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: broken-templates
data:
  unknown-var.yaml: |
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: x-{{ user }}
    data:
      cpu: "{{ cpu_reqest }}"
  bad-yaml.yaml: |
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: x-{{ user }}
    data: [unclosed
  no-head.yaml: |
    apiVersion: ray.io/v1
    kind: RayCluster
    metadata:
      name: {{ cluster_name }}
    spec:
      rayVersion: "2.60.0"
  fixed-name.yaml: |
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: notebook-settings
    data: {a: b}
"#;

#[tokio::test]
async fn bad_input_gets_a_precise_4xx_and_changes_nothing() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        apply_yaml(&client, &ns, BROKEN_CONFIGMAPS).await;
        let service = Service::start(&client, &ns).await;

        let (status, err) = service.call_raw("POST", "/api/v1/spawn", Some("{\"user\": ".into()), true).await;
        assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_body")), "{err:#}");

        let cases = [
            (json!({"user": "u", "profile": "nope"}), StatusCode::BAD_REQUEST, "unknown_profile", "ray"),
            (json!({"user": "u", "size": "Huge"}), StatusCode::BAD_REQUEST, "unknown_size", "Small"),
            (json!({"user": "u", "options": {"workers": 9}}), StatusCode::BAD_REQUEST, "invalid_option", "4"),
            (json!({"user": "u", "options": {"workers": "many"}}), StatusCode::BAD_REQUEST, "invalid_option", "integer"),
            (json!({"user": "u", "options": {"wrokers": 1}}), StatusCode::BAD_REQUEST, "unknown_option", "workers"),
            (json!({"user": "u", "profile": "unknown-var"}), StatusCode::UNPROCESSABLE_ENTITY, "unknown_variable", "cpu_reqest"),
            (json!({"user": "u", "profile": "bad-yaml"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_yaml", "bad-yaml.yaml"),
            (json!({"user": "u", "profile": "rejected"}), StatusCode::UNPROCESSABLE_ENTITY, "object_rejected", "headGroupSpec"),
            (json!({"user": "u", "profile": "missing-key"}), StatusCode::UNPROCESSABLE_ENTITY, "template_missing", "nope.yaml"),
            (json!({"user": "u", "profile": "missing-cm"}), StatusCode::UNPROCESSABLE_ENTITY, "template_missing", "no-such-templates"),
            (
                json!({"user": format!("{}@example.com", "Very.Long.Name".repeat(20)), "profile": "fixed-name"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                // Too long a name for the API server: the template policy refuses it before
                // anything is applied.
                "template_policy",
                "ConfigMap notebook-settings-",
            ),
        ];
        for (request, want_status, want_code, mentions) in cases {
            let (status, err) = service.spawn(request.clone()).await;
            assert_eq!((status, err["code"].as_str()), (want_status, Some(want_code)), "{request} -> {err:#}");
            let message = err["message"].as_str().unwrap();
            assert!(message.contains(mentions), "{request}: message should mention `{mentions}`: {message}");
            if want_code == "unknown_variable" {
                assert_eq!(err["configmap"], json!("broken-templates"));
                assert_eq!(err["key"], json!("unknown-var.yaml"));
                assert_eq!(err["line"], json!(6));
            }
        }
        // The rejected spawns created objects before failing: all of them are gone.
        wait_for(Duration::from_secs(30), "rollback of the rejected spawns", || async {
            managed_objects(&client, &ns).await.is_empty().then_some(())
        })
        .await;
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        assert!(api.get_opt("x-u").await.unwrap().is_none());

        // A very long user name with the default templates is no error: names are shortened.
        let long_user = format!("{}@example.com", "Very.Long.Name".repeat(20));
        let (status, answer) = service.spawn(json!({"user": long_user})).await;
        assert_eq!(status, StatusCode::OK, "{answer:#}");
        assert!(answer["cluster"].as_str().unwrap().len() <= 53);
    })
    .await;
}

#[tokio::test]
async fn render_writes_nothing_and_the_api_needs_the_hub_token() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        let service = Service::start(&client, &ns).await;
        let (status, answer) = service.call("POST", "/api/v1/render", Some(json!({"user": "carol"}))).await;
        assert_eq!(status, StatusCode::OK, "{answer:#}");
        assert_eq!(answer["dry_run"], json!(true));
        assert_eq!(answer["objects"].as_array().unwrap().len(), 4);
        assert!(managed_objects(&client, &ns).await.is_empty());

        let (status, err) = service
            .call_raw("POST", "/api/v1/spawn", Some(json!({"user": "carol"}).to_string()), false)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{err:#}");
        assert!(managed_objects(&client, &ns).await.is_empty());
        let (status, _) = service.call_raw("GET", "/readyz", None, false).await;
        assert_eq!(status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn a_waiting_profile_answers_once_the_head_is_ready() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        apply_profiles(
            &client,
            &ns,
            "waiting-profiles",
            r#"
profiles:
- name: Ray, ready before the notebook starts
  slug: ray-wait
  wait: {timeout_seconds: 120}
  services:
    ray:
      resources:
      - {name: ray-cluster-templates, path: ray-cluster.yaml}
      configuration: {ray_version: "2.60.0", ray_image: "rayproject/ray:2.60.0", head_num_cpus: "0", head_cpu: 500m, head_memory: 1Gi, worker_cpu: 500m, worker_memory: 1Gi}
      options:
        workers: {type: integer, default: 1, min: 0, max: 2}
"#,
        )
        .await;
        let service = Service::start(&client, &ns).await;
        let (status, answer) = service.spawn(json!({"user": "dana", "profile": "ray-wait"})).await;
        assert_eq!(status, StatusCode::OK, "{answer:#}");
        let rc = answer["objects"].as_array().unwrap().iter().find(|o| o["kind"] == "RayCluster").unwrap();
        let typed: RayCluster = serde_json::from_value(rc.clone()).unwrap();
        assert!(typed.head_ready(), "the answer carries the ready RayCluster: {rc:#}");
        assert!(rc["metadata"].get("managedFields").is_none(), "without bookkeeping: {rc:#}");
    })
    .await;
}

#[tokio::test]
async fn a_user_token_acts_only_for_its_user() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        let service = Service::start(&client, &ns).await;
        let alice = User::Alice.token();
        let spawn = |user: &str| Some(json!({"user": user}).to_string());

        // Nobody: 401. alice for bob: 403 on every verb. alice for alice: allowed.
        let (status, _) = service.call_as(None, "POST", "/api/v1/spawn", spawn("bob")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = service.call_as(Some("not-a-token"), "POST", "/api/v1/spawn", spawn("bob")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let refused = [
            ("POST", "/api/v1/spawn", spawn("bob")),
            ("POST", "/api/v1/render", spawn("bob")),
            ("POST", "/api/v1/stop", spawn("bob")),
            ("GET", "/api/v1/users/bob/clusters", None),
            ("GET", "/api/v1/profiles?user=bob", None),
            ("DELETE", "/api/v1/users/bob/server", None),
        ];
        for (method, path, body) in refused {
            let (status, err) = service.call_as(Some(&alice), method, path, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {err:#}");
            assert!(err["message"].as_str().unwrap().contains("`bob`"), "{err:#}");
        }
        assert!(managed_objects(&client, &ns).await.is_empty(), "a refused spawn applies nothing");

        let (status, answer) = service.call_as(Some(&alice), "POST", "/api/v1/spawn", spawn("alice")).await;
        assert_eq!(status, StatusCode::OK, "{answer:#}");
        let (status, listing) =
            service.call_as(Some(&alice), "GET", "/api/v1/users/alice/clusters", None).await;
        assert_eq!((status, listing["clusters"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)));

        // The hub acts for anyone: it sees alice's cluster and stops it.
        let (status, stopped) = service.call("POST", "/api/v1/stop", Some(json!({"user": "alice"}))).await;
        assert_eq!((status, stopped["stopped"].clone()), (StatusCode::OK, json!(true)));
        let (status, _) = service.spawn(json!({"user": "bob"})).await;
        assert_eq!(status, StatusCode::OK);
    })
    .await;
}

/// A notebook pod as KubeSpawner makes it (restricted-compliant; kwok runs it).
fn notebook_pod(user: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("jupyter-{}", singleuser_profiles::naming::label_value(user)),
            // KubeSpawner keeps the raw name in the annotation; the label is a label-safe form.
            "labels": {"component": "singleuser-server", "hub.jupyter.org/username": singleuser_profiles::naming::label_value(user)},
            "annotations": {"hub.jupyter.org/username": user},
        },
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "notebook",
                "image": "quay.io/opendatahub/notebook:latest",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn deleting_the_notebook_pod_removes_its_cluster_without_a_stop() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        let service = Service::start(&client, &ns).await;
        let (status, answer) = service.spawn(json!({"user": "Nina@example.com"})).await;
        assert_eq!(status, StatusCode::OK, "{answer:#}");
        let owner_name = answer["owner"].as_str().unwrap().to_owned();

        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pod = pods.create(&Default::default(), &notebook_pod("Nina@example.com")).await.unwrap();
        let owners: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        wait_for(
            Duration::from_secs(30),
            "the owner ConfigMap to be adopted by the notebook pod",
            || async {
                let owner = owners.get(&owner_name).await.ok()?;
                let refs = owner.metadata.owner_references.unwrap_or_default();
                refs.iter()
                    .any(|r| r.kind == "Pod" && Some(&r.uid) == pod.metadata.uid.as_ref())
                    .then_some(())
            },
        )
        .await;

        pods.delete(
            &pod.metadata.name.clone().unwrap(),
            &kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() },
        )
        .await
        .unwrap();
        wait_for(Duration::from_secs(60), "garbage collection of everything the pod owned", || async {
            managed_objects(&client, &ns).await.is_empty().then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_cluster_whose_notebook_never_appears_is_reaped_by_either_replica() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        let reaping = Reaping { grace: Duration::from_secs(3), interval: Duration::from_secs(1) };
        let service = Service::start_with(&client, &ns, Quota::default(), reaping).await;
        // A second replica reaping the same namespace side by side.
        let (_, replica) = lifecycle::start(client.clone(), &ns, reaping, Metrics::default());

        // A notebook that runs keeps its cluster; one that never appears loses it.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        pods.create(&Default::default(), &notebook_pod("kept")).await.unwrap();
        for user in ["kept", "orphan"] {
            let (status, answer) = service.spawn(json!({"user": user})).await;
            assert_eq!(status, StatusCode::OK, "{answer:#}");
        }
        // A Ray cluster of ours with no owner at all (say, its ownerReference was edited away)
        // is reaped too: garbage collection cannot see it.
        let (status, rendered) = service.call("POST", "/api/v1/render", Some(json!({"user": "stray"}))).await;
        assert_eq!(status, StatusCode::OK, "{rendered:#}");
        let stray =
            rendered["objects"].as_array().unwrap().iter().find(|o| o["kind"] == "RayCluster").unwrap();
        let stray: RayCluster = serde_json::from_value(stray.clone()).unwrap();
        rayclusters(&client, &ns).create(&Default::default(), &stray).await.unwrap();
        wait_for(Duration::from_secs(60), "the orphan's and the stray cluster to be reaped", || async {
            let left = managed_objects(&client, &ns).await;
            (!left.iter().any(|o| o.contains("orphan") || o.contains("stray"))).then_some(())
        })
        .await;
        replica.abort();
        let left = managed_objects(&client, &ns).await;
        assert_eq!(
            left.len(),
            5,
            "the kept notebook's owner, RayCluster, Ingress and two NetworkPolicies stay: {left:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn quotas_refuse_with_a_429_naming_the_limit_and_change_nothing() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        let quota = Quota { per_user: 1, total: 2 };
        let service = Service::start_with(&client, &ns, quota, NO_REAPING).await;
        let held = |n: usize| {
            let owners = service.owners.clone();
            wait_for(Duration::from_secs(10), "the owner watch to catch up", move || {
                let owners = owners.clone();
                async move { (owners.count("").1 == n).then_some(()) }
            })
        };

        assert_eq!(service.spawn(json!({"user": "alice", "server": "a"})).await.0, StatusCode::OK);
        held(1).await;
        let (status, err) = service.spawn(json!({"user": "alice", "server": "b"})).await;
        assert_eq!((status, err["code"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("quota_exceeded")));
        assert!(err["message"].as_str().unwrap().contains("limit per user is 1"), "{err:#}");
        // Respawning the server that already has its cluster is no new cluster.
        assert_eq!(service.spawn(json!({"user": "alice", "server": "a"})).await.0, StatusCode::OK);
        assert_eq!(service.spawn(json!({"user": "bob"})).await.0, StatusCode::OK);
        held(2).await;
        let (status, err) = service.spawn(json!({"user": "carol"})).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{err:#}");
        assert!(err["message"].as_str().unwrap().contains("limit is 2"), "{err:#}");
        let objects = managed_objects(&client, &ns).await;
        assert_eq!(
            objects.len(),
            10,
            "two owners with a RayCluster, an Ingress and two NetworkPolicies each: {objects:?}"
        );
        assert!(!objects.iter().any(|o| o.contains("carol")), "{objects:?}");
    })
    .await;
}

/// A client built as `serve` builds it: every call bounded in time and concurrency.
async fn bounded_client(call_timeout: Duration) -> Client {
    let config = kube::Config::from_kubeconfig(&Default::default()).await.expect("KUBECONFIG");
    cluster::bounded_client(config, call_timeout, 32).unwrap()
}

#[tokio::test]
async fn concurrent_spawns_end_with_exactly_one_cluster_per_server_and_no_5xx() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        let service = Arc::new(Service::start(&bounded_client(Duration::from_secs(30)).await, &ns).await);
        let mut spawns = tokio::task::JoinSet::new();
        // 500 users at once, and 50 spawns of one user's same server among them.
        let requests = (0..500)
            .map(|i| json!({"user": format!("student{i}@example.com"), "options": {"workers": 0}}))
            .chain((0..50).map(|_| json!({"user": "eager", "server": "lab", "options": {"workers": 0}})));
        for request in requests {
            let service = service.clone();
            spawns.spawn(async move { service.spawn(request).await });
        }
        let mut statuses = std::collections::BTreeMap::new();
        let mut answers = std::collections::BTreeSet::new();
        while let Some(done) = spawns.join_next().await {
            let (status, answer) = done.unwrap();
            *statuses.entry(status.as_u16()).or_insert(0) += 1;
            if answer["owner"] == json!("singleuser-service-ref-eager--lab") {
                answers.insert(answer["environment"].to_string());
            }
        }
        assert_eq!(statuses, [(200, 550)].into(), "every spawn succeeded");
        assert_eq!(answers.len(), 1, "the same server's spawns all gave the same answer");

        let rcs = rayclusters(&client, &ns).list(&ListParams::default().labels(MANAGED)).await.unwrap();
        let mut users: Vec<String> = rcs
            .items
            .iter()
            .map(|rc| rc.metadata.labels.as_ref().unwrap()["jupyterhub.opendatahub.io/user"].clone())
            .collect();
        users.sort();
        let before = users.len();
        users.dedup();
        assert_eq!((before, users.len()), (501, 501), "one RayCluster per user server");
        let owners = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels(singleuser_profiles::labels::OWNER_SELECTOR))
            .await
            .unwrap();
        assert_eq!(owners.items.len(), 501);
    })
    .await;
}

/// The API server's process, to stop and restart it as an outage would.
struct ApiServer {
    pid_file: std::path::PathBuf,
}

impl ApiServer {
    fn of_test_plane() -> Self {
        let kubeconfig = std::path::PathBuf::from(std::env::var("KUBECONFIG").expect("KUBECONFIG"));
        let state = kubeconfig.parent().expect("the kubeconfig lives in the plane's state dir");
        Self { pid_file: state.join("pids/kube-apiserver.pid") }
    }

    /// The pid file holds `<pid> <start time>` (the start time tells a recycled pid apart).
    fn pid(&self) -> u32 {
        let record = std::fs::read_to_string(&self.pid_file).unwrap();
        record.split_whitespace().next().and_then(|p| p.parse().ok()).expect("a pid in the pid file")
    }

    /// Kills the API server and returns how to start it again: its command line.
    fn kill(&self) -> Vec<String> {
        let pid = self.pid();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert!(
            std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success()
        );
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z")
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        args
    }

    #[expect(
        clippy::zombie_processes,
        reason = "the API server outlives the test; `scripts/cluster down` stops it"
    )]
    fn start(&self, args: &[String]) {
        let log = self.pid_file.parent().unwrap().parent().unwrap().join("logs/kube-apiserver.log");
        let log = std::fs::OpenOptions::new().append(true).create(true).open(log).unwrap();
        let child = std::process::Command::new(&args[0])
            .args(&args[1..])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restart the API server");
        let pid = child.id();
        // Field 22 of /proc/PID/stat, counted after the command name's closing parenthesis.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let started =
            stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(19)).unwrap().to_owned();
        std::fs::write(&self.pid_file, format!("{pid} {started}\n")).unwrap();
    }
}

#[tokio::test]
#[ignore = "stops the shared API server: scripts/test runs it on its own after the other tests"]
async fn an_api_server_outage_gives_503s_and_the_service_recovers_by_itself() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        let service = Service::start(&bounded_client(Duration::from_secs(3)).await, &ns).await;
        assert_eq!(service.spawn(json!({"user": "before"})).await.0, StatusCode::OK);

        let apiserver = ApiServer::of_test_plane();
        let args = apiserver.kill();
        let (status, err) = service.spawn(json!({"user": "during"})).await;
        assert_eq!(
            (status, err["code"].clone()),
            (StatusCode::SERVICE_UNAVAILABLE, json!("cluster_unavailable")),
            "{err:#}"
        );
        assert!(err["message"].as_str().unwrap().contains("try again"), "{err:#}");
        // A failing watch is reported in the status, not by readiness (issue 13).
        wait_for(Duration::from_secs(60), "/api/v1/status to report the failing watch", || async {
            let (_, status) = service.call("GET", "/api/v1/status", None).await;
            status["watch_error"].is_string().then_some(())
        })
        .await;
        assert_eq!(service.call_raw("GET", "/readyz", None, false).await.0, StatusCode::OK);

        apiserver.start(&args);
        wait_for(Duration::from_secs(90), "spawns to succeed again without a restart", || async {
            (service.spawn(json!({"user": "after"})).await.0 == StatusCode::OK).then_some(())
        })
        .await;
        wait_for(Duration::from_secs(60), "/readyz to recover", || async {
            (service.call_raw("GET", "/readyz", None, false).await.0 == StatusCode::OK).then_some(())
        })
        .await;
        // The watch resumed: an edit made after the outage is served.
        an_edit_is_served(&client, &ns, &service, "AFTER_OUTAGE").await;
    })
    .await;
}

/// Applies a profile ConfigMap that sets `env_name` and waits until renders carry it.
async fn an_edit_is_served(client: &Client, ns: &str, service: &Service, env_name: &str) {
    let document = format!("profiles:\n- name: edit\n  env: [{{name: {env_name}, value: \"yes\"}}]\n");
    apply_profiles(client, ns, &env_name.to_ascii_lowercase().replace('_', "-"), &document).await;
    wait_for(Duration::from_secs(60), &format!("an edit setting {env_name} to serve"), || async {
        let (_, answer) = service.call("POST", "/api/v1/render", Some(json!({"user": "x"}))).await;
        (answer["environment"][env_name] == json!("yes")).then_some(())
    })
    .await;
}

/// A TCP proxy between the service and the API server whose connections can be cut (every
/// open one closed, new ones refused) and restored, as a network partition would.
struct CuttableProxy {
    addr: std::net::SocketAddr,
    /// Connections accepted so far.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CuttableProxy {
    /// A proxy in front of the plane's API server.
    async fn to_apiserver() -> CuttableProxy {
        let apiserver = crate::support::cluster_env("SUP_TEST_APISERVER");
        let upstream = apiserver.trim_start_matches("https://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if *cut_rx.borrow() {
                    continue; // dropped: the connection is closed at once
                }
                let upstream = upstream.clone();
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        CuttableProxy { addr, accepted, cut, task }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// A client as `serve` builds it, reaching the plane's API server through `proxy`.
async fn proxied_client(proxy: &CuttableProxy, call_timeout: Duration, concurrency: usize) -> Client {
    let mut config = kube::Config::from_kubeconfig(&Default::default()).await.expect("KUBECONFIG");
    config.cluster_url = format!("https://{}", proxy.addr).parse().unwrap();
    cluster::bounded_client(config, call_timeout, concurrency).unwrap()
}

#[tokio::test]
async fn the_api_client_runs_its_calls_in_flight_on_one_connection() {
    with_temp_ns(|_client, ns| async move {
        let proxy = CuttableProxy::to_apiserver().await;
        let client = proxied_client(&proxy, Duration::from_secs(30), 64).await;
        // As `serve` does before it serves.
        client.apiserver_version().await.expect("the API server's version");
        let config_maps: Api<ConfigMap> = Api::namespaced(client, &ns);
        let params = ListParams::default();
        let lists = (0..64).map(|_| config_maps.list(&params));
        for list in futures::future::join_all(lists).await {
            list.expect("a list through the proxy");
        }
        // HTTP/1.1 would hold a connection per call in flight, each with its TLS state.
        let accepted = proxy.accepted.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(accepted, 1, "64 calls at once took {accepted} connections to the API server");
    })
    .await;
}

#[tokio::test]
async fn readiness_survives_cut_api_server_connections_and_status_shows_the_trouble() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        let proxy = CuttableProxy::to_apiserver().await;
        let proxied = proxied_client(&proxy, Duration::from_secs(3), 32).await;
        let service = Service::start(&proxied, &ns).await;
        let ready = || async { service.call_raw("GET", "/readyz", None, false).await };
        assert_eq!(ready().await.0, StatusCode::OK);

        proxy.set_cut(true);
        let error = wait_for(Duration::from_secs(30), "/api/v1/status to show the watch trouble", || async {
            let (_, status) = service.call("GET", "/api/v1/status", None).await;
            status["watch_error"].as_str().map(str::to_owned)
        })
        .await;
        assert!(!error.is_empty());
        // Kept for the whole cut: loaded profiles keep serving while the watch retries.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(ready().await, (StatusCode::OK, json!("ready")), "readiness holds through the cut");
        let (status, answer) = service.call("POST", "/api/v1/render", Some(json!({"user": "cut"}))).await;
        assert_eq!(status, StatusCode::OK, "render needs no API call: {answer:#}");

        proxy.set_cut(false);
        // No ConfigMap changes: readiness is 200 within seconds, and the watch serves again.
        wait_for(Duration::from_secs(5), "/readyz 200 after the cut", || async {
            (ready().await.0 == StatusCode::OK).then_some(())
        })
        .await;
        wait_for(Duration::from_secs(60), "spawns to work through the proxy again", || async {
            (service.spawn(json!({"user": "after-cut"})).await.0 == StatusCode::OK).then_some(())
        })
        .await;
        an_edit_is_served(&client, &ns, &service, "AFTER_CUT").await;
    })
    .await;
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_spawn_before_the_process_exits() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        // A waiting profile whose cluster never gets ready: PodSecurity `restricted` refuses
        // its head pod, which sets none of runAsNonRoot, seccompProfile and dropped
        // capabilities. (A privileged pod would be refused earlier, by the template policy.)
        apply_profiles(
            &client,
            &ns,
            "slow-profiles",
            "profiles:\n- name: Never ready\n  slug: never-ready\n  wait: {timeout_seconds: 4}\n  services:\n    ray:\n      resources: [{name: slow-templates, path: unrestricted.yaml}]\n",
        )
        .await;
        apply_yaml(
            &client,
            &ns,
            r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: slow-templates
data:
  unrestricted.yaml: |
    apiVersion: ray.io/v1
    kind: RayCluster
    metadata:
      name: {{ cluster_name }}
    spec:
      headGroupSpec:
        rayStartParams: {}
        template:
          spec:
            containers:
            - name: ray-head
              image: rayproject/ray:2.60.0
"#,
        )
        .await;
        let mut command = std::process::Command::new(crate::BINARY);
        command.args(["serve", "--mode", "cluster", "--namespace", &ns, "--shutdown-delay", "1"]);
        command.env("SUP_HUB_TOKEN", HUB_TOKEN);
        let mut process = crate::process::Service::start(command).await;

        let addr = process.addr;
        let body = json!({"user": "drain", "profile": "never-ready"});
        let spawn = tokio::spawn(async move {
            crate::client::call(addr, "POST", "/api/v1/spawn", Some(HUB_TOKEN), Some(&body)).await
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        process.terminate();

        let answer = spawn.await.unwrap().expect("the in-flight spawn got its full answer");
        assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT, "{}", answer.text());
        assert!(answer.text().contains("cluster_not_ready"), "{}", answer.text());
        let status = process.exit_status(Duration::from_secs(60)).await;
        assert!(status.success(), "a drained shutdown exits 0: {status:?}");
        assert!(process.log().contains("draining in-flight requests"), "{}", process.log());
        // The half-made cluster was rolled back, not left behind.
        wait_for(Duration::from_secs(30), "rollback of the timed-out spawn", || async {
            managed_objects(&client, &ns).await.is_empty().then_some(())
        })
        .await;
    })
    .await;
}

/// What JSP 0.7.0's own `user.py` reads from `configmaps` (tests/jsp/user_settings.py in the
/// JSP virtualenv tests/jsp/venv builds or reuses).
fn jsp_reads(ns: &str, user: &str, configmaps: &[ConfigMap]) -> Value {
    use std::io::Write;
    let jsp = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jsp");
    let venv = std::process::Command::new(jsp.join("venv")).output().expect("tests/jsp/venv runs");
    assert!(venv.status.success(), "tests/jsp/venv: {}", String::from_utf8_lossy(&venv.stderr));
    let python = format!("{}/bin/python", String::from_utf8(venv.stdout).unwrap().trim());
    let configmaps: Vec<Value> = configmaps
        .iter()
        .map(|cm| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": cm.metadata.name, "labels": cm.metadata.labels}, "data": cm.data})
        })
        .collect();
    let mut child = std::process::Command::new(python)
        .arg("user_settings.py")
        .current_dir(&jsp)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the JSP virtualenv's python runs");
    let request = json!({"namespace": ns, "user": user, "configmaps": configmaps});
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "user_settings.py: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// JSP's spawn page saves a user's choices through the launcher API, one field per call: JSP's
/// own ConfigMaps, applied for real, which JSP 0.7.0's `user.py` reads as saved and which the
/// watch brings into the user's next spawn. Another user's token cannot read them.
#[tokio::test]
async fn launcher_settings_are_jsp_configmaps_that_jsp_reads_and_the_spawn_takes() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        let service = Service::start(&client, &ns).await;
        let alice = User::Alice.token();
        let path = "/services/jsp-api/api/user/configmap";
        let image = "docker.io/rayproject/ray:2.60.0-py311";
        let env = json!([{"name": "MY_VAR", "type": "text", "value": "from the launcher"}]);
        for change in [
            json!({"last_selected_image": image}),
            json!({"last_selected_size": "Medium"}),
            json!({"gpu": 0}),
            json!({"env": env}),
        ] {
            let (status, answer) =
                service.call_as(Some(&alice), "POST", path, Some(change.to_string())).await;
            assert_eq!(status, StatusCode::OK, "{answer:#}");
        }
        let saved =
            json!({"gpu": 0, "last_selected_image": image, "last_selected_size": "Medium", "env": env});

        let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
        let presets = api.get("jupyterhub-singleuser-profile-alice").await.unwrap();
        let envs = api.get("jupyterhub-singleuser-profile-alice-envs").await.unwrap();
        assert_eq!(presets.metadata.labels.as_ref().unwrap()["app"], "jupyterhub", "JSP's label");
        assert_eq!(envs.data.as_ref().unwrap()["MY_VAR"], "from the launcher");
        assert_eq!(jsp_reads(&ns, "alice", &[presets, envs]), saved, "JSP's user.py reads what was saved");

        // The watch brings them into the service: the page's GET and the next spawn.
        let (_, answer) = wait_for(Duration::from_secs(10), "alice's settings in the watch", || async {
            let (status, view) = service.call_as(Some(&alice), "GET", path, None).await;
            (status == StatusCode::OK && view == saved).then_some(())?;
            let (status, answer) =
                service.call("POST", "/api/v1/render", Some(json!({"user": "alice"}))).await;
            Some((status, answer))
        })
        .await;
        assert_eq!(answer["profile"]["size"], "Medium", "{answer:#}");
        assert!(
            answer["profile"]["env"].as_array().unwrap().iter().any(|e| e["name"] == "MY_VAR"),
            "{answer:#}"
        );

        // bob's token reads bob's (empty) settings, never alice's.
        let (status, bob) = service.call_as(Some(&User::Bob.token()), "GET", path, None).await;
        assert_eq!((status, bob["last_selected_size"].clone()), (StatusCode::OK, json!("")));
    })
    .await;
}

/// JSP's page saves one field per call without waiting for the call before: saves that overlap
/// each merge over the other, none is lost.
#[tokio::test]
async fn launcher_settings_saved_at_once_keep_every_field() {
    with_temp_ns(|client, ns| async move {
        apply_repo_content(&ns);
        let service = Service::start(&client, &ns).await;
        let alice = User::Alice.token();
        let path = "/services/jsp-api/api/user/configmap";
        let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
        for round in 0..20 {
            let (image, size) = (format!("image-{round}"), ["Small", "Medium"][round % 2]);
            let save = |change: Value| {
                let alice = &alice;
                let service = &service;
                async move { service.call_as(Some(alice), "POST", path, Some(change.to_string())).await }
            };
            let (by_image, by_size) = tokio::join!(
                save(json!({"last_selected_image": image})),
                save(json!({"last_selected_size": size}))
            );
            for (status, answer) in [by_image, by_size] {
                assert_eq!(status, StatusCode::OK, "{answer:#}");
            }
            let presets = api.get("jupyterhub-singleuser-profile-alice").await.unwrap();
            let text = &presets.data.unwrap()["profile"];
            assert!(
                text.contains(&image) && text.contains(&format!("last_selected_size: {size}")),
                "round {round}: the ConfigMap lost a save: {text}"
            );
        }
    })
    .await;
}
