//! Service templates: handlebars text in a ConfigMap key that renders to one Kubernetes object.
//!
//! A [`Template`] is compiled once when the configuration is loaded and rendered per spawn with a
//! [`context`]. Rendering is strict (an unknown variable is an error naming the ConfigMap, key,
//! line and variable, where JSP rendered it empty), escapes values for YAML rather than HTML (see
//! [`yaml_escape`]), and parses the result into exactly one object. JSP's Jinja placeholders
//! `{{ var }}`, `{{ var}}` and `{{var}}` are handlebars syntax too and render the same value.

mod fast;
mod yaml_escape;

use std::collections::BTreeMap;

use handlebars::template::TemplateElement;
use handlebars::{Handlebars, RenderErrorReason};
use serde_json::{Map, Value};

use crate::naming;

/// The registry holds just this template, so it needs no real name.
const TEMPLATE_NAME: &str = "template";

/// A compiled service template.
#[derive(Debug)]
pub struct Template {
    /// One registry per template: it holds the parsed template, so a render never re-parses,
    /// and a broken or replaced ConfigMap key cannot affect the others.
    registry: Handlebars<'static>,
    configmap: String,
    key: String,
    /// Whether line `n` of the rendered text comes from line `n` of the template, so YAML errors
    /// can point at the template. True when the template holds only text and `{{...}}`: escaped
    /// values never contain line breaks, while blocks, comments and `{{{...}}}` may add or
    /// remove lines.
    lines_preserved: bool,
    /// Substitutes values into a once-parsed skeleton instead of parsing YAML per render, for
    /// templates of text and `{{value}}` only; see [`fast`].
    fast: Option<fast::Fast>,
}

impl Template {
    /// Compiles `text`, the value of `key` in the template ConfigMap `configmap` (both are named
    /// in every error).
    pub fn compile(configmap: &str, key: &str, text: &str) -> Result<Template, TemplateError> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(yaml_escape::escape);
        if let Err(error) = registry.register_template_string(TEMPLATE_NAME, text) {
            let line = error.pos().map(|(line, _)| line);
            let message = format!("handlebars syntax error: {}", error.reason());
            return Err(TemplateError::new(configmap, key, ErrorKind::Syntax, line, message));
        }
        let lines_preserved = registry.get_template(TEMPLATE_NAME).is_some_and(|template| {
            template.elements.iter().all(|element| {
                matches!(element, TemplateElement::RawString(_) | TemplateElement::Expression(_))
            })
        });
        let fast = if lines_preserved { fast::Fast::new(text) } else { None };
        Ok(Template { registry, configmap: configmap.to_owned(), key: key.to_owned(), lines_preserved, fast })
    }

    /// Renders the template with `context` (see [`context`]) and returns the one Kubernetes object
    /// it holds, as JSON: a mapping with `apiVersion`, `kind` and `metadata.name`.
    pub fn render(&self, context: &Value) -> Result<Value, TemplateError> {
        if let Some(object) = self.fast.as_ref().and_then(|fast| fast.render(context)) {
            return self.check_object(object);
        }
        self.render_text_and_parse(context)
    }

    /// The full path: render the text, parse the YAML. The fast path must agree with it.
    fn render_text_and_parse(&self, context: &Value) -> Result<Value, TemplateError> {
        let text = self.registry.render(TEMPLATE_NAME, context).map_err(|error| {
            let line = error.line_no;
            match error.reason() {
                RenderErrorReason::MissingVariable(variable) => {
                    let variable = variable.clone().unwrap_or_default();
                    let hint = suggestion(context, &variable)
                        .map(|name| format!(" (did you mean `{name}`?)"))
                        .unwrap_or_default();
                    let message = format!(
                        "unknown variable `{variable}` — define it in the service's \
                         configuration or fix the template{hint}"
                    );
                    let error = self.error(ErrorKind::UnknownVariable, line, message);
                    TemplateError { variable: Some(variable), ..error }
                }
                reason => self.error(ErrorKind::Render, line, format!("cannot render: {reason}")),
            }
        })?;
        self.parse_object(&text)
    }

    fn parse_object(&self, text: &str) -> Result<Value, TemplateError> {
        let mut documents = crate::yaml::documents(text).map_err(|error| self.yaml_error(text, &error))?;
        let object = match documents.len() {
            0 => {
                let message = "the template rendered nothing; a template key must hold exactly one \
                               Kubernetes object"
                    .to_owned();
                return Err(self.error(ErrorKind::EmptyOutput, None, message));
            }
            1 => documents.remove(0),
            n => {
                let message = format!(
                    "the template rendered {n} YAML documents; put each Kubernetes object under \
                     its own ConfigMap key"
                );
                return Err(self.error(ErrorKind::NotAnObject, None, message));
            }
        };
        self.check_object(object)
    }

    /// One Kubernetes object: a mapping with apiVersion, kind and metadata.name.
    fn check_object(&self, object: Value) -> Result<Value, TemplateError> {
        let missing: Vec<&str> =
            [("apiVersion", "/apiVersion"), ("kind", "/kind"), ("metadata.name", "/metadata/name")]
                .into_iter()
                .filter(|(_, pointer)| {
                    object.pointer(pointer).and_then(Value::as_str).is_none_or(str::is_empty)
                })
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

    fn yaml_error(&self, text: &str, error: &crate::yaml::Error) -> TemplateError {
        let Some(rendered_line) = error.line else {
            return self.error(
                ErrorKind::InvalidYaml,
                None,
                format!("the rendered template is not valid YAML: {error}"),
            );
        };
        let line_text = text.lines().nth(rendered_line.saturating_sub(1)).unwrap_or_default().trim();
        let mut message = format!(
            "the rendered template is not valid YAML: {error}; rendered line {rendered_line}: `{}`",
            line_text.chars().take(160).collect::<String>()
        );
        if line_text.contains("\"\"") {
            message.push_str(
                " — a value that is not plain text landed inside quotes written in the \
                 template: remove the quotes around its placeholder (values are quoted for YAML \
                 automatically)",
            );
        }
        self.error(ErrorKind::InvalidYaml, self.lines_preserved.then_some(rendered_line), message)
    }

    fn error(&self, kind: ErrorKind, line: Option<usize>, message: String) -> TemplateError {
        TemplateError::new(&self.configmap, &self.key, kind, line, message)
    }
}

