//! The catalog: every profile and template the service knows, parsed once from ConfigMaps.
//!
//! Both config sources (the Kubernetes watch and the `profiles/` + `templates/` folders) hand
//! their ConfigMaps to [`Catalog::build`]. A ConfigMap that fails to parse keeps its last good
//! version serving and its error is kept for the status endpoint, the log and a metric.

pub mod users;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use kube::core::{Selector, SelectorExt};
use serde::{Deserialize, Serialize};

use crate::caps::Caps;
use crate::policy::Policy;
use crate::profile::{self, PROFILES_KEY, ProfileDoc, ProfileSet};
use crate::template::{Template, TemplateError};
pub use users::UserIndex;

/// A ConfigMap as the catalog sees it: a name, labels and text data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ConfigMapSource {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub data: BTreeMap<String, String>,
}

/// Which ConfigMaps hold profiles: the base one by name, the others by label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSelector {
    pub base_name: String,
    pub labels: Selector,
}

impl Default for ProfileSelector {
    fn default() -> Self {
        Self::new("jupyter-singleuser-profiles", "jupyterhub=singleuser-profiles")
            .expect("the default selector is valid")
    }
}

impl ProfileSelector {
    /// `selector` is an equality-based label selector: `key=value[,key=value...]` (what the
    /// flag accepts; kube's `Selector` then matches and prints it).
    pub fn new(base_name: &str, selector: &str) -> Result<Self, String> {
        let terms = selector.split(',').map(str::trim).filter(|t| !t.is_empty());
        let labels = terms
            .map(|term| {
                let (key, value) = term
                    .split_once("==")
                    .or_else(|| term.split_once('='))
                    .ok_or_else(|| format!("label selector term `{term}` is not of the form key=value"))?;
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            })
            .collect::<Result<Selector, String>>()?;
        Ok(Self { base_name: base_name.to_owned(), labels })
    }

    pub fn matches(&self, cm: &ConfigMapSource) -> bool {
        cm.name == self.base_name || (!self.labels.selects_all() && self.labels.matches(&cm.labels))
    }

    /// The selector in Kubernetes' string form.
    pub fn label_selector(&self) -> String {
        self.labels.to_string()
    }
}

/// A problem with one ConfigMap (or one key of it). The last good version keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigProblem {
    pub configmap: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
    /// True when an earlier good version of this ConfigMap/key is still serving.
    pub serving_last_good: bool,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if self.serving_last_good {
            f.write_str(" (the last good version keeps serving)")?;
        }
        Ok(())
    }
}

/// An immutable snapshot; the request path reads it without any API call.
#[derive(Debug, Default)]
pub struct Catalog {
    profiles: ProfileSet,
    /// Profile ConfigMaps in load order, with the text each parsed document came from.
    docs: Vec<(String, Arc<str>, Arc<ProfileDoc>)>,
    /// Compiled templates by (ConfigMap, key), with the text they came from.
    templates: HashMap<(String, String), (Arc<str>, Arc<Template>)>,
    /// Why each template that does not compile (and has no good version) fails.
    broken: HashMap<(String, String), TemplateError>,
    problems: Vec<ConfigProblem>,
    /// Why no spawn can give a Ray cluster, if so (see [`Catalog::unusable`]).
    unusable: Option<String>,
    /// What it was loaded under; renders are held to the same.
    rules: Rules,
}

/// What loaded configuration must satisfy: the caps and the template policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub caps: Caps,
    pub policy: Policy,
}

