//! The JSONPath dialect of JSP's `return` entries: Python's `jsonpath-rw` 1.4.0, which JSP
//! documented and ODH configs use (`metadata.labels[odh-ray-cluster-service]`,
//! `spec.template.spec.containers[0].image`, `metadata.labels.'app.kubernetes.io/name'`).
//!
//! Supported, with jsonpath-rw's meaning: fields (`a.b`; names of letters, digits, `_`, `@` and
//! `-`, not starting with a digit or `-`), quoted fields (`'x.y/z'`, `"..."`, backslash
//! escapes), several fields (`a[b,c]`, `a.b,c`), `*` (every value of a map), `$` at the start,
//! `[n]` (negative from the end), `[*]` and `[start:end]` slices, `..` (at any depth), and
//! `a[b]` as `a.b`. Refused with a message: `where`, `|`, `&`, `` `this` ``/`` `parent` ``,
//! parentheses and `$` after the start, which no ODH config uses.
//!
//! Evaluation follows jsonpath-rw on the cases JSP could answer: a field of a map matches even
//! when its value is null; a field of anything else, an index out of range or an index on a
//! map matches nothing; a slice or `[*]` on a map, string, integer or boolean matches the value
//! itself; an index on a string matches one character. Where jsonpath-rw raised (an index on a
//! map of more entries than the index, a negative index past the start, a slice of a float or
//! null) the spawn failed in JSP; here the path matches nothing.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

/// A parsed `return` path; serialises as the text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    node: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Root,
    /// Named fields, or every field (`*`).
    Fields(Fields),
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Child(Box<Node>, Box<Node>),
    Descendants(Box<Node>, Box<Node>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fields {
    Named(Vec<String>),
    All,
}

/// Why a path does not parse: what is wrong, where (a 0-based character offset) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at character {}", .offset + 1)]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
}

impl JsonPath {
    /// Parses a path in jsonpath-rw syntax.
    pub fn parse(text: &str) -> Result<JsonPath, ParseError> {
        let tokens = lex(text)?;
        let mut parser = Parser { tokens: &tokens, at: 0, end: text.chars().count() };
        let node = parser.descendants()?;
        match parser.peek() {
            None => Ok(JsonPath { text: text.to_owned(), node }),
            Some(token) => Err(parser.unexpected(token)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Every match in document order (a map's entries in its key order). Matches borrow from
    /// `root`, except a character of a string (`name[0]`), which exists in no document.
    pub fn find<'a>(&self, root: &'a Value) -> Vec<Cow<'a, Value>> {
        let mut out = Vec::new();
        find(&self.node, root, Cow::Borrowed(root), &mut out);
        out
    }
}

fn find<'a>(node: &Node, root: &'a Value, value: Cow<'a, Value>, out: &mut Vec<Cow<'a, Value>>) {
    // A borrowed child of a borrowed value, or an owned copy of a child of an owned one.
    fn child<'a>(parent: &Cow<'a, Value>, pick: impl Fn(&Value) -> Option<&Value>) -> Option<Cow<'a, Value>> {
        match parent {
            Cow::Borrowed(v) => pick(v).map(Cow::Borrowed),
            Cow::Owned(v) => pick(v).cloned().map(Cow::Owned),
        }
    }
    let single = |start, end| slice(1, start, end).len() == 1;
    match node {
        Node::Root => out.push(Cow::Borrowed(root)),
        Node::Fields(Fields::All) if value.is_object() => out.extend(children(&value)),
        Node::Fields(Fields::All) => {}
        Node::Fields(Fields::Named(names)) => {
            out.extend(names.iter().filter_map(|name| child(&value, |v| v.as_object()?.get(name))));
        }
        Node::Index(index) => match &*value {
            Value::Array(items) => {
                out.extend(at_index(items.len(), *index).and_then(|i| child(&value, |v| v.get(i))));
            }
            Value::String(s) => {
                let chars: Vec<char> = s.chars().collect();
                out.extend(at_index(chars.len(), *index).map(|i| Cow::Owned(Value::String(chars[i].into()))));
            }
            // Maps, numbers, booleans and null: no match (jsonpath-rw raised or found nothing).
            _ => {}
        },
        Node::Slice(start, end) => match &*value {
            Value::Array(items) => {
                let range = slice(items.len(), *start, *end);
                out.extend(range.filter_map(|i| child(&value, |v| v.get(i))));
            }
            // jsonpath-rw slices these as a one-element list holding the value.
            Value::Object(_) | Value::String(_) | Value::Bool(_) if single(*start, *end) => out.push(value),
            Value::Number(n) if !n.is_f64() && single(*start, *end) => out.push(value),
            _ => {}
        },
        Node::Child(left, right) => {
            let mut lefts = Vec::new();
            find(left, root, value, &mut lefts);
            for matched in lefts {
                find(right, root, matched, out);
            }
        }
        Node::Descendants(left, right) => {
            let mut lefts = Vec::new();
            find(left, root, value, &mut lefts);
            for matched in lefts {
                descend(right, root, matched, out);
            }
        }
    }
}

