//! What an admin writes in a profile ConfigMap, as typed values.
//!
//! Deserialisation is deliberately lenient where JSP was (YAML `null` for an omitted section,
//! numbers where Kubernetes wants strings, unknown keys inside a profile) so that existing ODH
//! files load unchanged; the checks that make sense for a linter live in `file.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use indexmap::IndexMap;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    #[serde(default, deserialize_with = "labels")]
    pub labels: BTreeMap<String, String>,
    /// `ENV_NAME: <jsonpath-rw path on the applied object>`, in the order written (the
    /// notebook's environment keeps it), parsed when the ConfigMap loads.
    #[serde(
        rename = "return",
        default,
        deserialize_with = "returns",
        skip_serializing_if = "IndexMap::is_empty"
    )]
    pub returns: IndexMap<String, JsonPath>,
    /// Extension: environment values rendered as templates (unrendered here), in written order.
    #[serde(default, deserialize_with = "service_env")]
    pub env: IndexMap<String, String>,
    /// Extension: typed choices the user may make, validated before rendering.
    #[serde(default, deserialize_with = "service_options")]
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

/// Errors raised by the field deserialisers below start with the field's path relative to the
/// mapping that holds it (`users: ...`, `env[2]: ...`): serde_yaml reports such errors at that
/// mapping, and `file.rs` joins the two paths.
pub(super) fn invalid<E: de::Error>(field: impl fmt::Display, message: impl fmt::Display) -> E {
    E::custom(format!("{field}: {message}"))
}

/// A key written with no value (`users:`) is YAML null; JSP treated it as absent.
pub(super) fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn images<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    names(deserializer, "images")
}

fn users<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    names(deserializer, "users")
}

fn groups<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    names(deserializer, "groups")
}

/// A list of names; a single name counts as a one-element list (for `images: foo:1` JSP would
/// have done a substring test).
fn names<'de, D: Deserializer<'de>>(deserializer: D, field: &str) -> Result<Vec<String>, D::Error> {
    let expected = |got: &Value| invalid(field, format!("expected a name or a list of names, got {got}"));
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
        Some(raw) => jsp_gpu(&raw).map_err(|e| invalid("gpu", e)),
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
            Err(invalid("wait", format!("expected true, false or {{timeout_seconds: N}}, got {other}")))
        }
    }
}

fn labels<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    string_map(deserializer, "labels")
}

fn returns<'de, D: Deserializer<'de>>(deserializer: D) -> Result<IndexMap<String, JsonPath>, D::Error> {
    let paths: IndexMap<String, String> = string_map(deserializer, "return")?;
    paths
        .into_iter()
        .map(|(env, path)| match JsonPath::parse(&path) {
            Ok(parsed) => Ok((env, parsed)),
            Err(e) => Err(invalid(
                format!("return.{env}"),
                format!("`{path}` is not a jsonpath-rw path (JSP's dialect, e.g. metadata.labels[key] or spec.containers[0].image): {e}"),
            )),
        })
        .collect()
}

fn service_env<'de, D: Deserializer<'de>>(deserializer: D) -> Result<IndexMap<String, String>, D::Error> {
    string_map(deserializer, "env")
}

/// Label values, JSONPaths and env templates are strings, but YAML readily types `1` or `true`.
fn string_map<'de, D: Deserializer<'de>, M: FromIterator<(String, String)>>(
    deserializer: D,
    field: &str,
) -> Result<M, D::Error> {
    let raw: IndexMap<String, Value> = nullable(deserializer)?;
    raw.into_iter()
        .map(|(key, value)| match scalar_string(&value) {
            Some(text) => Ok((key, text)),
            None => Err(invalid(format!("{field}.{key}"), format!("expected a string, got {value}"))),
        })
        .collect()
}

fn service_options<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, OptionSpec>, D::Error> {
    // Through `Value`, so that an error names the option (serde_yaml would stop at `options`).
    let raw: BTreeMap<String, Value> = nullable(deserializer)?;
    raw.into_iter()
        .map(|(name, spec)| match OptionSpec::deserialize(spec) {
            Ok(spec) => Ok((name, spec)),
            Err(e) => Err(invalid(format!("options.{name}"), e)),
        })
        .collect()
}

fn size_resources<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Resources, D::Error> {
    let spec: Option<ResourceSpec> = Option::deserialize(deserializer)?;
    Ok(spec.map(|s| s.normalised().into_resources()).unwrap_or_default())
}

/// Env as a list of `EnvVar` or the legacy `{NAME: value}` map; values become strings because
/// Kubernetes only accepts strings (JSP got them from the Python client's coercion).
fn env_vars<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Value>, D::Error> {
    // serde_yaml's mapping keeps the admin's order of a legacy map (a JSON map would sort it).
    let Some(raw) = Option::<serde_yaml::Value>::deserialize(deserializer)? else {
        return Ok(Vec::new());
    };
    let json = |v: &serde_yaml::Value| serde_json::to_value(v).map_err(|e| invalid("env", e));
    match &raw {
        serde_yaml::Value::Mapping(legacy) => legacy
            .iter()
            .map(|(name, value)| {
                let name = scalar_string(&json(name)?).unwrap_or_default();
                let value = json(value)?;
                let text = env_value(&value).ok_or_else(|| {
                    invalid(format!("env.{name}"), format!("expected a string, got {value}"))
                })?;
                Ok(serde_json::json!({ "name": name, "value": text }))
            })
            .collect(),
        serde_yaml::Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                env_list_item(json(item)?).map_err(|message| invalid(format!("env[{i}]"), message))
            })
            .collect(),
        other => Err(invalid(
            "env",
            format!(
                "expected a list of {{name, value}} or {{name, valueFrom}} entries, or a NAME: value map, got {}",
                json(other)?
            ),
        )),
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

/// A YAML scalar as the text the admin wrote (`80` → "80", `true` → "true").
pub(super) fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
