//! The notebook's volumes and mounts from a profile's `volumes`, by JSP's rules
//! (`apply_pod_profile`, docs/volumes.md).
//!
//! - The name is lower-cased with every character but letters, digits and `.` turned into `-`
//!   (`My_Data` → `my-data`). A name that is then no valid volume name (a DNS-1123 label: JSP
//!   kept dots, and the API server refused its pod) refuses the spawn, naming the volume.
//! - A PVC becomes `{name, persistentVolumeClaim: {claimName, readOnly}}` (JSP kept those two
//!   fields); any other volume source (an extension: JSP failed on them) is kept as written.
//! - The mount path: an absolute `mountPath` as is, a relative one joined to the default mount
//!   path (Python's `os.path.join`, unnormalised: `./data` → `/opt/app-root/src/./data`), none:
//!   the default mount path joined with the name.
//! - Extension: `subPath` and `readOnly` next to `mountPath` go to the mount (JSP ignored them).

use serde_json::{Map, Value, json};

use crate::naming;

/// ODH's `DEFAULT_MOUNT_PATH`, the notebook images' working directory.
pub const DEFAULT_MOUNT_PATH: &str = "/opt/app-root/src";

/// Keys of a profile volume that describe its mount, not the pod volume.
const MOUNT_KEYS: [&str; 3] = ["mountPath", "subPath", "readOnly"];

/// The pod's volumes and the notebook container's mounts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodVolumes {
    pub volumes: Vec<Value>,
    pub mounts: Vec<Value>,
}

/// A profile volume the notebook pod cannot have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VolumeError {
    /// 0-based position in the merged profile's `volumes`.
    pub index: usize,
    pub message: String,
}

/// JSP's `re.sub('[^a-zA-Z0-9\.]', '-', name).lower()`.
pub fn volume_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c.to_ascii_lowercase() } else { '-' })
        .collect()
}

/// Python's `os.path.join(base, path)` for one relative or absolute `path`.
fn join(base: &str, path: &str) -> String {
    if path.starts_with('/') || base.is_empty() {
        path.to_owned()
    } else if base.ends_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    }
}

