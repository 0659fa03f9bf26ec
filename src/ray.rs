//! KubeRay's `RayCluster`, typed as far as this service reads it: its status (is the head
//! ready, which pod, which state). The spec stays free-form (templates write it), and no
//! schema is generated: the CRD is KubeRay's, not ours.

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A `ray.io/v1` RayCluster's spec, as written.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "ray.io",
    version = "v1",
    kind = "RayCluster",
    namespaced,
    status = "RayClusterStatus",
    schema = "disabled"
)]
pub struct RayClusterSpec {
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// What KubeRay reports; fields this service does not read are kept as they came.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RayClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeadInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl RayCluster {
    /// KubeRay's `HeadPodReady` condition (v1.2+), or the older `state: ready`.
    pub fn head_ready(&self) -> bool {
        self.status.as_ref().is_some_and(|status| {
            status.conditions.iter().any(|c| c.type_ == "HeadPodReady" && c.status == "True")
                || status.state.as_deref() == Some("ready")
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cluster(status: Value) -> RayCluster {
        serde_json::from_value(json!({
            "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c"},
            "spec": {"rayVersion": "2.60.0"}, "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn head_ready_reads_the_condition_or_the_legacy_state() {
        assert!(cluster(json!({"conditions": [{"type": "HeadPodReady", "status": "True"}]})).head_ready());
        assert!(!cluster(json!({"conditions": [{"type": "HeadPodReady", "status": "False"}]})).head_ready());
        assert!(cluster(json!({"state": "ready"})).head_ready());
        assert!(!cluster(json!({})).head_ready());
    }

    #[test]
    fn what_is_not_read_survives_a_round_trip() {
        let object = json!({
            "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c"},
            "spec": {"rayVersion": "2.60.0", "headGroupSpec": {"rayStartParams": {}}},
            "status": {"state": "ready", "desiredWorkerReplicas": 2,
                       "head": {"podName": "h", "podIP": "10.0.0.1", "serviceIP": "10.1.0.1"},
                       "conditions": [{"type": "HeadPodReady", "status": "True", "reason": "Ready"}]},
        });
        let typed: RayCluster = serde_json::from_value(object.clone()).unwrap();
        assert_eq!(typed.status.as_ref().unwrap().head.as_ref().unwrap().pod_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(serde_json::to_value(&typed).unwrap(), object);
    }
}
