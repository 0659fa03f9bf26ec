//! YAML behind one small interface: parse documents, deserialise one into a type (with the path
//! of the field that failed), serialise, and errors that carry their position. Backed by
//! serde-saphyr (pure Rust, maintained, budgets against alias bombs and deep nesting), set up
//! to read YAML as the rest of the Kubernetes world does: YAML 1.2 booleans only (`yes` stays a
//! string), repeated keys passed through (the last one wins in a map), `<<` an ordinary key,
//! numbers with leading zeros or underscores kept as strings.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a text is not the YAML expected, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What is wrong, without the position.
    pub message: String,
    /// 1-based line and column, where known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The field whose value was refused (`profiles[2].resources.limits.cpu`); `None` for
    /// syntax errors and errors about the document as a whole.
    pub path: Option<String>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)?;
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, " at line {line} column {column}"),
            (Some(line), None) => write!(f, " at line {line}"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    fn from_saphyr(error: &serde_saphyr::Error, path: Option<String>) -> Self {
        let location = error.location();
        let message = match error.without_snippet() {
            // Serde's own wording, which names the known ones as `a`, `b`.
            serde_saphyr::Error::SerdeUnknownField { field, expected, .. } => {
                format!("unknown field `{field}`, {}", one_of(expected))
            }
            serde_saphyr::Error::SerdeUnknownVariant { variant, expected, .. } => {
                format!("unknown variant `{variant}`, {}", one_of(expected))
            }
            other => other.to_string(),
        };
        // The parser's own text ends with the position; it is kept apart here.
        let message = match location {
            Some(l) => {
                let suffix = format!(" at line {}, column {}", l.line(), l.column());
                message.strip_suffix(&suffix).map_or(message.clone(), str::to_owned)
            }
            None => message,
        };
        Error {
            message,
            line: location.map(|l| l.line() as usize),
            column: location.map(|l| l.column() as usize),
            path: path.filter(|_| is_data_error(error)),
        }
    }
}

fn one_of(expected: &[&str]) -> String {
    match expected {
        [] => "there are none".to_owned(),
        [one] => format!("expected `{one}`"),
        many => format!(
            "expected one of {}",
            many.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Whether the document parsed and a value in it was refused (as opposed to a syntax error).
fn is_data_error(error: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error as E;
    matches!(
        error.without_snippet(),
        E::Message { .. }
            | E::SerdeInvalidType { .. }
            | E::SerdeInvalidValue { .. }
            | E::SerdeInvalidLength { .. }
            | E::SerdeUnknownVariant { .. }
            | E::SerdeUnknownField { .. }
            | E::SerdeMissingField { .. }
            | E::NullIntoString { .. }
            | E::InvalidScalar { .. }
    )
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        merge_keys: serde_saphyr::MergeKeyPolicy::AsOrdinary,
        strict_booleans: true,
        null_as_string: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
    }
}

/// Every document of `text` that is not empty (or null), in order.
pub fn documents(text: &str) -> Result<Vec<Value>, Error> {
    serde_saphyr::from_multiple_with_options(text, options()).map_err(|e| Error::from_saphyr(&e, None))
}

/// One document as a `T`; an empty document is `None`. A refused value's error names its
/// field path, as serde tracked it.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<Option<T>, Error> {
    let mut failed_at = None;
    serde_saphyr::with_deserializer_from_str_with_options(text, options(), |deserializer| {
        let mut track = serde_path_to_error::Track::new();
        let tracked = serde_path_to_error::Deserializer::new(deserializer, &mut track);
        let result = serde::Deserialize::deserialize(tracked);
        if result.is_err() {
            failed_at = Some(track.path().to_string()).filter(|p| p != ".");
        }
        result
    })
    .map_err(|e| Error::from_saphyr(&e, failed_at))
}

/// `value` as YAML text (block style).
pub fn to_string<T: Serialize>(value: &T) -> Result<String, Error> {
    serde_saphyr::to_string(value).map_err(|e| Error {
        message: e.to_string(),
        line: None,
        column: None,
        path: None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[test]
    fn documents_skip_empty_ones_and_keep_order() {
        let docs = documents("a: 1\n---\n---\n# only a comment\n---\nb: [x, y]\n").unwrap();
        assert_eq!(docs, [json!({"a": 1}), json!({"b": ["x", "y"]})]);
        assert_eq!(documents("").unwrap(), Vec::<Value>::new());
    }

    #[test]
    fn scalars_resolve_as_yaml_1_2() {
        let doc =
            &documents("a: yes\nb: True\nc: 007\nd: 1_000\ne: ~\nf: 0x10\ng: 1e3\nh: '5'\n").unwrap()[0];
        assert_eq!(
            doc,
            &json!({"a": "yes", "b": true, "c": "007", "d": "1_000", "e": null, "f": 16, "g": 1000.0, "h": "5"})
        );
    }

    #[test]
    fn repeated_keys_keep_the_last_and_merge_keys_are_ordinary() {
        assert_eq!(documents("a: 1\na: 2\n").unwrap()[0], json!({"a": 2}));
        assert_eq!(documents("<<: {b: 1}\n").unwrap()[0], json!({"<<": {"b": 1}}));
    }

    #[test]
    fn syntax_errors_carry_the_position_and_no_path() {
        let err = documents("a: 1\nb: [unclosed\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err:?}");
        assert!(err.column.is_some() && err.path.is_none(), "{err:?}");
        assert!(!err.message.contains("line"), "the position is kept apart: {err:?}");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[allow(dead_code)]
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    struct Item {
        #[allow(dead_code)]
        limits: BTreeMap<String, u32>,
    }

    #[test]
    fn refused_values_name_their_field_path_and_line() {
        let err = from_str::<Doc>("items:\n- limits: {cpu: 1}\n- limits:\n    cpu: two\n").unwrap_err();
        assert_eq!(err.path.as_deref(), Some("items[1].limits.cpu"), "{err:?}");
        assert_eq!(err.line, Some(4), "{err:?}");
        let err = from_str::<Doc>("items: []\nitem: 1\n").unwrap_err();
        assert_eq!((err.path.as_deref(), err.line), (Some("item"), Some(2)), "{err:?}");
        assert!(err.message.contains("unknown field `item`"), "{err:?}");
        assert!(from_str::<Doc>("# nothing\n").unwrap().is_none());
    }

    #[test]
    fn values_serialise_to_yaml_that_reads_back() {
        let value = json!({"a": "x\ny", "b": [1, {"c": null}], "d": "007", "e": "yes", "f": "true"});
        let text = to_string(&value).unwrap();
        assert_eq!(documents(&text).unwrap(), [value]);
    }
}
