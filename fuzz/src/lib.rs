//! What each fuzz target checks, for one input. The libFuzzer binaries in `fuzz_targets/` call
//! these, and `tests/binary/fuzz_regressions.rs` includes this file to replay every input kept
//! under `fuzz/regressions/<target>/` in the ordinary test suite, so a crash found once stays a
//! test case. Only `singleuser_profiles`, `serde` and `serde_json` are used here: both crates
//! have them.
//!
//! Inputs are text a person can read and write (the seed corpus is the repo's own files):
//! - `configmaps`: a file of ConfigMap manifests, as `kubectl apply -f` takes them;
//! - `plan`: one line of JSON, a spawn request, then ConfigMap manifests;
//! - `template`: one line of JSON, the template context's inputs, then the template text.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use singleuser_profiles::catalog::{self, Catalog, ConfigMapSource, ProfileSelector};
use singleuser_profiles::labels::{MANAGED_BY, MANAGED_BY_LABEL};
use singleuser_profiles::naming;
use singleuser_profiles::plan::{self, SpawnRequest};
use singleuser_profiles::profile::{PROFILES_KEY, parse_doc};
use singleuser_profiles::template::{self, ContextInput, Template};

/// The namespace a plan falls back to, as the service's own would be.
const SERVICE_NAMESPACE: &str = "fuzz-ns";

/// The first line (when it parses as JSON of type `T`) and the rest of the input. A first line
/// that is not such JSON is part of the text, so plain manifests and templates fuzz too.
fn split_header<T: for<'de> Deserialize<'de> + Default>(data: &[u8]) -> Option<(T, &str)> {
    let text = std::str::from_utf8(data).ok()?;
    if let Some((first, rest)) = text.split_once('\n')
        && let Ok(header) = serde_json::from_str::<T>(first)
    {
        return Some((header, rest));
    }
    Some((T::default(), text))
}

fn build_catalog(configmaps: &[ConfigMapSource]) -> Catalog {
    let selector = ProfileSelector::default();
    let first = Catalog::build(&selector, configmaps, None);
    // A rebuild from the same ConfigMaps reuses what was parsed; it must agree with the first.
    let again = Catalog::build(&selector, configmaps, Some(&first));
    assert_eq!(first.problems(), again.problems(), "a rebuild from identical ConfigMaps differs");
    assert_eq!(first.profiles(), again.profiles(), "a rebuild from identical ConfigMaps differs");
    first
}

/// ConfigMap manifests -> sources -> profile documents and compiled templates (the catalog), and
/// the profile document parser on the raw text too. Errors are fine; panics are not.
pub fn configmaps(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_doc("fuzz", PROFILES_KEY, text);
    let Ok(configmaps) = catalog::parse_configmaps("fuzz.yaml", text) else { return };
    let catalog = build_catalog(&configmaps);
    for problem in catalog.problems() {
        assert!(!problem.message.is_empty(), "a config problem without a message");
    }
    let _ = plan::lint(&catalog);
}

/// A spawn request against a catalog: resolve (merge every matching profile, the size, the
/// options) and render every service template, then the environment and pod settings.
pub fn plan(data: &[u8]) {
    let Some((request, text)) = split_header::<SpawnRequest>(data) else { return };
    let Ok(configmaps) = catalog::parse_configmaps("fuzz.yaml", text) else { return };
    let catalog = build_catalog(&configmaps);
    let Ok(plan) = plan::plan(&catalog, &request, SERVICE_NAMESPACE) else { return };

    assert!(naming::is_dns1035_label(&plan.cluster_name), "cluster name {:?}", plan.cluster_name);
    assert!(plan.cluster_name.len() <= naming::MAX_CLUSTER_NAME, "cluster name {:?}", plan.cluster_name);
    let owner = plan.owner.configmap_name();
    assert!(naming::is_dns1123_subdomain(&owner), "owner ConfigMap name {owner:?}");
    for object in &plan.objects {
        assert_eq!(
            object.pointer("/metadata/namespace").and_then(Value::as_str),
            Some(plan.owner.namespace.as_str()),
            "a rendered object outside the notebook's namespace: {object}"
        );
        let managed = format!("/metadata/labels/{}", MANAGED_BY_LABEL.replace('/', "~1"));
        assert_eq!(object.pointer(&managed).and_then(Value::as_str), Some(MANAGED_BY), "{object}");
    }
    let _ = plan.environment(&plan.objects);
    let _ = plan.pod();
    let _ = plan.owner.configmap(&plan.cluster_name, "fuzz", &plan.objects);
    serde_json::to_string(&plan).expect("a plan serializes");
}

