//! Folding the matching profiles into one, by JSP's `merge_profiles` rules.

use std::collections::BTreeMap;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::model::{Profile, Service, Size, Wait};
use super::resources::{GPU_RESOURCE, ResourceSpec, Resources};
use super::volumes::DEFAULT_MOUNT_PATH;

/// A user's profile: every matching profile merged, the size applied, options validated.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Resolved {
    /// Names (else slugs) of the profiles merged, in merge order.
    pub profiles: Vec<String>,
    /// The slugged profile chosen, by the user or by default.
    pub slug: Option<String>,
    /// The size applied, as the admin spelled it.
    pub size: Option<String>,
    /// Kubernetes `EnvVar` objects, one per name.
    pub env: Vec<Value>,
    pub resources: Resources,
    /// The merged `max_resources` (a later profile's maximum for a resource wins).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub max_resources: super::Quantities,
    pub tolerations: Vec<Value>,
    /// A Kubernetes pod `Affinity`: `{nodeAffinity: <merged node_affinity>}`, empty when no
    /// profile sets `node_affinity` (JSP assigned it to the pod the same way).
    pub affinity: Map<String, Value>,
    pub gpu: u32,
    pub volumes: Vec<Value>,
    /// Where relative and unset volume mount paths go (the last profile's, else ODH's).
    pub default_mount_path: String,
    /// In JSP's dict order: first definition's position, a later definition replacing it there.
    pub services: IndexMap<String, Service>,
    /// Validated option values, defaults included.
    pub options: BTreeMap<String, Value>,
    /// How long to wait for the cluster before the notebook starts; `None`: do not wait.
    #[serde(rename = "wait_seconds", serialize_with = "seconds")]
    pub wait: Option<Duration>,
    #[serde(rename = "idle_timeout_seconds", serialize_with = "seconds")]
    pub idle_timeout: Option<Duration>,
}

/// Starts empty and folds `profiles` in order: lists concatenate, maps merge shallowly, scalars
/// take the last value; then the size's resources override, then `gpu` sets `nvidia.com/gpu`.
/// `gpu_types` tolerations are added when GPUs are requested (JSP applies all of them, as its
/// spawner had no way to pick a GPU type).
pub fn merge(profiles: &[&Profile], size: Option<&Size>, gpu_types: &[Value]) -> Resolved {
    let mut resolved = Resolved { default_mount_path: DEFAULT_MOUNT_PATH.to_owned(), ..Resolved::default() };
    let mut resources = ResourceSpec::default();
    let mut node_affinity = Map::new();
    let mut wait = None;
    let mut idle_timeout = None;
    let mut tolerations = Vec::new();

    for profile in profiles {
        resolved.profiles.extend(profile.label().map(str::to_string));
        for var in &profile.env {
            set_env(&mut resolved.env, var);
        }
        if let Some(spec) = &profile.resources {
            resources = resources.merged_with(spec);
        }
        resolved.max_resources.extend(profile.max_resources.clone());
        tolerations.extend(profile.node_tolerations.iter().cloned());
        node_affinity.extend(profile.node_affinity.clone());
        // JSP: `if profile2.get("gpu")`, so a later `gpu: 0` does not undo an earlier request
        // (`model::jsp_gpu`).
        if let Some(gpu) = profile.gpu {
            resolved.gpu = gpu;
        }
        resolved.volumes.extend(profile.volumes.iter().cloned());
        if let Some(path) = profile.default_mount_path.as_ref().filter(|p| !p.is_empty()) {
            resolved.default_mount_path.clone_from(path);
        }
        resolved.services.extend(profile.services.clone());
        wait = profile.wait.or(wait);
        idle_timeout = profile.idle_timeout.or(idle_timeout);
    }

    if let Some(size) = size {
        resolved.size = Some(size.name.clone());
        // JSP skips a size without resources rather than clearing the profile's.
        if !size.resources.is_empty() {
            resources = resources.merged_with(&ResourceSpec::from(&size.resources));
        }
    }

    resolved.resources = resources.into_resources();
    if resolved.gpu > 0 {
        let count = resolved.gpu.to_string();
        resolved.resources.requests.insert(GPU_RESOURCE.to_string(), count.clone());
        resolved.resources.limits.insert(GPU_RESOURCE.to_string(), count);
        resolved.tolerations = gpu_types
            .iter()
            .filter_map(|t| t.get("node_tolerations")?.as_array())
            .flatten()
            .cloned()
            .collect();
    }
    resolved.tolerations.extend(tolerations);
    if !node_affinity.is_empty() {
        resolved.affinity.insert("nodeAffinity".to_string(), Value::Object(node_affinity));
    }
    resolved.wait = wait.and_then(Wait::duration);
    // 0 lets a later profile switch culling off again.
    resolved.idle_timeout = idle_timeout.filter(|&s| s > 0).map(Duration::from_secs);
    resolved
}

/// A later definition of a name replaces the earlier one where it stood, so the pod gets one
/// entry per name (JSP appended duplicates and left the winner to the kubelet).
fn set_env(env: &mut Vec<Value>, var: &Value) {
    let name = var.get("name");
    match env.iter_mut().find(|existing| existing.get("name") == name) {
        Some(existing) => *existing = var.clone(),
        None => env.push(var.clone()),
    }
}

fn seconds<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    duration.map(|d| d.as_secs()).serialize(serializer)
}
