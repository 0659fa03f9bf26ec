//! The labels, annotations and selectors this service writes and reads, in one place: the
//! plan puts them on rendered objects, and the watches, quotas, status and the reaper find
//! objects again by them.

/// On every object this service writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "singleuser-profiles";
/// The JupyterHub user (a label-safe form, see [`crate::naming::label_value`]).
pub const USER_LABEL: &str = "jupyterhub.opendatahub.io/user";
/// The named server (label-safe; empty for the default server).
pub const SERVER_LABEL: &str = "jupyterhub.opendatahub.io/server";
/// On the notebook pod: the Ray cluster it belongs to.
pub const CLUSTER_LABEL: &str = "jupyterhub.opendatahub.io/ray-cluster";
/// Marks owner ConfigMaps apart from rendered objects (which may be ConfigMaps too).
pub const OWNER_LABEL: &str = "jupyterhub.opendatahub.io/owner";
/// Selects every owner ConfigMap this service made.
pub const OWNER_SELECTOR: &str =
    "app.kubernetes.io/managed-by=singleuser-profiles,jupyterhub.opendatahub.io/owner=true";
/// Selects every object this service made.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=singleuser-profiles";

/// KubeRay's label on every pod of a RayCluster: the cluster's name.
pub const RAY_CLUSTER_LABEL: &str = "ray.io/cluster";

/// KubeSpawner's marks on a notebook pod.
pub const NOTEBOOK_SELECTOR: &str = "component=singleuser-server";
/// The raw user name (annotation) or a label-safe form of it (label).
pub const NOTEBOOK_USERNAME_KEY: &str = "hub.jupyter.org/username";
/// The raw server name (annotation) or a label-safe form of it (label).
pub const NOTEBOOK_SERVERNAME_KEY: &str = "hub.jupyter.org/servername";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selectors_spell_the_labels() {
        assert_eq!(MANAGED_SELECTOR, format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
        assert_eq!(OWNER_SELECTOR, format!("{MANAGED_SELECTOR},{OWNER_LABEL}=true"));
    }
}
