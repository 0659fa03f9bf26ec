//! One ConfigMap's profile document (key `jupyterhub-singleuser-profiles.yaml`): parsing and
//! the checks an admin's CI should fail on, with the line and field to fix.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::de::nullable;
use super::matching::is_pattern;
use super::model::{Profile, Size};
use super::resources::{ResourceSpec, quantity_value};

/// The data key JSP reads profiles from.
pub const PROFILES_KEY: &str = "jupyterhub-singleuser-profiles.yaml";

/// One ConfigMap key's parsed profile document.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileDoc {
    #[serde(default, deserialize_with = "nullable")]
    pub profiles: Vec<Profile>,
    #[serde(default, deserialize_with = "nullable")]
    pub sizes: Vec<Size>,
    /// JSP's GPU types; their `node_tolerations` are applied when GPUs are requested.
    #[serde(rename = "gpuTypes", default, deserialize_with = "nullable")]
    pub gpu_types: Vec<Value>,
    /// Launcher settings, passed through.
    #[serde(default, deserialize_with = "nullable")]
    pub ui: Map<String, Value>,
}

/// A profile document that cannot be used, and where to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileFileError {
    pub configmap: String,
    pub key: String,
    /// 1-based line within the key's text, where known.
    pub line: Option<usize>,
    /// Path of the offending field, e.g. `profiles[2].resources.limits.cpu`.
    pub field: Option<String>,
    pub message: String,
    /// The document's other problems (one per profile, then sizes and GPU types), so that an
    /// admin fixes them in one round; reported after this one.
    #[serde(skip)]
    pub more: Vec<ProfileFileError>,
}

impl fmt::Display for ProfileFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigMap {} key {}", self.configmap, self.key)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProfileFileError {}

/// Parses and checks one document. An empty document is an empty `ProfileDoc`.
/// Boxed: the error carries the document's other problems too.
pub fn parse_doc(configmap: &str, key: &str, yaml: &str) -> Result<ProfileDoc, Box<ProfileFileError>> {
    let error = |line, field, message| ProfileFileError {
        configmap: configmap.to_string(),
        key: key.to_string(),
        line,
        field,
        message,
        more: Vec::new(),
    };
    let doc = crate::yaml::from_str::<Document>(yaml).map_err(|e| {
        // The key's line when the path is spelt out in block style, else where the parser was.
        let line = e.path.as_deref().and_then(|field| locate(yaml, field)).or(e.line);
        error(line, e.path, e.message)
    })?;
    let mut doc = doc.map(|Document(doc)| doc).unwrap_or_default();
    yaml11_env_values(&mut doc, yaml);
    let mut problems =
        problems(&doc).into_iter().map(|(field, message)| error(locate(yaml, &field), Some(field), message));
    match problems.next() {
        Some(first) => Err(Box::new(ProfileFileError { more: problems.collect(), ..first })),
        None => Ok(doc),
    }
}

/// The keys a profile entry may have (`Profile`'s fields; a test keeps the list in step).
pub const PROFILE_KEYS: [&str; 18] = [
    "name",
    "slug",
    "description",
    "default",
    "images",
    "users",
    "groups",
    "env",
    "resources",
    "max_resources",
    "node_tolerations",
    "node_affinity",
    "gpu",
    "volumes",
    "default_mount_path",
    "services",
    "wait",
    "idle_timeout",
];

