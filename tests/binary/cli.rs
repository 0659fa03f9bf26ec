//! The binary as a user runs it: `serve` on a machine with no cluster, `render`, `validate`.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::client;
use crate::process::Service;
use crate::{BINARY, serve_command};

/// A command with no way to reach a cluster: no KUBECONFIG, a HOME without `.kube`.
fn isolated(home: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home);
    command
}

#[tokio::test]
async fn serve_on_a_fresh_machine_is_a_dry_run_of_the_repo_folders() {
    let home = tempfile::tempdir().unwrap();
    let service = Service::start(serve_command(home.path())).await;
    assert!(service.log().contains("DRY RUN"), "the log says loudly that this is a dry run");

    let body = json!({"user": "alice", "profile": "ray"});
    let answer = client::call(service.addr, "POST", "/api/v1/spawn", None, Some(&body)).await.unwrap().json();
    assert_eq!(answer["dry_run"], json!(true), "{answer:#}");
    assert_eq!(answer["objects"][0]["kind"], json!("RayCluster"), "{answer:#}");
    assert_eq!(answer["environment"]["RAY_ADDRESS"], json!("ray://ray-alice-head-svc.default.svc:10001"));
}

#[test]
fn render_prints_manifests_and_the_json_body_without_a_cluster() {
    let home = tempfile::tempdir().unwrap();
    let output = isolated(home.path())
        .args(["render", "--user", "alice", "--size", "Large", "--option", "workers=4"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let objects: Vec<Value> = singleuser_profiles::yaml::documents(&text).unwrap();
    assert_eq!(objects[0]["kind"], json!("RayCluster"));
    assert_eq!(objects[0]["spec"]["workerGroupSpecs"][0]["replicas"], json!(4));
    assert!(text.contains("#   RAY_ADDRESS=ray://ray-alice-head-svc.default.svc:10001"), "{text}");

    let output = isolated(home.path()).args(["render", "--user", "alice", "-o", "json"]).output().unwrap();
    let body: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(body["dry_run"], json!(true));
    assert_eq!(body["cluster"], json!("ray-alice"));

    let output =
        isolated(home.path()).args(["render", "--user", "alice", "--option", "workers=99"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("workers") && stderr.contains('4'), "{stderr}");
}

#[test]
fn validate_passes_the_repo_and_names_every_problem_in_broken_files() {
    let home = tempfile::tempdir().unwrap();
    let output = isolated(home.path()).arg("validate").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("profiles.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: jupyter-singleuser-profiles}\ndata:\n  jupyterhub-singleuser-profiles.yaml: |\n    profiles:\n    - name: x\n      slug: x\n      services:\n        s:\n          resources: [{name: tpl, path: t.yaml}]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("templates.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tpl}\ndata:\n  t.yaml: |\n    apiVersion: v1\n    kind: ConfigMap\n    metadata:\n      name: {{ nmae }}\n",
    )
    .unwrap();
    let output = isolated(home.path()).arg("validate").arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("profile `x`")
            && stdout.contains("ConfigMap tpl key t.yaml line 4")
            && stdout.contains("nmae"),
        "{stdout}"
    );
}

/// Finding 3 of issue 14: with no profile ConfigMap (an empty folder, or one that does not
/// parse) `render` and `validate` succeeded and `serve` was ready, answering empty spawns.
#[tokio::test]
async fn no_usable_profiles_fail_render_and_validate_and_serve_is_not_ready() {
    let home = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(
        broken.path().join("profiles.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: jupyter-singleuser-profiles}\ndata:\n  jupyterhub-singleuser-profiles.yaml: \"profiles: {\"\n",
    )
    .unwrap();
    for dir in [empty.path(), broken.path()] {
        let shown = dir.display().to_string();
        let output = isolated(home.path())
            .args(["render", "--user", "alice", "--profiles", &shown, "--templates", &shown])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "render {shown}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("no profile ConfigMap is loaded"), "{stderr}");
        assert!(output.stdout.is_empty(), "nothing rendered: {}", String::from_utf8_lossy(&output.stdout));

        let output = isolated(home.path()).arg("validate").arg(dir).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(1),
            "validate {shown}: {}",
            String::from_utf8_lossy(&output.stdout)
        );

        let mut command = serve_command(home.path());
        command.args(["--mode", "dry-run", "--profiles", &shown, "--templates", &shown]);
        let service = Service::spawn(command).await;
        let reply = client::call(service.addr, "GET", "/readyz", None, None).await.unwrap();
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert!(reply.text().contains("no profile ConfigMap is loaded"), "{}", reply.text());
        let body = json!({"user": "alice"});
        let reply = client::call(service.addr, "POST", "/api/v1/render", None, Some(&body)).await.unwrap();
        assert_eq!((reply.status.as_u16(), reply.json()["code"].clone()), (503, json!("no_profiles")));
    }
}

/// Finding 3 of issue 14: a template variable no service defines showed in neither
/// /api/v1/status nor the problems metric, although every spawn with it got a 422.
#[tokio::test]
async fn a_template_variable_no_service_defines_shows_in_status_and_the_metric() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("profiles.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: jupyter-singleuser-profiles}\ndata:\n  jupyterhub-singleuser-profiles.yaml: |\n    profiles:\n    - name: x\n      services:\n        s:\n          resources: [{name: tpl, path: t.yaml}]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("templates.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tpl}\ndata:\n  t.yaml: |\n    apiVersion: ray.io/v1\n    kind: RayCluster\n    metadata:\n      name: {{ cluster_nmae }}\n",
    )
    .unwrap();
    let shown = dir.path().display().to_string();
    let mut command = serve_command(home.path());
    command.args(["--mode", "dry-run", "--profiles", &shown, "--templates", &shown]);
    let service = Service::start(command).await;
    let status = client::call(service.addr, "GET", "/api/v1/status", None, None).await.unwrap().json();
    let problems = status["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{status:#}");
    assert_eq!(
        (&problems[0]["configmap"], &problems[0]["key"], &problems[0]["line"]),
        (&json!("tpl"), &json!("t.yaml"), &json!(4))
    );
    assert!(problems[0]["message"].as_str().unwrap().contains("did you mean `cluster_name`"), "{status:#}");
    let metrics = client::call(service.addr, "GET", "/metrics", None, None).await.unwrap().text();
    assert!(metrics.contains("singleuser_profiles_config_problems 1"), "{metrics}");
}

