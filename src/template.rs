//! Service templates: a ConfigMap key holding one Kubernetes object as YAML with JSP's `{{ var }}`
//! placeholders (`{{ var }}`, `{{var}}`, `{{ options.workers }}`).
//!
//! A [`Template`] is parsed once when the configuration loads: every placeholder is set aside,
//! the YAML is parsed into a tree (so a template that is not YAML is reported at load, with its
//! line), and each scalar that held placeholders keeps them as segments. A render substitutes
//! values into that tree, never into text, so no value can add keys, items or documents
//! (injection-proof whatever it holds):
//!
//! - a plain scalar that is one placeholder alone takes the value's type. A value of ours (the
//!   context's `user`, `username`, `server`, `namespace`, `cluster_name`, `image`, `profile`,
//!   `size` and the typed `options`) is placed as it is: a string stays a string. A
//!   configuration value is placed as JSP placed it: its Python text (`True`, `None`,
//!   `['numpy', 'pandas']`) read as YAML 1.1, so `'010'` is 8, `'yes'` true and a list a list;
//! - a placeholder within other text is string interpolation (configuration values by their
//!   Python text); a plain scalar made only of configuration values and text is then read as
//!   YAML 1.1, as JSP did;
//! - quoted (`'...'`, `"..."`) and block (`|`, `>`) scalars and `!!str` stay strings;
//! - plain scalars without placeholders resolve by YAML 1.1 as in JSP (`yes`, `on`, `0755`,
//!   `1:30`, `1_000`); keys stay the text written.
//!
//! Rendering is strict: an unknown variable is an error naming the ConfigMap, key, line and
//! variable (JSP rendered it empty). Handlebars blocks and helpers (`{{#if}}`, `{{#each}}`,
//! `{{{raw}}}`) and Jinja filters or statements are refused at load with what to write instead:
//! a configuration list or map substitutes as YAML structure.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::caps::Caps;
use crate::policy::Policy;
use crate::python;
use crate::yaml::{self, Node, Style};
use crate::{naming, pointer};

/// Private-use characters around a placeholder's index while the template is parsed: valid in
/// every YAML scalar style and inert there.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// A compiled service template.
#[derive(Debug)]
pub struct Template {
    configmap: String,
    key: String,
    placeholders: Vec<Placeholder>,
    root: Tree,
}

/// A `{{ path }}` of the template. Those in comments are no part of the object: not `used`.
#[derive(Debug, Clone, PartialEq)]
struct Placeholder {
    /// `options.workers` as `["options", "workers"]`.
    path: Vec<String>,
    /// 1-based line in the template.
    line: usize,
    used: bool,
}

/// The parsed template: what holds no placeholder is kept as its final value.
#[derive(Debug, Clone, PartialEq)]
enum Tree {
    Literal(Value),
    Scalar { parts: Vec<Part>, plain: bool },
    Seq(Vec<Tree>),
    Map(Vec<(Vec<Part>, Tree)>),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// Index into the placeholders.
    Var(usize),
}

impl Template {
    /// Parses `text`, the value of `key` in the template ConfigMap `configmap` (both are named
    /// in every error).
    pub fn compile(configmap: &str, key: &str, text: &str) -> Result<Template, TemplateError> {
        Self::compile_capped(configmap, key, text, &Caps::default())
    }