/// jsonpath-rw's `..`: the right side on this value, then on every child, depth first.
fn descend<'a>(right: &Node, root: &'a Value, value: Cow<'a, Value>, out: &mut Vec<Cow<'a, Value>>) {
    find(right, root, value.clone(), out);
    for item in children(&value) {
        descend(right, root, item, out);
    }
}

/// A list's elements or a map's values, in order.
fn children<'a>(value: &Cow<'a, Value>) -> Vec<Cow<'a, Value>> {
    fn of(value: &Value) -> Box<dyn Iterator<Item = &Value> + '_> {
        match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => Box::new(std::iter::empty()),
        }
    }
    match value {
        Cow::Borrowed(v) => of(v).map(Cow::Borrowed).collect(),
        Cow::Owned(v) => of(v).cloned().map(Cow::Owned).collect(),
    }
}

/// Python's `items[index]` where it does not raise.
fn at_index(len: usize, index: i64) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let i = if index < 0 { len + index } else { index };
    (0..len).contains(&i).then_some(i as usize)
}

/// Python's `range(len)[start:end]`.
fn slice(len: usize, start: Option<i64>, end: Option<i64>) -> std::ops::Range<usize> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let clamp = |bound: i64| if bound < 0 { (len + bound).max(0) } else { bound.min(len) };
    let start = start.map_or(0, clamp);
    let end = end.map_or(len, clamp);
    start as usize..(end.max(start)) as usize
}

impl serde::Serialize for JsonPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// From the text of a `return` entry; an error names the dialect and where the path breaks.
impl<'de> serde::Deserialize<'de> for JsonPath {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        JsonPath::parse(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a path in JSP's jsonpath-rw dialect (e.g. metadata.labels[key] or spec.containers[0].image): {e}"
            ))
        })
    }
}

// --- lexing ----------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Id(String),
    Number(i64),
    Named(String),
    Where,
    DoubleDot,
    /// One of `* . [ ] ( ) $ , : | &`.
    Punct(char),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Id(id) => write!(f, "`{id}`"),
            Tok::Number(n) => write!(f, "`{n}`"),
            Tok::Named(name) => write!(f, "`` `{name}` ``"),
            Tok::Where => f.write_str("`where`"),
            Tok::DoubleDot => f.write_str("`..`"),
            Tok::Punct(c) => write!(f, "`{c}`"),
        }
    }
}

/// jsonpath-rw's lexer: the longest field name or number at each position, quoted names,
/// spaces and tabs ignored.
fn lex(text: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let error = |offset, message: String| ParseError { offset, message };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            ' ' | '\t' | '\n' => i += 1,
            c if c.is_ascii_alphabetic() || c == '_' || c == '@' => {
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '@' | '-'))
                {
                    i += 1;
                }
                let id: String = chars[start..i].iter().collect();
                tokens.push((start, if id == "where" { Tok::Where } else { Tok::Id(id) }));
            }
            c if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                let digits: String = chars[start..i].iter().collect();
                let n =
                    digits.parse().map_err(|_| error(start, format!("the number {digits} is too large")))?;
                tokens.push((start, Tok::Number(n)));
            }
            '\'' | '"' | '`' => {
                i += 1;
                let mut content = String::new();
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(error(start, format!("the quote {c} is never closed")));
                        }
                        Some('\\') if i + 1 < chars.len() => {
                            content.push(chars[i + 1]);
                            i += 2;
                        }
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            content.push(other);
                            i += 1;
                        }
                    }
                }
                tokens.push((start, if c == '`' { Tok::Named(content) } else { Tok::Id(content) }));
            }
            '.' if chars.get(i + 1) == Some(&'.') => {
                tokens.push((start, Tok::DoubleDot));
                i += 2;
            }
            '*' | '.' | '[' | ']' | '(' | ')' | '$' | ',' | ':' | '|' | '&' => {
                tokens.push((start, Tok::Punct(c)));
                i += 1;
            }
            other => {
                let hint = if matches!(other, '/' | '~' | '%' | '+' | '=') || !other.is_ascii() {
                    "; quote a field name that holds it, e.g. labels.'app.kubernetes.io/name'"
                } else {
                    ""
                };
                return Err(error(start, format!("unexpected character `{other}`{hint}")));
            }
        }
    }
    Ok(tokens)
}

// --- parsing ---------------------------------------------------------------------------------

