//! The plane's real node: pods of locally built images really run (containerd,
//! runc, the kubelet), `kubectl logs` and `exec` reach them, cluster DNS and
//! Services work (CoreDNS, kube-proxy), NetworkPolicy is enforced
//! (kube-router), and the host reaches pods on their pod IPs. See
//! tests/controlplane/README.md for how the node is put together.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::support::{DescribeOnPanic, cluster_env, kubectl, wait_for, with_real_node_ns};

const BUSYBOX: &str = "localhost/singleuser-profiles/busybox:1.35.0";
/// The busybox image's own user (`nonroot`).
const BUSYBOX_UID: &str = "65532";
/// Generous: a pod start on a loaded 2-core machine takes seconds, not minutes.
const POD_TIMEOUT: Duration = Duration::from_secs(120);
const POLICY_TIMEOUT: Duration = Duration::from_secs(60);

/// A pod running `script` in the busybox image, satisfying PodSecurity `restricted`.
fn busybox_pod(name: &str, labels: Value, script: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main",
                "image": BUSYBOX,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": true,
                },
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }))
    .expect("pod object")
}

/// An HTTP server (busybox httpd) on port 8080 answering `body` at `/`.
fn web_pod(name: &str, labels: Value, body: &str) -> Pod {
    let script =
        format!("mkdir -p /tmp/www && echo {body} >/tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www");
    busybox_pod(name, labels, &script)
}

fn sleeper_pod(name: &str, labels: Value) -> Pod {
    busybox_pod(name, labels, "exec sleep 3600")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates `pod` in `ns` and waits until it is Ready; returns it (with its pod IP).
pub(crate) async fn run_pod(client: &Client, ns: &str, pod: Pod) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = pod.metadata.name.clone().expect("pod name");
    pods.create(&PostParams::default(), &pod).await.unwrap_or_else(|e| panic!("create pod {name}: {e}"));
    wait_for(POD_TIMEOUT, &format!("pod {name} Ready"), || {
        let (pods, name) = (pods.clone(), name.clone());
        async move { pods.get(&name).await.ok().filter(is_ready) }
    })
    .await
}

fn pod_ip(pod: &Pod) -> String {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a Ready pod has a pod IP")
}

/// `kubectl exec` of a shell command in the pod's container: (success, stdout + stderr).
pub(crate) fn exec(ns: &str, pod: &str, command: &str) -> (bool, String) {
    let (ok, out, err) = kubectl(&["exec", "-n", ns, pod, "--", "sh", "-c", command]);
    (ok, format!("{out}{err}"))
}

/// Whether `from` gets `body` from `http://HOST:PORT/` within 3 s. With `nc`:
/// the busybox image's `wget`, statically linked with glibc, crashes on a
/// resolv.conf naming a nameserver (glibc's NSS cannot be loaded statically).
fn fetches(ns: &str, from: &str, host: &str, port: u16, body: &str) -> bool {
    let request = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}");
    let (ok, out) = exec(ns, from, &request);
    ok && out.contains(body)
}

#[tokio::test]
async fn a_pod_of_a_locally_built_image_runs_on_the_real_node_with_logs_and_exec() {
    with_real_node_ns(|client, ns| async move {
        let _describe = DescribeOnPanic(ns.clone());
        let script = "echo \"hello from $(hostname) as uid $(id -u)\"; exec sleep 3600";
        let pod = run_pod(&client, &ns, busybox_pod("hello", json!({}), script)).await;

        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        assert_eq!(node, Some(cluster_env("SUP_TEST_REAL_NODE")), "the namespace's pods go to the real node");
        let ip = pod_ip(&pod);
        let third: u8 = ip.split('.').nth(2).and_then(|o| o.parse().ok()).unwrap_or(0);
        assert!(ip.starts_with("10.244.") && third >= 128, "pod IP {ip} is not in a real node's pod CIDR");

        let logs = wait_for(Duration::from_secs(30), "the pod's greeting in `kubectl logs`", || {
            let ns = ns.clone();
            async move {
                let (ok, out, _) = kubectl(&["logs", "-n", &ns, "hello"]);
                (ok && out.contains("hello from")).then_some(out)
            }
        })
        .await;
        assert_eq!(logs.trim(), format!("hello from hello as uid {BUSYBOX_UID}"));

        let (ok, out) = exec(&ns, "hello", "echo exec works as $(id -u) in $(hostname)");
        assert!(ok, "kubectl exec failed: {out}");
        assert_eq!(out.trim(), format!("exec works as {BUSYBOX_UID} in hello"));
    })
    .await;
}

