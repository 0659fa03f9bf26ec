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
//! templated service `env`, `wait` and `idle_timeout`.
//!
//! Deliberate differences from JSP, each because JSP's behaviour was an accident:
//! - an empty user name matches only profiles open to everyone (JSP matched all);
//! - env keeps one entry per name, the later definition in the earlier position (JSP appended);
//! - an unknown size is an error (JSP silently ignored it) and sizes match case-insensitively;
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

pub use file::{PROFILES_KEY, ProfileDoc, ProfileFileError, parse_doc};
pub use kubespawner::kubespawner_resources;
pub use matching::Requester;
pub use merge::Resolved;
pub use model::{DEFAULT_WAIT, Profile, Service, Size, TemplateRef, Wait, WaitTimeout};
pub use options::OptionSpec;
pub use resources::{GPU_RESOURCE, Quantities, ResourceSpec, Resources, quantity_value};
pub use set::{Choice, ProfileChoice, ProfileSet, ResolveError};

#[cfg(test)]
mod tests;
