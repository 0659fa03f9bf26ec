//! The `deploy/` manifests against the real control plane, and the built binary as the
//! Deployment runs it: the kustomize output is accepted by the API server; the service works with
//! exactly the `deploy/` RBAC and its ServiceAccount's token (and cannot read Secrets); and it
//! runs under an arbitrary UID on a read-only filesystem.
//!
//! The service runs here as its own process (`CARGO_BIN_EXE`), started the way the Deployment
//! starts it, and is called over HTTP.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};
use singleuser_profiles::catalog;

use crate::process::Service;
use crate::support::{api_error_code, cluster_env, token_client, wait_for, with_temp_ns};
use crate::{BINARY, client};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const HUB_TOKEN: &str = "hub-token-for-deploy-tests";
/// The name the `deploy/` base gives its ServiceAccount, Role, Deployment and Service.
const NAME: &str = "singleuser-profiles";

fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl (on PATH from `scripts/cluster env`) runs");
    let input = stdin.unwrap_or_default().to_owned();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut pipe, input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `kubectl kustomize` of a `deploy/` folder installed into `namespace`, the way deploy/README.md
/// tells admins to: a kustomization of their own that sets `namespace:` on top of ours.
fn kustomize_into(folder: &str, namespace: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    // Kustomize takes relative resource paths only.
    let up = "../".repeat(dir.path().components().count() - 1);
    let target = format!("{up}{}/{folder}", REPO.trim_start_matches('/'));
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!("namespace: {namespace}\nresources:\n- {target}\n"),
    )
    .unwrap();
    let text = kubectl(&["kustomize", dir.path().to_str().unwrap()], None);
    singleuser_profiles::yaml::documents(&text).unwrap()
}

fn kind_name(object: &Value) -> (&str, &str) {
    (object["kind"].as_str().unwrap_or_default(), object["metadata"]["name"].as_str().unwrap_or_default())
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects.iter().find(|o| kind_name(o).0 == kind).unwrap_or_else(|| panic!("no {kind} in deploy/"))
}

fn as_list(objects: &[&Value]) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string()
}

#[tokio::test]
async fn the_kustomize_output_is_accepted_by_the_api_server() {
    with_temp_ns(|_client, ns| async move {
        for folder in ["deploy", "deploy/overlays/openshift"] {
            let objects = kustomize_into(folder, &ns);
            let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&as_list(&objects.iter().collect::<Vec<_>>())));
            assert_eq!(out.lines().count(), objects.len(), "{folder}: {out}");
            assert!(out.lines().all(|l| l.ends_with("(server dry run)")), "{folder}: {out}");
        }

        let objects = kustomize_into("deploy", &ns);
        let deployment = find(&objects, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(deployment["spec"]["replicas"], 2);
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert!(container["resources"]["requests"].is_object() && container["resources"]["limits"].is_object());
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        let text = deployment.to_string();
        assert!(!text.contains("runAsUser") && !text.contains("fsGroup"), "OpenShift assigns the UID");

        // No Secrets, no wildcards; the only cluster-wide right is TokenReview. The Role in full:
        // issue 11 added networkpolicies (the per-cluster policies), nothing else.
        let role = find(&objects, "Role");
        let text = role.to_string();
        assert!(!text.contains("secrets") && !text.contains('*'), "{text}");
        let apply = json!(["get", "create", "patch", "delete"]);
        assert_eq!(
            role["rules"],
            json!([
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
                {"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": apply},
                {"apiGroups": ["route.openshift.io"], "resources": ["routes"], "verbs": apply},
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": apply},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            ]),
            "{role:#}"
        );
        let cluster_role = find(&objects, "ClusterRole");
        assert_eq!(cluster_role["rules"], json!([{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}]));
        let binding = find(&objects, "ClusterRoleBinding");
        assert_eq!(binding["subjects"][0]["namespace"], json!(ns), "the subject follows the namespace");

        // The ConfigMaps are the repo's profiles/ and templates/ as they are.
        let repo = catalog::load_paths(&[format!("{REPO}/profiles"), format!("{REPO}/templates")]).unwrap();
        let rendered: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "ConfigMap").collect();
        assert_eq!(rendered.len(), repo.len());
        for cm in &repo {
            let found = rendered.iter().find(|o| o["metadata"]["name"] == cm.name.as_str()).unwrap();
            assert_eq!(found["data"], json!(cm.data), "ConfigMap {}", cm.name);
        }
    })
    .await;
}

