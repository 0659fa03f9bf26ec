//! A user's own settings, as JSP's spawn page saved them (JSP's `user.py`): the ConfigMap
//! `jupyterhub-singleuser-profile-<escaped user>` whose key `profile` holds the last image,
//! size and GPU count, and `jupyterhub-singleuser-profile-<escaped user>-envs` whose keys are
//! the user's own environment variables (their secret ones live in the Secret of that name).
//!
//! JSP merged them as the last profile (`@singleuser@`) before the size. Here only what the
//! user may choose is taken: the GPU count, size, image and env. JSP merged any key the user
//! posted to its API, so a user could grant themselves resources, tolerations or services.
//!
//! Pure: names, parsing and the env entries; the launcher writes these ConfigMaps in the same
//! format.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::model::jsp_gpu;
use crate::naming;

/// `jupyterhub-singleuser-profile-<escaped user>` holds the presets.
pub const SETTINGS_PREFIX: &str = "jupyterhub-singleuser-profile-";
/// The presets' data key.
pub const SETTINGS_KEY: &str = "profile";
/// `<presets name>-envs` holds the user's env (a ConfigMap, and a Secret for secret values).
pub const ENVS_SUFFIX: &str = "-envs";

/// The presets ConfigMap of a user.
pub fn settings_configmap_name(user: &str) -> String {
    format!("{SETTINGS_PREFIX}{}", naming::escape_user(user))
}

/// The env ConfigMap (and Secret) of a user.
pub fn envs_configmap_name(user: &str) -> String {
    format!("{}{ENVS_SUFFIX}", settings_configmap_name(user))
}

/// Which user's settings a ConfigMap holds, by its name: the escaped user and whether it is the
/// env ConfigMap. `None` for other names.
pub fn settings_owner(configmap: &str) -> Option<(&str, SettingsPart)> {
    let rest = configmap.strip_prefix(SETTINGS_PREFIX).filter(|r| !r.is_empty())?;
    match rest.strip_suffix(ENVS_SUFFIX) {
        Some(user) if !user.is_empty() => Some((user, SettingsPart::Envs)),
        _ => Some((rest, SettingsPart::Presets)),
    }
}

/// The two ConfigMaps of a user's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsPart {
    Presets,
    Envs,
}

/// The presets a user saved (key `profile`); other keys are ignored (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Presets {
    /// JSP's override of the profiles' `gpu`: `None` keeps theirs. JSP stored the string `"0"`
    /// on a user's first save, which is truthy in Python and so switched a profile's GPUs off;
    /// a number `0` (an explicit choice in the UI) is falsy and kept the profile's count.
    pub gpu: Option<u32>,
    pub last_selected_image: Option<String>,
    pub last_selected_size: Option<String>,
}

/// Parses the presets' text (JSP wrote it with `yaml.dump`). Says what is wrong otherwise.
pub fn parse_presets(text: &str) -> Result<Presets, String> {
    let value: Option<Value> = crate::yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let fields = match value.unwrap_or_default() {
        Value::Null => return Ok(Presets::default()),
        Value::Object(fields) => fields,
        other => {
            return Err(format!(
                "expected a mapping of gpu, last_selected_image and last_selected_size, got {other}"
            ));
        }
    };
    let text_field = |key: &str| -> Result<Option<String>, String> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
            Some(other) => Err(format!("{key}: expected a string, got {other}")),
        }
    };
    Ok(Presets {
        gpu: fields.get("gpu").map(jsp_gpu).transpose().map_err(|e| format!("gpu: {e}"))?.flatten(),
        last_selected_image: text_field("last_selected_image")?,
        last_selected_size: text_field("last_selected_size")?,
    })
}

/// What one user saved: the presets (or why they do not parse) and the env ConfigMap's data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSettings {
    pub presets: Option<Result<Presets, String>>,
    pub envs: Option<BTreeMap<String, String>>,
}

impl UserSettings {
    pub fn is_empty(&self) -> bool {
        self.presets.is_none() && self.envs.is_none()
    }