    /// [`Template::compile`] within `caps` (template size, placeholders, nesting); over one,
    /// refused at once naming it.
    pub fn compile_capped(
        configmap: &str,
        key: &str,
        text: &str,
        caps: &Caps,
    ) -> Result<Template, TemplateError> {
        let error = |kind, line, message| TemplateError::new(configmap, key, kind, line, message);
        if text.len() > caps.template_bytes {
            let message = format!(
                "the template is {} bytes, over the cap of {} (--max-template-bytes); split it or ask the operator to raise the cap",
                text.len(),
                caps.template_bytes
            );
            return Err(error(ErrorKind::TooLarge, None, message));
        }
        let count = text.matches("{{").count();
        if count > caps.placeholders {
            let message = format!(
                "the template has {count} placeholders, over the cap of {} (--max-placeholders); use fewer, or ask the operator to raise the cap",
                caps.placeholders
            );
            return Err(error(ErrorKind::TooLarge, None, message));
        }
        let (marked, placeholders) =
            scan(text).map_err(|(line, message)| error(ErrorKind::Syntax, Some(line), message))?;
        let mut documents = yaml::nodes(&marked, caps.depth).map_err(|e| {
            let message = format!("the template is not valid YAML: {}", e.message);
            error(ErrorKind::InvalidYaml, e.line, message)
        })?;
        let document = match documents.len() {
            0 => {
                let message =
                    "the template holds nothing; a template key must hold exactly one Kubernetes object";
                return Err(error(ErrorKind::EmptyOutput, None, message.to_owned()));
            }
            1 => documents.remove(0),
            n => {
                let message = format!(
                    "the template holds {n} YAML documents; put each Kubernetes object under its own ConfigMap key"
                );
                return Err(error(ErrorKind::NotAnObject, None, message));
            }
        };
        let root = tree(document);
        let mut placeholders = placeholders;
        mark_used(&root, &mut placeholders);
        let template = Template { configmap: configmap.to_owned(), key: key.to_owned(), placeholders, root };
        // A template that cannot be an object fails now; placeholders are checked per render.
        match &template.root {
            Tree::Literal(value) => drop(template.check_object(value.clone())?),
            Tree::Seq(_) => drop(template.check_object(Value::Array(Vec::new()))?),
            Tree::Map(_) | Tree::Scalar { .. } => {}
        }
        Ok(template)
    }

