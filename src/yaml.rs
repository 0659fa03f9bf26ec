//! YAML behind one small interface: parse documents, deserialise one into a type (with the path
//! of the field that failed), serialise, and errors that carry their position. Backed by
//! serde-saphyr (pure Rust, maintained, budgets against alias bombs and deep nesting), set up
//! to read YAML as the rest of the Kubernetes world does: YAML 1.2 booleans only (`yes` stays a
//! string), repeated keys passed through (the last one wins in a map), `<<` an ordinary key,
//! numbers with leading zeros or underscores kept as strings.
//!
//! Templates need more than values: [`nodes`] gives each document as a tree of [`Node`]s whose
//! scalars keep their text, style and line (from granit-parser, the event parser under
//! serde-saphyr), and [`yaml11_scalar`] resolves a plain scalar as PyYAML (YAML 1.1) did for JSP.

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

/// A YAML node with what templates need: scalars as written, with their style and line.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Entries in document order.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The scalar's content after YAML's escape processing and line folding.
    pub text: String,
    pub style: Style,
    /// Tagged `!!str`: a string whatever it looks like.
    pub string_tag: bool,
    /// 1-based line where the scalar starts (a block scalar: its first content line).
    pub line: usize,
}

/// How a scalar was written: plain scalars resolve to other types; quoted and block ones are
/// strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Block,
}

/// Most nodes a document may expand to through aliases (a YAML alias bomb stops here).
const MAX_NODES: usize = 100_000;
/// The default deepest nesting of collections in [`nodes`]; Kubernetes objects need a few
/// dozen levels. Deeper input is refused as soon as the parser reaches it (and the trees here,
/// built and dropped recursively, stay shallow).
pub const MAX_DEPTH: usize = 128;

/// Every non-empty document of `text` as a [`Node`] tree; aliases are expanded. Collections
/// nested deeper than `max_depth` are refused.
pub fn nodes(text: &str, max_depth: usize) -> Result<Vec<Node>, Error> {
    use granit_parser::{Event, Parser, ScalarStyle};
    let error = |message: String, marker: &granit_parser::Marker| Error {
        message,
        line: Some(marker.line()),
        column: Some(marker.col() + 1),
        path: None,
    };
    // Open collections: a sequence's items, or a mapping's entries and a pending key; and the
    // anchor each will be registered under.
    enum Open {
        Seq(Vec<Node>, usize),
        Map(Vec<(Node, Node)>, Option<Node>, usize),
    }
    let mut documents = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: std::collections::HashMap<usize, Node> = std::collections::HashMap::new();
    let mut root: Option<Node> = None;
    let mut count = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| error(e.info(), e.marker()))?;
        let node = match event {
            Event::DocumentStart(..) => {
                anchors.clear();
                continue;
            }
            Event::DocumentEnd => {
                documents.extend(root.take().filter(|n| !is_null(n)));
                continue;
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if stack.len() >= max_depth => {
                let message = format!("collections are nested deeper than {max_depth} levels");
                return Err(error(message, &span.start));
            }
            Event::SequenceStart(_, anchor, _) => {
                stack.push(Open::Seq(Vec::new(), anchor));
                continue;
            }
            Event::MappingStart(_, anchor, _) => {
                stack.push(Open::Map(Vec::new(), None, anchor));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::Seq(items, anchor)) => register(&mut anchors, anchor, Node::Seq(items)),
                Some(Open::Map(entries, _, anchor)) => register(&mut anchors, anchor, Node::Map(entries)),
                None => continue,
            },
            Event::Scalar(value, style, anchor, tag) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    ScalarStyle::Literal | ScalarStyle::Folded => Style::Block,
                };
                let string_tag = tag.as_deref().is_some_and(|t| t.is_yaml_core_schema_tag("str"));
                let scalar = Scalar { text: value.into_owned(), style, string_tag, line: span.start.line() };
                register(&mut anchors, anchor, Node::Scalar(scalar))
            }
            Event::Alias(id) => match anchors.get(&id) {
                // An alias counts as the nodes it expands to; everything else as one node.
                // (Summing each closed collection's size instead was quadratic in the depth:
                // 100,000 nested `[` took 34 s to refuse.)
                Some(node) => {
                    count += size(node) - 1;
                    node.clone()
                }
                None => return Err(error("an alias to an unknown anchor".into(), &span.start)),
            },
            _ => continue,
        };
        count += 1;
        if count > MAX_NODES {
            return Err(error(format!("the document expands to more than {MAX_NODES} nodes"), &span.start));
        }
        match stack.last_mut() {
            Some(Open::Seq(items, _)) => items.push(node),
            Some(Open::Map(entries, key, _)) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => *key = Some(node),
            },
            None => root = Some(node),
        }
    }
    Ok(documents)
}