    /// The user's env after every profile's, as JSP gave it: one `configMapKeyRef` per key
    /// of the env ConfigMap, in key order. `inline` gives the values themselves instead, for a
    /// notebook in another namespace than the ConfigMap (where a reference cannot resolve).
    pub fn env(&self, user: &str, inline: bool) -> Vec<Value> {
        let name = envs_configmap_name(user);
        self.envs
            .iter()
            .flatten()
            .map(|(key, value)| match inline {
                true => json!({ "name": key, "value": value }),
                false => {
                    json!({ "name": key, "valueFrom": { "configMapKeyRef": { "name": name, "key": key } } })
                }
            })
            .collect()
    }

    /// The user's secret env: every key of the Secret `<user>-envs`, by reference (the service
    /// never reads Secrets, so it cannot list their keys as JSP did).
    pub fn env_from(&self, user: &str) -> Vec<Value> {
        vec![json!({ "secretRef": { "name": envs_configmap_name(user), "optional": true } })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_jsp() {
        assert_eq!(
            settings_configmap_name("eje@redhat.com"),
            "jupyterhub-singleuser-profile-eje-40redhat-2ecom"
        );
        assert_eq!(envs_configmap_name("Eje"), "jupyterhub-singleuser-profile--45je-envs");
        assert_eq!(
            settings_owner("jupyterhub-singleuser-profile--45je-envs"),
            Some(("-45je", SettingsPart::Envs))
        );
        assert_eq!(
            settings_owner("jupyterhub-singleuser-profile-alice"),
            Some(("alice", SettingsPart::Presets))
        );
        assert_eq!(settings_owner("jupyterhub-singleuser-profiles-sizes"), None);
        assert_eq!(settings_owner("jupyterhub-singleuser-profile-"), None);
        // The user's escaped name is what precedes `-envs`.
        assert_eq!(
            settings_owner("jupyterhub-singleuser-profile--envs"),
            Some(("-envs", SettingsPart::Presets))
        );
    }

    #[test]
    fn presets_parse_as_jsp_wrote_them() {
        let presets =
            parse_presets("gpu: '0'\nlast_selected_image: s2i:3.6\nlast_selected_size: Small\n").unwrap();
        assert_eq!(
            presets,
            Presets {
                gpu: Some(0),
                last_selected_image: Some("s2i:3.6".into()),
                last_selected_size: Some("Small".into())
            }
        );
        assert_eq!(parse_presets("gpu: 2\nlast_selected_size: ''\n").unwrap().gpu, Some(2));
        assert_eq!(parse_presets("gpu: 0\n").unwrap().gpu, None, "a number 0 keeps the profile's GPUs");
        assert_eq!(parse_presets("last_selected_size: ''\n").unwrap().last_selected_size, None);
        assert_eq!(parse_presets("").unwrap(), Presets::default());
    }

    #[test]
    fn presets_ignore_what_a_user_may_not_set() {
        let presets =
            parse_presets("gpu: 1\nresources: {limits: {cpu: '64'}}\nnode_tolerations: [{key: x}]\n")
                .unwrap();
        assert_eq!(presets, Presets { gpu: Some(1), ..Presets::default() });
    }

    #[test]
    fn broken_presets_say_what_is_wrong() {
        assert!(parse_presets("gpu: many\n").unwrap_err().contains("gpu: "));
        assert!(parse_presets("- a\n").unwrap_err().contains("expected a mapping"));
        assert!(parse_presets("last_selected_size: [a]\n").unwrap_err().contains("last_selected_size"));
        assert!(parse_presets("a: [\n").unwrap_err().contains("not YAML"));
    }

    #[test]
    fn env_refers_to_the_env_configmap_in_key_order() {
        let settings = UserSettings {
            envs: Some(BTreeMap::from([("Z".into(), "1".into()), ("A".into(), "2".into())])),
            ..UserSettings::default()
        };
        let name = "jupyterhub-singleuser-profile-alice-envs";
        assert_eq!(
            settings.env("alice", false),
            [
                json!({"name": "A", "valueFrom": {"configMapKeyRef": {"name": name, "key": "A"}}}),
                json!({"name": "Z", "valueFrom": {"configMapKeyRef": {"name": name, "key": "Z"}}}),
            ]
        );
        assert_eq!(settings.env("alice", true)[0], json!({"name": "A", "value": "2"}));
        assert_eq!(settings.env_from("alice"), [json!({"secretRef": {"name": name, "optional": true}})]);
    }
}
