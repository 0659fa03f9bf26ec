//! What a service template may create. Templates come from ConfigMaps that anyone with edit
//! rights in the namespace can change, and the service applies them with its own (broad)
//! credentials, so a template must not become a way to a Secret, a role binding, a cluster-wide
//! object or a privileged pod. Checked on every rendered object: when the configuration loads
//! (rendered for an odd user name) and on every spawn.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde_json::Value;

use crate::{naming, pointer};

/// The kinds templates may create unless configured otherwise.
pub const DEFAULT_KINDS: [&str; 6] =
    ["RayCluster", "Service", "Route", "Ingress", "NetworkPolicy", "ConfigMap"];

/// Kinds refused whatever the allowlist says: credentials, RBAC, and objects that are not
/// namespaced (the service would give them `metadata.namespace` and the API server would
/// ignore it, making cluster-wide objects owned by nobody).
const NEVER: [&str; 22] = [
    "Secret",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "Namespace",
    "Node",
    "PersistentVolume",
    "StorageClass",
    "CustomResourceDefinition",
    "APIService",
    "PriorityClass",
    "RuntimeClass",
    "IngressClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "CertificateSigningRequest",
    "SecurityContextConstraints",
    "ClusterResourceQuota",
];

/// The template policy: which kinds may be created. The other rules are fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    kinds: BTreeSet<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self { kinds: DEFAULT_KINDS.iter().map(|k| (*k).to_owned()).collect() }
    }
}

impl Policy {
    /// A policy allowing `kinds`; refuses the kinds that are never allowed.
    pub fn new<S: AsRef<str>>(kinds: &[S]) -> Result<Self, String> {
        let kinds: BTreeSet<String> =
            kinds.iter().map(|k| k.as_ref().trim().to_owned()).filter(|k| !k.is_empty()).collect();
        if let Some(never) = kinds.iter().find(|k| NEVER.contains(&k.as_str())) {
            return Err(format!(
                "kind {never} cannot be allowed: templates never create credentials, RBAC or cluster-scoped objects"
            ));
        }
        if kinds.is_empty() {
            return Err("allow at least one kind (the default: RayCluster,Service,Route,Ingress,NetworkPolicy,ConfigMap)".into());
        }
        Ok(Self { kinds })
    }

    /// What is wrong with one rendered object, each with how to fix it; empty when it passes.
    pub fn check(&self, object: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let kind = pointer::str(object, "/kind").unwrap_or_default();
        if NEVER.contains(&kind) {
            problems.push(format!(
                "kind {kind} is never created by templates (credentials, RBAC and cluster-scoped objects are refused); remove this object"
            ));
        } else if !self.kinds.contains(kind) {
            let allowed: Vec<&str> = self.kinds.iter().map(String::as_str).collect();
            problems.push(format!(
                "kind {kind} is not allowed (allowed: {}); remove the object or have the operator add the kind with --template-kinds",
                allowed.join(", ")
            ));
        }
        check_name(kind, object, &mut problems);
        check_labels(object, &mut problems);
        pod_specs(object, &mut String::new(), &mut |at, spec| check_pod_spec(at, spec, &mut problems));
        problems
    }
}

fn check_name(kind: &str, object: &Value, problems: &mut Vec<String>) {
    let Some(name) = pointer::str(object, "/metadata/name") else { return };
    let (valid, rule) = match kind {
        // KubeRay derives Service and Pod names from it.
        "RayCluster" => (
            naming::is_dns1035_label(name) && name.len() <= naming::MAX_CLUSTER_NAME,
            "a DNS-1035 label of at most 53 characters",
        ),
        "Service" => {
            (naming::is_dns1035_label(name), "a DNS-1035 label (a-z, 0-9, '-', a letter first, at most 63)")
        }
        "Route" | "NetworkPolicy" => {
            (naming::is_dns1123_label(name), "a DNS-1123 label (a-z, 0-9, '-', at most 63)")
        }
        _ => (naming::is_dns1123_subdomain(name), "a DNS-1123 subdomain (a-z, 0-9, '-', '.', at most 253)"),
    };
    if !valid {
        problems.push(format!(
            "metadata.name {name:?} is not {rule}; build it from {{{{ cluster_name }}}} (always valid) or {{{{ user }}}} (escaped) rather than {{{{ username }}}}"
        ));
    }
}

fn check_labels(object: &Value, problems: &mut Vec<String>) {
    let labels = pointer::get(object, "/metadata/labels").and_then(Value::as_object);
    for (key, value) in labels.into_iter().flatten() {
        if !is_label_key(key) {
            problems.push(format!(
                "label key {key:?} is not valid (an optional DNS subdomain prefix and '/', then at most 63 of a-z, A-Z, 0-9, '-', '_', '.', alphanumeric at both ends)"
            ));
        }
        match value.as_str() {
            Some(v) if is_label_value(v) => {}
            _ => problems.push(format!(
                "label {key} value {value} is not valid (at most 63 of a-z, A-Z, 0-9, '-', '_', '.', alphanumeric at both ends); use {{{{ user }}}} (escaped), not {{{{ username }}}}"
            )),
        }
    }
}

/// Kubernetes' qualified name: `[prefix/]name`.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(naming::is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

