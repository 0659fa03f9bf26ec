//! Container resources: JSP's shape and normalisation, and Kubernetes quantities.

use std::collections::BTreeMap;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};

use super::de::QuantityText;

/// Resource name → Kubernetes quantity, e.g. `cpu: 500m`.
pub type Quantities = BTreeMap<String, String>;

/// The extended resource JSP sets from `gpu`.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Normalised requests and limits, quantities as strings ("500m", "2Gi").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Resources {
    pub requests: Quantities,
    pub limits: Quantities,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.limits.is_empty()
    }
}

/// `resources` as written: Kubernetes requests/limits, or JSP's legacy `mem_limit`/`cpu_limit`.
///
/// `None` means the key was absent, which matters: JSP merges `resources` shallowly, so a later
/// profile's `requests` replaces the whole earlier `requests` map, while an absent side is kept.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResourceSpec {
    #[serde(default, deserialize_with = "quantities", skip_serializing_if = "Option::is_none")]
    pub requests: Option<Quantities>,
    #[serde(default, deserialize_with = "quantities", skip_serializing_if = "Option::is_none")]
    pub limits: Option<Quantities>,
    #[serde(default, deserialize_with = "mem_limit", skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<String>,
    #[serde(default, deserialize_with = "cpu_limit", skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<String>,
}

impl ResourceSpec {
    /// JSP's `parse_resources`: the legacy keys win and set requests and limits alike; with
    /// nothing on either side there are no resources at all; a missing side copies the other.
    pub fn normalised(self) -> ResourceSpec {
        if self.mem_limit.is_some() || self.cpu_limit.is_some() {
            let legacy: Quantities = [("memory", self.mem_limit), ("cpu", self.cpu_limit)]
                .into_iter()
                .filter_map(|(name, q)| Some((name.to_string(), q?)))
                .collect();
            return ResourceSpec {
                requests: Some(legacy.clone()),
                limits: Some(legacy),
                ..ResourceSpec::default()
            };
        }
        let blank = |q: &Option<Quantities>| q.as_ref().is_none_or(BTreeMap::is_empty);
        if blank(&self.requests) && blank(&self.limits) {
            return ResourceSpec::default();
        }
        let (requests, limits) = match (self.requests, self.limits) {
            (Some(requests), None) => (Some(requests.clone()), Some(requests)),
            (None, Some(limits)) => (Some(limits.clone()), Some(limits)),
            both => both,
        };
        ResourceSpec { requests, limits, ..ResourceSpec::default() }
    }

    /// One JSP merge step: keys present in `later` replace ours wholesale, then normalise.
    pub fn merged_with(self, later: &ResourceSpec) -> ResourceSpec {
        ResourceSpec {
            requests: later.requests.clone().or(self.requests),
            limits: later.limits.clone().or(self.limits),
            mem_limit: later.mem_limit.clone().or(self.mem_limit),
            cpu_limit: later.cpu_limit.clone().or(self.cpu_limit),
        }
        .normalised()
    }

    /// Every quantity with its field path below `resources`, for validation.
    pub fn quantities(&self) -> impl Iterator<Item = (String, &str)> {
        let sides = [("requests", &self.requests), ("limits", &self.limits)];
        let maps = sides.into_iter().flat_map(|(side, q)| {
            q.iter().flatten().map(move |(name, v)| (format!("{side}.{name}"), v.as_str()))
        });
        let legacy = [("mem_limit", &self.mem_limit), ("cpu_limit", &self.cpu_limit)]
            .into_iter()
            .filter_map(|(key, q)| Some((key.to_string(), q.as_deref()?)));
        maps.chain(legacy)
    }

    pub fn into_resources(self) -> Resources {
        Resources { requests: self.requests.unwrap_or_default(), limits: self.limits.unwrap_or_default() }
    }
}

impl From<&Resources> for ResourceSpec {
    fn from(r: &Resources) -> Self {
        ResourceSpec {
            requests: Some(r.requests.clone()),
            limits: Some(r.limits.clone()),
            ..ResourceSpec::default()
        }
    }
}

/// The value of a Kubernetes quantity in base units (cores, bytes), or why it is not one.
///
/// Accepts what the API server accepts: a decimal number with an optional binary suffix
/// (Ki…Ei), decimal suffix (n, u, m, k, M…E) or exponent (`1e3`).
pub fn quantity_value(text: &str) -> Result<f64, String> {
    let invalid = || format!("{text:?} is not a Kubernetes quantity (for example 500m, 2, 1Gi)");
    let digits_end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '+' || c == '-'))))
        .map_or(text.len(), |(i, _)| i);
    let (number, suffix) = text.split_at(digits_end);
    let unsigned = number.trim_start_matches(['+', '-']);
    if !unsigned.chars().any(|c| c.is_ascii_digit()) || unsigned.matches('.').count() > 1 {
        return Err(invalid());
    }
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let scale = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..].parse().map_err(|_| invalid())?;
            10f64.powi(power)
        }
        _ => return Err(invalid()),
    };
    Ok(number * scale)
}

/// `max_resources` (extension): the most a notebook of this profile may ask for.
pub(super) fn max_resources<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Quantities, D::Error> {
    Ok(quantities(deserializer)?.unwrap_or_default())
}

fn mem_limit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<QuantityText>::deserialize(deserializer)?.map(|q| q.0))
}

fn cpu_limit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<QuantityText>::deserialize(deserializer)?.map(|q| q.0))
}

/// `requests:` with no value is present but empty, as in JSP; a resource with no value is left
/// out.
fn quantities<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Quantities>, D::Error> {
    let raw =
        Option::<BTreeMap<String, Option<QuantityText>>>::deserialize(deserializer)?.unwrap_or_default();
    Ok(Some(raw.into_iter().filter_map(|(name, q)| Some((name, q?.0))).collect()))
}
