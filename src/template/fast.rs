//! A fast path for [`super::Template::render`]: parsing the rendered YAML was ~90% of a render
//! (~0.9 M instructions for the default RayCluster, measured with serde_yaml), so templates made only of text
//! and `{{value}}` placeholders are parsed once into a *skeleton* and each render substitutes
//! the values into a copy of it.
//!
//! It must give exactly what rendering and parsing the text gives, or nothing (the caller then
//! takes the full path, which also produces every error). So it only answers when:
//! - the skeleton, parsed with two sets of sentinel values (letters, digits), has every
//!   placeholder in exactly one string scalar and none in a key, comment or anchor copy;
//! - every value is inert (see [`super::yaml_escape::is_inert`]: it cannot change YAML structure)
//!   and non-empty; values with `:` only outside flow collections;
//! - a plain scalar that is a placeholder alone gets YAML's type resolution (done by the YAML
//!   parser on the value alone); a placeholder inside longer text must give a value that cannot
//!   resolve to a non-string, else the full path decides.

use std::sync::OnceLock;

use handlebars::Handlebars;
use serde_json::Value;

use super::TEMPLATE_NAME;
use super::yaml_escape::{escape, is_inert};

const OPEN: char = '\u{1}';
const CLOSE: char = '\u{2}';
const SENTINEL: &str = "zqsa";

#[derive(Debug)]
pub(super) struct Fast {
    /// The same template, with every escaped value wrapped in OPEN/CLOSE.
    delimited: Handlebars<'static>,
    /// Built on first use from the template's literal text.
    skeleton: OnceLock<Option<Skeleton>>,
}

#[derive(Debug)]
struct Skeleton {
    /// The literal text around the placeholders, which is the same for every render.
    raws: Vec<String>,
    object: Value,
    slots: Vec<Slot>,
}

#[derive(Debug)]
struct Slot {
    path: Vec<Step>,
    parts: Vec<Part>,
    kind: Kind,
    /// On a line with flow collection indicators: values with `:` take the full path.
    flow: bool,
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Value(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A plain scalar that is one placeholder: typed by YAML.
    PlainAlone,
    /// A quoted (or tagged string) scalar that is one placeholder: always a string.
    Quoted,
    /// A placeholder within other text (plain, quoted or block): a string unless it may resolve
    /// to something else.
    Mixed,
}

impl Fast {
    /// `None` when the template text cannot take the fast path at all.
    pub(super) fn new(text: &str) -> Option<Fast> {
        if text.contains([OPEN, CLOSE]) || text.contains(SENTINEL) {
            return None;
        }
        let mut delimited = Handlebars::new();
        delimited.set_strict_mode(true);
        delimited.register_escape_fn(|value: &str| format!("{OPEN}{}{CLOSE}", escape(value)));
        delimited.register_template_string(TEMPLATE_NAME, text).ok()?;
        Some(Fast { delimited, skeleton: OnceLock::new() })
    }

    /// The rendered object, or `None`: take the full path.
    pub(super) fn render(&self, context: &Value) -> Option<Value> {
        let text = self.delimited.render(TEMPLATE_NAME, context).ok()?;
        let (raws, values) = split(&text)?;
        if values.iter().any(|v| v.is_empty() || !is_inert(v)) {
            return None;
        }
        let skeleton = self.skeleton.get_or_init(|| Skeleton::build(&raws)).as_ref()?;
        if skeleton.raws != raws {
            return None;
        }
        let mut object = skeleton.object.clone();
        for slot in &skeleton.slots {
            if slot.flow && slot.parts.iter().any(|p| matches!(p, Part::Value(i) if values[*i].contains(':')))
            {
                return None;
            }
            let mut s = String::new();
            for part in &slot.parts {
                match part {
                    Part::Text(t) => s.push_str(t),
                    Part::Value(i) => s.push_str(values[*i]),
                }
            }
            let value = match slot.kind {
                Kind::Quoted => Value::String(s),
                Kind::PlainAlone if maybe_not_a_string(&s) => resolve(&s)?,
                Kind::Mixed if maybe_not_a_string(&s) => return None,
                Kind::PlainAlone | Kind::Mixed => Value::String(s),
            };
            *at(&mut object, &slot.path)? = value;
        }
        Some(object)
    }
}

/// The literal parts and the values of a delimited render; `None` if malformed.
fn split(text: &str) -> Option<(Vec<String>, Vec<&str>)> {
    let mut raws = Vec::new();
    let mut values = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(OPEN) {
        raws.push(rest[..open].to_owned());
        let after = &rest[open + OPEN.len_utf8()..];
        let close = after.find(CLOSE)?;
        let value = &after[..close];
        if value.contains(OPEN) {
            return None;
        }
        values.push(value);
        rest = &after[close + CLOSE.len_utf8()..];
    }
    if rest.contains(CLOSE) {
        return None;
    }
    raws.push(rest.to_owned());
    Some((raws, values))
}

/// Whether YAML could resolve this plain scalar to null, a boolean or a number.
fn maybe_not_a_string(s: &str) -> bool {
    s.is_empty()
        || s.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | '~'))
        || ["null", "true", "false"].iter().any(|w| s.eq_ignore_ascii_case(w))
}

