//! What an admin writes in a profile ConfigMap, as typed values.
//!
//! Deserialisation is deliberately lenient where JSP was (YAML `null` for an omitted section,
//! numbers where Kubernetes wants strings, unknown keys inside a profile) so that existing ODH
//! files load unchanged; the checks that make sense for a linter live in `file.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use indexmap::IndexMap;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::de::{nullable, scalar_map, scalar_string};
use super::options::OptionSpec;
use super::resources::{ResourceSpec, Resources};
use crate::jsonpath_rw::JsonPath;

/// How long `wait: true` waits for the cluster when no timeout is given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// One entry of `profiles`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, deserialize_with = "nullable")]
    pub name: Option<String>,
    /// Extension: a profile with a slug is something the user picks; without one it always
    /// applies when it matches (JSP behaviour).
    #[serde(default, deserialize_with = "nullable")]
    pub slug: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub description: Option<String>,
    /// Extension: the slugged profile chosen when the user names none.
    #[serde(default, deserialize_with = "nullable")]
    pub default: bool,
    /// Exact image references, or (extension) glob patterns such as `ray-ml-notebook:*`.
    #[serde(default, deserialize_with = "images")]
    pub images: Vec<String>,
    #[serde(default, deserialize_with = "users")]
    pub users: Vec<String>,
    /// Extension: JupyterHub groups whose members match.
    #[serde(default, deserialize_with = "groups")]
    pub groups: Vec<String>,
    /// Kubernetes `EnvVar` objects; the legacy `{NAME: value}` map is converted on load.
    #[serde(default, deserialize_with = "env_vars")]
    pub env: Vec<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub resources: Option<ResourceSpec>,
    /// Extension: the largest requests/limits a notebook of this profile may have, e.g.
    /// `{cpu: 4, memory: 16Gi}`; a bigger size is refused.
    #[serde(default, deserialize_with = "super::resources::max_resources")]
    pub max_resources: super::Quantities,
    #[serde(default, deserialize_with = "nullable")]
    pub node_tolerations: Vec<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub node_affinity: Map<String, Value>,
    /// The GPU count this profile sets; `None` keeps the earlier profiles' (JSP's truthiness:
    /// `gpu: 0` keeps it, `gpu: "0"` sets none).
    #[serde(default, deserialize_with = "gpu_count")]
    pub gpu: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    pub volumes: Vec<Value>,
    /// Extension: where relative and unset volume `mountPath`s are mounted (JSP: the hub's
    /// `DEFAULT_MOUNT_PATH`, `/opt/app-root/src` in ODH); the notebook image's working directory.
    #[serde(default, deserialize_with = "nullable")]
    pub default_mount_path: Option<String>,
    /// In the order written: JSP renders services (and so evaluates `return`) in that order.
    #[serde(default, deserialize_with = "nullable")]
    pub services: IndexMap<String, Service>,
    #[serde(default, deserialize_with = "wait")]
    pub wait: Option<Wait>,
    /// Seconds of notebook inactivity after which the notebook (and its cluster) is culled.
    #[serde(default, deserialize_with = "nullable")]
    pub idle_timeout: Option<u64>,
}

impl Profile {
    /// How the profile is named in answers and messages: its name, else its slug.
    pub fn label(&self) -> Option<&str> {
        self.name.as_deref().filter(|n| !n.is_empty()).or(self.slug.as_deref())
    }
}

/// One entry of `sizes`: resources the user may pick on top of the profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Size {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Normalised like JSP's `Sizes._parse`: one side copies to the other, legacy keys expand.
    #[serde(default, deserialize_with = "size_resources")]
    pub resources: Resources,
}

/// A JSP service: templates to render next to the notebook, and what they give back.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Service {
    #[serde(default, deserialize_with = "nullable")]
    pub resources: Vec<TemplateRef>,
    /// Template variables, exposed at the top level of the template context (JSP).
    #[serde(default, deserialize_with = "nullable")]
    pub configuration: Map<String, Value>,
    #[serde(default, deserialize_with = "scalar_map")]
    pub labels: BTreeMap<String, String>,
    /// `ENV_NAME: <jsonpath-rw path on the applied object>`, in the order written (the
    /// notebook's environment keeps it), parsed when the ConfigMap loads.
    #[serde(rename = "return", default, deserialize_with = "nullable")]
    pub returns: IndexMap<String, JsonPath>,
    /// Extension: environment values rendered as templates (unrendered here), in written order.
    #[serde(default, deserialize_with = "scalar_map")]
    pub env: IndexMap<String, String>,
    /// Extension: typed choices the user may make, validated before rendering.
    #[serde(default, deserialize_with = "nullable")]
    pub options: BTreeMap<String, OptionSpec>,
}

/// Where a service template lives: a ConfigMap and one of its data keys.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TemplateRef {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub path: String,
}

/// `wait: true`, `wait: false` or `wait: {timeout_seconds: N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Wait {
    Enabled(bool),
    Timeout(WaitTimeout),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WaitTimeout {
    pub timeout_seconds: u64,
}

impl Wait {
    /// The bounded wait this setting asks for; `None` means start without waiting.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Wait::Enabled(true) => Some(DEFAULT_WAIT),
            Wait::Enabled(false) => None,
            Wait::Timeout(t) => Some(Duration::from_secs(t.timeout_seconds)),
        }
    }
}

fn images<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    names(deserializer)
}

fn users<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    names(deserializer)
}

