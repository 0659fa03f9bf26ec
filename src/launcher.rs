//! The ODH launcher: what JSP 0.7.0's spawner API answered (`api/swagger.yaml` of its sdist),
//! computed from the catalog, and the user's settings its spawn page saves. Pure: the HTTP edge
//! (`api::jsp`) authenticates and reads or writes the ConfigMaps named here.
//!
//! Deviations from JSP, each because there is no cluster-wide view here: images come from the
//! profiles and a configured list (no ImageStreams); sizes carry no `schedulable` (no node
//! capacity is read); `gpuConfig` is the admin's as written (no node GPU count); the user's
//! secret env is never read or written (the service holds no Secret rights).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::profile::{ProfileSet, SETTINGS_KEY, Size, UserSettings};

/// Images offered beside the profiles' own, since there are no ImageStreams to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageList {
    /// `repository:tag` references, in the order the admin gave them.
    pub images: Vec<String>,
    /// The image a user who picked none gets; `None`: the first image.
    pub default: Option<String>,
}

/// One image repository with its tags, as JSP's `ImageInfo`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageInfo {
    /// The repository; with the tag it is the reference the notebook runs.
    pub name: String,
    pub display_name: String,
    pub description: Option<String>,
    pub url: Option<String>,
    pub order: u32,
    pub tags: Vec<TagInfo>,
}

/// One tag of an image, as JSP's `ImageTagInfo`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TagInfo {
    pub name: String,
    pub content: TagContent,
    pub recommended: bool,
    /// JSP's status of an image without OpenShift builds.
    pub build_status: &'static str,
    pub default: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct TagContent {
    pub software: Vec<Value>,
    pub dependencies: Vec<Value>,
}

/// `repository:tag` split as JSP's UI splits it (at the first colon); `None` for a reference
/// the UI cannot round-trip: a registry port or a digest puts a colon in the repository.
fn split_reference(reference: &str) -> Option<(&str, &str)> {
    let (repository, tag) = match reference.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, tag),
        _ => (reference, "latest"),
    };
    let plain = !repository.is_empty() && !tag.is_empty();
    (plain && !repository.contains([':', '@']) && !tag.contains('@')).then_some((repository, tag))
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

impl ImageList {
    /// Every image a user may pick: the configured list first, then the exact images the
    /// profiles name (globs cannot be offered), each once; tags grouped by repository.
    pub fn offered(&self, profiles: &ProfileSet) -> Vec<ImageInfo> {
        let from_profiles = profiles.profiles().iter().flat_map(|p| &p.images).filter(|i| !is_glob(i));
        let default = self.default_image(profiles);
        let mut offered: Vec<ImageInfo> = Vec::new();
        for reference in self.images.iter().chain(from_profiles) {
            let Some((repository, tag)) = split_reference(reference) else { continue };
            let is_default = default.as_deref() == Some(&format!("{repository}:{tag}"));
            let info = match offered.iter_mut().find(|i| i.name == repository) {
                Some(info) => info,
                None => {
                    let order = u32::try_from(offered.len()).unwrap_or(u32::MAX);
                    offered.push(ImageInfo {
                        name: repository.to_owned(),
                        display_name: repository.rsplit('/').next().unwrap_or(repository).to_owned(),
                        description: None,
                        url: None,
                        order,
                        tags: Vec::new(),
                    });
                    offered.last_mut().expect("just pushed")
                }
            };
            if !info.tags.iter().any(|t| t.name == tag) {
                info.tags.push(TagInfo {
                    name: tag.to_owned(),
                    content: TagContent::default(),
                    // JSP's UI preselects the recommended tag of an image.
                    recommended: is_default,
                    build_status: "Unknown",
                    default: is_default,
                });
            }
        }
        offered
    }

    /// The configured default, else the first image offered, as `repository:tag`.
    pub fn default_image(&self, profiles: &ProfileSet) -> Option<String> {
        let first = || {
            let from_profiles = profiles.profiles().iter().flat_map(|p| &p.images).filter(|i| !is_glob(i));
            self.images.iter().chain(from_profiles).find_map(|r| split_reference(r))
        };
        let (repository, tag) = match &self.default {
            Some(default) => split_reference(default)?,
            None => first()?,
        };
        Some(format!("{repository}:{tag}"))
    }