/// Issue 14 items 5-7: `validate /dev/zero` read until out of memory; two same-named
/// ConfigMaps silently let the last win; problems did not name their file; a Secret template
/// and a misspelt profile key passed.
#[test]
fn validate_is_bounded_and_names_files_duplicates_policy_and_unknown_keys() {
    let home = tempfile::tempdir().unwrap();
    let output = isolated(home.path()).args(["validate", "/dev/zero"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/dev/zero is larger than") && stderr.contains("--max-configmap-bytes"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let profiles = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: jupyter-singleuser-profiles}\ndata:\n  jupyterhub-singleuser-profiles.yaml: |\n    profiles:\n    - name: x\n      sevrices: {}\n      services:\n        s:\n          resources: [{name: tpl, path: t.yaml}]\n";
    std::fs::write(dir.path().join("a-profiles.yaml"), profiles).unwrap();
    std::fs::write(dir.path().join("b-again.yaml"), profiles).unwrap();
    std::fs::write(
        dir.path().join("templates.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tpl}\ndata:\n  t.yaml: |\n    apiVersion: v1\n    kind: Secret\n    metadata:\n      name: '{{ cluster_name }}'\n",
    )
    .unwrap();
    let output = isolated(home.path()).arg("validate").arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let a = dir.path().join("a-profiles.yaml").display().to_string();
    let b = dir.path().join("b-again.yaml").display().to_string();
    assert!(stdout.contains(&format!("defined twice, in {a} and in {b}")), "{stdout}");
    let templates = dir.path().join("templates.yaml").display().to_string();
    assert!(
        stdout.contains(&format!("error: {templates}: template ConfigMap tpl key t.yaml"))
            && stdout.contains("refuses Secret"),
        "{stdout}"
    );
    assert!(stdout.contains("warning: ") && stdout.contains("did you mean `services`"), "{stdout}");
}

#[test]
fn the_default_profile_renders_a_ray_cluster_only_its_owner_can_use() {
    let home = tempfile::tempdir().unwrap();
    let output = isolated(home.path()).args(["render", "--user", "alice", "-o", "json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let body: Value = serde_json::from_slice(&output.stdout).unwrap();
    let objects = body["objects"].as_array().unwrap();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {objects:#?}"))
    };
    assert_eq!(find("RayCluster", "ray-alice")["spec"]["authOptions"], json!({"mode": "token"}));

    // Her cluster's pods admit her cluster's pods and her notebook (KubeSpawner's labels), and
    // the ingress controller on the dashboard port only.
    assert_eq!(objects.iter().filter(|o| o["kind"] == "NetworkPolicy").count(), 2);
    assert_eq!(
        find("NetworkPolicy", "ray-alice")["spec"],
        json!({
            "podSelector": {"matchLabels": {"ray.io/cluster": "ray-alice"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [
                {"podSelector": {"matchLabels": {"ray.io/cluster": "ray-alice"}}},
                {"podSelector": {"matchLabels": {
                    "component": "singleuser-server",
                    "hub.jupyter.org/username": "alice",
                    "hub.jupyter.org/servername": "",
                }}},
            ]}],
        })
    );
    assert_eq!(
        find("NetworkPolicy", "ray-alice-dashboard")["spec"],
        json!({
            "podSelector": {"matchLabels": {"ray.io/cluster": "ray-alice", "ray.io/node-type": "head"}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
                "ports": [{"protocol": "TCP", "port": 8265}],
            }],
        })
    );

    // The notebook gets the token by reference to KubeRay's Secret, never a value.
    let env = &body["environment"];
    assert_eq!(env["RAY_AUTH_MODE"], json!("token"));
    assert_eq!(
        env["RAY_AUTH_TOKEN"],
        json!({"valueFrom": {"secretKeyRef": {"name": "ray-alice", "key": "auth_token"}}})
    );

    // The YAML output shows the reference, not a value.
    let output = isolated(home.path()).args(["render", "--user", "alice"]).output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("#   RAY_AUTH_TOKEN={\"valueFrom\":{\"secretKeyRef\""), "{text}");
}

#[test]
fn validate_warns_about_an_open_ray_cluster_and_still_passes() {
    let home = tempfile::tempdir().unwrap();
    let output = isolated(home.path()).arg("validate").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !stdout.contains("warning"),
        "the repo's defaults are locked: {stdout}"
    );

    // A JSP-format profile (no slug, applies by image) with a RayCluster and nothing else.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("profiles.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: jupyter-singleuser-profiles}\ndata:\n  jupyterhub-singleuser-profiles.yaml: |\n    profiles:\n    - name: Ray\n      images: ['ray-notebook:*']\n      services:\n        ray:\n          resources: [{name: ray-templates, path: cluster.yaml}]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("templates.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ray-templates}\ndata:\n  cluster.yaml: |\n    apiVersion: ray.io/v1\n    kind: RayCluster\n    metadata:\n      name: ray-{{ user }}\n    spec:\n      headGroupSpec: {}\n",
    )
    .unwrap();
    let output = isolated(home.path()).arg("validate").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "a warning is not an error: {stdout}");
    let warnings: Vec<&str> = stdout.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 2, "{stdout}");
    for warning in &warnings {
        assert!(
            warning.contains(
                "service `ray`: the RayCluster of template ConfigMap ray-templates key `cluster.yaml`"
            ),
            "{stdout}"
        );
    }
    assert!(warnings[0].contains("no token authentication"), "{stdout}");
    assert!(warnings[1].contains("no NetworkPolicy"), "{stdout}");
    assert!(stdout.contains("every profile renders, 2 warning(s)"), "{stdout}");
}