#[tokio::test]
async fn cluster_dns_services_and_the_host_reach_pods_on_the_real_node() {
    with_real_node_ns(|client, ns| async move {
        let _describe = DescribeOnPanic(ns.clone());
        let web = run_pod(&client, &ns, web_pod("web", json!({"app": "web"}), "web-ok")).await;
        run_pod(&client, &ns, sleeper_pod("client", json!({}))).await;
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }))
        .unwrap();
        let service = Api::<Service>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &service)
            .await
            .expect("create Service");
        let cluster_ip = service.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP");

        // `<svc>.<ns>.svc` resolves through the pod's search path (busybox's
        // nslookup applies none, so the path and the full name are checked apart).
        let (ok, resolv) = exec(&ns, "client", "cat /etc/resolv.conf");
        assert!(ok, "{resolv}");
        assert!(
            resolv.contains(&format!("search {ns}.svc.cluster.local svc.cluster.local cluster.local")),
            "{resolv}"
        );
        assert!(resolv.contains("nameserver 10.96.0.10") && resolv.contains("ndots:5"), "{resolv}");
        let name = format!("web.{ns}.svc.cluster.local");
        wait_for(Duration::from_secs(30), &format!("{name} to resolve in a pod (CoreDNS)"), || {
            let (ns, name, cluster_ip) = (ns.clone(), name.clone(), cluster_ip.clone());
            async move {
                let (ok, out) = exec(&ns, "client", &format!("nslookup {name}"));
                (ok && out.contains(&format!("Address: {cluster_ip}"))).then_some(out)
            }
        })
        .await;
        // A name outside the cluster does not resolve: nothing is forwarded off the machine.
        let (ok, out) = exec(&ns, "client", "nslookup example.com");
        assert!(!ok || !out.contains("Address: "), "example.com resolved: {out}");

        // The Service's ClusterIP, through kube-proxy's rules in the node.
        wait_for(Duration::from_secs(30), "the ClusterIP to answer", || {
            let (ns, ip) = (ns.clone(), cluster_ip.clone());
            async move { fetches(&ns, "client", &ip, 80, "web-ok").then_some(()) }
        })
        .await;

        // The host (where the hub runs) reaches the pod on its pod IP.
        let addr: SocketAddr = format!("{}:8080", pod_ip(&web)).parse().unwrap();
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the pod IP");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read the response");
        assert!(response.contains("web-ok"), "{response}");
    })
    .await;
}

#[tokio::test]
async fn network_policy_on_the_real_node_denies_and_allows() {
    with_real_node_ns(|client, ns| async move {
        let _describe = DescribeOnPanic(ns.clone());
        let web = run_pod(&client, &ns, web_pod("web", json!({"app": "web"}), "web-ok")).await;
        run_pod(&client, &ns, sleeper_pod("friend", json!({"role": "friend"}))).await;
        run_pod(&client, &ns, sleeper_pod("stranger", json!({}))).await;
        let web_ip = pod_ip(&web);
        assert!(fetches(&ns, "stranger", &web_ip, 8080, "web-ok"), "no policy yet: open");

        let policy: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "web-from-friends"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "friend"}}}]}],
            },
        }))
        .unwrap();
        Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &policy)
            .await
            .expect("create NetworkPolicy");

        wait_for(POLICY_TIMEOUT, "the policy to deny the stranger", || {
            let (ns, ip) = (ns.clone(), web_ip.clone());
            async move { (!fetches(&ns, "stranger", &ip, 8080, "web-ok")).then_some(()) }
        })
        .await;
        assert!(fetches(&ns, "friend", &web_ip, 8080, "web-ok"), "the policy must still allow the friend");
    })
    .await;
}