    /// Renders the template with `context` (see [`context`]) and returns the one Kubernetes
    /// object it holds, as JSON: a mapping with `apiVersion`, `kind` and `metadata.name`.
    pub fn render(&self, context: &Value) -> Result<Value, TemplateError> {
        static UNUSED: Value = Value::Null;
        let values = self
            .placeholders
            .iter()
            .map(|p| match p.used {
                true => lookup(context, &p.path).ok_or_else(|| self.unknown_variable(context, p)),
                false => Ok(Bound { value: &UNUSED, configuration: false }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let object = self.fill(&self.root, &values);
        self.check_object(object)
    }

    fn fill(&self, tree: &Tree, values: &[Bound]) -> Value {
        match tree {
            Tree::Literal(value) => value.clone(),
            Tree::Seq(items) => Value::Array(items.iter().map(|item| self.fill(item, values)).collect()),
            Tree::Map(entries) => {
                let mut map = Map::new();
                for (key, value) in entries {
                    map.insert(interpolate(key, values), self.fill(value, values));
                }
                Value::Object(map)
            }
            Tree::Scalar { parts, plain } => match (parts.as_slice(), plain) {
                ([Part::Var(i)], true) => values[*i].alone(),
                (_, true)
                    if parts.iter().all(|p| {
                        matches!(p, Part::Text(_)) || matches!(p, Part::Var(i) if values[*i].configuration)
                    }) =>
                {
                    yaml::yaml11_scalar(&interpolate(parts, values))
                }
                _ => Value::String(interpolate(parts, values)),
            },
        }
    }

    /// Whether a rendered object (named and labelled as it will be applied) is within the
    /// rendered-size cap and passes the template policy; all its policy problems in one error.
    pub fn check_rendered(&self, object: &Value, caps: &Caps, policy: &Policy) -> Result<(), TemplateError> {
        let size = rendered_size(object);
        if size > caps.rendered_bytes {
            let message = format!(
                "the rendered object is {size} bytes, over the cap of {} (--max-rendered-bytes); use smaller configuration values",
                caps.rendered_bytes
            );
            return Err(self.error(ErrorKind::TooLarge, None, message));
        }
        let problems = policy.check(object);
        if problems.is_empty() {
            return Ok(());
        }
        let what = format!(
            "{} {}",
            pointer::str(object, "/kind").unwrap_or("object"),
            pointer::str(object, "/metadata/name").unwrap_or_default()
        );
        let message = format!("the template policy refuses {}: {}", what.trim_end(), problems.join("; "));
        Err(self.error(ErrorKind::Policy, None, message))
    }

    /// Renders for an awkward user (upper case, `.` and `@`), as the configuration loads, and
    /// checks the object as a spawn would: a template whose objects the policy refuses, or
    /// whose names and labels break for such users, is found before anyone spawns. A render
    /// that fails for a missing variable passes here (see [`Template::unresolvable`]).
    pub fn probe(
        &self,
        configuration: &Map<String, Value>,
        caps: &Caps,
        policy: &Policy,
    ) -> Result<(), TemplateError> {
        const USER: &str = "Odd.User@example.com";
        let context = context(&ContextInput {
            username: USER,
            server: "",
            namespace: "probe",
            image: "probe",
            profile: "probe",
            size: "",
            configuration,
            options: &BTreeMap::new(),
        });
        let Ok(mut object) = self.render(&context) else { return Ok(()) };
        apply_name_rule(&mut object, &naming::escape_user(USER), &naming::cluster_name(USER, ""));
        self.check_rendered(&object, caps, policy).map_err(|mut error| {
            error.message.push_str(&format!(" (rendered for the test user {USER:?})"));
            error
        })
    }

    /// The placeholders no render can fill, found when the configuration loads: a name that is
    /// neither the context's own nor in any of `configurations` (the services using this
    /// template), or an `options.<name>` none of `options` declares. Profiles merge, so a
    /// variable any of those services defines passes; a render checks the merged profile.
    pub fn unresolvable<'a>(
        &self,
        configurations: impl IntoIterator<Item = &'a Map<String, Value>>,
        options: impl IntoIterator<Item = &'a str>,
    ) -> Vec<TemplateError> {
        let mut probe = Map::new();
        for configuration in configurations {
            for (name, value) in configuration {
                probe.entry(name.clone()).or_insert_with(|| value.clone());
            }
        }
        for name in RESERVED_NAMES {
            probe.insert(name.to_owned(), Value::String(String::new()));
        }
        let options: Map<String, Value> = options.into_iter().map(|o| (o.to_owned(), Value::Null)).collect();
        probe.insert("options".to_owned(), Value::Object(options));
        let probe = Value::Object(probe);
        self.placeholders
            .iter()
            .filter(|p| p.used)
            .filter(|p| match p.path.as_slice() {
                [first, ..] if first == "options" => {
                    p.path.len() > 1 && lookup(&probe, &p.path[..2]).is_none()
                }
                [first, ..] if RESERVED_NAMES.contains(&first.as_str()) => p.path.len() > 1,
                _ => lookup(&probe, &p.path).is_none(),
            })
            .map(|p| self.unknown_variable(&probe, p))
            .collect()
    }

    fn unknown_variable(&self, context: &Value, placeholder: &Placeholder) -> TemplateError {
        let variable = placeholder.path.join(".");
        let hint = suggestion(context, &placeholder.path)
            .map(|name| format!(" (did you mean `{name}`?)"))
            .unwrap_or_default();
        let message = format!(
            "unknown variable `{variable}` — define it in the service's configuration or fix the template{hint}"
        );
        let error = self.error(ErrorKind::UnknownVariable, Some(placeholder.line), message);
        TemplateError { variable: Some(variable), ..error }
    }

    /// One Kubernetes object: a mapping with apiVersion, kind and metadata.name.
    fn check_object(&self, object: Value) -> Result<Value, TemplateError> {
        let missing: Vec<&str> =
            [("apiVersion", "/apiVersion"), ("kind", "/kind"), ("metadata.name", "/metadata/name")]
                .into_iter()
                .filter(|(_, pointer)| pointer::str(&object, pointer).is_none_or(str::is_empty))
                .map(|(field, _)| field)
                .collect();
        let problem = match &object {
            Value::Object(_) if missing.is_empty() => return Ok(object),
            Value::Object(_) => format!("a mapping without {}", missing.join(", ")),
            Value::Array(_) => "a list".to_owned(),
            _ => format!("the scalar `{object}`"),
        };
        let message = format!(
            "the template must render one Kubernetes object (a mapping with apiVersion, kind and \
             metadata.name), not {problem}"
        );
        Err(self.error(ErrorKind::NotAnObject, None, message))
    }

    fn error(&self, kind: ErrorKind, line: Option<usize>, message: String) -> TemplateError {
        TemplateError::new(&self.configmap, &self.key, kind, line, message)
    }
}

/// A placeholder's value and where it came from.
struct Bound<'a> {
    value: &'a Value,
    /// A service configuration key (JSP's), not one of ours (see the module docs).
    configuration: bool,
}

impl Bound<'_> {
    /// The value of a plain scalar that is this placeholder alone.
    fn alone(&self) -> Value {
        if !self.configuration {
            return self.value.clone();
        }
        // JSP pasted `str(value)` into the YAML text and PyYAML read it back.
        let text = python::str(self.value);
        if text.starts_with(['[', '{'])
            && let Ok(mut nodes) = yaml::nodes(&text, yaml::MAX_DEPTH)
            && nodes.len() == 1
        {
            return yaml11_value(&nodes.remove(0));
        }
        yaml::yaml11_scalar(text.trim())
    }