/// A call with the hub's token; the service log in the panic message when it fails.
async fn call(service: &Service, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let reply = client::call(service.addr, method, path, Some(HUB_TOKEN), body.as_ref())
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}; service log:\n{}", service.log()));
    (reply.status, reply.json())
}

#[tokio::test]
async fn the_service_works_with_exactly_the_deploy_rbac_and_cannot_read_secrets() {
    with_temp_ns(|admin, ns| async move {
        // What `kubectl apply -k` would install that the service itself uses: its identity, its
        // Role and the admin's ConfigMaps (cluster-scoped TokenReview rights are not needed here).
        let objects = kustomize_into("deploy", &ns);
        let wanted = ["ServiceAccount", "Role", "RoleBinding", "ConfigMap"];
        let install: Vec<&Value> = objects.iter().filter(|o| wanted.contains(&kind_name(o).0)).collect();
        assert_eq!(install.len(), 5, "{install:#?}");
        kubectl(&["apply", "-f", "-"], Some(&as_list(&install)));
        let sa_token =
            kubectl(&["create", "token", NAME, "-n", &ns, "--duration=1h"], None).trim().to_owned();

        // The service as the Deployment runs it, with the ServiceAccount's token.
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "plane", "cluster": {
                "server": cluster_env("SUP_TEST_APISERVER"),
                "certificate-authority": cluster_env("SUP_TEST_CA"),
            }}],
            "users": [{"name": NAME, "user": {"token": sa_token}}],
            "contexts": [{"name": NAME, "context": {"cluster": "plane", "user": NAME, "namespace": ns}}],
            "current-context": NAME,
        });
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig.to_string()).unwrap();
        std::fs::write(dir.path().join("token"), HUB_TOKEN).unwrap();
        let mut command = Command::new(BINARY);
        command
            .env("KUBECONFIG", dir.path().join("kubeconfig"))
            .args(["serve", "--mode=cluster", "--namespace", &ns])
            .arg(format!("--hub-token-file={}", dir.path().join("token").display()));
        let service = Service::start(command).await;

        let spawn = json!({"user": "alice", "profile": "ray", "options": {"workers": 1}});
        let (status, answer) = call(&service, "POST", "/api/v1/spawn", Some(spawn)).await;
        assert_eq!(status, StatusCode::OK, "{answer:#}\n{}", service.log());
        assert_eq!(answer["dry_run"], false);
        let cluster = answer["cluster"].as_str().unwrap().to_owned();
        // The per-cluster NetworkPolicies were applied with the new right.
        let policies: Api<NetworkPolicy> = Api::namespaced(admin.clone(), &ns);
        let mut names: Vec<String> = policies
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        assert_eq!(names, [cluster.clone(), format!("{cluster}-dashboard")]);

        let (status, listing) = call(&service, "GET", "/api/v1/users/alice/clusters", None).await;
        assert_eq!(status, StatusCode::OK, "{listing:#}");
        assert_eq!(listing["clusters"][0]["name"], json!(cluster), "{listing:#}");

        // KubeRay (v1.6.2) made the cluster's token Secret, owned by the RayCluster; the
        // notebook's environment refers to it. The admin reads the token to look for it.
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
        let secret = wait_for(Duration::from_secs(60), "KubeRay's token Secret", || async {
            secrets.get_opt(&cluster).await.ok().flatten()
        })
        .await;
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("RayCluster", cluster.as_str(), Some(true))
        );
        let token = secret.data.as_ref().and_then(|d| d.get("auth_token")).expect("auth_token key").0.clone();
        let token = String::from_utf8(token).unwrap();
        assert!(token.len() >= 32, "a generated token");
        assert_eq!(
            answer["environment"]["RAY_AUTH_TOKEN"],
            json!({"valueFrom": {"secretKeyRef": {"name": cluster, "key": "auth_token"}}})
        );
        let refused =
            Api::<Secret>::namespaced(token_client(&sa_token).await, &ns).get(&cluster).await.unwrap_err();
        assert_eq!(api_error_code(&refused), Some(403), "the service cannot read it: {refused}");
        // Neither the token nor its base64 form is in any answer, metric or log line.
        let (_, rendered) =
            call(&service, "POST", "/api/v1/render", Some(json!({"user": "alice", "profile": "ray"}))).await;
        let metrics = client::call(service.addr, "GET", "/metrics", None, None).await.unwrap().text();
        // As the API sends it (base64 of the token, itself KubeRay's base64 of random bytes).
        let encoded =
            serde_json::to_value(&secret).unwrap()["data"]["auth_token"].as_str().unwrap().to_owned();
        for (what, text) in [
            ("spawn answer", answer.to_string()),
            ("render answer", rendered.to_string()),
            ("clusters answer", listing.to_string()),
            ("metrics", metrics),
            ("service log", service.log()),
        ] {
            assert!(!text.contains(&token) && !text.contains(&encoded), "the token is in the {what}");
        }

        let (status, stopped) = call(&service, "POST", "/api/v1/stop", Some(json!({"user": "alice"}))).await;
        assert_eq!(status, StatusCode::OK, "{stopped:#}");
        assert_eq!(stopped["stopped"], true);
        let managed = ListParams::default().labels("app.kubernetes.io/managed-by=singleuser-profiles");
        let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
        wait_for(Duration::from_secs(60), "the owner ConfigMap to go", || async {
            configmaps.list(&managed).await.ok()?.items.is_empty().then_some(())
        })
        .await;

        // Least privilege, as the API server enforces it.
        let sa = token_client(&sa_token).await;
        let refused =
            Api::<Secret>::namespaced(sa.clone(), &ns).list(&ListParams::default()).await.unwrap_err();
        assert_eq!(api_error_code(&refused), Some(403), "{refused}");
        let refused = Api::<Secret>::namespaced(sa.clone(), &ns).get("any").await.unwrap_err();
        assert_eq!(api_error_code(&refused), Some(403), "{refused}");
        let elsewhere =
            Api::<ConfigMap>::namespaced(sa, "default").list(&ListParams::default()).await.unwrap_err();
        assert_eq!(api_error_code(&elsewhere), Some(403), "{elsewhere}");

        // Nothing the service did in the background was refused either.
        let log = service.log();
        assert!(!log.to_ascii_lowercase().contains("forbidden"), "a call was refused:\n{log}");
    })
    .await;
}