fn is_label_value(value: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    value.is_empty()
        || (value.len() <= 63
            && edge(value.chars().next())
            && edge(value.chars().next_back())
            && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// Calls `found` with every pod spec in `value` (a mapping with a `containers` list), wherever
/// it sits: a RayCluster has several, other kinds one under `spec.template.spec`. `at` is the
/// path so far, one buffer for the whole walk (a path per node was a quarter of a plan's CPU).
fn pod_specs(value: &Value, at: &mut String, found: &mut dyn FnMut(&str, &serde_json::Map<String, Value>)) {
    let end = at.len();
    match value {
        Value::Object(map) => {
            if map.get("containers").is_some_and(Value::is_array) {
                found(if at.is_empty() { "." } else { at }, map);
            }
            for (key, inner) in map.iter().filter(|(_, inner)| has_children(inner)) {
                at.push('.');
                at.push_str(key);
                pod_specs(inner, at, found);
                at.truncate(end);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate().filter(|(_, inner)| has_children(inner)) {
                write!(at, "[{i}]").expect("writing to a String cannot fail");
                pod_specs(inner, at, found);
                at.truncate(end);
            }
        }
        _ => {}
    }
}

fn has_children(value: &Value) -> bool {
    value.is_object() || value.is_array()
}

fn check_pod_spec(at: &str, spec: &serde_json::Map<String, Value>, problems: &mut Vec<String>) {
    let fix = "remove it: notebooks' Ray clusters run unprivileged";
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec.get(field) == Some(&Value::Bool(true)) {
            problems.push(format!("{at}.{field} is true; {fix}"));
        }
    }
    for (i, volume) in spec.get("volumes").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if volume.get("hostPath").is_some() {
            problems.push(format!("{at}.volumes[{i}] is a hostPath volume; use emptyDir or a PVC instead"));
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for (i, container) in spec.get(list).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let Some(security) = container.get("securityContext") else { continue };
            let here = format!("{at}.{list}[{i}].securityContext");
            if security.get("privileged") == Some(&Value::Bool(true)) {
                problems.push(format!("{here}.privileged is true; {fix}"));
            }
            if security.get("allowPrivilegeEscalation") == Some(&Value::Bool(true)) {
                problems.push(format!("{here}.allowPrivilegeEscalation is true; set it to false"));
            }
            let added = pointer::get(security, "/capabilities/add").and_then(Value::as_array);
            if added.is_some_and(|a| !a.is_empty()) {
                problems
                    .push(format!("{here}.capabilities.add is not empty; drop capabilities, never add them"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(kind: &str) -> Value {
        json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "ray-alice"}})
    }

    #[test]
    fn only_allowed_namespaced_kinds_pass() {
        let policy = Policy::default();
        for kind in DEFAULT_KINDS {
            assert_eq!(policy.check(&object(kind)), Vec::<String>::new(), "{kind}");
        }
        for kind in ["Secret", "ClusterRoleBinding", "Namespace", "Role"] {
            let problems = policy.check(&object(kind));
            assert!(problems[0].contains("never created"), "{kind}: {problems:?}");
        }
        let problems = policy.check(&object("Pod"));
        assert!(
            problems[0].contains("not allowed") && problems[0].contains("--template-kinds"),
            "{problems:?}"
        );
        let with_pods = Policy::new(&["Pod", "RayCluster"]).unwrap();
        assert!(with_pods.check(&object("Pod")).is_empty());
        assert!(Policy::new(&["Secret"]).unwrap_err().contains("cannot be allowed"));
        assert!(Policy::new::<&str>(&[]).is_err());
    }

    #[test]
    fn privileged_pod_specs_are_refused_wherever_they_sit() {
        let pod = json!({
            "hostNetwork": true, "hostPID": true, "hostIPC": true,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "securityContext": {
                "privileged": true, "allowPrivilegeEscalation": true, "capabilities": {"add": ["SYS_ADMIN"]}
            }}],
        });
        let rc = json!({
            "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "ray-alice"},
            "spec": {"headGroupSpec": {"template": {"spec": pod}}, "workerGroupSpecs": [{"template": {"spec": pod}}]},
        });
        let problems = Policy::default().check(&rc);
        assert_eq!(problems.len(), 14, "{problems:#?}");
        assert!(
            problems.iter().any(|p| p.starts_with(".spec.workerGroupSpecs[0].template.spec.volumes[0]")),
            "{problems:#?}"
        );
        let safe = json!({"containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]});
        let rc = json!({"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "ray-alice"}, "spec": {"headGroupSpec": {"template": {"spec": safe}}}});
        assert!(Policy::default().check(&rc).is_empty());
    }

    #[test]
    fn names_and_labels_must_be_valid() {
        let bad = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "Eje@example.com-svc", "labels": {"user/Eje@x": "ok", "owner": "Eje@example.com", "fine.io/name": "a_b.c"}},
        });
        let problems = Policy::default().check(&bad);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems[0].contains("metadata.name") && problems[0].contains("cluster_name"),
            "{problems:#?}"
        );
        let long =
            json!({"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "r".repeat(54)}});
        assert_eq!(Policy::default().check(&long).len(), 1);
    }
}