    /// The value's text inside a longer scalar.
    fn text(&self) -> String {
        match self.value {
            _ if self.configuration => python::str(self.value),
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

fn interpolate(parts: &[Part], values: &[Bound]) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Var(i) => out.push_str(&values[*i].text()),
        }
    }
    out
}

fn lookup<'a>(context: &'a Value, path: &[String]) -> Option<Bound<'a>> {
    let value = path.iter().try_fold(context, |scope, segment| scope.as_object()?.get(segment))?;
    let configuration = !RESERVED_NAMES.contains(&path[0].as_str());
    Some(Bound { value, configuration })
}

/// A YAML node as PyYAML (YAML 1.1) read it.
fn yaml11_value(node: &Node) -> Value {
    match node {
        Node::Scalar(s) if s.style == Style::Plain && !s.string_tag => yaml::yaml11_scalar(&s.text),
        Node::Scalar(s) => Value::String(s.text.clone()),
        Node::Seq(items) => Value::Array(items.iter().map(yaml11_value).collect()),
        Node::Map(entries) => {
            Value::Object(entries.iter().map(|(k, v)| (key_text(k), yaml11_value(v))).collect())
        }
    }
}

/// A mapping key as JSON has it: its text (a collection as key: its YAML 1.1 value as JSON).
fn key_text(node: &Node) -> String {
    match node {
        Node::Scalar(s) => s.text.clone(),
        other => yaml11_value(other).to_string(),
    }
}

/// The template tree of a parsed document: placeholders found in its scalars and keys.
fn tree(node: Node) -> Tree {
    match node {
        Node::Scalar(s) => {
            let parts = parts(&s.text);
            let plain = s.style == Style::Plain && !s.string_tag;
            match parts.as_slice() {
                [] | [Part::Text(_)] if plain => Tree::Literal(yaml::yaml11_scalar(&s.text)),
                [] | [Part::Text(_)] => Tree::Literal(Value::String(s.text)),
                _ => Tree::Scalar { parts, plain },
            }
        }
        Node::Seq(items) => {
            let items: Vec<Tree> = items.into_iter().map(tree).collect();
            if items.iter().all(|t| matches!(t, Tree::Literal(_))) {
                Tree::Literal(Value::Array(items.into_iter().map(literal).collect()))
            } else {
                Tree::Seq(items)
            }
        }
        Node::Map(entries) => {
            let entries: Vec<(Vec<Part>, Tree)> =
                entries.into_iter().map(|(k, v)| (parts(&key_text(&k)), tree(v))).collect();
            let literal_key = |k: &[Part]| matches!(k, [] | [Part::Text(_)]);
            if entries.iter().all(|(k, v)| literal_key(k) && matches!(v, Tree::Literal(_))) {
                let map = entries.into_iter().map(|(k, v)| (text_of(&k), literal(v))).collect();
                Tree::Literal(Value::Object(map))
            } else {
                Tree::Map(entries)
            }
        }
    }
}

fn mark_used(tree: &Tree, placeholders: &mut [Placeholder]) {
    fn mark(parts: &[Part], placeholders: &mut [Placeholder]) {
        for part in parts {
            if let Part::Var(i) = part {
                placeholders[*i].used = true;
            }
        }
    }
    match tree {
        Tree::Literal(_) => {}
        Tree::Scalar { parts, .. } => mark(parts, placeholders),
        Tree::Seq(items) => items.iter().for_each(|item| mark_used(item, placeholders)),
        Tree::Map(entries) => {
            for (key, value) in entries {
                mark(key, placeholders);
                mark_used(value, placeholders);
            }
        }
    }
}