struct Parser<'t> {
    tokens: &'t [(usize, Tok)],
    at: usize,
    /// The text's length, for errors at its end.
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&(usize, Tok)> {
        self.tokens.get(self.at)
    }

    fn next_is(&self, tok: &Tok) -> bool {
        self.peek().is_some_and(|(_, t)| t == tok)
    }

    fn unexpected(&self, (offset, tok): &(usize, Tok)) -> ParseError {
        let message = match tok {
            Tok::Where | Tok::Punct('|' | '&' | '(' | ')') | Tok::Named(_) => {
                format!(
                    "{tok} is jsonpath-rw syntax this service does not support; write a plain path such as metadata.labels[key]"
                )
            }
            Tok::Punct('$') => "`$` may only start a path".to_owned(),
            Tok::Number(_) => format!("unexpected {tok}; an index goes in brackets, e.g. containers[0]"),
            _ => format!("unexpected {tok}"),
        };
        ParseError { offset: *offset, message }
    }

    fn end_error(&self, expected: &str) -> ParseError {
        ParseError { offset: self.end, message: format!("the path ends where {expected} should follow") }
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), ParseError> {
        match self.peek() {
            Some((_, t)) if *t == tok => {
                self.at += 1;
                Ok(())
            }
            Some(other) => Err(self.unexpected(other)),
            None => Err(self.end_error(what)),
        }
    }

    /// `child ('..' child)*`, left-associative: `..` binds looser than `.`.
    fn descendants(&mut self) -> Result<Node, ParseError> {
        let mut node = self.child()?;
        while self.next_is(&Tok::DoubleDot) {
            self.at += 1;
            let right = self.child()?;
            node = Node::Descendants(Box::new(node), Box::new(right));
        }
        Ok(node)
    }

    /// `postfix ('.' postfix)*`.
    fn child(&mut self) -> Result<Node, ParseError> {
        let mut node = self.postfix(true)?;
        while self.next_is(&Tok::Punct('.')) {
            self.at += 1;
            let right = self.postfix(false)?;
            node = Node::Child(Box::new(node), Box::new(right));
        }
        Ok(node)
    }

    /// An atom followed by any number of `[...]`.
    fn postfix(&mut self, first: bool) -> Result<Node, ParseError> {
        let mut node = self.atom(first)?;
        while self.next_is(&Tok::Punct('[')) {
            let bracket = self.bracket()?;
            node = Node::Child(Box::new(node), Box::new(bracket));
        }
        Ok(node)
    }

    fn atom(&mut self, first: bool) -> Result<Node, ParseError> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.end_error("a field name"));
        };
        match token.1 {
            Tok::Punct('$') if first => {
                self.at += 1;
                Ok(Node::Root)
            }
            Tok::Punct('*') => {
                self.at += 1;
                Ok(Node::Fields(Fields::All))
            }
            Tok::Punct('[') => self.bracket(),
            Tok::Id(_) => Ok(Node::Fields(Fields::Named(self.fields()?))),
            _ => Err(self.unexpected(&token)),
        }
    }

    /// `ID (',' ID)*`.
    fn fields(&mut self) -> Result<Vec<String>, ParseError> {
        let mut names = Vec::new();
        loop {
            match self.peek().cloned() {
                Some((_, Tok::Id(name))) => {
                    self.at += 1;
                    names.push(name);
                }
                Some(other) => return Err(self.unexpected(&other)),
                None => return Err(self.end_error("a field name")),
            }
            if !self.next_is(&Tok::Punct(',')) {
                return Ok(names);
            }
            self.at += 1;
        }
    }

    /// `[n]`, `[*]`, `[start:end]` or `[fields]`.
    fn bracket(&mut self) -> Result<Node, ParseError> {
        self.expect(Tok::Punct('['), "`[`")?;
        let node = match self.peek().cloned() {
            Some((_, Tok::Punct('*'))) => {
                self.at += 1;
                Node::Slice(None, None)
            }
            Some((_, Tok::Id(_))) => Node::Fields(Fields::Named(self.fields()?)),
            Some((_, Tok::Number(n))) => {
                self.at += 1;
                if self.next_is(&Tok::Punct(':')) {
                    self.at += 1;
                    Node::Slice(Some(n), self.maybe_number())
                } else {
                    Node::Index(n)
                }
            }
            Some((_, Tok::Punct(':'))) => {
                self.at += 1;
                Node::Slice(None, self.maybe_number())
            }
            Some(other) => return Err(self.unexpected(&other)),
            None => return Err(self.end_error("an index, a slice or a field name")),
        };
        self.expect(Tok::Punct(']'), "`]`")?;
        Ok(node)
    }

    fn maybe_number(&mut self) -> Option<i64> {
        match self.peek() {
            Some((_, Tok::Number(n))) => {
                let n = *n;
                self.at += 1;
                Some(n)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc() -> Value {
        json!({
            "metadata": {
                "name": "ray-cluster-alice",
                "labels": {"odh-ray-cluster-service": "ray-cluster-alice-ray-head", "app.kubernetes.io/name": "ray", "empty": null},
            },
            "spec": {
                "containers": [{"name": "head", "image": "ray:1"}, {"name": "worker", "image": "ray:2"}],
                "groups": ["small", "large"],
                "replicas": 3,
                "ratio": 0.5,
            },
        })
    }

    fn values(path: &str) -> Vec<Value> {
        JsonPath::parse(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .find(&doc())
            .into_iter()
            .map(Cow::into_owned)
            .collect()
    }

    #[test]
    fn fields_brackets_and_quotes_name_the_same_field() {
        let expected = vec![json!("ray-cluster-alice-ray-head")];
        for path in [
            "metadata.labels.odh-ray-cluster-service",
            "metadata.labels[odh-ray-cluster-service]",
            "metadata.labels['odh-ray-cluster-service']",
            "$.metadata.labels[\"odh-ray-cluster-service\"]",
            "$.metadata . labels.'odh-ray-cluster-service'",
            "[metadata].labels.odh-ray-cluster-service",
        ] {
            assert_eq!(values(path), expected, "{path}");
        }
        assert_eq!(values("metadata.labels.'app.kubernetes.io/name'"), vec![json!("ray")]);
    }

    #[test]
    fn a_null_field_matches_and_a_missing_one_does_not() {
        assert_eq!(values("metadata.labels.empty"), vec![Value::Null]);
        assert!(values("metadata.labels.nothing").is_empty());
        assert!(values("spec.replicas.deeper").is_empty(), "a field of a number");
        assert!(values("spec.containers.name").is_empty(), "a field of a list");
    }

    #[test]
    fn indices_and_slices_follow_python() {
        assert_eq!(values("spec.containers[0].image"), vec![json!("ray:1")]);
        assert_eq!(values("spec.containers[-1].image"), vec![json!("ray:2")]);
        assert!(values("spec.containers[2]").is_empty());
        assert!(values("spec.containers[-3]").is_empty(), "JSP raised IndexError");
        assert_eq!(values("spec.containers[*].name"), vec![json!("head"), json!("worker")]);
        assert_eq!(values("spec.groups[1:]"), vec![json!("large")]);
        assert_eq!(values("spec.groups[:1]"), vec![json!("small")]);
        assert_eq!(values("spec.groups[-1:]"), vec![json!("large")]);
        assert_eq!(values("metadata.name[0]"), vec![json!("r")], "an index into a string");
        assert!(values("metadata[0]").is_empty(), "JSP raised KeyError");
        // A slice of a scalar or a map is that value as a one-element list.
        assert_eq!(values("spec.replicas[*]"), vec![json!(3)]);
        assert_eq!(values("metadata.name[0:1]"), vec![json!("ray-cluster-alice")]);
        assert!(values("metadata.name[1:]").is_empty());
        assert!(values("spec.ratio[*]").is_empty(), "JSP raised TypeError on a float");
    }

    #[test]
    fn several_fields_stars_and_descendants() {
        assert_eq!(values("spec.containers[0][name,image]"), vec![json!("head"), json!("ray:1")]);
        assert_eq!(values("spec.containers[0].name,image"), vec![json!("head"), json!("ray:1")]);
        assert_eq!(values("spec.containers[1].*"), vec![json!("ray:2"), json!("worker")], "key order");
        assert_eq!(values("spec..image"), vec![json!("ray:1"), json!("ray:2")]);
        assert_eq!(values("$..name"), vec![json!("ray-cluster-alice"), json!("head"), json!("worker")]);
        assert_eq!(values("$"), vec![doc()]);
    }

    #[test]
    fn unsupported_and_invalid_syntax_is_refused_with_the_place() {
        for (path, needle) in [
            ("spec.0", "an index goes in brackets"),
            ("metadata.labels.app.kubernetes.io/name", "quote a field name"),
            ("a where b", "does not support"),
            ("a | b", "does not support"),
            ("(a).b", "does not support"),
            ("a.`this`", "does not support"),
            ("a.$", "may only start"),
            ("a.", "the path ends"),
            ("a[0", "the path ends"),
            ("a['b", "never closed"),
            ("", "the path ends"),
        ] {
            let error = JsonPath::parse(path).unwrap_err();
            assert!(error.to_string().contains(needle), "{path}: {error}");
        }
        assert_eq!(JsonPath::parse("spec.0").unwrap_err().offset, 5);
    }
}
