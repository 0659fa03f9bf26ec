//! Saving a user's own settings, as JSP's spawn page did: the ConfigMaps
//! `jupyterhub-singleuser-profile-<escaped user>` (key `profile`) and `...-envs`, written by
//! server-side apply in the service's namespace, where the ConfigMap watch picks them up for the
//! spawn. The dry run keeps them in memory, in its fixed snapshot, so its spawns see them too.
//! The user's secret env (the Secret `...-envs`) is never written: see [`crate::launcher`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

use crate::catalog::ConfigMapSource;
use crate::catalog::watch::Snapshot;
use crate::cluster::FIELD_MANAGER;
use crate::launcher::{SettingsChange, presets_data};
use crate::profile::{
    SETTINGS_KEY, UserSettings, envs_configmap_name, parse_presets, settings_configmap_name,
};

/// JSP's label on the ConfigMaps it wrote; kept so JSP-era tooling still finds them. Not this
/// service's managed-by label: the ConfigMap watch skips what carries that.
const JSP_LABELS: [(&str, &str); 1] = [("app", "jupyterhub")];

/// Where settings are saved.
pub enum SettingsStore {
    /// The cluster: the service's namespace (boxed: the largest variant by far).
    Cluster(Box<Api<ConfigMap>>),
    /// The dry run: in memory, and into the fixed snapshot the dry run serves.
    Memory { snapshot: watch::Sender<Snapshot>, saved: Mutex<HashMap<String, BTreeMap<String, String>>> },
    /// A snapshot someone else drives (tests): nothing can be saved.
    ReadOnly,
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("this service instance serves a fixed snapshot and cannot save settings")]
    ReadOnly,
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl SettingsStore {
    pub fn memory(snapshot: watch::Sender<Snapshot>) -> Self {
        SettingsStore::Memory { snapshot, saved: Mutex::default() }
    }

    /// Writes `change` for `user` (the presets merged over the saved ones, the env replaced)
    /// and answers the settings now saved; `before` are those the snapshot holds.
    pub async fn save(
        &self,
        user: &str,
        before: Option<&UserSettings>,
        change: &SettingsChange,
    ) -> Result<UserSettings, SaveError> {
        let mut after = before.cloned().unwrap_or_default();
        let presets_name = settings_configmap_name(user);
        let envs_name = envs_configmap_name(user);
        match self {
            SettingsStore::ReadOnly => return Err(SaveError::ReadOnly),
            SettingsStore::Cluster(api) => {
                if !change.presets.is_empty() {
                    let data = merge_presets(api, &presets_name, change).await?;
                    after.presets = Some(parse_presets(&data[SETTINGS_KEY]));
                }
                if let Some(env) = &change.env {
                    apply(api, &envs_name, env, None).await?;
                    after.envs = Some(env.clone());
                }
            }
            SettingsStore::Memory { snapshot, saved } => {
                let mut written = Vec::new();
                {
                    let mut saved = saved.lock().expect("settings lock");
                    if !change.presets.is_empty() {
                        let text = saved.get(&presets_name).and_then(|d| d.get(SETTINGS_KEY));
                        let data = presets_data(text.map(String::as_str), change);
                        after.presets = Some(parse_presets(&data[SETTINGS_KEY]));
                        saved.insert(presets_name.clone(), data.clone());
                        written.push((presets_name, data));
                    }
                    if let Some(env) = &change.env {
                        after.envs = Some(env.clone());
                        saved.insert(envs_name.clone(), env.clone());
                        written.push((envs_name, env.clone()));
                    }
                }
                snapshot.send_modify(|s| {
                    let users = Arc::make_mut(&mut s.users);
                    for (name, data) in written {
                        users.apply(&ConfigMapSource { name, labels: BTreeMap::new(), data });
                    }
                });
            }
        }
        if let Some(Err(message)) = &after.presets {
            // presets_data only writes what parse_presets reads back; a failure here is ours.
            tracing::error!(user, %message, "saved presets do not parse");
        }
        Ok(after)
    }
}

/// How often a presets merge is redone after another save landed between its read and its write.
const MERGE_ATTEMPTS: usize = 10;

/// Merges `change` over the presets saved in `name` and writes them, answering what was written.
/// Read fresh, not from the watch, and written only over the version read: the page saves one
/// field per call without waiting for the one before, and each must merge over the others.
async fn merge_presets(
    api: &Api<ConfigMap>,
    name: &str,
    change: &SettingsChange,
) -> Result<BTreeMap<String, String>, kube::Error> {
    let mut attempt = 1;
    loop {
        let current = api.get_opt(name).await?;
        let text = current.as_ref().and_then(|cm| cm.data.as_ref()?.get(SETTINGS_KEY));
        let data = presets_data(text.map(String::as_str), change);
        let written = match current.as_ref() {
            // Created, not applied: two first saves must not both succeed over each other.
            None => {
                let params =
                    PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
                let object = serde_json::from_value(configmap(name, &data, None)).expect("a ConfigMap");
                api.create(&params, &object).await.map(drop)
            }
            Some(cm) => apply(api, name, &data, cm.metadata.resource_version.as_deref()).await,
        };
        match written {
            // 409: created meanwhile, or changed since the read (the resourceVersion precondition).
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < MERGE_ATTEMPTS => attempt += 1,
            written => return written.map(|()| data),
        }
    }
}

/// A ConfigMap with JSP's labels; with `version`, the write fails unless it is still the stored one.
fn configmap(name: &str, data: &BTreeMap<String, String>, version: Option<&str>) -> serde_json::Value {
    let labels: BTreeMap<&str, &str> = JSP_LABELS.into_iter().collect();
    let mut metadata = json!({ "name": name, "labels": labels });
    if let Some(version) = version {
        metadata["resourceVersion"] = json!(version);
    }
    json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data })
}

/// Writes `data` into `name` by server-side apply; with `version`, only over that version.
async fn apply(
    api: &Api<ConfigMap>,
    name: &str,
    data: &BTreeMap<String, String>,
    version: Option<&str>,
) -> Result<(), kube::Error> {
    let object = configmap(name, data, version);
    // Forced: a ConfigMap JSP itself wrote (with update, another field manager) is taken over.
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object)).await?;
    Ok(())
}