    /// Why a configured reference cannot be offered, for the log at start.
    pub fn problems(&self) -> Vec<String> {
        self.images
            .iter()
            .chain(&self.default)
            .filter(|r| split_reference(r).is_none())
            .map(|r| {
                format!(
                    "launcher image `{r}` cannot be offered: JSP's spawn page splits `repository:tag` at the \
                     first colon, so the repository may hold no colon (registry port) and no digest"
                )
            })
            .collect()
    }
}

/// The size names a user may pick, in the admin's order (JSP's `GET sizes`).
pub fn size_names(profiles: &ProfileSet) -> Vec<String> {
    profiles.offered_sizes().into_iter().map(|s| s.name.clone()).collect()
}

/// One size as JSP's `GET size/{name}` gave it: the admin's entry, resources normalised.
pub fn size(profiles: &ProfileSet, name: &str) -> Option<Value> {
    profiles.find_size(name).map(size_json)
}

/// Every size in full (JSP's `GET sizes?pure_json=true`).
pub fn sizes(profiles: &ProfileSet) -> Vec<Value> {
    profiles.offered_sizes().into_iter().map(size_json).collect()
}

fn size_json(size: &Size) -> Value {
    let mut value = json!({ "name": size.name, "resources": size.resources });
    if let Some(description) = &size.description {
        value["description"] = json!(description);
    }
    value
}

/// JSP's `GET ui/config`: the profiles' `ui` section over the defaults of JSP's
/// `UIConfigModel`, section by section.
pub fn ui_config(profiles: &ProfileSet) -> Value {
    let mut config = json!({
        "gpuConfig": {"enabled": false, "type": null, "clusterGpuCount": 0,
                      "gpuCheckbox": null, "gpuDropdown": null, "gpuInput": null},
        "imageConfig": {"blacklist": [], "whitelist": [], "sort": null},
        "sizeConfig": {"enabled": true},
        "envVarConfig": {"enabled": true, "categories": null},
    });
    for (section, given) in profiles.ui() {
        match (config.get_mut(section), given) {
            (Some(Value::Object(defaults)), Value::Object(given)) => {
                defaults.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            (Some(_), Value::Null) => {}
            (_, given) => {
                config[section.as_str()] = given.clone();
            }
        }
    }
    config
}

/// What JSP's `GET user/configmap` answered: the presets, the image falling back to the
/// default, and the env (only the ConfigMap's: secret values are never read).
pub fn user_view(settings: Option<&UserSettings>, default_image: Option<&str>) -> Value {
    let presets = settings.and_then(|s| s.presets.clone()).and_then(Result::ok).unwrap_or_default();
    let env: Vec<Value> = settings
        .and_then(|s| s.envs.as_ref())
        .into_iter()
        .flatten()
        .map(|(name, value)| json!({ "name": name, "type": TEXT, "value": value }))
        .collect();
    json!({
        "gpu": presets.gpu.unwrap_or(0),
        "last_selected_image": presets.last_selected_image.as_deref().or(default_image).unwrap_or_default(),
        "last_selected_size": presets.last_selected_size.unwrap_or_default(),
        "env": env,
    })
}

const TEXT: &str = "text";
/// The size entry JSP's UI adds for "no size".
const UI_DEFAULT_SIZE: &str = "Default";
const PASSWORD: &str = "password";

/// A `POST user/configmap` body: the keys JSP's UI sends, each optional.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SettingsChange {
    /// Presets to overwrite (`gpu`, `last_selected_image`, `last_selected_size`).
    pub presets: Map<String, Value>,
    /// The whole env, replacing the saved one; `None` leaves it.
    pub env: Option<BTreeMap<String, String>>,
}

/// A refused settings change: which field, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SettingsError {
    pub field: String,
    pub message: String,
}

fn refused(field: impl Into<String>, message: impl Into<String>) -> SettingsError {
    SettingsError { field: field.into(), message: message.into() }
}