/// The volumes and mounts of the merged profile's `volumes`, mounted under `default_mount_path`.
pub fn pod_volumes(volumes: &[Value], default_mount_path: &str) -> Result<PodVolumes, VolumeError> {
    let mut out = PodVolumes::default();
    for (index, volume) in volumes.iter().enumerate() {
        let error = |message: String| VolumeError { index, message };
        let Some(fields) = volume.as_object() else {
            return Err(error(format!("volumes[{index}] must be a mapping with a name, got {volume}")));
        };
        let Some(written) = fields.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
            return Err(error(format!("volumes[{index}] needs a name")));
        };
        let name = volume_name(written);
        if !naming::is_dns1123_label(&name) {
            return Err(error(format!(
                "volume {written:?} becomes {name:?}, which is not a valid volume name (lower-case letters, digits and '-', at most 63; JSP kept the name and the API server refused the pod): rename the volume"
            )));
        }
        let pod_volume = match fields.get("persistentVolumeClaim") {
            Some(pvc) => {
                let Some(claim) = pvc.get("claimName").and_then(Value::as_str) else {
                    return Err(error(format!(
                        "volume {written:?}: persistentVolumeClaim needs a claimName"
                    )));
                };
                let mut source = json!({ "claimName": claim });
                if let Some(read_only) = pvc.get("readOnly").filter(|r| !r.is_null()) {
                    source["readOnly"] = read_only.clone();
                }
                json!({ "name": name, "persistentVolumeClaim": source })
            }
            None => {
                let mut other: Map<String, Value> = fields
                    .iter()
                    .filter(|(k, _)| !MOUNT_KEYS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                other.insert("name".into(), json!(name));
                Value::Object(other)
            }
        };
        let mount_path = match fields.get("mountPath").and_then(Value::as_str).filter(|p| !p.is_empty()) {
            Some(path) => join(default_mount_path, path),
            None => join(default_mount_path, &name),
        };
        let mut mount = json!({ "name": name, "mountPath": mount_path });
        for key in ["subPath", "readOnly"] {
            if let Some(value) = fields.get(key).filter(|v| !v.is_null()) {
                mount[key] = value.clone();
            }
        }
        out.volumes.push(pod_volume);
        out.mounts.push(mount);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvc(name: &str, extra: Value) -> Value {
        let mut volume = json!({"name": name, "persistentVolumeClaim": {"claimName": format!("{name}-pvc")}});
        volume.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        volume
    }

    #[test]
    fn names_are_sanitised_as_jsp_did() {
        assert_eq!(volume_name("My_Data"), "my-data");
        assert_eq!(volume_name("a b/c"), "a-b-c");
        assert_eq!(volume_name("v1.2"), "v1.2");
        assert_eq!(volume_name("jürgen"), "j-rgen");
    }

    #[test]
    fn mount_paths_follow_jsp() {
        let volumes = [
            pvc("abs", json!({"mountPath": "/data/abs"})),
            pvc("rel", json!({"mountPath": "./example-dataset"})),
            pvc("My_Data", json!({})),
        ];
        let pod = pod_volumes(&volumes, DEFAULT_MOUNT_PATH).unwrap();
        let paths: Vec<&str> = pod.mounts.iter().map(|m| m["mountPath"].as_str().unwrap()).collect();
        assert_eq!(paths, ["/data/abs", "/opt/app-root/src/./example-dataset", "/opt/app-root/src/my-data"]);
        assert_eq!(pod.mounts[2], json!({"name": "my-data", "mountPath": "/opt/app-root/src/my-data"}));
        assert_eq!(
            pod_volumes(&volumes[1..2], "/home/jovyan/").unwrap().mounts[0]["mountPath"],
            "/home/jovyan/./example-dataset"
        );
    }

    #[test]
    fn a_pvc_keeps_claim_name_and_read_only_only() {
        let volume = json!({"name": "d", "persistentVolumeClaim": {"claimName": "c", "readOnly": true, "extra": 1}, "mountPath": "/d"});
        let pod = pod_volumes(&[volume], DEFAULT_MOUNT_PATH).unwrap();
        assert_eq!(
            pod.volumes,
            [json!({"name": "d", "persistentVolumeClaim": {"claimName": "c", "readOnly": true}})]
        );
        assert_eq!(pod.mounts, [json!({"name": "d", "mountPath": "/d"})], "JSP put no readOnly on the mount");
    }

    #[test]
    fn other_sources_are_kept_and_mount_keys_go_to_the_mount() {
        let volume = json!({"name": "Settings", "configMap": {"name": "cm"}, "mountPath": "/etc/s", "subPath": "a", "readOnly": true});
        let pod = pod_volumes(&[volume], DEFAULT_MOUNT_PATH).unwrap();
        assert_eq!(pod.volumes, [json!({"name": "settings", "configMap": {"name": "cm"}})]);
        assert_eq!(
            pod.mounts,
            [json!({"name": "settings", "mountPath": "/etc/s", "subPath": "a", "readOnly": true})]
        );
    }

    #[test]
    fn invalid_volumes_refuse_naming_the_volume() {
        for (volume, needle) in [
            (pvc("My_Data.v2", json!({})), "\"my-data.v2\", which is not a valid volume name"),
            (json!({"persistentVolumeClaim": {"claimName": "c"}}), "volumes[1] needs a name"),
            (json!({"name": "x", "persistentVolumeClaim": {}}), "needs a claimName"),
            (json!("just-a-name"), "must be a mapping"),
        ] {
            let error = pod_volumes(&[pvc("ok", json!({})), volume], DEFAULT_MOUNT_PATH).unwrap_err();
            assert_eq!(error.index, 1);
            assert!(error.message.contains(needle), "{}", error.message);
        }
    }
}