/// Keys of profile entries that nothing reads (`sevrices`), as warnings with the line and the
/// nearest known key. JSP ignored them too, so they load; `validate` says so, since a misspelt
/// key silently drops what it held.
pub fn unknown_keys(text: &str) -> Vec<String> {
    use crate::yaml::Node;
    let Ok(mut documents) = crate::yaml::nodes(text, crate::yaml::MAX_DEPTH) else { return Vec::new() };
    let Some(Node::Map(root)) = documents.pop() else { return Vec::new() };
    let profiles = root.iter().find_map(|(k, v)| match (k, v) {
        (Node::Scalar(s), Node::Seq(items)) if s.text == "profiles" => Some(items),
        _ => None,
    });
    let mut warnings = Vec::new();
    for (index, profile) in profiles.into_iter().flatten().enumerate() {
        let Node::Map(fields) = profile else { continue };
        for (key, _) in fields {
            let Node::Scalar(key) = key else { continue };
            if PROFILE_KEYS.contains(&key.text.as_str()) {
                continue;
            }
            let nearest = PROFILE_KEYS.iter().min_by_key(|k| strsim::levenshtein(k, &key.text));
            let hint = nearest
                .filter(|k| strsim::levenshtein(k, &key.text) <= 3)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            warnings.push(format!(
                "line {}: profiles[{index}] has the unknown key `{}`, which is ignored{hint}",
                key.line, key.text
            ));
        }
    }
    warnings
}

/// JSP read profile documents with PyYAML (YAML 1.1), and the Kubernetes client made each env
/// value `str()`: a plain `yes` was the boolean True, so the notebook got `True`; `010` was 8.
/// The rest of the document reads as YAML 1.2 (see `crate::yaml`); env values are where the
/// difference reached the notebook, so they take JSP's reading of their plain scalars.
fn yaml11_env_values(doc: &mut ProfileDoc, text: &str) {
    use crate::yaml::{Node, Style};
    let Ok(mut documents) = crate::yaml::nodes(text, crate::yaml::MAX_DEPTH) else { return };
    let Some(Node::Map(root)) = documents.pop() else { return };
    let get = |entries: &[(Node, Node)], key: &str| {
        entries.iter().find(|(k, _)| matches!(k, Node::Scalar(s) if s.text == key)).map(|(_, v)| v.clone())
    };
    let Some(Node::Seq(profiles)) = get(&root, "profiles") else { return };
    for (profile, node) in doc.profiles.iter_mut().zip(&profiles) {
        let Node::Map(fields) = node else { continue };
        // The scalar written for each env entry's value, in the order the entries were read.
        let written: Vec<Option<Node>> = match get(fields, "env") {
            Some(Node::Map(legacy)) => legacy.into_iter().map(|(_, v)| Some(v)).collect(),
            Some(Node::Seq(items)) => items
                .iter()
                .map(|item| if let Node::Map(e) = item { get(e, "value") } else { None })
                .collect(),
            _ => continue,
        };
        if written.len() != profile.env.len() {
            continue;
        }
        for (var, node) in profile.env.iter_mut().zip(written) {
            let Some(Node::Scalar(scalar)) = node else { continue };
            if scalar.style != Style::Plain || scalar.string_tag {
                continue;
            }
            let value = crate::yaml::yaml11_scalar(&scalar.text);
            if let (Some(slot), false) = (var.get_mut("value"), value.is_null()) {
                *slot = serde_json::Value::String(crate::python::str(&value));
            }
        }
    }
}