fn literal(tree: Tree) -> Value {
    match tree {
        Tree::Literal(value) => value,
        _ => unreachable!("only literal trees are folded"),
    }
}

fn text_of(parts: &[Part]) -> String {
    match parts {
        [Part::Text(t)] => t.clone(),
        _ => String::new(),
    }
}

/// A scalar's text split at the placeholder marks.
fn parts(text: &str) -> Vec<Part> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(OPEN) {
        if open > 0 {
            out.push(Part::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + OPEN.len_utf8()..];
        let close = after.find(CLOSE).expect("scan writes OPEN index CLOSE");
        out.push(Part::Var(after[..close].parse().expect("scan writes an index")));
        rest = &after[close + CLOSE.len_utf8()..];
    }
    if !rest.is_empty() {
        out.push(Part::Text(rest.to_owned()));
    }
    out
}

/// Replaces every `{{ path }}` of `text` by a mark holding its index, and returns the marked
/// text and the placeholders; or the line and message of the first syntax problem.
fn scan(text: &str) -> Result<(String, Vec<Placeholder>), (usize, String)> {
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    if let Some(at) = text.find([OPEN, CLOSE]) {
        return Err((
            line_of(at),
            "the template holds the private-use characters U+E000 or U+E001; remove them".into(),
        ));
    }
    if let Some(at) = text.find("{%") {
        let message = "Jinja statements (`{% ... %}`) are not supported: templates hold YAML with `{{ name }}` placeholders; a configuration list or map placed alone (`key: {{ name }}`) becomes YAML structure";
        return Err((line_of(at), message.into()));
    }
    let mut marked = String::with_capacity(text.len());
    let mut placeholders = Vec::new();
    let mut rest = 0;
    // Counted as the scan moves on: counting from the start for each placeholder made a
    // template with 20,000 of them take minutes to load (issue 14).
    let mut line = 1;
    while let Some(found) = text[rest..].find("{{") {
        let start = rest + found;
        line += text[rest..start].matches('\n').count();
        let Some(length) = text[start..].find("}}") else {
            return Err((line, "`{{` is never closed by `}}`".into()));
        };
        let inner = text[start + 2..start + length].trim();
        if let Some(problem) = unsupported(inner) {
            return Err((line, problem));
        }
        let path: Vec<String> = inner.split('.').map(str::to_owned).collect();
        if path.iter().any(|segment| !is_name(segment)) {
            return Err((
                line,
                format!(
                    "`{{{{ {inner} }}}}` is not a placeholder: write `{{{{ name }}}}` or `{{{{ name.field }}}}` (letters, digits, `_` and `-`)"
                ),
            ));
        }
        marked.push_str(&text[rest..start]);
        marked.push(OPEN);
        marked.push_str(&placeholders.len().to_string());
        marked.push(CLOSE);
        placeholders.push(Placeholder { path, line, used: false });
        line += text[start..start + length].matches('\n').count();
        rest = start + length + 2;
    }
    marked.push_str(&text[rest..]);
    Ok((marked, placeholders))
}

fn is_name(segment: &str) -> bool {
    segment.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// What a `{{ ... }}` holds that is not a placeholder, and what to write instead.
fn unsupported(inner: &str) -> Option<String> {
    const INSTEAD: &str = "templates hold YAML with `{{ name }}` placeholders; a configuration \
                           list or map placed alone (`key: {{ name }}`) becomes YAML structure";
    let block = inner.starts_with(['#', '/', '^']) || inner.split_whitespace().next() == Some("else");
    let problem = if inner.is_empty() {
        "an empty placeholder `{{ }}`: write `{{ name }}`".to_owned()
    } else if block {
        format!("handlebars blocks (`{{{{{inner}}}}}`) are not supported: {INSTEAD}")
    } else if inner.starts_with('{') {
        format!("raw placeholders (`{{{{{inner}}}}}}}`) are not supported: {INSTEAD}")
    } else if inner.starts_with(['!', '>', '&', '~']) {
        format!("`{{{{{inner}}}}}` is handlebars syntax this service does not support: {INSTEAD}")
    } else if inner.contains('|') {
        format!(
            "Jinja filters (`{{{{ {inner} }}}}`) are not supported: put the value you need in the service's configuration"
        )
    } else {
        return None;
    };
    Some(problem)
}

/// The closest name to a misspelled variable (at most two edits away), looked up where the
/// path stops resolving.
fn suggestion(context: &Value, path: &[String]) -> Option<String> {
    let mut scope = context;
    for segment in path {
        match scope.get(segment) {
            Some(inner) => scope = inner,
            None => {
                let (distance, name) =
                    scope.as_object()?.keys().map(|name| (strsim::levenshtein(segment, name), name)).min()?;
                return (distance <= 2).then(|| name.clone());
            }
        }
    }
    None
}

/// Bytes of `object` as compact JSON, without writing it anywhere.
fn rendered_size(object: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, object).map_or(usize::MAX, |()| count.0)
}