/// UID and GID the service runs as in the next test: not in /etc/passwd, as on OpenShift.
const ARBITRARY_UID: &str = "100123";

#[tokio::test]
async fn the_binary_runs_as_an_arbitrary_uid_on_a_read_only_filesystem() {
    // Readable copies of the repo's ConfigMaps in a folder the UID can read but not write.
    let dir = tempfile::tempdir().unwrap();
    for folder in ["profiles", "templates"] {
        std::fs::create_dir(dir.path().join(folder)).unwrap();
        for entry in std::fs::read_dir(Path::new(REPO).join(folder)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(folder).join(path.file_name().unwrap())).unwrap();
        }
    }
    make_world_readable(dir.path());

    // A private mount namespace in which every mount is read-only, then the arbitrary UID with no
    // supplementary groups, no new privileges and an unwritable HOME and working directory.
    let script = format!(
        r#"set -e
for mount in $(awk '{{print $5}}' /proc/self/mountinfo); do
    case $mount in /proc*|/sys*) ;; *) mount -o remount,bind,ro "$mount" 2>/dev/null || true ;; esac
done
for probe in / /tmp "$PWD"; do
    if touch "$probe/.write-probe" 2>/dev/null; then echo "$probe is writable" >&2; exit 97; fi
done
exec setpriv --reuid={ARBITRARY_UID} --regid={ARBITRARY_UID} --clear-groups --no-new-privs "$@""#
    );
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation=private", "sh", "-c", &script, "sh", BINARY])
        .args(["serve", "--mode=dry-run", "--profiles=profiles", "--templates=templates"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/nonexistent");
    let service = Service::start(command).await;

    let status = std::fs::read_to_string(format!("/proc/{}/status", service.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid.split_whitespace().skip(1).collect::<Vec<_>>(), [ARBITRARY_UID; 4], "{uid}");
    let (status, answer) = call(&service, "POST", "/api/v1/render", Some(json!({"user": "alice"}))).await;
    assert_eq!(status, StatusCode::OK, "{answer:#}\n{}", service.log());
    assert!(answer["objects"].as_array().is_some_and(|o| !o.is_empty()), "{answer:#}");
    assert!(answer["environment"]["RAY_ADDRESS"].is_string(), "{answer:#}");
}

fn make_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            make_world_readable(&entry.unwrap().path());
        }
    }
}