/// The closest name to a misspelled variable (at most two edits away), looked up where the
/// path stops resolving.
fn suggestion(context: &Value, path: &str) -> Option<String> {
    let mut scope = context;
    for segment in path.split('.') {
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
            ErrorKind::Render => "template_render",
            ErrorKind::InvalidYaml => "invalid_yaml",
            ErrorKind::NotAnObject => "not_an_object",
            ErrorKind::EmptyOutput => "empty_output",
        }
    }
}

/// What went wrong with a template; see [`TemplateError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not valid handlebars (Jinja-only syntax such as `{{ x | lower }}` lands here).
    Syntax,
    /// A `{{variable}}` the context does not define.
    UnknownVariable,
    /// Any other rendering failure, e.g. a helper called with wrong arguments.
    Render,
    /// The rendered text is not YAML.
    InvalidYaml,
    /// The rendered YAML is not exactly one object with apiVersion, kind and metadata.name.
    NotAnObject,
    /// The rendered YAML holds no document at all.
    EmptyOutput,
}

/// The names [`context`] defines itself; a service configuration key named `user` or `options`
/// is shadowed, one with another of these names shadows the value of ours.
pub const RESERVED_NAMES: [&str; 9] =
    ["user", "username", "server", "namespace", "cluster_name", "image", "profile", "size", "options"];

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
/// context and strictness as objects but without YAML escaping: the result is a plain string.
pub fn render_text(text: &str, context: &Value) -> Result<String, String> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(handlebars::no_escape);
    registry.render_template(text, context).map_err(|error| match error.reason() {
        RenderErrorReason::MissingVariable(Some(variable)) => format!("unknown variable `{variable}`"),
        RenderErrorReason::TemplateError(parse) => format!("handlebars syntax error: {}", parse.reason()),
        reason => reason.to_string(),
    })
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
    let Some(name) = object.pointer_mut("/metadata/name") else {
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