/// The template context's inputs, as the fuzzer's first input line.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContextSpec {
    username: String,
    server: String,
    namespace: String,
    image: String,
    profile: String,
    size: String,
    configuration: Map<String, Value>,
    options: BTreeMap<String, Value>,
}

/// Compiles and renders a template with an arbitrary context; renders the service `env` text
/// form too; and checks that the user's values cannot change a template's YAML structure.
pub fn template(data: &[u8]) {
    let Some((spec, text)) = split_header::<ContextSpec>(data) else { return };
    let input = ContextInput {
        username: &spec.username,
        server: &spec.server,
        namespace: &spec.namespace,
        image: &spec.image,
        profile: &spec.profile,
        size: &spec.size,
        configuration: &spec.configuration,
        options: &spec.options,
    };
    let context = template::context(&input);
    if let Ok(compiled) = Template::compile("fuzz", "fuzz.yaml", text)
        && let Ok(mut object) = compiled.render(&context)
    {
        for pointer in ["/apiVersion", "/kind", "/metadata/name"] {
            assert!(object.pointer(pointer).and_then(Value::as_str).is_some(), "{pointer} in {object}");
        }
        let user = naming::escape_user(&spec.username);
        template::apply_name_rule(&mut object, &user, &naming::cluster_name(&spec.username, &spec.server));
    }
    let _ = template::render_text(text, &context);

    for value in [&spec.username, &spec.server, &spec.image, &spec.size] {
        value_stays_one_scalar(value, &context);
    }
    names_are_valid(&spec.username, &spec.server);
}

/// The same user-chosen value in every placement a template may give it: a plain value, a flow
/// sequence item, single quotes, a comment and a block scalar. Whatever the value, the object
/// keeps exactly the keys the template wrote and holds the value exactly.
fn value_stays_one_scalar(value: &str, context: &Value) {
    // An option: a value a user chose (a configuration value may hold YAML structure by design).
    let mut context = context.clone();
    context["options"]["probe"] = Value::from(value);
    let plain =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\ndata:\n  plain: {{options.probe}}\n";
    let object = Template::compile("fuzz", "plain", plain)
        .expect("the probe compiles")
        .render(&context)
        .unwrap_or_else(|e| panic!("a plain placeholder must render any value, {value:?}: {e}"));
    assert_keys(&object, &["apiVersion", "data", "kind", "metadata"]);
    assert_keys(&object["metadata"], &["name"]);
    assert_keys(&object["data"], &["plain"]);
    assert_eq!(object["data"]["plain"], Value::from(value), "a plain placeholder changed the value");

    let everywhere = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\ndata:\n  \
                      flow: [{{options.probe}}, end]\n  single: '{{options.probe}}'\n  # {{options.probe}}\n  \
                      block: |\n    {{options.probe}}\n  last: end\n";
    let compiled = Template::compile("fuzz", "everywhere", everywhere).expect("the probe compiles");
    let object = compiled.render(&context).unwrap_or_else(|e| panic!("{value:?} in every placement: {e}"));
    assert_keys(&object, &["apiVersion", "data", "kind", "metadata"]);
    assert_keys(&object["metadata"], &["name"]);
    assert_keys(&object["data"], &["block", "flow", "last", "single"]);
    assert_eq!(object["data"]["flow"], serde_json::json!([value, "end"]), "flow sequence");
    assert_eq!(object["data"]["single"], Value::from(value), "single quotes");
    assert_eq!(object["data"]["block"], Value::from(format!("{value}\n")), "block scalar");
    assert_eq!(object["data"]["last"], "end");
}

fn assert_keys(object: &Value, expected: &[&str]) {
    let keys: Vec<&str> =
        object.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
    assert_eq!(keys, expected, "the rendered structure changed: {object}");
}

/// Every name derived from a user and server is valid where Kubernetes puts it.
fn names_are_valid(user: &str, server: &str) {
    let cluster = naming::cluster_name(user, server);
    assert!(naming::is_dns1035_label(&cluster) && cluster.len() <= naming::MAX_CLUSTER_NAME, "{cluster:?}");
    let owner = naming::owner_configmap_name(user, server);
    assert!(naming::is_dns1123_subdomain(&owner), "{owner:?}");
    for raw in [user, server] {
        let label = naming::label_value(raw);
        assert!(label.is_empty() || naming::is_dns1123_label(&label), "label value {label:?} for {raw:?}");
    }
}