fn register(anchors: &mut std::collections::HashMap<usize, Node>, anchor: usize, node: Node) -> Node {
    if anchor != 0 {
        anchors.insert(anchor, node.clone());
    }
    node
}

fn size(node: &Node) -> usize {
    match node {
        Node::Scalar(_) => 1,
        Node::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        Node::Map(entries) => 1 + entries.iter().map(|(k, v)| size(k) + size(v)).sum::<usize>(),
    }
}

/// An empty document: `---` alone, or only comments.
fn is_null(node: &Node) -> bool {
    matches!(node, Node::Scalar(s) if s.style == Style::Plain && yaml11_scalar(&s.text).is_null())
}

/// A plain scalar as PyYAML (YAML 1.1, JSP's parser) resolved it: `yes`/`on`/`true` and their
/// opposites are booleans, `0755` octal, `0x1F` hex, `0b101` binary, `1:30` base 60, `1_000`
/// a thousand, `1.5`/`1.`/`.5`/`1.5e+3` floats (an exponent needs a dot and a sign), `~`,
/// `null` and nothing are null; anything else (dates and timestamps included) is the text.
pub fn yaml11_scalar(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => return Value::Bool(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        _ => {}
    }
    yaml11_number(text).unwrap_or_else(|| Value::String(text.to_owned()))
}