/// A profile document, or a clear refusal of anything that is not a mapping.
struct Document(ProfileDoc);

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DocumentVisitor;

        const NOT_A_MAPPING: &str =
            "the document must be a mapping with the keys profiles, sizes, gpuTypes and ui";

        impl<'de> Visitor<'de> for DocumentVisitor {
            type Value = Document;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping with the keys profiles, sizes, gpuTypes and ui")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Document, A::Error> {
                ProfileDoc::deserialize(MapAccessDeserializer::new(map)).map(Document)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Document, E> {
                Ok(Document(ProfileDoc::default()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Document, A::Error> {
                Err(de::Error::custom(NOT_A_MAPPING))
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Document, E> {
                Err(E::custom(NOT_A_MAPPING))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Document, E> {
                Err(E::custom(NOT_A_MAPPING))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Document, E> {
                Err(E::custom(NOT_A_MAPPING))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Document, E> {
                Err(E::custom(NOT_A_MAPPING))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Document, E> {
                Err(E::custom(NOT_A_MAPPING))
            }
        }

        deserializer.deserialize_any(DocumentVisitor)
    }
}

/// The semantic problems, as (field path, message): the first of each profile, then of the
/// slugs, the sizes and the GPU types.
fn problems(doc: &ProfileDoc) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = doc
        .profiles
        .iter()
        .enumerate()
        .filter_map(|(i, p)| profile_problem(&format!("profiles[{i}]"), p))
        .collect();
    found.extend(duplicate_slug(&doc.profiles));
    found.extend(sizes_problem(&doc.sizes));
    found.extend(gpu_types_problem(&doc.gpu_types));
    found
}

fn profile_problem(at: &str, profile: &Profile) -> Option<(String, String)> {
    if profile.slug.as_deref().is_some_and(|s| s.trim().is_empty()) {
        return Some((
            format!("{at}.slug"),
            "a slug must not be empty; remove it to make the profile always apply".into(),
        ));
    }
    if profile.default && profile.slug.is_none() {
        return Some((
            format!("{at}.default"),
            "`default: true` needs a `slug`: only slugged profiles are picked, the others always apply"
                .into(),
        ));
    }
    for (i, image) in profile.images.iter().enumerate() {
        let invalid = is_pattern(image).then(|| glob::Pattern::new(image).err()).flatten();
        if let Some(e) = invalid {
            return Some((
                format!("{at}.images[{i}]"),
                format!("{image:?} is not a valid glob pattern: {e}"),
            ));
        }
    }
    if let Some(problem) = profile
        .max_resources
        .iter()
        .find_map(|(name, q)| quantity_value(q).err().map(|e| (format!("{at}.max_resources.{name}"), e)))
    {
        return Some(problem);
    }
    if let Some(problem) =
        profile.resources.as_ref().and_then(|r| quantity_problem(&format!("{at}.resources"), r))
    {
        return Some(problem);
    }
    let mut options = BTreeMap::new();
    for (name, service) in &profile.services {
        let at = format!("{at}.services.{name}");
        for (i, template) in service.resources.iter().enumerate() {
            let missing = [("name", &template.name), ("path", &template.path)]
                .into_iter()
                .find(|(_, value)| value.trim().is_empty());
            if let Some((field, _)) = missing {
                return Some((
                    format!("{at}.resources[{i}].{field}"),
                    "a template reference needs `name` (the template ConfigMap) and `path` (its data key)"
                        .into(),
                ));
            }
        }
        for (option, spec) in &service.options {
            if let Some(problem) = spec.problem() {
                return Some((format!("{at}.options.{option}"), problem));
            }
            match options.insert(option.clone(), (name, spec)) {
                Some((other, first)) if first != spec => {
                    return Some((
                        format!("{at}.options.{option}"),
                        format!(
                            "option {option:?} is also declared by service {other} with a different spec; options share one namespace, so make them agree or rename one"
                        ),
                    ));
                }
                _ => {}
            }
        }
    }
    None
}

fn quantity_problem(at: &str, resources: &ResourceSpec) -> Option<(String, String)> {
    resources
        .quantities()
        .find_map(|(field, q)| quantity_value(q).err().map(|e| (format!("{at}.{field}"), e)))
}

fn duplicate_slug(profiles: &[Profile]) -> Option<(String, String)> {
    profiles.iter().enumerate().find_map(|(i, p)| {
        let slug = p.slug.as_deref()?;
        let first = profiles[..i].iter().position(|q| q.slug.as_deref() == Some(slug))?;
        Some((
            format!("profiles[{i}].slug"),
            format!("slug {slug:?} is already used by profiles[{first}]; users pick profiles by slug, so each must be unique in a document"),
        ))
    })
}

fn sizes_problem(sizes: &[Size]) -> Option<(String, String)> {
    sizes.iter().enumerate().find_map(|(i, size)| {
        let at = format!("sizes[{i}]");
        if size.name.trim().is_empty() {
            return Some((format!("{at}.name"), "every size needs a name: users pick sizes by name".into()));
        }
        if let Some(first) = sizes[..i].iter().position(|s| s.name == size.name) {
            return Some((
                format!("{at}.name"),
                format!("size {:?} is already defined by sizes[{first}]", size.name),
            ));
        }
        quantity_problem(&format!("{at}.resources"), &ResourceSpec::from(&size.resources))
    })
}

fn gpu_types_problem(gpu_types: &[Value]) -> Option<(String, String)> {
    gpu_types.iter().enumerate().find_map(|(i, gpu_type)| {
        let at = format!("gpuTypes[{i}]");
        let Value::Object(fields) = gpu_type else {
            return Some((at, "a GPU type must be a mapping with `type` and `node_tolerations`".into()));
        };
        match fields.get("node_tolerations") {
            None | Some(Value::Null | Value::Array(_)) => None,
            Some(_) => Some((
                format!("{at}.node_tolerations"),
                "node_tolerations must be a list of tolerations".into(),
            )),
        }
    })
}

/// The 1-based line of a field path (`profiles[2].resources.limits.cpu`) in block-style YAML,
/// or of its deepest ancestor that can be found; `None` when not even the first key is found
/// (flow style, or a path the text does not spell out).
fn locate(yaml: &str, path: &str) -> Option<usize> {
    #[derive(Clone, Copy)]
    struct Line<'a> {
        number: usize,
        indent: usize,
        text: &'a str,
    }
    let mut lines: Vec<Line> = yaml
        .lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let text = raw.trim_start();
            (!text.is_empty() && !text.starts_with('#') && text != "---").then(|| Line {
                number: i + 1,
                indent: raw.len() - text.len(),
                text,
            })
        })
        .collect();

    // The node being searched is lines[start..end]; its entries sit at lines[start]'s indent.
    let (mut start, mut end) = (0, lines.len());
    let mut found = None;
    for segment in path_segments(path) {
        let indent = lines.get(start)?.indent;
        let entries = (start..end).filter(|&i| lines[i].indent == indent);
        let hit = match segment {
            Segment::Key(key) => entries.clone().find(|&i| {
                let text = lines[i].text;
                [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
                    .iter()
                    .any(|k| text.strip_prefix(k.as_str()).is_some_and(|rest| rest.starts_with(':')))
            }),
            Segment::Index(n) => {
                entries.filter(|&i| lines[i].text == "-" || lines[i].text.starts_with("- ")).nth(n)
            }
        };
        let Some(at) = hit else { break };
        found = Some(lines[at].number);
        let own_indent = lines[at].indent;
        // A child is more indented, or a list item at the key's own indent (`key:\n- item`).
        let is_child = |l: &Line| {
            l.indent > own_indent
                || (matches!(segment, Segment::Key(_)) && l.indent == own_indent && l.text.starts_with('-'))
        };
        let child_end = (at + 1..end).find(|&i| !is_child(&lines[i])).unwrap_or(end);
        match segment {
            Segment::Key(_) => (start, end) = (at + 1, child_end),
            Segment::Index(_) => {
                // The item's first key shares the dash's line: treat the text after "- " as a
                // line of its own, indented past the dash.
                let after_dash = lines[at].text[1..].trim_start();
                if after_dash.is_empty() {
                    (start, end) = (at + 1, child_end);
                } else {
                    lines[at].indent += lines[at].text.len() - after_dash.len();
                    lines[at].text = after_dash;
                    (start, end) = (at, child_end);
                }
            }
        }
        if start >= end {
            break;
        }
    }
    found
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn path_segments(path: &str) -> Vec<Segment<'_>> {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
            segments.push(Segment::Key(key));
        }
        segments.extend(pieces.filter_map(|p| p.trim_end_matches(']').parse().ok()).map(Segment::Index));
    }
    segments
}
