//! Extension: typed user options declared on a service, validated before anything renders.
//!
//! `workers: {type: integer, default: 1, min: 0, max: 4, description: "Ray workers"}`.
//! Values arrive as JSON from the REST API or as strings from the CLI (`--option workers=3`),
//! so strings are parsed for integer and boolean options.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::de::scalar_string;

/// The declaration of one option. Unknown keys are rejected here (unlike in profiles): options
/// are new, so there is no old file to stay compatible with, and a misspelt `maximum` would
/// otherwise silently allow any value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum OptionSpec {
    Integer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    String {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<String>,
        /// A glob pattern (the `glob` crate's syntax: `*`, `?`, `[a-z]`) the whole value must
        /// match; globs rather than regexes keep the dependency list short and suffice for
        /// names and tags.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pattern: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    Enum {
        #[serde(deserialize_with = "enum_values")]
        values: Vec<String>,
        #[serde(default, deserialize_with = "enum_default", skip_serializing_if = "Option::is_none")]
        default: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    Boolean {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
}

impl OptionSpec {
    /// The value used when the user gives none, if the admin declared one.
    pub fn default_value(&self) -> Option<Value> {
        match self {
            OptionSpec::Integer { default, .. } => default.map(Value::from),
            OptionSpec::String { default, .. } | OptionSpec::Enum { default, .. } => {
                default.clone().map(Value::from)
            }
            OptionSpec::Boolean { default, .. } => default.map(Value::from),
        }
    }

    /// The user's value, typed, or a message naming what is allowed. `name` is only used in the
    /// message (`options.workers must be between 0 and 4, got 9`).
    pub fn validate(&self, name: &str, value: &Value) -> Result<Value, String> {
        match self {
            OptionSpec::Integer { min, max, .. } => {
                let n = integer(value)
                    .ok_or_else(|| format!("options.{name} must be an integer, got {value}"))?;
                if min.is_some_and(|min| n < min) || max.is_some_and(|max| n > max) {
                    return Err(format!("options.{name} must be {}, got {n}", bounds(*min, *max)));
                }
                Ok(Value::from(n))
            }
            OptionSpec::String { pattern, .. } => {
                let Value::String(s) = value else {
                    return Err(format!("options.{name} must be a string, got {value}"));
                };
                if let Some(pattern) = pattern {
                    let matches = glob::Pattern::new(pattern).is_ok_and(|p| p.matches(s));
                    if !matches {
                        return Err(format!("options.{name} must match the pattern {pattern:?}, got {s:?}"));
                    }
                }
                Ok(value.clone())
            }
            OptionSpec::Enum { values, .. } => {
                // Enum values are strings in YAML; `2` from JSON means "2".
                let given = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => String::new(),
                };
                if values.contains(&given) {
                    Ok(Value::String(given))
                } else {
                    Err(format!("options.{name} must be one of {}, got {value}", values.join(", ")))
                }
            }
            OptionSpec::Boolean { .. } => match value {
                Value::Bool(b) => Ok(Value::Bool(*b)),
                Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
                Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
                _ => Err(format!("options.{name} must be true or false, got {value}")),
            },
        }
    }

    /// What is inconsistent in the declaration itself, for the ConfigMap linter.
    pub fn problem(&self) -> Option<String> {
        match self {
            OptionSpec::Integer { default, min, max, .. } => {
                if let (Some(min), Some(max)) = (min, max)
                    && min > max
                {
                    return Some(format!("min {min} is greater than max {max}"));
                }
                let outside = |d: i64| min.is_some_and(|m| d < m) || max.is_some_and(|m| d > m);
                default.filter(|&d| outside(d)).map(|d| format!("default {d} is not {}", bounds(*min, *max)))
            }
            OptionSpec::String { default, pattern, .. } => {
                let pattern = pattern.as_deref()?;
                let compiled = match glob::Pattern::new(pattern) {
                    Ok(p) => p,
                    Err(e) => return Some(format!("pattern {pattern:?} is not a valid glob: {e}")),
                };
                default
                    .as_deref()
                    .filter(|d| !compiled.matches(d))
                    .map(|d| format!("default {d:?} does not match the pattern {pattern:?}"))
            }
            OptionSpec::Enum { values, default, .. } => {
                if values.is_empty() {
                    return Some("an enum needs a non-empty `values` list".to_string());
                }
                default
                    .as_ref()
                    .filter(|d| !values.contains(d))
                    .map(|d| format!("default {d:?} is not one of the values {}", values.join(", ")))
            }
            OptionSpec::Boolean { .. } => None,
        }
    }
}

/// `values: [1, 2, 4]` is as natural in YAML as `values: ["1", "2", "4"]`.
fn enum_values<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Vec::<Value>::deserialize(deserializer)?
        .iter()
        .map(|v| {
            scalar_string(v).ok_or_else(|| de::Error::custom(format!("enum values must be strings, got {v}")))
        })
        .collect()
}

fn enum_default<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(v) => scalar_string(&v)
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("an enum default must be a string, got {v}"))),
    }
}

/// JSON integers, and strings holding one (from the CLI or an HTML form).
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn bounds(min: Option<i64>, max: Option<i64>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!("between {min} and {max}"),
        (Some(min), None) => format!("at least {min}"),
        (None, Some(max)) => format!("at most {max}"),
        (None, None) => "an integer".to_string(),
    }
}