/// ConfigMap data keys: `[-._a-zA-Z0-9]+`, at most 253 characters.
fn is_configmap_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Checks a `POST user/configmap` body. Unlike JSP, which merged any key into the presets
/// (and so let a user grant themselves resources), only what the spawn page sets is taken.
pub fn parse_change(body: &Value, user: &str) -> Result<SettingsChange, SettingsError> {
    let Value::Object(fields) = body else {
        return Err(refused(
            "body",
            "the body must be a JSON object of env, gpu, last_selected_image and last_selected_size",
        ));
    };
    let mut change = SettingsChange::default();
    for (key, value) in fields {
        match key.as_str() {
            "gpu" => {
                let gpu = match value {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                let gpu = gpu.filter(|n| *n <= u64::from(u32::MAX)).ok_or_else(|| {
                    refused("gpu", format!("gpu must be a whole number of GPUs, got {value}"))
                })?;
                change.presets.insert(key.clone(), json!(gpu));
            }
            "last_selected_image" | "last_selected_size" => {
                let text = match value {
                    // JSP's UI saves its own "Default" entry (the profiles' resources) by name;
                    // JSP ignored unknown sizes, the spawn here refuses them.
                    Value::String(s) if key == "last_selected_size" && s == UI_DEFAULT_SIZE => String::new(),
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => return Err(refused(key, format!("{key} must be a string, got {other}"))),
                };
                change.presets.insert(key.clone(), json!(text));
            }
            "env" => change.env = Some(parse_env(value, user)?),
            other => {
                return Err(refused(
                    other,
                    format!(
                        "`{other}` cannot be saved: the settings are env, gpu, last_selected_image and last_selected_size"
                    ),
                ));
            }
        }
    }
    Ok(change)
}

fn parse_env(value: &Value, user: &str) -> Result<BTreeMap<String, String>, SettingsError> {
    let Value::Array(entries) = value else {
        return Err(refused("env", "env must be a list of {name, type, value}"));
    };
    let mut env = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = |name: &str| format!("env[{i}].{name}");
        let name = entry.get("name").and_then(Value::as_str).unwrap_or_default();
        if !is_configmap_key(name) {
            return Err(refused(
                field("name"),
                format!(
                    "env[{i}]: `{name}` is not a valid variable name (letters, digits, '-', '.' and '_')"
                ),
            ));
        }
        match entry.get("type").and_then(Value::as_str).unwrap_or(TEXT) {
            TEXT => {}
            PASSWORD => {
                let secret = crate::profile::envs_configmap_name(user);
                return Err(refused(
                    field("type"),
                    format!(
                        "env `{name}` is a secret (type password): this service never stores secret values. \
                         Put it in the Secret `{secret}` yourself (kubectl create secret generic {secret} \
                         --from-literal={name}=...); every key of it reaches your notebook"
                    ),
                ));
            }
            other => {
                return Err(refused(
                    field("type"),
                    format!("env `{name}`: type must be text or password, got `{other}`"),
                ));
            }
        }
        let value = match entry.get("value") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            None | Some(Value::Null) => String::new(),
            Some(other) => {
                return Err(refused(
                    field("value"),
                    format!("env `{name}`: the value must be text, got {other}"),
                ));
            }
        };
        if env.insert(name.to_owned(), value).is_some() {
            return Err(refused(field("name"), format!("env `{name}` is given twice; keep one")));
        }
    }
    Ok(env)
}