impl Catalog {
    /// Builds a snapshot from every ConfigMap currently known, reusing what `previous` already
    /// parsed from identical text and keeping its good versions where the new text is broken.
    /// Users' settings ConfigMaps are skipped: they go to a [`UserIndex`].
    pub fn build<'a>(
        selector: &ProfileSelector,
        configmaps: impl IntoIterator<Item = &'a ConfigMapSource>,
        previous: Option<&Catalog>,
    ) -> Catalog {
        Self::build_with(selector, &Rules::default(), configmaps, previous)
    }

    /// [`Catalog::build`] under `rules`: ConfigMaps and templates over a cap are refused with a
    /// problem naming it, and templates the policy refuses do not load.
    pub fn build_with<'a>(
        selector: &ProfileSelector,
        rules: &Rules,
        configmaps: impl IntoIterator<Item = &'a ConfigMapSource>,
        previous: Option<&Catalog>,
    ) -> Catalog {
        let mut problems = Vec::new();
        // Users' settings are no part of it (see `UserIndex`).
        let by_name: BTreeMap<&str, &ConfigMapSource> = configmaps
            .into_iter()
            .filter(|cm| !users::is_user_settings(selector, cm))
            .filter(|cm| {
                let bytes: usize = cm.data.iter().map(|(k, v)| k.len() + v.len()).sum();
                let fits = bytes <= rules.caps.configmap_bytes;
                if !fits {
                    problems.push(ConfigProblem {
                        configmap: cm.name.clone(),
                        key: None,
                        line: None,
                        message: format!(
                            "ConfigMap {} holds {bytes} bytes of data, over the cap of {} (--max-configmap-bytes); it is ignored until it is smaller",
                            cm.name, rules.caps.configmap_bytes
                        ),
                        serving_last_good: false,
                    });
                }
                fits
            })
            .map(|cm| (cm.name.as_str(), cm))
            .collect();

        // Base ConfigMap first, then the labelled ones sorted by name (JSP's order).
        let mut profile_cms: Vec<&ConfigMapSource> =
            by_name.values().copied().filter(|cm| selector.matches(cm)).collect();
        profile_cms.sort_by_key(|cm| (cm.name != selector.base_name, cm.name.clone()));

        let mut docs = Vec::new();
        for cm in profile_cms {
            let last_good = previous.and_then(|p| p.docs.iter().find(|(name, ..)| *name == cm.name));
            let Some(text) = cm.data.get(PROFILES_KEY) else {
                problems.push(ConfigProblem {
                    configmap: cm.name.clone(),
                    key: None,
                    line: None,
                    message: format!(
                        "ConfigMap {} is selected as a profile source but has no key `{PROFILES_KEY}`; add that key or remove the label",
                        cm.name
                    ),
                    serving_last_good: last_good.is_some(),
                });
                docs.extend(last_good.cloned());
                continue;
            };
            if let Some(same) = last_good.filter(|(_, old, _)| **old == **text) {
                docs.push(same.clone());
                continue;
            }
            match profile::parse_doc(&cm.name, PROFILES_KEY, text) {
                Ok(doc) => docs.push((cm.name.clone(), Arc::from(text.as_str()), Arc::new(doc))),
                Err(err) => {
                    for err in std::iter::once(&*err).chain(&err.more) {
                        problems.push(ConfigProblem {
                            configmap: cm.name.clone(),
                            key: Some(PROFILES_KEY.to_owned()),
                            line: err.line,
                            message: err.to_string(),
                            serving_last_good: last_good.is_some(),
                        });
                    }
                    docs.extend(last_good.cloned());
                }
            }
        }

        let profiles = ProfileSet::new(docs.iter().map(|(_, _, doc)| (**doc).clone()));
        // The services that use each template, for the checks that need their configuration.
        let mut users_of: HashMap<(&str, &str), Vec<&profile::Service>> = HashMap::new();
        for service in
            docs.iter().flat_map(|(_, _, doc)| doc.profiles.iter()).flat_map(|p| p.services.values())
        {
            for r in &service.resources {
                users_of.entry((r.name.as_str(), r.path.as_str())).or_default().push(service);
            }
        }
        let no_services = Vec::new();

        let mut broken = HashMap::new();
        let mut templates = HashMap::new();
        for (cm_name, key) in referenced_templates(&docs) {
            let last_good = previous.and_then(|p| p.templates.get(&(cm_name.clone(), key.clone())));
            let text = by_name.get(cm_name.as_str()).and_then(|cm| cm.data.get(&key));
            let Some(text) = text else {
                let what = if by_name.contains_key(cm_name.as_str()) {
                    format!("template ConfigMap {cm_name} has no key `{key}`")
                } else {
                    format!("template ConfigMap {cm_name} (key `{key}`) does not exist")
                };
                problems.push(ConfigProblem {
                    configmap: cm_name.clone(),
                    key: Some(key.clone()),
                    line: None,
                    message: format!(
                        "{what}; a profile service references it (create it or fix the reference)"
                    ),
                    serving_last_good: false,
                });
                continue;
            };
            if let Some(same) = last_good.filter(|(old, _)| **old == **text) {
                templates.insert((cm_name, key), same.clone());
                continue;
            }
            let services = users_of.get(&(cm_name.as_str(), key.as_str())).unwrap_or(&no_services);
            let compiled = Template::compile_capped(&cm_name, &key, text, &rules.caps).and_then(|t| {
                let configuration = services.first().map(|s| &s.configuration);
                t.probe(configuration.unwrap_or(&serde_json::Map::new()), &rules.caps, &rules.policy)?;
                Ok(t)
            });
            match compiled {
                Ok(t) => {
                    templates.insert((cm_name, key), (Arc::from(text.as_str()), Arc::new(t)));
                }
                Err(err) => {
                    problems.push(ConfigProblem {
                        configmap: cm_name.clone(),
                        key: Some(key.clone()),
                        line: err.line,
                        message: err.to_string(),
                        serving_last_good: last_good.is_some(),
                    });
                    match last_good {
                        Some(good) => drop(templates.insert((cm_name, key), good.clone())),
                        None => drop(broken.insert((cm_name, key), err)),
                    }
                }
            }
        }

        // Variables no service using a template defines: every spawn with it would be refused.
        let mut found: Vec<ConfigProblem> = Vec::new();
        for ((cm_name, key), (_, template)) in &templates {
            let services = users_of.get(&(cm_name.as_str(), key.as_str())).unwrap_or(&no_services);
            let configurations = services.iter().map(|s| &s.configuration);
            let options = services.iter().flat_map(|s| s.options.keys().map(String::as_str));
            found.extend(template.unresolvable(configurations, options).into_iter().map(|err| {
                ConfigProblem {
                    configmap: cm_name.clone(),
                    key: Some(key.clone()),
                    line: err.line,
                    message: format!("{err}; every spawn using it is refused until then"),
                    serving_last_good: false,
                }
            }));
        }
        found.sort_by(|a, b| (&a.configmap, &a.key, a.line).cmp(&(&b.configmap, &b.key, b.line)));
        problems.extend(found);

        let mut catalog =
            Catalog { profiles, docs, templates, broken, problems, unusable: None, rules: rules.clone() };
        catalog.unusable = catalog.why_unusable(selector);
        catalog
    }

    /// Why no spawn can be served, if so: no profile ConfigMap loaded (none exists, or none
    /// parses), or no profile in them. A service in that state is not ready and refuses spawns
    /// rather than answer empty "successes". (A catalog whose profiles have no services is
    /// usable: JSP served such env-only profiles, and the JSP corpus has them.)
    pub fn unusable(&self) -> Option<&str> {
        self.unusable.as_deref()
    }

    fn why_unusable(&self, selector: &ProfileSelector) -> Option<String> {
        let hint = match self.problems.len() {
            0 => String::new(),
            n => format!("; {n} configuration problem(s), see GET /api/v1/status or `validate`"),
        };
        let profiles = self.profiles.profiles();
        if self.docs.is_empty() {
            return Some(format!(
                "no profile ConfigMap is loaded (expected ConfigMap {} or ConfigMaps labelled {}){hint}",
                selector.base_name,
                selector.label_selector()
            ));
        }
        if profiles.is_empty() {
            return Some(format!("the profile ConfigMaps define no profiles{hint}"));
        }
        None
    }

    pub fn profiles(&self) -> &ProfileSet {
        &self.profiles
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Why a referenced template that is not loaded failed to compile, if it exists.
    pub fn template_error(&self, configmap: &str, key: &str) -> Option<&TemplateError> {
        self.broken.get(&(configmap.to_owned(), key.to_owned()))
    }

    pub fn template(&self, configmap: &str, key: &str) -> Option<&Template> {
        self.templates.get(&(configmap.to_owned(), key.to_owned())).map(|(_, t)| &**t)
    }

    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }

    /// Names of the profile ConfigMaps serving, in load order.
    pub fn profile_sources(&self) -> impl Iterator<Item = &str> {
        self.docs.iter().map(|(name, ..)| name.as_str())
    }

    pub fn template_count(&self) -> usize {
        self.templates.len()
    }
}

