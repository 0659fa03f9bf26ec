//! Single-user profiles: the admin's ConfigMap documents, and the profile they give a user.
//!
//! Pure domain logic (no Kubernetes types, no I/O), compatible with ODH's
//! jupyterhub-singleuser-profiles ("JSP"):
//! - [`parse_doc`] reads one ConfigMap key into a [`ProfileDoc`], or says which line and field
//!   to fix.
//! - [`ProfileSet`] concatenates the documents in load order and [`ProfileSet::resolve`]s a
//!   user's [`Choice`]: every matching profile folded in list order by JSP's merge rules, the
//!   chosen size last, typed options validated.
//!
//! Extensions beyond JSP, which JSP files never trip over: `slug`/`default` (profiles the user
//! picks), `description`, `groups`, glob patterns in `images`, typed service `options`,
//! templated service `env`, `wait`, `idle_timeout` and `default_mount_path`.
//!
//! Deliberate differences from JSP, each because JSP's behaviour was an accident (the README's
//! "Compatibility with JSP 0.7.0" lists them all, measured by tests/jsp):
//! - an empty user name matches only profiles open to everyone (JSP matched all);
//! - env keeps one entry per name, the later definition in the earlier position (JSP appended;
//!   the container saw the same value);
//! - an unknown size is an error (JSP silently ignored it);
//! - a user's own settings give only their GPU count, size, image and env (JSP merged any key);
//! - a profile without resources after one without resources is no error (JSP raised).

mod de;
mod file;
mod kubespawner;
mod matching;
mod merge;
mod model;
mod options;
mod resources;
mod set;
mod user_settings;
mod volumes;

pub use file::{PROFILES_KEY, ProfileDoc, ProfileFileError, parse_doc, unknown_keys};
pub use kubespawner::kubespawner_resources;
pub use matching::Requester;
pub use merge::Resolved;
pub use model::{DEFAULT_WAIT, Profile, Service, Size, TemplateRef, Wait, WaitTimeout};
pub use options::OptionSpec;
pub use resources::{GPU_RESOURCE, Quantities, ResourceSpec, Resources, quantity_value};
pub use set::{Choice, ProfileChoice, ProfileSet, ResolveError};
pub use user_settings::{
    ENVS_SUFFIX, Presets, SETTINGS_KEY, SETTINGS_PREFIX, SettingsPart, UserSettings, envs_configmap_name,
    parse_presets, settings_configmap_name, settings_owner,
};
pub use volumes::{DEFAULT_MOUNT_PATH, PodVolumes, VolumeError, pod_volumes};

#[cfg(test)]
mod tests;