/// The presets ConfigMap's data after a change, merged over what is saved (`current`, the
/// `profile` key's text) as JSP's `save_presets` merged: saved keys stay unless changed. A
/// first save starts from JSP's defaults, except `gpu` (JSP's string `"0"` switched the
/// profiles' GPUs off; an absent gpu keeps them). Saved text that does not parse is replaced.
pub fn presets_data(current: Option<&str>, change: &SettingsChange) -> BTreeMap<String, String> {
    let saved: Option<Map<String, Value>> =
        current.and_then(|text| crate::yaml::from_str::<Map<String, Value>>(text).ok().flatten());
    let mut presets = saved.unwrap_or_else(|| {
        Map::from_iter([
            ("last_selected_image".to_owned(), json!("")),
            ("last_selected_size".to_owned(), json!("")),
        ])
    });
    presets.extend(change.presets.iter().map(|(k, v)| (k.clone(), v.clone())));
    let text = crate::yaml::to_string(&presets).expect("a JSON map is YAML");
    BTreeMap::from([(SETTINGS_KEY.to_owned(), text)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{parse_doc, parse_presets};

    fn profiles(yaml: &str) -> ProfileSet {
        ProfileSet::new([parse_doc("profiles", "profiles.yaml", yaml).unwrap()])
    }

    fn list(images: &[&str], default: Option<&str>) -> ImageList {
        ImageList { images: images.iter().map(|s| s.to_string()).collect(), default: default.map(Into::into) }
    }

    #[test]
    fn images_group_tags_by_repository_configured_first() {
        let set = profiles(
            "profiles:\n- name: a\n  images: ['quay.io/odh/ray:2.60', 'quay.io/odh/*', 'quay.io/odh/minimal:py311']\n",
        );
        let images = list(
            &["docker.io/rayproject/ray:2.60.0-py311", "quay.io/odh/ray:2.60", "quay.io/odh/ray:2.9"],
            None,
        );
        let offered = images.offered(&set);
        let names: Vec<(&str, Vec<&str>)> = offered
            .iter()
            .map(|i| (i.name.as_str(), i.tags.iter().map(|t| t.name.as_str()).collect()))
            .collect();
        assert_eq!(
            names,
            [
                ("docker.io/rayproject/ray", vec!["2.60.0-py311"]),
                ("quay.io/odh/ray", vec!["2.60", "2.9"]),
                ("quay.io/odh/minimal", vec!["py311"]),
            ]
        );
        assert_eq!(offered[1].display_name, "ray");
        assert_eq!(offered[2].order, 2);
        assert!(offered[0].tags[0].default && offered[0].tags[0].recommended);
        assert!(!offered[1].tags.iter().any(|t| t.default));
        assert_eq!(images.default_image(&set).as_deref(), Some("docker.io/rayproject/ray:2.60.0-py311"));
    }

    #[test]
    fn the_configured_default_is_marked_and_untagged_images_are_latest() {
        let set = ProfileSet::default();
        let images = list(&["busybox", "quay.io/odh/ray:2.9"], Some("quay.io/odh/ray:2.9"));
        let offered = images.offered(&set);
        assert_eq!(offered[0].tags[0].name, "latest");
        assert!(!offered[0].tags[0].default);
        assert!(offered[1].tags[0].default);
        assert_eq!(images.default_image(&set).as_deref(), Some("quay.io/odh/ray:2.9"));
        assert_eq!(ImageList::default().default_image(&set), None);
    }

    #[test]
    fn references_the_spawn_page_cannot_round_trip_are_refused_with_a_reason() {
        let images = list(&["localhost:5000/ray:1", "ray@sha256:abc", "ray:1"], None);
        assert_eq!(images.offered(&ProfileSet::default()).len(), 1);
        let problems = images.problems();
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("localhost:5000/ray:1") && problems[0].contains("first colon"));
    }

    #[test]
    fn sizes_and_ui_config_follow_jsp() {
        let set = profiles(
            "sizes:\n- name: Small\n  resources: {requests: {cpu: '1', memory: 2Gi}}\n- name: Big\n  description: lots\n  resources: {limits: {cpu: '4'}}\nui:\n  gpuConfig: {enabled: true, type: dropdown}\n  sizeConfig: null\n",
        );
        assert_eq!(size_names(&set), ["Small", "Big"]);
        assert_eq!(
            size(&set, "Small").unwrap(),
            json!({"name": "Small", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}})
        );
        assert_eq!(size(&set, "Big").unwrap()["description"], "lots");
        assert_eq!(size(&set, "Default"), None);
        assert_eq!(sizes(&set).len(), 2);
        let ui = ui_config(&set);
        assert_eq!(ui["gpuConfig"]["enabled"], json!(true));
        assert_eq!(ui["gpuConfig"]["type"], json!("dropdown"));
        assert_eq!(ui["gpuConfig"]["clusterGpuCount"], json!(0));
        assert_eq!(ui["sizeConfig"], json!({"enabled": true}));
        assert_eq!(ui["envVarConfig"], json!({"enabled": true, "categories": null}));
    }

    #[test]
    fn the_user_view_fills_jsp_defaults() {
        assert_eq!(
            user_view(None, Some("ray:1")),
            json!({"gpu": 0, "last_selected_image": "ray:1", "last_selected_size": "", "env": []})
        );
        let settings = UserSettings {
            presets: Some(parse_presets("gpu: 2\nlast_selected_image: x:2\nlast_selected_size: Small\n")),
            envs: Some(BTreeMap::from([("B".into(), "2".into()), ("A".into(), "1".into())])),
        };
        assert_eq!(
            user_view(Some(&settings), Some("ray:1")),
            json!({"gpu": 2, "last_selected_image": "x:2", "last_selected_size": "Small",
                   "env": [{"name": "A", "type": "text", "value": "1"}, {"name": "B", "type": "text", "value": "2"}]})
        );
    }

    #[test]
    fn changes_take_only_what_the_spawn_page_sets() {
        let change = parse_change(
            &json!({"gpu": 1, "last_selected_size": "Small", "env": [{"name": "A", "type": "text", "value": 3}]}),
            "alice",
        )
        .unwrap();
        assert_eq!(
            change.presets,
            Map::from_iter([("gpu".into(), json!(1)), ("last_selected_size".into(), json!("Small"))])
        );
        assert_eq!(change.env, Some(BTreeMap::from([("A".into(), "3".into())])));
        assert_eq!(parse_change(&json!({"gpu": "2"}), "a").unwrap().presets["gpu"], json!(2));
        let default = parse_change(&json!({"last_selected_size": "Default"}), "a").unwrap();
        assert_eq!(default.presets["last_selected_size"], json!(""), "the UI's Default is no size");
        assert_eq!(parse_change(&json!({}), "a").unwrap(), SettingsChange::default());

        let err = parse_change(&json!({"resources": {"limits": {"cpu": 64}}}), "a").unwrap_err();
        assert_eq!(err.field, "resources");
        assert!(parse_change(&json!({"gpu": -1}), "a").unwrap_err().message.contains("whole number"));
        assert!(parse_change(&json!([1]), "a").is_err());
        let err = parse_change(&json!({"env": [{"name": "A B", "value": "x"}]}), "a").unwrap_err();
        assert_eq!(err.field, "env[0].name");
        let err =
            parse_change(&json!({"env": [{"name": "A", "value": "x"}, {"name": "A", "value": "y"}]}), "a")
                .unwrap_err();
        assert!(err.message.contains("twice"));
    }

    #[test]
    fn secret_env_is_refused_pointing_at_the_secret_to_make() {
        let err = parse_change(
            &json!({"env": [{"name": "TOKEN", "type": "password", "value": "s3cret"}]}),
            "eje@x",
        )
        .unwrap_err();
        assert_eq!(err.field, "env[0].type");
        assert!(err.message.contains("jupyterhub-singleuser-profile-eje-40x-envs"), "{}", err.message);
        assert!(!err.message.contains("s3cret"), "the value never shows: {}", err.message);
    }

    #[test]
    fn presets_merge_over_what_is_saved() {
        let change = parse_change(&json!({"last_selected_size": "Medium"}), "a").unwrap();
        let first = presets_data(None, &change);
        let parsed = parse_presets(&first[SETTINGS_KEY]).unwrap();
        assert_eq!(parsed.last_selected_size.as_deref(), Some("Medium"));
        assert_eq!(parsed.gpu, None, "a first save keeps the profiles' GPUs");

        let saved = "gpu: '0'\nlast_selected_image: s2i:3.6\nlast_selected_size: Small\nlegacy: kept\n";
        let merged = presets_data(Some(saved), &change);
        let parsed = parse_presets(&merged[SETTINGS_KEY]).unwrap();
        assert_eq!(parsed.gpu, Some(0));
        assert_eq!(parsed.last_selected_image.as_deref(), Some("s2i:3.6"));
        assert_eq!(parsed.last_selected_size.as_deref(), Some("Medium"));
        assert!(merged[SETTINGS_KEY].contains("legacy: kept"));
        assert_eq!(presets_data(Some("a: [\n"), &change), first, "unparsable text is replaced");
    }
}