fn groups<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    names(deserializer)
}

/// A list of names; a single name counts as a one-element list (for `images: foo:1` JSP would
/// have done a substring test).
fn names<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let expected = |got: &Value| de::Error::custom(format!("expected a name or a list of names, got {got}"));
    match Option::<Value>::deserialize(deserializer)? {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            items.iter().map(|item| scalar_string(item).ok_or_else(|| expected(item))).collect()
        }
        Some(one) => scalar_string(&one).map(|name| vec![name]).ok_or_else(|| expected(&one)),
    }
}

/// `gpu: 2` or JSP's string form `gpu: "2"`, as JSP's override (see [`jsp_gpu`]).
fn gpu_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(raw) => jsp_gpu(&raw).map_err(de::Error::custom),
    }
}

/// JSP's `gpu` rule: a profile (or the user's settings) sets the GPU count when its value is
/// truthy in Python (`if profile2.get("gpu")`), to `int(value)`; so `0`, `""` and null keep
/// the earlier count, while the string `"0"` sets it to none. Negative counts are none.
pub(super) fn jsp_gpu(raw: &Value) -> Result<Option<u32>, String> {
    let clamp = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    let expected = || format!("expected a whole number of GPUs, got {raw}");
    match raw {
        Value::Null | Value::Bool(false) => Ok(None),
        Value::Bool(true) => Ok(Some(1)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(0), _) => Ok(None),
            (Some(n), _) => Ok(Some(clamp(n))),
            (None, Some(0.0)) => Ok(None),
            // Python's int() truncates.
            (None, Some(f)) if f.is_finite() => Ok(Some(clamp(f.trunc() as i64))),
            _ => Err(expected()),
        },
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => {
            s.trim().replace('_', "").parse::<i64>().map(|n| Some(clamp(n))).map_err(|_| expected())
        }
        Value::Array(a) if a.is_empty() => Ok(None),
        Value::Object(o) if o.is_empty() => Ok(None),
        _ => Err(expected()),
    }
}

fn wait<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Wait>, D::Error> {
    let timeout = |fields: &Map<String, Value>| match fields.get("timeout_seconds")?.as_u64() {
        Some(seconds) if fields.len() == 1 => Some(Wait::Timeout(WaitTimeout { timeout_seconds: seconds })),
        _ => None,
    };
    match Option::<Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Value::Bool(enabled)) => Ok(Some(Wait::Enabled(enabled))),
        Some(Value::Object(fields)) if timeout(&fields).is_some() => Ok(timeout(&fields)),
        Some(other) => {
            Err(de::Error::custom(format!("expected true, false or {{timeout_seconds: N}}, got {other}")))
        }
    }
}

fn size_resources<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Resources, D::Error> {
    let spec: Option<ResourceSpec> = Option::deserialize(deserializer)?;
    Ok(spec.map(|s| s.normalised().into_resources()).unwrap_or_default())
}

/// Env as a list of `EnvVar` or the legacy `{NAME: value}` map (kept in the admin's order);
/// values become strings because Kubernetes only accepts strings (JSP got the same from the
/// Python client's coercion).
fn env_vars<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Value>, D::Error> {
    struct EnvVisitor;

    impl<'de> Visitor<'de> for EnvVisitor {
        type Value = Vec<Value>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of {name, value} or {name, valueFrom} entries, or a NAME: value map")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(self)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut vars = Vec::new();
            while let Some(EnvListItem(var)) = seq.next_element()? {
                vars.push(var);
            }
            Ok(vars)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut vars = Vec::new();
            while let Some(name) = map.next_key::<ScalarKey>()? {
                let EnvText(text) = map.next_value()?;
                vars.push(serde_json::json!({ "name": name.0, "value": text }));
            }
            Ok(vars)
        }
    }

    deserializer.deserialize_option(EnvVisitor)
}

/// A legacy env map's key: the variable name, as written.
struct ScalarKey(String);

impl<'de> Deserialize<'de> for ScalarKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(ScalarKey(scalar_string(&value).unwrap_or_default()))
    }
}

/// A legacy env map's value: a string, or nothing (the empty string).
struct EnvText(String);

impl<'de> Deserialize<'de> for EnvText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        env_value(&value)
            .map(EnvText)
            .ok_or_else(|| de::Error::custom(format!("expected a string, got {value}")))
    }
}

/// One `EnvVar` of an env list, checked and with its `value` made a string.
struct EnvListItem(Value);

impl<'de> Deserialize<'de> for EnvListItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        env_list_item(Value::deserialize(deserializer)?).map(EnvListItem).map_err(de::Error::custom)
    }
}

fn env_list_item(item: Value) -> Result<Value, String> {
    let Value::Object(mut var) = item else {
        return Err(format!("expected a {{name, value}} mapping, got {item}"));
    };
    match var.get("name") {
        Some(Value::String(name)) if !name.is_empty() => {}
        _ => return Err("an environment variable needs a `name`".to_string()),
    }
    if let Some(value) = var.get_mut("value") {
        let text = env_value(value).ok_or_else(|| format!("`value` must be a string, got {value}"))?;
        *value = Value::String(text);
    }
    Ok(Value::Object(var))
}

/// An env value as Kubernetes wants it: a string, as JSP's Kubernetes client made it with
/// Python's `str()` (`true` is `True`); a missing value is the empty string.
fn env_value(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Some(crate::python::str(value)),
        Value::Array(_) | Value::Object(_) => None,
    }
}