/// A template that does not compile or render, located as precisely as known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template ConfigMap {configmap} key {key}{}: {message}", at_line(*.line))]
pub struct TemplateError {
    pub configmap: String,
    pub key: String,
    /// 1-based line in the template.
    pub line: Option<usize>,
    /// The unknown variable's path, for [`ErrorKind::UnknownVariable`].
    pub variable: Option<String>,
    pub kind: ErrorKind,
    /// What is wrong and what to change.
    pub message: String,
}

fn at_line(line: Option<usize>) -> String {
    line.map(|n| format!(" line {n}")).unwrap_or_default()
}

impl TemplateError {
    fn new(
        configmap: &str,
        key: &str,
        kind: ErrorKind,
        line: Option<usize>,
        message: String,
    ) -> TemplateError {
        TemplateError {
            configmap: configmap.to_owned(),
            key: key.to_owned(),
            line,
            variable: None,
            kind,
            message,
        }
    }

    /// A stable machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::Syntax => "template_syntax",
            ErrorKind::UnknownVariable => "unknown_variable",
            ErrorKind::InvalidYaml => "invalid_yaml",
            ErrorKind::NotAnObject => "not_an_object",
            ErrorKind::EmptyOutput => "empty_output",
            ErrorKind::TooLarge => "over_cap",
            ErrorKind::Policy => "template_policy",
        }
    }
}

/// What went wrong with a template; see [`TemplateError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A `{{ ... }}` that is no placeholder (handlebars blocks, Jinja filters and statements).
    Syntax,
    /// A `{{variable}}` the context does not define.
    UnknownVariable,
    /// The template is not YAML.
    InvalidYaml,
    /// The template is not exactly one object with apiVersion, kind and metadata.name.
    NotAnObject,
    /// The template holds no document at all.
    EmptyOutput,
    /// Over a cap (size, placeholders, nesting, rendered size); see [`Caps`].
    TooLarge,
    /// A rendered object the template policy refuses (see `crate::policy`).
    Policy,
}

/// The names [`context`] defines itself; a service configuration key named `user` or `options`
/// is shadowed, one with another of these names shadows the value of ours.
pub const RESERVED_NAMES: [&str; 11] = [
    "user",
    "username",
    "server",
    "namespace",
    "cluster_name",
    "image",
    "profile",
    "size",
    "options",
    "notebook_user_label",
    "notebook_server_label",
];

/// What a spawn knows when it renders its services' templates.
#[derive(Debug, Clone, Copy)]
pub struct ContextInput<'a> {
    /// The JupyterHub user name as JupyterHub sent it.
    pub username: &'a str,
    /// The named server, or `""` for the user's default server.
    pub server: &'a str,
    /// The notebook's namespace, where the rendered objects go.
    pub namespace: &'a str,
    /// The notebook image the user picked.
    pub image: &'a str,
    /// The selected profile's name.
    pub profile: &'a str,
    /// The selected size's name, or `""` when none was chosen.
    pub size: &'a str,
    /// The service's `configuration`, from the merged profile.
    pub configuration: &'a Map<String, Value>,
    /// The user's choices for the service's `options`, already validated and typed.
    pub options: &'a BTreeMap<String, Value>,
}