/// YAML's resolution of a plain scalar, by the YAML parser itself.
fn resolve(s: &str) -> Option<Value> {
    match crate::yaml::documents(s).ok()?.as_slice() {
        [] => Some(Value::Null),
        [value @ (Value::Bool(_) | Value::Number(_) | Value::String(_))] => Some(value.clone()),
        _ => None,
    }
}

fn at<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

fn sentinel_a(i: usize) -> String {
    format!("{SENTINEL}{i}qz")
}

fn sentinel_b(i: usize) -> String {
    format!("9{i:06}9")
}

/// One object from YAML text, as the full path would accept it.
fn parse_one(text: &str) -> Option<Value> {
    let mut documents = crate::yaml::documents(text).ok()?;
    (documents.len() == 1 && documents[0].is_object()).then(|| documents.remove(0))
}

impl Skeleton {
    fn build(raws: &[String]) -> Option<Skeleton> {
        let n = raws.len() - 1;
        let join = |sentinel: fn(usize) -> String| {
            let mut text = raws[0].clone();
            for (i, raw) in raws[1..].iter().enumerate() {
                text.push_str(&sentinel(i));
                text.push_str(raw);
            }
            text
        };
        let text_a = join(sentinel_a);
        // Multi-line flow collections are out: a line's brackets must balance.
        let mut flow_lines = Vec::new();
        for line in text_a.lines() {
            let opens = line.matches(['{', '[']).count();
            if opens != line.matches(['}', ']']).count() {
                return None;
            }
            if opens > 0 || line.contains(',') {
                flow_lines.push(line);
            }
        }
        let a = parse_one(&text_a)?;
        let b = parse_one(&join(sentinel_b))?;
        let mut slots = Vec::new();
        walk(&a, &b, &mut Vec::new(), &mut slots)?;
        // Every placeholder exactly once.
        let mut seen = vec![0usize; n];
        for slot in &slots {
            for part in &slot.parts {
                if let Part::Value(i) = part {
                    seen[*i] += 1;
                }
            }
        }
        if seen.iter().any(|&count| count != 1) {
            return None;
        }
        for slot in &mut slots {
            slot.flow = slot.parts.iter().any(|p| match p {
                Part::Value(i) => flow_lines.iter().any(|line| line.contains(&sentinel_a(*i))),
                Part::Text(_) => false,
            });
        }
        Some(Skeleton { raws: raws.to_vec(), object: a, slots })
    }
}

/// Walks the letter- and digit-sentinel parses side by side, recording where values go.
fn walk(a: &Value, b: &Value, path: &mut Vec<Step>, slots: &mut Vec<Slot>) -> Option<()> {
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            if ma.len() != mb.len() {
                return None;
            }
            for (key, va) in ma {
                if key.contains(SENTINEL) {
                    return None;
                }
                path.push(Step::Key(key.clone()));
                walk(va, mb.get(key)?, path, slots)?;
                path.pop();
            }
            Some(())
        }
        (Value::Array(la), Value::Array(lb)) => {
            if la.len() != lb.len() {
                return None;
            }
            for (i, (va, vb)) in la.iter().zip(lb).enumerate() {
                path.push(Step::Index(i));
                walk(va, vb, path, slots)?;
                path.pop();
            }
            Some(())
        }
        (Value::String(sa), _) if sa.contains(SENTINEL) => {
            let parts = parts(sa)?;
            let kind = match (parts.as_slice(), b) {
                ([Part::Value(_)], Value::Number(_)) => Kind::PlainAlone,
                ([Part::Value(i)], Value::String(sb)) if *sb == sentinel_b(*i) => Kind::Quoted,
                ([Part::Value(_)], _) => return None,
                (_, Value::String(_)) => Kind::Mixed,
                _ => return None,
            };
            slots.push(Slot { path: path.clone(), parts, kind, flow: false });
            Some(())
        }
        (a, b) => (a == b).then_some(()),
    }
}