fn referenced_templates(docs: &[(String, Arc<str>, Arc<ProfileDoc>)]) -> BTreeSet<(String, String)> {
    docs.iter()
        .flat_map(|(_, _, doc)| doc.profiles.iter())
        .flat_map(|p| p.services.values())
        .flat_map(|s| s.resources.iter())
        .map(|r| (r.name.clone(), r.path.clone()))
        .collect()
}

/// Why a folder of ConfigMap files could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {at}: {message}")]
    Invalid { path: String, at: String, message: String },
    #[error(
        "{path} is larger than {max_bytes} bytes (16 ConfigMaps at --max-configmap-bytes); split it or raise that cap"
    )]
    TooLarge { path: String, max_bytes: usize },
}

/// Reads every `*.yaml`/`*.yml` file in the given folders (or files): one or many ConfigMap
/// objects per file, `---`-separated, or `kind: List`. Other kinds are an error: these folders
/// are meant to be `kubectl apply -f`-able as they are. Files are capped at the default caps'
/// [`Caps::file_bytes`]; see [`load_files`].
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<ConfigMapSource>, DirError> {
    let files = load_files(paths, Caps::default().file_bytes())?;
    Ok(files.into_iter().flat_map(|(_, cms)| cms).collect())
}

/// The ConfigMaps of each file, named as given; a file larger than `max_bytes` is refused
/// after reading at most that much (`/dev/zero` too).
pub fn load_files<P: AsRef<Path>>(
    paths: &[P],
    max_bytes: usize,
) -> Result<Vec<(String, Vec<ConfigMapSource>)>, DirError> {
    use std::io::Read;
    let mut files = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let io = |source| DirError::Io { path: path.display().to_string(), source };
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .map_err(io)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.to_owned());
        }
    }
    let mut out = Vec::new();
    for file in files {
        let shown = file.display().to_string();
        let io = |source| DirError::Io { path: shown.clone(), source };
        let mut bytes = Vec::new();
        let limit = u64::try_from(max_bytes).unwrap_or(u64::MAX).saturating_add(1);
        std::fs::File::open(&file).and_then(|f| f.take(limit).read_to_end(&mut bytes)).map_err(io)?;
        if bytes.len() > max_bytes {
            return Err(DirError::TooLarge { path: shown, max_bytes });
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            io(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 text: {e}")))
        })?;
        let cms = parse_configmaps(&shown, &text)?;
        out.push((shown, cms));
    }
    Ok(out)
}

