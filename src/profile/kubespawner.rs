//! The profiles a user may pick, as KubeSpawner `profile_list` entries, so JupyterHub's own
//! spawn page can offer them.
//!
//! KubeSpawner applies a profile's `kubespawner_override`, then the override of each chosen
//! `profile_options` choice, each replacing the earlier value. Overrides therefore carry the
//! fully merged values, not differences: a size choice sets all four cpu/memory settings (null
//! where the size leaves one unset), as JSP replaced the pod's resources wholesale.

use serde_json::{Map, Value, json};

use super::matching::{Requester, is_pattern};
use super::merge::{Resolved, merge};
use super::model::Profile;
use super::resources::{Resources, quantity_value};
use super::set::{ProfileChoice, ProfileSet};

/// The choice key for "no size": the profile's own resources.
const NO_SIZE: &str = "default";

impl ProfileSet {
    /// KubeSpawner `profile_list` entries: `display_name`, `slug`, `description`, `default`,
    /// `kubespawner_override` (image when the profile pins exactly one non-pattern image,
    /// resources, tolerations, node affinity) and `profile_options.size` with one choice per size.
    pub fn kubespawner_profile_list(&self, who: &Requester, image: Option<&str>) -> Vec<Value> {
        self.choices_with_profiles(who, image)
            .into_iter()
            .filter_map(|(choice, profiles)| self.kubespawner_entry(choice, &profiles))
            .collect()
    }

    fn kubespawner_entry(&self, choice: ProfileChoice, profiles: &[&Profile]) -> Option<Value> {
        let mut overrides = overrides(&merge(profiles, None, self.gpu_types()));
        if let [only] = choice.images.as_slice()
            && !is_pattern(only)
        {
            overrides.insert("image".into(), Value::String(only.clone()));
        }

        let mut entry = Map::new();
        entry.insert("display_name".into(), choice.display_name.into());
        entry.insert("slug".into(), choice.slug.into());
        if let Some(description) = choice.description {
            entry.insert("description".into(), description.into());
        }
        if choice.default {
            entry.insert("default".into(), true.into());
        }
        entry.insert("kubespawner_override".into(), overrides.into());

        if !choice.sizes.is_empty() {
            let mut choices = Map::new();
            if !choice.sizes.iter().any(|s| s.name.eq_ignore_ascii_case(NO_SIZE)) {
                choices.insert(
                    NO_SIZE.into(),
                    json!({
                        "display_name": "Default (resources set by the profile)",
                        "default": true,
                        "kubespawner_override": {},
                    }),
                );
            }
            for size in &choice.sizes {
                let sized = merge(profiles, Some(size), self.gpu_types());
                let display_name = match &size.description {
                    Some(description) => format!("{}: {description}", size.name),
                    None => size_summary(&size.name, &size.resources),
                };
                choices.insert(
                    size.name.clone(),
                    json!({
                        "display_name": display_name,
                        "kubespawner_override": kubespawner_resources(&sized.resources),
                    }),
                );
            }
            entry.insert(
                "profile_options".into(),
                json!({ "size": { "display_name": "Size", "choices": choices } }),
            );
        }
        Some(Value::Object(entry))
    }
}

fn overrides(resolved: &Resolved) -> Map<String, Value> {
    let mut overrides = kubespawner_resources(&resolved.resources);
    if !resolved.tolerations.is_empty() {
        overrides.insert("tolerations".into(), resolved.tolerations.clone().into());
    }
    if let Some(node_affinity) = resolved.affinity.get("nodeAffinity") {
        let required = &node_affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        if !required.is_null() {
            overrides.insert("node_affinity_required".into(), required.clone());
        }
        let preferred = &node_affinity["preferredDuringSchedulingIgnoredDuringExecution"];
        if !preferred.is_null() {
            overrides.insert("node_affinity_preferred".into(), preferred.clone());
        }
    }
    overrides
}

/// KubeSpawner's resource settings: CPU in cores (a float), memory in bytes (KubeSpawner's
/// byte suffixes are not Kubernetes'), other resources as `extra_resource_*` maps.
pub fn kubespawner_resources(resources: &Resources) -> Map<String, Value> {
    let mut overrides = Map::new();
    if resources.is_empty() {
        return overrides; // JSP left KubeSpawner's own settings alone
    }
    let cpu = |q: Option<&String>| {
        q.map_or(Value::Null, |q| quantity_value(q).map_or_else(|_| q.clone().into(), Value::from))
    };
    let bytes = |q: Option<&String>| {
        q.map_or(Value::Null, |q| {
            quantity_value(q).map_or_else(|_| q.clone().into(), |b| Value::from(b.round() as u64))
        })
    };
    overrides.insert("cpu_guarantee".into(), cpu(resources.requests.get("cpu")));
    overrides.insert("cpu_limit".into(), cpu(resources.limits.get("cpu")));
    overrides.insert("mem_guarantee".into(), bytes(resources.requests.get("memory")));
    overrides.insert("mem_limit".into(), bytes(resources.limits.get("memory")));
    for (key, side) in
        [("extra_resource_guarantees", &resources.requests), ("extra_resource_limits", &resources.limits)]
    {
        let extra: Map<String, Value> = side
            .iter()
            .filter(|(name, _)| *name != "cpu" && *name != "memory")
            .map(|(name, q)| (name.clone(), q.clone().into()))
            .collect();
        if !extra.is_empty() {
            overrides.insert(key.into(), extra.into());
        }
    }
    overrides
}

/// JSP's size label: `Small (Memory request: 1Gi, CPU request: 1, Memory limit: 2Gi, CPU limit: 2)`.
fn size_summary(name: &str, resources: &Resources) -> String {
    let get = |side: &std::collections::BTreeMap<String, String>, key: &str| {
        side.get(key).map_or("Default", String::as_str).to_string()
    };
    format!(
        "{name} (Memory request: {}, CPU request: {}, Memory limit: {}, CPU limit: {})",
        get(&resources.requests, "memory"),
        get(&resources.requests, "cpu"),
        get(&resources.limits, "memory"),
        get(&resources.limits, "cpu"),
    )
}