/// A skeleton string split into text and placeholder indices.
fn parts(s: &str) -> Option<Vec<Part>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find(SENTINEL) {
        if start > 0 {
            out.push(Part::Text(rest[..start].to_owned()));
        }
        let after = &rest[start + SENTINEL.len()..];
        let digits = after.find(|c: char| !c.is_ascii_digit())?;
        let index = after[..digits].parse().ok()?;
        rest = after[digits..].strip_prefix("qz")?;
        out.push(Part::Value(index));
    }
    if !rest.is_empty() {
        out.push(Part::Text(rest.to_owned()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Template;

    const VALUES: [&str; 24] = [
        "alice",
        "42bob",
        "eje-40redhat-2ecom",
        "0",
        "3",
        "007",
        "-5",
        "1e3",
        "3.5",
        ".inf",
        "~",
        "null",
        "True",
        "false",
        "My cluster",
        "a:b",
        "ray://x-head-svc.ns.svc:10001",
        "quay.io/org/ray:2.9",
        "",
        "a: b",
        "x\nkind: Secret",
        "a\", evil: \"b",
        "500m",
        "-45je",
    ];

    const TEMPLATES: [&str; 12] = [
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{x}}\ndata:\n  a: {{x}}\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: n\ndata:\n  a: \"{{x}}\"\n  b: '{{x}}'\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: n-{{x}}\ndata:\n  a: {{x}}-y\n  b: \"{{x}}-y\"\n  c: y{{x}}\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: n}\ndata: {a: {{x}}, b: \"{{x}}\"}\n",
        "apiVersion: v1\nkind: List\nmetadata:\n  name: n\nitems: [{{x}}, b]\nmore:\n- {{x}}\n- x{{x}}\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: n\ndata:\n  a: |\n    {{x}}\n    line\n  b: >\n    {{x}} folded\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: n\ndata:\n  a: {{x}}\n    continued\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: n\ndata:\n  {{x}}: key\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: n # {{x}}\ndata:\n  a: b\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: n\ndata:\n  a: !!str {{x}}\n  b: {{x}}.5\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: n\ndata:\n  a: &anchor {{x}}\n  b: *anchor\n",
        "apiVersion: v1\nkind: {{x}}\nmetadata:\n  name: {{x}}\nspec:\n  replicas: {{x}}\n  list:\n  - {{x}}\n",
    ];

    /// The fast path gives exactly what rendering and parsing the text gives, error or object.
    #[test]
    fn fast_path_agrees_with_the_full_path() {
        for (t, text) in TEMPLATES.iter().enumerate() {
            let Ok(template) = Template::compile("cm", "key", text) else { continue };
            for value in VALUES {
                let context = json!({"x": value});
                // Twice: the first render builds the skeleton.
                for _ in 0..2 {
                    assert_eq!(
                        template.render(&context),
                        template.render_text_and_parse(&context),
                        "template {t} with {value:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_default_templates_take_the_fast_path_and_agree() {
        let cms = crate::catalog::load_paths(&[concat!(env!("CARGO_MANIFEST_DIR"), "/templates")]).unwrap();
        let mut fast = 0;
        for cm in &cms {
            for (key, text) in &cm.data {
                let template = Template::compile(&cm.name, key, text).unwrap();
                for user in ["alice", "42bob", "eje-40redhat-2ecom"] {
                    for workers in [json!(0), json!(3)] {
                        let context = json!({
                            "user": user, "username": user, "server": "", "namespace": "ns",
                            "cluster_name": format!("ray-{user}"), "image": "ray-ml-notebook:2.9",
                            "profile": "ray", "size": "", "ray_version": "2.60.0",
                            "ray_image": "docker.io/rayproject/ray:2.60.0-py311", "head_num_cpus": "0",
                            "head_cpu": "1", "head_memory": "2Gi", "worker_cpu": "1", "worker_memory": "2Gi",
                            "dashboard_domain": "apps.example.com", "options": {"workers": workers},
                        });
                        let expected = template.render_text_and_parse(&context);
                        assert_eq!(template.render(&context), expected, "{} {key} {user}", cm.name);
                        if let Some(f) = &template.fast {
                            fast += usize::from(f.render(&context).is_some());
                        }
                    }
                }
            }
        }
        assert!(fast >= 2 * 3 * 2, "the RayCluster and Ingress templates take the fast path ({fast})");
    }
}