fn yaml11_number(text: &str) -> Option<Value> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let is_digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c == '_' || c.is_digit(radix));
    let sexagesimal = |s: &str| {
        let mut parts = s.split(':');
        let first = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        !rest.is_empty()
            && first.starts_with(|c: char| ('1'..='9').contains(&c))
            && is_digits(first, 10)
            && rest.iter().all(|p| {
                (1..=2).contains(&p.len())
                    && p.chars().all(|c| c.is_ascii_digit())
                    && (p.len() == 1 || p.as_bytes()[0] <= b'5')
            })
    };
    let int = |digits: &str, radix: u32| -> Option<Value> {
        let n = i64::from_str_radix(&digits.replace('_', ""), radix).ok()?;
        Some(Value::from(if negative { -n } else { n }))
    };
    // int, as PyYAML's resolver and constructor
    if let Some(bits) = unsigned.strip_prefix("0b") {
        return is_digits(bits, 2).then(|| int(bits, 2)).flatten();
    }
    if let Some(hex) = unsigned.strip_prefix("0x") {
        return is_digits(hex, 16).then(|| int(hex, 16)).flatten();
    }
    if unsigned == "0" {
        return Some(Value::from(0));
    }
    if unsigned.len() > 1 && unsigned.starts_with('0') && is_digits(unsigned, 8) {
        return int(unsigned, 8);
    }
    if unsigned.starts_with(|c: char| ('1'..='9').contains(&c)) && is_digits(unsigned, 10) {
        return int(unsigned, 10);
    }
    if sexagesimal(unsigned) {
        let n = unsigned.split(':').try_fold(0i64, |acc, part| {
            acc.checked_mul(60)?.checked_add(part.replace('_', "").parse().ok()?)
        })?;
        return Some(Value::from(if negative { -n } else { n }));
    }
    // float: digits '.' digits? exponent? | '.' digits exponent? (infinity and NaN stay text:
    // JSON has no such numbers)
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        e.len() > 1 && e.starts_with(['+', '-']) && e[1..].chars().all(|c| c.is_ascii_digit())
    });
    let (whole, fraction) = mantissa.split_once('.')?;
    let float_ok = exponent_ok
        && ((!whole.is_empty()
            && whole.starts_with(|c: char| c.is_ascii_digit())
            && is_digits(whole, 10)
            && (fraction.is_empty() || is_digits(fraction, 10)))
            || (whole.is_empty() && is_digits(fraction, 10) && !text.starts_with(['-', '+'])));
    if float_ok {
        let f: f64 = unsigned.replace('_', "").parse().ok()?;
        return serde_json::Number::from_f64(if negative { -f } else { f }).map(Value::Number);
    }
    None
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
    fn nodes_keep_styles_lines_and_expand_aliases() {
        let text = "a: plain\nb: 'single'\nc: \"dq\\n\"\nd: |\n  block\ne: !!str 010\nf: &x [1, {g: h}]\ni: *x\n---\n---\n# c\n";
        let docs = nodes(text, MAX_DEPTH).unwrap();
        assert_eq!(docs.len(), 1);
        let Node::Map(entries) = &docs[0] else { panic!("{docs:?}") };
        let scalar = |i: usize| match &entries[i].1 {
            Node::Scalar(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!((scalar(0).text.as_str(), scalar(0).style, scalar(0).line), ("plain", Style::Plain, 1));
        assert_eq!((scalar(1).text.as_str(), scalar(1).style), ("single", Style::Quoted));
        assert_eq!((scalar(2).text.as_str(), scalar(2).style), ("dq\n", Style::Quoted));
        assert_eq!((scalar(3).text.as_str(), scalar(3).style, scalar(3).line), ("block\n", Style::Block, 5));
        assert!(scalar(4).string_tag);
        assert_eq!(entries[5].1, entries[6].1, "the alias is the anchored node");
    }

    #[test]
    fn node_errors_carry_the_position() {
        let err = nodes("a: 1\nb: [\n", MAX_DEPTH).unwrap_err();
        assert!(err.line.is_some(), "{err:?}");
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n";
        assert!(nodes(bomb, MAX_DEPTH).unwrap_err().message.contains("more than"));
    }

    /// Finding 5 of issue 14: 100,000 nested `[` took 34 s to refuse (each closed collection
    /// re-counted its whole subtree). Now the parser stops at the depth cap.
    #[test]
    fn deep_nesting_is_refused_at_the_cap_and_aliases_count_what_they_expand_to() {
        let deep = "[".repeat(100_000);
        assert!(nodes(&deep, MAX_DEPTH).is_err());
        let fits = format!("{}{}", "[".repeat(20), "]".repeat(20));
        assert_eq!(nodes(&fits, 20).unwrap().len(), 1);
        let err = nodes(&format!("[{fits}]"), 20).unwrap_err();
        assert!(err.message.contains("nested deeper than 20"), "{err}");
        // 120,001 nodes, no alias: over the node budget all the same.
        let wide = format!("[{}]", vec!["[1, 2]"; 40_000].join(", "));
        assert!(nodes(&wide, MAX_DEPTH).unwrap_err().message.contains("more than"));
    }

    #[test]
    fn plain_scalars_resolve_as_pyyaml_did() {
        for (text, value) in [
            ("yes", json!(true)),
            ("On", json!(true)),
            ("off", json!(false)),
            ("NO", json!(false)),
            ("y", json!("y")),
            ("0755", json!(493)),
            ("010", json!(8)),
            ("0x1F", json!(31)),
            ("0b101", json!(5)),
            ("-0x10", json!(-16)),
            ("1:30", json!(90)),
            ("1:30:00", json!(5400)),
            ("1_000", json!(1000)),
            ("0", json!(0)),
            ("-3", json!(-3)),
            ("1.5", json!(1.5)),
            ("1.", json!(1.0)),
            (".5", json!(0.5)),
            ("1.5e+3", json!(1500.0)),
            ("1e3", json!("1e3")),
            ("1.5e3", json!("1.5e3")),
            ("089", json!("089")),
            ("~", Value::Null),
            ("", Value::Null),
            ("Null", Value::Null),
            ("2021-11-29", json!("2021-11-29")),
            (".inf", json!(".inf")),
            ("1:60", json!("1:60")),
            ("a:b", json!("a:b")),
            ("0x", json!("0x")),
            ("+.5", json!("+.5")),
            ("0_7", json!(7)),
            ("1:5", json!(65)),
            ("+1", json!(1)),
        ] {
            assert_eq!(yaml11_scalar(text), value, "{text:?}");
        }
    }

    #[test]
    fn values_serialise_to_yaml_that_reads_back() {
        let value = json!({"a": "x\ny", "b": [1, {"c": null}], "d": "007", "e": "yes", "f": "true"});
        let text = to_string(&value).unwrap();
        assert_eq!(documents(&text).unwrap(), [value]);
    }
}
