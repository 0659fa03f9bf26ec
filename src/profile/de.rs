//! Deserialisation helpers shared by the profile model, options and resources. Errors are
//! raised where serde stands, so the YAML layer reports the exact field path
//! (`profiles[0].resources.limits.cpu`) and line without any parsing of message text.

use indexmap::IndexMap;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A key written with no value (`users:`) is YAML null; JSP treated it as absent.
pub(super) fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
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

/// A string where YAML readily types `1` or `true` (label values, JSONPaths, env templates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub(super) struct ScalarText(pub String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        scalar_string(&value)
            .map(ScalarText)
            .ok_or_else(|| de::Error::custom(format!("expected a string, got {value}")))
    }
}

/// A map of [`ScalarText`], in the order written; no value at all is an empty map.
pub(super) fn scalar_map<'de, D, M>(deserializer: D) -> Result<M, D::Error>
where
    D: Deserializer<'de>,
    M: FromIterator<(String, String)>,
{
    let raw: IndexMap<String, ScalarText> = nullable(deserializer)?;
    Ok(raw.into_iter().map(|(key, ScalarText(text))| (key, text)).collect())
}

/// A Kubernetes quantity as written: numbers are fine in YAML (`cpu: 1`) and become the string
/// Kubernetes expects; whether it is a valid quantity is checked later, with its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct QuantityText(pub String);

impl<'de> Deserialize<'de> for QuantityText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            value @ (Value::String(_) | Value::Number(_)) => {
                Ok(QuantityText(scalar_string(&value).unwrap_or_default()))
            }
            other => Err(de::Error::custom(format!("expected a quantity such as 500m or 2Gi, got {other}"))),
        }
    }
}