/// Renders a one-line text template, such as a service's templated `env` value, with the same
/// placeholders, context and strictness as objects: the result is the text with each value's
/// text in place (configuration values by their Python text, as in objects).
pub fn render_text(text: &str, context: &Value) -> Result<String, String> {
    let (marked, placeholders) = scan(text).map_err(|(_, message)| message)?;
    let values = placeholders
        .iter()
        .map(|p| lookup(context, &p.path).ok_or_else(|| format!("unknown variable `{}`", p.path.join("."))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(interpolate(&parts(&marked), &values))
}

/// Builds the rendering context:
///
/// | name | value |
/// |---|---|
/// | `user` | the user escaped as in JSP ([`naming::escape_user`]), e.g. `eje-40redhat-2ecom` |
/// | `username` | the raw user name, e.g. `eje@redhat.com` |
/// | `server` | the named server, `""` for the default one |
/// | `namespace` | the notebook's namespace |
/// | `cluster_name` | [`naming::cluster_name`] of user and server |
/// | `image`, `profile`, `size` | the user's picks (`size` may be `""`) |
/// | `notebook_user_label`, `notebook_server_label` | the `hub.jupyter.org/username` and `/servername` label values KubeSpawner gives the notebook pod ([`naming::kubespawner_label`]), for NetworkPolicies |
/// | every `configuration` key | at top level, as in JSP (`{{ cpu_request }}`) |
/// | `options` | the validated options, typed (`replicas: {{options.workers}}` is an integer) |
///
/// A configuration key of the same name wins over the names above, as in JSP (whose context
/// was the configuration plus `user`): the configuration is the admin's. `user` and `options`
/// win over the configuration: `user` did in JSP, and `options` are the user's validated
/// choices, which a template must be able to rely on.
pub fn context(input: &ContextInput) -> Value {
    let mut context = Map::new();
    let defaults = [
        ("username", input.username.into()),
        ("server", input.server.into()),
        ("namespace", input.namespace.into()),
        ("cluster_name", naming::cluster_name(input.username, input.server).into()),
        ("image", input.image.into()),
        ("profile", input.profile.into()),
        ("size", input.size.into()),
        ("notebook_user_label", naming::kubespawner_label(input.username).into()),
        ("notebook_server_label", naming::kubespawner_label(input.server).into()),
    ];
    for (name, value) in defaults {
        context.insert(name.to_owned(), value);
    }
    context.extend(input.configuration.iter().map(|(k, v)| (k.clone(), v.clone())));
    context.insert("user".into(), naming::escape_user(input.username).into());
    let options = input.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    context.insert("options".into(), Value::Object(options));
    Value::Object(context)
}

/// JSP's name rule: a rendered object whose `metadata.name` does not name its owner gets
/// `-<escaped user>` appended, so templates with a fixed name still give each user their own
/// object.
///
/// The name counts as naming its owner when it contains the escaped user or the cluster name as a
/// whole `-`/`.`-delimited part. The cluster name counts because a hash-shortened cluster name may
/// no longer contain the user, and `{{cluster_name}}` is unique per user and server anyway.
/// Two deliberate differences from JSP: JSP accepted any substring (user `a` "owned"
/// `ray-dashboard`, so users `a` and `b` would share that object), and JSP collapsed runs of `-`
/// after appending, which merges distinct users (`x-` + `-45je` for `Eje`, `x-` + `45je`).
pub fn apply_name_rule(object: &mut Value, escaped_user: &str, cluster_name: &str) {
    let Some(name) = pointer::get_mut(object, "/metadata/name") else {
        return;
    };
    let Some(current) = name.as_str() else { return };
    if contains_part(current, escaped_user) || contains_part(current, cluster_name) {
        return;
    }
    *name = Value::String(format!("{current}-{escaped_user}"));
}

/// Whether `part` occurs in `name` bounded by its ends or by `-`/`.` (an escaped user such as
/// `-45je` brings its own leading `-`).
fn contains_part(name: &str, part: &str) -> bool {
    let is_boundary = |c: Option<char>| c.is_none_or(|c| c == '-' || c == '.');
    !part.is_empty()
        && name.match_indices(part).any(|(start, _)| {
            (part.starts_with('-') || is_boundary(name[..start].chars().next_back()))
                && is_boundary(name[start + part.len()..].chars().next())
        })
}

#[cfg(test)]
mod tests;
