//! Every user's own settings (JSP's `jupyterhub-singleuser-profile-<user>` ConfigMaps), kept
//! apart from the catalog: a user saving their settings changes one entry here and rebuilds no
//! profile or template.

use std::collections::HashMap;
use std::sync::Arc;

use super::{ConfigMapSource, ProfileSelector};
use crate::naming;
use crate::profile::{SETTINGS_KEY, SettingsPart, UserSettings, parse_presets, settings_owner};

/// Users' settings by escaped user name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserIndex {
    users: HashMap<String, Arc<UserSettings>>,
}

/// Whether a ConfigMap holds a user's settings rather than profiles or templates. A profile
/// ConfigMap (by name or label) stays one whatever its name.
pub fn is_user_settings(selector: &ProfileSelector, cm: &ConfigMapSource) -> bool {
    !selector.matches(cm) && settings_owner(&cm.name).is_some()
}

impl UserIndex {
    /// The index of the settings ConfigMaps among `configmaps`, and the other ConfigMaps.
    pub fn split<'a>(
        selector: &ProfileSelector,
        configmaps: impl IntoIterator<Item = &'a ConfigMapSource>,
    ) -> (UserIndex, Vec<&'a ConfigMapSource>) {
        let mut index = UserIndex::default();
        let mut rest = Vec::new();
        for cm in configmaps {
            if is_user_settings(selector, cm) {
                index.apply(cm);
            } else {
                rest.push(cm);
            }
        }
        (index, rest)
    }

    /// Takes a new or changed settings ConfigMap (see [`is_user_settings`]).
    pub fn apply(&mut self, cm: &ConfigMapSource) {
        let Some((user, part)) = settings_owner(&cm.name) else { return };
        let entry = Arc::make_mut(self.users.entry(user.to_owned()).or_default());
        match part {
            SettingsPart::Presets => {
                entry.presets = Some(match cm.data.get(SETTINGS_KEY) {
                    Some(text) => parse_presets(text).map_err(|e| format!("key `{SETTINGS_KEY}`: {e}")),
                    None => Ok(Default::default()),
                });
            }
            SettingsPart::Envs => entry.envs = Some(cm.data.clone()),
        }
    }

    /// Forgets a deleted settings ConfigMap.
    pub fn remove(&mut self, configmap: &str) {
        let Some((user, part)) = settings_owner(configmap) else { return };
        let Some(entry) = self.users.get_mut(user) else { return };
        let settings = Arc::make_mut(entry);
        match part {
            SettingsPart::Presets => settings.presets = None,
            SettingsPart::Envs => settings.envs = None,
        }
        if settings.is_empty() {
            self.users.remove(user);
        }
    }

    /// The settings of a JupyterHub user, by their raw name.
    pub fn get(&self, user: &str) -> Option<&UserSettings> {
        self.users.get(&naming::escape_user(user)).map(|s| &**s)
    }

    /// A message for every user's presets that do not parse.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .users
            .iter()
            .filter_map(|(user, settings)| {
                let Some(Err(message)) = &settings.presets else { return None };
                Some(format!("ConfigMap {}{user}: {message}", crate::profile::SETTINGS_PREFIX))
            })
            .collect();
        problems.sort();
        problems
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::profile::Presets;

    fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMapSource {
        ConfigMapSource {
            name: name.into(),
            labels: BTreeMap::new(),
            data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn settings_are_split_from_the_other_configmaps_and_found_by_raw_user() {
        let selector = ProfileSelector::default();
        let mut labelled = cm("jupyterhub-singleuser-profile-team", &[]);
        labelled.labels.insert("jupyterhub".into(), "singleuser-profiles".into());
        let cms = [
            cm("jupyter-singleuser-profiles", &[]),
            cm("jupyterhub-singleuser-profile-eje-40redhat-2ecom", &[("profile", "gpu: 1\n")]),
            cm("jupyterhub-singleuser-profile-eje-40redhat-2ecom-envs", &[("A", "1")]),
            labelled,
            cm("templates", &[]),
        ];
        let (index, rest) = UserIndex::split(&selector, &cms);
        let names: Vec<&str> = rest.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["jupyter-singleuser-profiles", "jupyterhub-singleuser-profile-team", "templates"]);
        let settings = index.get("eje@redhat.com").unwrap();
        assert_eq!(settings.presets, Some(Ok(Presets { gpu: Some(1), ..Presets::default() })));
        assert_eq!(settings.envs.as_ref().unwrap()["A"], "1");
        assert!(index.get("someone").is_none());
    }

    #[test]
    fn updates_and_deletes_change_one_user() {
        let mut index = UserIndex::default();
        index.apply(&cm("jupyterhub-singleuser-profile-alice", &[("profile", "gpu: '0'\n")]));
        index.apply(&cm("jupyterhub-singleuser-profile-bob", &[("profile", "gpu: many\n")]));
        assert_eq!(
            index.get("alice").unwrap().presets,
            Some(Ok(Presets { gpu: Some(0), ..Presets::default() }))
        );
        let broken = index.get("bob").unwrap().presets.clone().unwrap().unwrap_err();
        assert!(broken.starts_with("key `profile`: gpu:"), "{broken}");
        assert_eq!(index.problems(), [format!("ConfigMap jupyterhub-singleuser-profile-bob: {broken}")]);
        index.apply(&cm("jupyterhub-singleuser-profile-alice-envs", &[("X", "y")]));
        index.remove("jupyterhub-singleuser-profile-alice");
        assert!(index.get("alice").unwrap().presets.is_none());
        index.remove("jupyterhub-singleuser-profile-alice-envs");
        assert!(index.get("alice").is_none());
        assert_eq!(index.len(), 1);
    }
}