/// Parses ConfigMap manifests from one file's text.
pub fn parse_configmaps(path: &str, text: &str) -> Result<Vec<ConfigMapSource>, DirError> {
    #[derive(Deserialize)]
    struct Metadata {
        name: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }
    #[derive(Deserialize)]
    struct Manifest {
        kind: String,
        metadata: Option<Metadata>,
        #[serde(default)]
        data: BTreeMap<String, String>,
        #[serde(default)]
        items: Vec<serde_json::Value>,
    }
    let invalid = |at: String, message: String| DirError::Invalid { path: path.to_owned(), at, message };
    let documents = crate::yaml::documents(text).map_err(|e| {
        let at = e.line.map_or_else(|| "YAML".to_owned(), |line| format!("line {line}"));
        invalid(at, e.message)
    })?;

    let mut out = Vec::new();
    for (index, value) in documents.into_iter().enumerate() {
        let invalid = |message: String| invalid(format!("document {}", index + 1), message);
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        let items = match manifest.kind.as_str() {
            "ConfigMap" => vec![manifest],
            "List" | "ConfigMapList" => manifest
                .items
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<Vec<Manifest>, _>>()
                .map_err(|e| invalid(e.to_string()))?,
            other => {
                return Err(invalid(format!(
                    "kind {other} is not a ConfigMap; these folders hold ConfigMaps only"
                )));
            }
        };
        for item in items {
            let metadata = item.metadata.ok_or_else(|| invalid("ConfigMap without metadata.name".into()))?;
            if item.kind != "ConfigMap" {
                return Err(invalid(format!("list item of kind {} is not a ConfigMap", item.kind)));
            }
            out.push(ConfigMapSource { name: metadata.name, labels: metadata.labels, data: item.data });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMapSource {
        ConfigMapSource {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    const TEMPLATE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x-{{user}}\n";

    fn profiles(name: &str, profile_name: &str) -> String {
        format!(
            "profiles:\n- name: {profile_name}\n  services:\n    svc:\n      resources:\n      - name: tpl\n        path: {name}.yaml\n"
        )
    }

    fn selector() -> ProfileSelector {
        ProfileSelector::default()
    }

    #[test]
    fn base_first_then_labelled_by_name() {
        let label = [("jupyterhub", "singleuser-profiles")];
        let cms = [
            cm("zeta", &label, &[(PROFILES_KEY, "profiles: [{name: z}]")]),
            cm("alpha", &label, &[(PROFILES_KEY, "profiles: [{name: a}]")]),
            cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, "profiles: [{name: base}]")]),
            cm("unrelated", &[], &[(PROFILES_KEY, "profiles: [{name: nope}]")]),
        ];
        let catalog = Catalog::build(&selector(), &cms, None);
        assert_eq!(
            catalog.profile_sources().collect::<Vec<_>>(),
            ["jupyter-singleuser-profiles", "alpha", "zeta"]
        );
        assert!(catalog.problems().is_empty(), "{:?}", catalog.problems());
    }

    #[test]
    fn broken_profiles_keep_the_last_good_version() {
        let good = cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, &profiles("a", "first"))]);
        let tpl = cm("tpl", &[], &[("a.yaml", TEMPLATE)]);
        let first = Catalog::build(&selector(), [&good, &tpl], None);
        assert!(first.problems().is_empty(), "{:?}", first.problems());

        let broken =
            cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, "profiles: [\n  - name: x\n bad")]);
        let second = Catalog::build(&selector(), [&broken, &tpl], Some(&first));
        assert_eq!(second.problems().len(), 1);
        let problem = &second.problems()[0];
        assert_eq!(problem.configmap, "jupyter-singleuser-profiles");
        assert!(problem.serving_last_good);
        assert!(problem.line.is_some(), "{problem:?}");
        assert_eq!(second.profile_sources().collect::<Vec<_>>(), ["jupyter-singleuser-profiles"]);
        assert!(
            second.template("tpl", "a.yaml").is_some(),
            "templates of the last good profiles stay compiled"
        );
    }

    #[test]
    fn broken_profiles_without_a_good_version_are_skipped() {
        let broken = cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, "profiles: {")]);
        let catalog = Catalog::build(&selector(), [&broken], None);
        assert_eq!(catalog.profile_sources().count(), 0);
        assert!(!catalog.problems()[0].serving_last_good);
    }

    #[test]
    fn broken_template_keeps_the_last_good_version() {
        let profiles_cm = cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, &profiles("a", "p"))]);
        let good = cm("tpl", &[], &[("a.yaml", TEMPLATE)]);
        let first = Catalog::build(&selector(), [&profiles_cm, &good], None);
        let broken = cm("tpl", &[], &[("a.yaml", "metadata:\n  name: {{#if user}}\n")]);
        let second = Catalog::build(&selector(), [&profiles_cm, &broken], Some(&first));
        assert_eq!(second.problems().len(), 1, "{:?}", second.problems());
        assert_eq!(second.problems()[0].key.as_deref(), Some("a.yaml"));
        assert!(second.problems()[0].serving_last_good);
        assert!(second.template("tpl", "a.yaml").is_some());
    }

    #[test]
    fn missing_template_configmap_or_key_is_reported() {
        let profiles_cm = cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, &profiles("a", "p"))]);
        let catalog = Catalog::build(&selector(), [&profiles_cm], None);
        assert!(catalog.problems()[0].message.contains("does not exist"), "{:?}", catalog.problems());
        let wrong_key = cm("tpl", &[], &[("b.yaml", TEMPLATE)]);
        let catalog = Catalog::build(&selector(), [&profiles_cm, &wrong_key], None);
        assert!(catalog.problems()[0].message.contains("has no key `a.yaml`"), "{:?}", catalog.problems());
    }

    #[test]
    fn unchanged_text_is_not_parsed_again() {
        let profiles_cm = cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, &profiles("a", "p"))]);
        let tpl = cm("tpl", &[], &[("a.yaml", TEMPLATE)]);
        let first = Catalog::build(&selector(), [&profiles_cm, &tpl], None);
        let second = Catalog::build(&selector(), [&profiles_cm, &tpl], Some(&first));
        assert!(Arc::ptr_eq(&first.docs[0].2, &second.docs[0].2));
        let key = ("tpl".to_owned(), "a.yaml".to_owned());
        assert!(Arc::ptr_eq(&first.templates[&key].1, &second.templates[&key].1));
    }

    #[test]
    fn selector_parses_equality_terms() {
        let s = ProfileSelector::new("base", "a=b, c==d").unwrap();
        assert_eq!(s.label_selector(), "a=b,c=d");
        assert!(ProfileSelector::new("base", "justakey").is_err());
        assert!(s.matches(&cm("x", &[("a", "b"), ("c", "d")], &[])));
        assert!(!s.matches(&cm("x", &[("a", "b")], &[])));
        assert!(s.matches(&cm("base", &[], &[])));
    }

    #[test]
    fn manifests_parse_from_multi_document_files_and_lists() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n  labels: {a: b}\ndata:\n  k: v\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: two}\n";
        let cms = parse_configmaps("f.yaml", text).unwrap();
        assert_eq!(cms.len(), 2);
        assert_eq!(cms[0].labels["a"], "b");
        assert_eq!(cms[0].data["k"], "v");
        assert_eq!(cms[1].name, "two");
        let err = parse_configmaps("f.yaml", "kind: Secret\nmetadata: {name: s}\n").unwrap_err();
        assert!(err.to_string().contains("f.yaml: document 1: kind Secret"), "{err}");
    }

    #[test]
    fn repository_content_loads_without_problems() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cms = load_paths(&[root.join("profiles"), root.join("templates")]).unwrap();
        let catalog = Catalog::build(&selector(), &cms, None);
        assert!(catalog.problems().is_empty(), "{:#?}", catalog.problems());
        assert!(catalog.profile_sources().count() >= 1);
        assert!(catalog.template_count() >= 1);
    }

    #[test]
    fn a_catalog_no_spawn_can_use_says_why() {
        let reason =
            |cms: &[ConfigMapSource]| Catalog::build(&selector(), cms, None).unusable().map(str::to_owned);
        let none = reason(&[]).unwrap();
        assert!(
            none.contains("no profile ConfigMap is loaded") && none.contains("jupyter-singleuser-profiles"),
            "{none}"
        );
        let broken =
            reason(&[cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, "profiles: {")])]).unwrap();
        assert!(broken.contains("1 configuration problem"), "{broken}");
        let empty =
            reason(&[cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, "profiles: []")])]).unwrap();
        assert!(empty.contains("define no profiles"), "{empty}");
        let no_services =
            cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, "profiles: [{name: env-only}]")]);
        // Env-only profiles are JSP's and serve (the JSP corpus has them).
        assert_eq!(reason(&[no_services]), None);
        let profiles_cm = cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, &profiles("a", "p"))]);
        let tpl = cm("tpl", &[], &[("a.yaml", TEMPLATE)]);
        assert_eq!(reason(&[profiles_cm, tpl]), None);
    }

    #[test]
    fn template_variables_no_service_defines_are_problems_at_load() {
        let profiles_text = "profiles:\n- name: p\n  services:\n    svc:\n      configuration: {head_port: 1, nested: {a: 1}}\n      options: {workers: {type: integer, default: 1}}\n      resources:\n      - {name: tpl, path: a.yaml}\n";
        let profiles_cm = cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, profiles_text)]);
        let good = "kind: ConfigMap\napiVersion: v1\nmetadata:\n  name: x-{{user}}\ndata:\n  a: '{{head_port}} {{nested.a}} {{options.workers}} {{username}}'\n";
        let catalog = Catalog::build(&selector(), [&profiles_cm, &cm("tpl", &[], &[("a.yaml", good)])], None);
        assert!(catalog.problems().is_empty(), "{:#?}", catalog.problems());
        let bad = "kind: ConfigMap\napiVersion: v1\nmetadata:\n  name: x-{{user}}\ndata:\n  a: '{{head_prot}}'\n  b: '{{nested.b}} {{options.wrokers}}'\n";
        let catalog = Catalog::build(&selector(), [&profiles_cm, &cm("tpl", &[], &[("a.yaml", bad)])], None);
        let problems = catalog.problems();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems.iter().all(|p| p.configmap == "tpl" && p.key.as_deref() == Some("a.yaml")));
        assert_eq!(problems[0].line, Some(6));
        assert!(problems[0].message.contains("did you mean `head_port`"), "{}", problems[0].message);
        assert!(problems[2].message.contains("options.wrokers"), "{}", problems[2].message);
        assert!(catalog.template("tpl", "a.yaml").is_some(), "the template stays loaded; renders say why");
    }

    fn one_template(template: &str, configuration: &str) -> [ConfigMapSource; 2] {
        let profiles_text = format!(
            "profiles:\n- name: p\n  services:\n    svc:\n      configuration: {configuration}\n      resources:\n      - {{name: tpl, path: a.yaml}}\n"
        );
        [
            cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, &profiles_text)]),
            cm("tpl", &[], &[("a.yaml", template)]),
        ]
    }

    /// Finding 6 of issue 14: a Secret, a ClusterRoleBinding, a Namespace and a privileged
    /// hostPath pod all loaded and rendered; invalid names passed.
    #[test]
    fn templates_the_policy_refuses_do_not_load_and_say_why() {
        let cases = [
            ("apiVersion: v1\nkind: Secret\nmetadata: {name: '{{cluster_name}}'}\n", "Secret"),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: '{{cluster_name}}'}\nroleRef: {kind: ClusterRole, name: cluster-admin}\n",
                "never created",
            ),
            ("apiVersion: v1\nkind: Namespace\nmetadata: {name: '{{cluster_name}}'}\n", "Namespace"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: '{{cluster_name}}'}\n", "--template-kinds"),
            (
                "apiVersion: ray.io/v1\nkind: RayCluster\nmetadata: {name: '{{cluster_name}}'}\nspec:\n  headGroupSpec:\n    template:\n      spec:\n        hostNetwork: true\n        volumes: [{name: r, hostPath: {path: /}}]\n        containers: [{name: c, securityContext: {privileged: true}}]\n",
                "hostPath",
            ),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: '{{username}}-svc'}\n", "metadata.name"),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: '{{cluster_name}}'\n  labels: {owner: '{{username}}'}\n",
                "label owner value",
            ),
        ];
        for (template, expected) in cases {
            let catalog = Catalog::build(&selector(), &one_template(template, "{}"), None);
            assert!(catalog.template("tpl", "a.yaml").is_none(), "{template}");
            let error = catalog.template_error("tpl", "a.yaml").unwrap_or_else(|| panic!("{template}"));
            assert_eq!(error.code(), "template_policy", "{error}");
            let problem = &catalog.problems()[0];
            assert_eq!((problem.configmap.as_str(), problem.key.as_deref()), ("tpl", Some("a.yaml")));
            assert!(problem.message.contains(expected), "{expected}: {}", problem.message);
        }
        let allowed = Rules { policy: Policy::new(&["Pod"]).unwrap(), ..Rules::default() };
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: '{{cluster_name}}'}\n";
        let catalog = Catalog::build_with(&selector(), &allowed, &one_template(pod, "{}"), None);
        assert!(catalog.template("tpl", "a.yaml").is_some(), "{:?}", catalog.problems());
    }

    #[test]
    fn over_a_cap_is_refused_at_once_naming_the_cap() {
        let caps = Caps { placeholders: 3, template_bytes: 400, configmap_bytes: 2000, ..Caps::default() };
        let rules = Rules { caps, ..Rules::default() };
        let many = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: '{{{{cluster_name}}}}'}}\ndata: {{a: '{}'}}\n",
            "{{user}}".repeat(3)
        );
        let large = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: '{{{{cluster_name}}}}'}}\ndata: {{a: '{}'}}\n",
            "x".repeat(400)
        );
        let huge = "x".repeat(3000);
        for (template, cap) in [
            (many.as_str(), "--max-placeholders"),
            (large.as_str(), "--max-template-bytes"),
            (huge.as_str(), "--max-configmap-bytes"),
        ] {
            let catalog = Catalog::build_with(&selector(), &rules, &one_template(template, "{}"), None);
            assert!(
                catalog.problems().iter().any(|p| p.message.contains(cap)),
                "{cap}: {:#?}",
                catalog.problems()
            );
            assert!(catalog.template("tpl", "a.yaml").is_none(), "{cap}");
        }
        let rendered = Rules { caps: Caps { rendered_bytes: 300, ..Caps::default() }, ..Rules::default() };
        let list =
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '{{cluster_name}}'}\ndata: {a: '{{big}}'}\n";
        let configuration = format!("{{big: '{}'}}", "y".repeat(400));
        let catalog = Catalog::build_with(&selector(), &rendered, &one_template(list, &configuration), None);
        assert!(catalog.problems()[0].message.contains("--max-rendered-bytes"), "{:#?}", catalog.problems());
    }

    /// Finding 5 of issue 14: a 214 KB template with 20,000 placeholders took minutes to load
    /// (each placeholder's line was counted from the start). It loads; its speed is a benchmark.
    #[test]
    fn a_template_with_20000_placeholders_loads() {
        let words = "{{ user }} ".repeat(19_999);
        let template = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: '{{{{cluster_name}}}}'}}\ndata:\n  a: '{words}'\n"
        );
        assert_eq!((template.len() / 1000, template.matches("{{").count()), (220, 20_000));
        let catalog = Catalog::build(&selector(), &one_template(&template, "{}"), None);
        assert!(catalog.problems().is_empty(), "{:#?}", catalog.problems());
        assert!(catalog.template("tpl", "a.yaml").is_some());
    }

    /// Issue 14 item 7: only the first problem of a profile document was reported.
    #[test]
    fn every_broken_profile_of_a_document_is_reported() {
        let text =
            "profiles:\n- name: a\n  default: true\n- name: b\n  slug: ''\n- name: c\n  images: ['[']\n";
        let catalog = Catalog::build(
            &selector(),
            &[cm("jupyter-singleuser-profiles", &[], &[(PROFILES_KEY, text)])],
            None,
        );
        let problems = catalog.problems();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        let fields: Vec<bool> = ["profiles[0].default", "profiles[1].slug", "profiles[2].images[0]"]
            .iter()
            .zip(problems)
            .map(|(field, p)| p.message.contains(field))
            .collect();
        assert_eq!(fields, [true, true, true], "{problems:#?}");
    }
}
