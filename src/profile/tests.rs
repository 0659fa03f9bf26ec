//! Rules of DESIGN.md and JSP's edge cases, driven through the public API.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

fn parse(yaml: &str) -> Result<ProfileDoc, Box<ProfileFileError>> {
    parse_doc("jupyter-singleuser-profiles", PROFILES_KEY, yaml)
}

fn set(yaml: &str) -> ProfileSet {
    ProfileSet::new([parse(yaml).unwrap_or_else(|e| panic!("{e}"))])
}

fn problem(yaml: &str) -> ProfileFileError {
    *parse(yaml).expect_err("the document should be rejected")
}

fn user(name: &str) -> Requester {
    Requester::new(name, Vec::<String>::new())
}

fn pick(profile: &str) -> Choice {
    Choice { profile: Some(profile.to_string()), ..Choice::default() }
}

fn sized(size: &str) -> Choice {
    Choice { size: Some(size.to_string()), ..Choice::default() }
}

fn with_options(profile: &str, options: &[(&str, Value)]) -> Choice {
    let options = options.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    Choice { profile: Some(profile.to_string()), options, ..Choice::default() }
}

fn resolve(set: &ProfileSet, who: &str, image: Option<&str>, choice: &Choice) -> Resolved {
    set.resolve(&user(who), image, choice).unwrap_or_else(|e| panic!("{e}"))
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn env_names(resolved: &Resolved) -> Vec<&str> {
    resolved.env.iter().map(|v| v["name"].as_str().unwrap()).collect()
}

// ---------------------------------------------------------------- parsing

#[test]
fn empty_and_comment_only_documents_are_empty() {
    assert_eq!(parse("").unwrap(), ProfileDoc::default());
    assert_eq!(parse("# profiles come later\n").unwrap(), ProfileDoc::default());
    assert_eq!(parse("profiles:\nsizes:\n").unwrap(), ProfileDoc::default());
}

#[test]
fn a_list_document_is_rejected_with_the_expected_shape() {
    let e = problem("- name: globals\n");
    assert_eq!(e.message, "the document must be a mapping with the keys profiles, sizes, gpuTypes and ui");
}

#[test]
fn unknown_top_level_key_lists_the_known_ones() {
    let e = problem("profiles: []\nprofile:\n- name: typo\n");
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("unknown field `profile`"), "{}", e.message);
    assert!(e.message.contains("`profiles`, `sizes`, `gpuTypes`, `ui`"), "{}", e.message);
}

#[test]
fn unknown_keys_inside_profiles_are_ignored_for_jsp_compatibility() {
    let doc = parse("profiles:\n- name: globals\n  last_selected_image: foo\n  schedulable: true\n").unwrap();
    assert_eq!(doc.profiles[0].name.as_deref(), Some("globals"));
}

#[test]
fn keys_without_values_count_as_absent() {
    let doc = parse("profiles:\n- name: globals\n  users:\n  images:\n  env:\n  resources:\n  services:\n")
        .unwrap();
    let p = &doc.profiles[0];
    assert!(p.users.is_empty() && p.images.is_empty() && p.env.is_empty() && p.services.is_empty());
    assert_eq!(p.resources, None);
}

#[test]
fn yaml_syntax_errors_give_the_line() {
    let e = problem("profiles:\n- name: a\n  env: [\n");
    // The line of the bracket left open (serde_yaml reported the end of the text, line 4).
    assert_eq!(e.line, Some(3));
    assert_eq!(e.field, None);
}

#[test]
fn type_errors_name_the_field_and_its_line() {
    let e = problem("profiles:\n- name: globals\n- name: team\n  users: {eje: yes}\n");
    assert_eq!(e.field.as_deref(), Some("profiles[1].users"));
    assert_eq!(e.line, Some(4));
    assert!(e.message.starts_with("expected a name or a list of names"), "{}", e.message);
}

#[test]
fn invalid_quantities_name_the_exact_field_and_line() {
    let yaml = "profiles:\n- name: a\n- name: b\n- name: c\n  resources:\n    requests:\n      cpu: 1\n    limits:\n      memory: 2Gi\n      cpu: 2 cores\n";
    let e = problem(yaml);
    assert_eq!(e.field.as_deref(), Some("profiles[2].resources.limits.cpu"));
    assert_eq!(e.line, Some(10));
    assert!(e.message.contains("not a Kubernetes quantity"), "{}", e.message);
}

#[test]
fn display_reads_configmap_key_line_field_message() {
    let e = problem("sizes:\n- resources:\n    limits: {cpu: 1}\n");
    assert_eq!(
        e.to_string(),
        "ConfigMap jupyter-singleuser-profiles key jupyterhub-singleuser-profiles.yaml line 2: sizes[0].name: every size needs a name: users pick sizes by name"
    );
}

#[test]
fn duplicate_slugs_in_one_document_are_rejected_at_the_second() {
    let e = problem("profiles:\n- slug: ray\n- name: globals\n- name: Ray again\n  slug: ray\n");
    assert_eq!(e.field.as_deref(), Some("profiles[2].slug"));
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("already used by profiles[0]"), "{}", e.message);
}

#[test]
fn duplicate_size_names_are_rejected_and_case_tells_names_apart() {
    let e = problem("sizes:\n- name: Small\n- name: small\n- name: Small\n");
    assert_eq!(e.field.as_deref(), Some("sizes[2].name"));
    assert_eq!(e.line, Some(4));
}

#[test]
fn invalid_image_globs_are_rejected() {
    let e = problem("profiles:\n- name: ray\n  images:\n  - ray:2.9\n  - 'ray-ml-notebook:[2.9'\n");
    assert_eq!(e.field.as_deref(), Some("profiles[0].images[1]"));
    assert_eq!(e.line, Some(5));
}

#[test]
fn default_without_slug_is_rejected() {
    let e = problem("profiles:\n- name: globals\n  default: true\n");
    assert_eq!(e.field.as_deref(), Some("profiles[0].default"));
}

#[test]
fn template_references_need_name_and_path() {
    let yaml = "profiles:\n- name: spark\n  services:\n    spark:\n      resources:\n      - name: spark-cluster-template\n";
    let e = problem(yaml);
    assert_eq!(e.field.as_deref(), Some("profiles[0].services.spark.resources[0].path"));
    assert_eq!(e.line, Some(6));
}

#[test]
fn inconsistent_option_declarations_are_rejected() {
    let cases = [
        ("{type: integer, default: 9, min: 0, max: 4}", "default 9 is not between 0 and 4"),
        ("{type: integer, min: 5, max: 4}", "min 5 is greater than max 4"),
        ("{type: enum, values: []}", "an enum needs a non-empty `values` list"),
        ("{type: enum, values: [a, b], default: c}", "default \"c\" is not one of the values a, b"),
        ("{type: string, pattern: 'v[1-'}", "is not a valid glob"),
        ("{type: string, pattern: 'v*', default: x1}", "does not match the pattern"),
        ("{type: integer, maximum: 3}", "unknown field `maximum`"),
        ("{type: float}", "unknown variant `float`"),
    ];
    for (spec, expected) in cases {
        let yaml = format!(
            "profiles:\n- slug: ray\n  services:\n    ray:\n      options:\n        workers: {spec}\n"
        );
        let e = problem(&yaml);
        // An unknown `type` is named exactly (serde's path reaches the tag).
        let field = if spec.contains("float") { "options.workers.type" } else { "options.workers" };
        assert_eq!(e.field, Some(format!("profiles[0].services.ray.{field}")), "{spec}");
        assert_eq!(e.line, Some(6), "{spec}");
        assert!(e.message.contains(expected), "{spec}: {}", e.message);
    }
}

#[test]
fn env_entries_need_a_name() {
    let e = problem("profiles:\n- name: a\n  env:\n  - name: OK\n    value: x\n  - value: y\n");
    assert_eq!(e.field.as_deref(), Some("profiles[0].env[1]"));
    assert_eq!(e.line, Some(6));
}

#[test]
fn legacy_env_map_becomes_env_vars_with_string_values() {
    let doc =
        parse("profiles:\n- env:\n    AWS_ACCESS_KEY_ID: ''\n    PORT: 80\n    DEBUG: true\n    EMPTY:\n")
            .unwrap();
    assert_eq!(
        doc.profiles[0].env,
        vec![
            json!({"name": "AWS_ACCESS_KEY_ID", "value": ""}),
            json!({"name": "PORT", "value": "80"}),
            json!({"name": "DEBUG", "value": "True"}),
            json!({"name": "EMPTY", "value": ""}),
        ]
    );
}

#[test]
fn env_list_keeps_value_from_and_stringifies_values_as_python_did() {
    let doc = parse(
        "profiles:\n- env:\n  - name: PORT\n    value: 80\n  - name: TOKEN\n    valueFrom:\n      secretKeyRef: {name: s, key: token}\n  - {name: ON, value: false}\n  - {name: RATIO, value: 0.5}\n",
    )
    .unwrap();
    assert_eq!(doc.profiles[0].env[0], json!({"name": "PORT", "value": "80"}));
    assert_eq!(doc.profiles[0].env[2], json!({"name": "ON", "value": "False"}));
    assert_eq!(doc.profiles[0].env[3], json!({"name": "RATIO", "value": "0.5"}));
    assert_eq!(doc.profiles[0].env[1]["valueFrom"]["secretKeyRef"]["key"], "token");
}

#[test]
fn env_values_read_plain_scalars_as_yaml_1_1_like_jsp() {
    let doc = parse(
        "profiles:\n- env:\n    A: yes\n    B: 'yes'\n    C: 010\n    D: plain\n- env:\n  - {name: E, value: on}\n  - {name: F, value: \"on\"}\n  - {name: G, value: 1_000}\n  - {name: H, value: 80}\n  - {name: I, valueFrom: {secretKeyRef: {name: s, key: k}}}\n",
    )
    .unwrap();
    let values = |i: usize| doc.profiles[i].env.iter().map(|v| v.get("value").cloned()).collect::<Vec<_>>();
    assert_eq!(values(0), [Some(json!("True")), Some(json!("yes")), Some(json!("8")), Some(json!("plain"))]);
    assert_eq!(
        values(1),
        [Some(json!("True")), Some(json!("on")), Some(json!("1000")), Some(json!("80")), None]
    );
}

#[test]
fn gpu_accepts_numbers_and_numeric_strings_only() {
    let doc = parse("profiles:\n- gpu: 2\n- gpu: '1'\n").unwrap();
    assert_eq!((doc.profiles[0].gpu, doc.profiles[1].gpu), (Some(2), Some(1)));
    assert_eq!(problem("profiles:\n- gpu: two\n").field.as_deref(), Some("profiles[0].gpu"));
}

#[test]
fn gpu_follows_python_truthiness_as_in_jsp() {
    let s = set("profiles:\n- gpu: 2\n- name: zero\n  gpu: 0\n");
    assert_eq!(resolve(&s, "eje", None, &Choice::default()).gpu, 2, "a number 0 keeps the count");
    let s = set("profiles:\n- gpu: 2\n- name: string zero\n  gpu: '0'\n");
    assert_eq!(resolve(&s, "eje", None, &Choice::default()).gpu, 0, "a string '0' is truthy in Python");
    let s = set("profiles:\n- gpu: 2\n- {gpu: ''}\n- {gpu: null}\n- {gpu: false}\n");
    assert_eq!(resolve(&s, "eje", None, &Choice::default()).gpu, 2);
    let s = set("profiles:\n- {gpu: true}\n- {gpu: 1.9}\n");
    assert_eq!(resolve(&s, "eje", None, &Choice::default()).gpu, 1, "int(1.9)");
}

#[test]
fn a_single_image_string_is_a_one_image_list() {
    let doc = parse("profiles:\n- images: s2i-spark-notebook:3.6\n").unwrap();
    assert_eq!(doc.profiles[0].images, vec!["s2i-spark-notebook:3.6"]);
}

#[test]
fn wait_forms() {
    let s = set(
        "profiles:\n- slug: t\n  wait: true\n- slug: f\n  wait: false\n- slug: n\n  wait: {timeout_seconds: 60}\n- slug: none\n",
    );
    let wait = |slug: &str| resolve(&s, "eje", None, &pick(slug)).wait;
    assert_eq!(wait("t"), Some(Duration::from_secs(300)));
    assert_eq!(wait("f"), None);
    assert_eq!(wait("n"), Some(Duration::from_secs(60)));
    assert_eq!(wait("none"), None);
    assert_eq!(problem("profiles:\n- wait: {timeout: 5}\n").field.as_deref(), Some("profiles[0].wait"));
}

// ---------------------------------------------------------------- matching & merging

#[test]
fn without_an_image_only_image_independent_profiles_apply() {
    let s = set("profiles:\n- name: globals\n- name: spark\n  images: [s2i-spark-notebook:3.6]\n");
    assert_eq!(resolve(&s, "eje", None, &Choice::default()).profiles, vec!["globals"]);
    assert_eq!(
        resolve(&s, "eje", Some("s2i-spark-notebook:3.6"), &Choice::default()).profiles,
        vec!["globals", "spark"]
    );
}

#[test]
fn lists_concatenate_in_profile_order() {
    let s = set(
        "profiles:\n- name: a\n  node_tolerations: [{key: a}]\n  volumes: [{name: va}]\n- name: skipped\n  users: [other]\n  node_tolerations: [{key: x}]\n- name: b\n  node_tolerations: [{key: b}]\n  volumes: [{name: vb}]\n",
    );
    let r = resolve(&s, "eje", None, &Choice::default());
    assert_eq!(r.profiles, vec!["a", "b"]);
    assert_eq!(r.tolerations, vec![json!({"key": "a"}), json!({"key": "b"})]);
    assert_eq!(r.volumes, vec![json!({"name": "va"}), json!({"name": "vb"})]);
}

#[test]
fn node_affinity_merges_shallowly_into_the_pod_affinity() {
    let s = set(
        "profiles:\n- node_affinity:\n    requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: a}]}]}\n    preferredDuringSchedulingIgnoredDuringExecution: [{weight: 1}]\n- node_affinity:\n    requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: b}]}]}\n",
    );
    let r = resolve(&s, "eje", None, &Choice::default());
    let node = &r.affinity["nodeAffinity"];
    assert_eq!(
        node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0]
            ["key"],
        "b"
    );
    assert_eq!(node["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"], 1);
    assert!(resolve(&set("profiles:\n- name: a\n"), "eje", None, &Choice::default()).affinity.is_empty());
}

#[test]
fn env_later_definition_wins_in_the_first_position() {
    let s = set(
        "profiles:\n- env:\n  - {name: A, value: '1'}\n  - {name: B, value: '1'}\n- env:\n    A: '2'\n    C: '2'\n- env:\n  - name: B\n    valueFrom: {secretKeyRef: {name: s, key: b}}\n",
    );
    let r = resolve(&s, "eje", None, &Choice::default());
    assert_eq!(env_names(&r), vec!["A", "B", "C"]);
    assert_eq!(r.env[0]["value"], "2");
    assert_eq!(r.env[1]["valueFrom"]["secretKeyRef"]["key"], "b");
}

#[test]
fn services_merge_shallowly_by_name_keeping_the_first_position() {
    let s = set(
        "profiles:\n- services:\n    spark:\n      resources: [{name: old, path: a}]\n      configuration: {worker_instances: 1}\n    airflow:\n      resources: [{name: t, path: airflow}]\n- services:\n    spark:\n      resources: [{name: new, path: b}]\n    beta:\n      resources: [{name: t, path: beta}]\n",
    );
    let r = resolve(&s, "eje", None, &Choice::default());
    // Python's dict order: as written, a replaced service where it first stood.
    assert_eq!(r.services.keys().collect::<Vec<_>>(), vec!["spark", "airflow", "beta"]);
    assert_eq!(r.services["spark"].resources, vec![TemplateRef { name: "new".into(), path: "b".into() }]);
    assert!(r.services["spark"].configuration.is_empty(), "the later service replaces the earlier one whole");
}

#[test]
fn scalars_take_the_last_value_and_idle_timeout_zero_disables() {
    let s = set("profiles:\n- idle_timeout: 3600\n  wait: true\n- name: b\n- wait: false\n");
    let r = resolve(&s, "eje", None, &Choice::default());
    assert_eq!(r.idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(r.wait, None);
    let s = set("profiles:\n- idle_timeout: 3600\n- idle_timeout: 0\n");
    assert_eq!(resolve(&s, "eje", None, &Choice::default()).idle_timeout, None);
}

#[test]
fn no_matching_profile_resolves_to_an_empty_profile() {
    let s = set("profiles:\n- name: private\n  users: [vpavlin]\n  env: {A: b}\n");
    let r = resolve(&s, "eje", None, &Choice::default());
    assert_eq!(r, Resolved { default_mount_path: DEFAULT_MOUNT_PATH.into(), ..Resolved::default() });
}

// ---------------------------------------------------------------- resources (JSP parse_resources)

#[test]
fn requests_alone_are_copied_to_limits_and_vice_versa() {
    let r = resolve(
        &set("profiles:\n- resources:\n    requests: {cpu: 500m, memory: 1Gi}\n"),
        "eje",
        None,
        &Choice::default(),
    );
    assert_eq!(r.resources.limits, quantities(&[("cpu", "500m"), ("memory", "1Gi")]));
    let r = resolve(&set("profiles:\n- resources:\n    limits: {cpu: 2}\n"), "eje", None, &Choice::default());
    assert_eq!(r.resources.requests, quantities(&[("cpu", "2")]));
}

#[test]
fn legacy_mem_and_cpu_limit_set_requests_and_limits() {
    let r = resolve(
        &set("profiles:\n- resources:\n    mem_limit: 2Gi\n    cpu_limit: 1\n"),
        "eje",
        None,
        &Choice::default(),
    );
    let both = quantities(&[("cpu", "1"), ("memory", "2Gi")]);
    assert_eq!((r.resources.requests.clone(), r.resources.limits.clone()), (both.clone(), both));
    let r = resolve(&set("profiles:\n- resources:\n    mem_limit: 2Gi\n"), "eje", None, &Choice::default());
    assert_eq!(r.resources.limits, quantities(&[("memory", "2Gi")]));
}

#[test]
fn legacy_keys_in_a_later_profile_replace_earlier_requests_and_limits() {
    let s = set(
        "profiles:\n- resources:\n    requests: {cpu: 250m, memory: 500Mi, ephemeral-storage: 1Gi}\n    limits: {cpu: 500m}\n- resources:\n    mem_limit: 4Gi\n    requests: {cpu: 3}\n",
    );
    let r = resolve(&s, "eje", None, &Choice::default());
    assert_eq!(r.resources.requests, quantities(&[("memory", "4Gi")]));
    assert_eq!(r.resources.limits, quantities(&[("memory", "4Gi")]));
}

#[test]
fn a_later_side_replaces_the_whole_earlier_side_and_keeps_the_other() {
    // JSP merges `resources` shallowly: globals' memory request is gone, its limits stay.
    let s = set(
        "profiles:\n- name: globals\n  resources:\n    requests: {memory: 500Mi, cpu: 250m}\n    limits: {memory: 1Gi, cpu: 500m}\n- name: team\n  resources:\n    requests: {cpu: '1'}\n",
    );
    let r = resolve(&s, "eje", None, &Choice::default());
    assert_eq!(r.resources.requests, quantities(&[("cpu", "1")]));
    assert_eq!(r.resources.limits, quantities(&[("cpu", "500m"), ("memory", "1Gi")]));
}

#[test]
fn yaml_numbers_become_quantity_strings() {
    let r = resolve(
        &set("profiles:\n- resources:\n    requests: {cpu: 0.5, memory: 1073741824}\n"),
        "eje",
        None,
        &Choice::default(),
    );
    assert_eq!(r.resources.requests, quantities(&[("cpu", "0.5"), ("memory", "1073741824")]));
}

#[test]
fn profiles_without_resources_around_one_with_resources() {
    // JSP raised on the second of two resource-less profiles; here they simply add nothing.
    let s = set("profiles:\n- name: a\n- name: b\n- name: c\n  resources: {limits: {cpu: 1}}\n- name: d\n");
    let r = resolve(&s, "eje", None, &Choice::default());
    assert_eq!(r.resources.requests, quantities(&[("cpu", "1")]));
}

#[test]
fn quantity_values() {
    assert_eq!(quantity_value("500m"), Ok(0.5));
    assert_eq!(quantity_value("2"), Ok(2.0));
    assert_eq!(quantity_value("1Gi"), Ok(1073741824.0));
    assert_eq!(quantity_value("1G"), Ok(1e9));
    assert_eq!(quantity_value("1.5Ki"), Ok(1536.0));
    assert_eq!(quantity_value("1e3"), Ok(1000.0));
    for bad in ["", "Gi", "2 cores", "1.2.3", "1GB", "one", "1e"] {
        assert!(quantity_value(bad).is_err(), "{bad:?}");
    }
}

// ---------------------------------------------------------------- sizes and GPUs

const SIZES: &str = "sizes:\n- name: Small\n  resources:\n    requests: {cpu: '1', memory: 1Gi}\n- name: Large\n  description: For big data\n  resources:\n    limits: {cpu: '8', memory: 8Gi}\n- name: Empty\n";

#[test]
fn the_size_overrides_resources_last() {
    let s = set(&format!(
        "profiles:\n- resources:\n    requests: {{cpu: 250m, memory: 500Mi}}\n    limits: {{cpu: 500m, memory: 1Gi}}\n{SIZES}"
    ));
    let r = resolve(&s, "eje", None, &sized("Small"));
    assert_eq!(r.size.as_deref(), Some("Small"));
    assert_eq!(r.resources.requests, quantities(&[("cpu", "1"), ("memory", "1Gi")]));
    assert_eq!(
        r.resources.limits,
        quantities(&[("cpu", "1"), ("memory", "1Gi")]),
        "a size's requests copy to its limits"
    );
    let r = resolve(&s, "eje", None, &sized("Large"));
    assert_eq!(r.resources.requests, quantities(&[("cpu", "8"), ("memory", "8Gi")]));
    // Names match exactly, as in JSP.
    let e = s.resolve(&user("eje"), None, &sized("large")).unwrap_err();
    assert_eq!(e.code(), "unknown_size");
}

#[test]
fn a_size_without_resources_keeps_the_profile_resources() {
    let s = set(&format!("profiles:\n- resources: {{limits: {{cpu: 500m}}}}\n{SIZES}"));
    let r = resolve(&s, "eje", None, &sized("Empty"));
    assert_eq!(r.size.as_deref(), Some("Empty"));
    assert_eq!(r.resources.limits, quantities(&[("cpu", "500m")]));
}

#[test]
fn unknown_sizes_list_the_available_ones() {
    let s = set(SIZES);
    let e = s.resolve(&user("eje"), None, &sized("Huge")).unwrap_err();
    assert_eq!((e.code(), e.field().as_deref()), ("unknown_size", Some("size")));
    assert_eq!(e.to_string(), "unknown size \"Huge\"; available sizes: Small, Large, Empty");
    assert_eq!(resolve(&s, "eje", None, &sized("  ")).size, None, "a blank size is no size");
}

#[test]
fn a_later_configmap_redefines_a_size() {
    let base = parse(SIZES).unwrap();
    let team = parse("sizes:\n- name: Small\n  resources: {limits: {cpu: '2'}}\n").unwrap();
    let s = ProfileSet::new([base, team]);
    assert_eq!(s.sizes().len(), 4);
    let offered: Vec<&str> = s.offered_sizes().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(offered, vec!["Small", "Large", "Empty"]);
    assert_eq!(resolve(&s, "eje", None, &sized("Small")).resources.limits, quantities(&[("cpu", "2")]));
}

#[test]
fn gpu_sets_nvidia_requests_and_limits_after_the_size() {
    let s = set(&format!("profiles:\n- gpu: 2\n- gpu: 0\n{SIZES}"));
    let r = resolve(&s, "eje", None, &sized("Small"));
    assert_eq!(r.gpu, 2, "a later gpu: 0 does not undo a request (JSP)");
    assert_eq!(r.resources.requests.get(GPU_RESOURCE).map(String::as_str), Some("2"));
    assert_eq!(r.resources.limits.get(GPU_RESOURCE).map(String::as_str), Some("2"));
    assert_eq!(r.resources.limits.get("cpu").map(String::as_str), Some("1"));
}

#[test]
fn gpu_type_tolerations_come_first_and_only_with_gpus() {
    let gpu_types = "gpuTypes:\n- type: a100\n  node_tolerations: [{key: nvidia.com/gpu, operator: Exists}]\n- type: t4\n  node_tolerations: [{key: t4}]\n";
    let s = set(&format!(
        "profiles:\n- node_tolerations: [{{key: profile}}]\n- slug: gpu\n  gpu: 1\n- slug: cpu\n{gpu_types}"
    ));
    let keys = |r: &Resolved| {
        r.tolerations.iter().map(|t| t["key"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(keys(&resolve(&s, "eje", None, &pick("gpu"))), vec!["nvidia.com/gpu", "t4", "profile"]);
    assert_eq!(keys(&resolve(&s, "eje", None, &pick("cpu"))), vec!["profile"]);
}

// ---------------------------------------------------------------- slugs

const SLUGGED: &str = "profiles:\n- name: globals\n  env: {GLOBAL: '1'}\n- name: Minimal\n  slug: minimal\n  env: {KIND: minimal}\n- name: Ray\n  slug: ray\n  default: true\n  images: ['ray-ml-notebook:*']\n  env: {KIND: ray}\n- name: Secret\n  slug: secret\n  users: [vpavlin]\n  groups: [admins]\n- name: Spark\n  slug: spark\n  images: [s2i-spark-notebook:3.6]\n- name: late global\n  env: {LATE: '1'}\n";

#[test]
fn without_a_choice_the_default_slugged_profile_joins_the_unslugged_ones() {
    let s = set(SLUGGED);
    let r = resolve(&s, "eje", Some("quay.io/org/ray-ml-notebook:2.9"), &Choice::default());
    assert_eq!(r.slug.as_deref(), Some("ray"));
    assert_eq!(r.profiles, vec!["globals", "Ray", "late global"]);
    assert_eq!(env_names(&r), vec!["GLOBAL", "KIND", "LATE"]);
    assert_eq!(r.env[1]["value"], "ray");
}

#[test]
fn without_a_default_flag_the_first_matching_slugged_profile_is_taken() {
    let s = set(SLUGGED);
    // `ray` is marked default but is not for this image.
    let r = resolve(&s, "eje", Some("s2i-minimal-notebook:3.6"), &Choice::default());
    assert_eq!(r.slug.as_deref(), Some("minimal"));
    let s = set("profiles:\n- name: globals\n");
    assert_eq!(resolve(&s, "eje", None, &Choice::default()).slug, None);
}

#[test]
fn a_chosen_slug_replaces_the_default() {
    let s = set(SLUGGED);
    let r = resolve(&s, "eje", Some("ray-ml-notebook:2.9"), &pick("minimal"));
    assert_eq!(r.profiles, vec!["globals", "Minimal", "late global"]);
    assert_eq!(r.env[1]["value"], "minimal");
}

#[test]
fn an_unknown_slug_lists_what_this_user_may_pick() {
    let s = set(SLUGGED);
    let e = s.resolve(&user("eje"), Some("ray-ml-notebook:2.9"), &pick("dask")).unwrap_err();
    assert_eq!((e.code(), e.field().as_deref()), ("unknown_profile", Some("profile")));
    assert_eq!(e.to_string(), "unknown profile \"dask\"; available profiles: minimal, ray");
}

#[test]
fn a_slug_restricted_to_other_users_is_refused_but_groups_admit() {
    let s = set(SLUGGED);
    let e = s.resolve(&user("eje"), None, &pick("secret")).unwrap_err();
    assert_eq!(e.code(), "profile_not_allowed");
    assert!(e.to_string().contains("not available to user \"eje\""), "{e}");
    let admin = Requester::new("eje", ["admins"]);
    assert_eq!(s.resolve(&admin, None, &pick("secret")).unwrap().slug.as_deref(), Some("secret"));
    assert_eq!(resolve(&s, "vpavlin", None, &pick("secret")).slug.as_deref(), Some("secret"));
}

#[test]
fn a_slug_for_other_images_is_refused_naming_them() {
    let s = set(SLUGGED);
    let e = s.resolve(&user("eje"), Some("ray-ml-notebook:2.9"), &pick("spark")).unwrap_err();
    assert_eq!((e.code(), e.field().as_deref()), ("profile_not_for_image", Some("image")));
    assert_eq!(
        e.to_string(),
        "profile \"spark\" is for the images s2i-spark-notebook:3.6, not \"ray-ml-notebook:2.9\""
    );
    let e = s.resolve(&user("eje"), None, &pick("spark")).unwrap_err();
    assert!(e.to_string().ends_with("say which image is used"), "{e}");
}

#[test]
fn profiles_sharing_a_slug_across_configmaps_merge() {
    let base = parse("profiles:\n- slug: ray\n  env: {A: base}\n  idle_timeout: 60\n").unwrap();
    let team = parse("profiles:\n- slug: ray\n  groups: [team]\n  env: {A: team}\n").unwrap();
    let s = ProfileSet::new([base, team]);
    let member = Requester::new("eje", ["team"]);
    let r = s.resolve(&member, None, &pick("ray")).unwrap();
    assert_eq!((r.env[0]["value"].as_str(), r.idle_timeout), (Some("team"), Some(Duration::from_secs(60))));
    assert_eq!(resolve(&s, "other", None, &pick("ray")).env[0]["value"], "base");
}

#[test]
fn choices_list_the_pickable_profiles_with_options_and_sizes() {
    let s = set(&format!(
        "{SLUGGED}  services:\n    ray:\n      options:\n        workers: {{type: integer, default: 1, min: 0, max: 4}}\n{SIZES}"
    ));
    let choices = s.choices(&user("eje"), Some("ray-ml-notebook:2.9"));
    let slugs: Vec<&str> = choices.iter().map(|c| c.slug.as_str()).collect();
    assert_eq!(slugs, vec!["minimal", "ray"]);
    let ray = &choices[1];
    assert!(ray.default && !choices[0].default);
    assert_eq!(ray.display_name, "Ray");
    assert_eq!(ray.images, vec!["ray-ml-notebook:*"]);
    assert!(
        choices[0].options.contains_key("workers"),
        "the unslugged `late global` declares it for every choice"
    );
    assert_eq!(ray.sizes.len(), 3);
}

// ---------------------------------------------------------------- options

const OPTIONS: &str = "profiles:\n- slug: ray\n  services:\n    ray:\n      resources: [{name: ray-templates, path: raycluster}]\n      options:\n        workers: {type: integer, default: 1, min: 0, max: 4, description: Ray workers}\n        dashboard: {type: boolean, default: true}\n        gpu_type: {type: enum, values: [t4, a100, 2], default: t4}\n        tag: {type: string, default: '2.9', pattern: '2.*'}\n";

#[test]
fn option_defaults_are_filled_in_typed() {
    let r = resolve(&set(OPTIONS), "eje", None, &pick("ray"));
    assert_eq!(
        r.options,
        BTreeMap::from([
            ("dashboard".to_string(), json!(true)),
            ("gpu_type".to_string(), json!("t4")),
            ("tag".to_string(), json!("2.9")),
            ("workers".to_string(), json!(1)),
        ])
    );
}

#[test]
fn option_values_from_json_and_from_cli_strings() {
    let s = set(OPTIONS);
    let r = resolve(
        &s,
        "eje",
        None,
        &with_options(
            "ray",
            &[("workers", json!("3")), ("dashboard", json!("false")), ("gpu_type", json!(2))],
        ),
    );
    assert_eq!(
        (&r.options["workers"], &r.options["dashboard"], &r.options["gpu_type"]),
        (&json!(3), &json!(false), &json!("2"))
    );
}

#[test]
fn out_of_bounds_options_name_the_bounds() {
    let e =
        set(OPTIONS).resolve(&user("eje"), None, &with_options("ray", &[("workers", json!(9))])).unwrap_err();
    assert_eq!((e.code(), e.field().as_deref()), ("invalid_option", Some("options.workers")));
    assert_eq!(e.to_string(), "options.workers must be between 0 and 4, got 9");
}

#[test]
fn wrongly_typed_options_are_refused() {
    let s = set(OPTIONS);
    let message = |name: &str, value: Value| {
        s.resolve(&user("eje"), None, &with_options("ray", &[(name, value)])).unwrap_err().to_string()
    };
    assert_eq!(message("workers", json!("many")), "options.workers must be an integer, got \"many\"");
    assert_eq!(message("workers", json!(1.5)), "options.workers must be an integer, got 1.5");
    assert_eq!(message("dashboard", json!("yes")), "options.dashboard must be true or false, got \"yes\"");
    assert_eq!(
        message("gpu_type", json!("v100")),
        "options.gpu_type must be one of t4, a100, 2, got \"v100\""
    );
    assert_eq!(message("tag", json!("3.0")), "options.tag must match the pattern \"2.*\", got \"3.0\"");
    assert_eq!(message("tag", json!(2)), "options.tag must be a string, got 2");
}

#[test]
fn unknown_options_list_the_known_ones() {
    let e =
        set(OPTIONS).resolve(&user("eje"), None, &with_options("ray", &[("worker", json!(2))])).unwrap_err();
    assert_eq!((e.code(), e.field().as_deref()), ("unknown_option", Some("options.worker")));
    assert_eq!(
        e.to_string(),
        "unknown option \"worker\"; available options of this profile: dashboard, gpu_type, tag, workers"
    );
    let e = set("profiles:\n- slug: plain\n")
        .resolve(&user("eje"), None, &with_options("plain", &[("x", json!(1))]))
        .unwrap_err();
    assert!(e.to_string().ends_with("there are no options of this profile to choose from"), "{e}");
}

#[test]
fn an_option_without_default_must_be_given() {
    let s =
        set("profiles:\n- slug: s\n  services:\n    s:\n      options:\n        bucket: {type: string}\n");
    let e = s.resolve(&user("eje"), None, &pick("s")).unwrap_err();
    assert_eq!((e.code(), e.field().as_deref()), ("missing_option", Some("options.bucket")));
    let r = resolve(&s, "eje", None, &with_options("s", &[("bucket", json!("data"))]));
    assert_eq!(r.options["bucket"], "data");
}

#[test]
fn services_of_merged_profiles_must_agree_on_shared_options() {
    let s = set(
        "profiles:\n- services:\n    a:\n      options:\n        workers: {type: integer, default: 1}\n- slug: x\n  services:\n    b:\n      options:\n        workers: {type: integer, default: 2}\n",
    );
    let e = s.resolve(&user("eje"), None, &pick("x")).unwrap_err();
    assert_eq!((e.code(), e.field()), ("conflicting_option", None));
    assert!(e.to_string().contains("services a and b"), "{e}");
}

// ---------------------------------------------------------------- KubeSpawner profile_list

#[test]
fn kubespawner_profile_list_shape() {
    let s = set(&format!(
        "profiles:\n- name: globals\n  resources:\n    requests: {{cpu: 500m, memory: 1Gi}}\n    limits: {{cpu: '1', memory: 2Gi}}\n- name: Spark\n  slug: spark\n  description: Spark next to the notebook\n  images: [s2i-spark-notebook:3.6]\n  node_tolerations: [{{key: spark}}]\n  node_affinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n      nodeSelectorTerms: [{{matchExpressions: [{{key: pool, operator: In, values: [spark]}}]}}]\n- name: Ray\n  slug: ray\n  default: true\n  images: ['ray-ml-notebook:*']\n  gpu: 1\n{SIZES}"
    ));
    let list = s.kubespawner_profile_list(&user("eje"), Some("s2i-spark-notebook:3.6"));
    assert_eq!(list.len(), 1);
    let spark = &list[0];
    assert_eq!(spark["display_name"], "Spark");
    assert_eq!(spark["slug"], "spark");
    assert_eq!(spark["description"], "Spark next to the notebook");
    assert_eq!(spark["default"], true, "the only pickable profile is the default");
    let o = &spark["kubespawner_override"];
    assert_eq!(o["image"], "s2i-spark-notebook:3.6");
    assert_eq!((o["cpu_guarantee"].as_f64(), o["cpu_limit"].as_f64()), (Some(0.5), Some(1.0)));
    assert_eq!((o["mem_guarantee"].as_u64(), o["mem_limit"].as_u64()), (Some(1 << 30), Some(2 << 30)));
    assert_eq!(o["tolerations"], json!([{"key": "spark"}]));
    assert_eq!(o["node_affinity_required"][0]["matchExpressions"][0]["key"], "pool");

    let choices = &spark["profile_options"]["size"]["choices"];
    assert_eq!(choices["default"]["default"], true);
    assert_eq!(choices["default"]["kubespawner_override"], json!({}));
    assert_eq!(
        choices["Small"]["display_name"],
        "Small (Memory request: 1Gi, CPU request: 1, Memory limit: 1Gi, CPU limit: 1)"
    );
    assert_eq!(choices["Large"]["display_name"], "Large: For big data");
    let small = &choices["Small"]["kubespawner_override"];
    assert_eq!((small["cpu_limit"].as_f64(), small["mem_limit"].as_u64()), (Some(1.0), Some(1 << 30)));
    // A size without resources keeps the profile's.
    assert_eq!(choices["Empty"]["kubespawner_override"]["cpu_limit"].as_f64(), Some(1.0));
}

#[test]
fn kubespawner_entries_do_not_pin_pattern_images_and_carry_gpus() {
    let s = set(
        "profiles:\n- slug: minimal\n- slug: ray\n  default: true\n  images: ['ray-ml-notebook:*']\n  gpu: 1\n",
    );
    let list = s.kubespawner_profile_list(&user("eje"), Some("ray-ml-notebook:2.9"));
    assert_eq!(list.iter().map(|e| e["slug"].as_str().unwrap()).collect::<Vec<_>>(), vec!["minimal", "ray"]);
    assert!(list[0].get("default").is_none());
    let ray = &list[1]["kubespawner_override"];
    assert!(ray.get("image").is_none());
    assert_eq!(ray["extra_resource_limits"]["nvidia.com/gpu"], "1");
    assert!(ray["cpu_limit"].is_null(), "set resources replace KubeSpawner's own settings wholesale");
    assert!(list[0]["kubespawner_override"].as_object().unwrap().is_empty());
    assert!(list[0].get("profile_options").is_none(), "no sizes, no size option");
}

// ---------------------------------------------------------------- whole documents

/// An ODH-style base ConfigMap, in the shape of JSP's example.
const JSP_BASE: &str = r#"
profiles:
  - name: globals
    env:
    - name: SHARED_SETTING
      value: "in every notebook"
    - name: S3_SECRET
      valueFrom:
        secretKeyRef:
          key: SECRET_KEY
          name: s3-credentials
    resources:
      requests:
        memory: "500Mi"
        cpu: "250m"
      limits:
        memory: "1Gi"
        cpu: "500m"
    volumes:
    - name: datasets
      persistentVolumeClaim:
        claimName: shared-datasets
        readOnly: true
      mountPath: /opt/app-root/src/datasets
  - name: GPU nodes
    users:
    - acorvin
    node_tolerations:
      - key: gpu-node
        operator: Equal
        value: "true"
        effect: NoSchedule
    node_affinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions:
            - key: gpu-node
              operator: In
              values:
              - "true"
  - name: Thoth Notebooks
    images:
    - 's2i-thoth-notebook:3.6'
    users:
    - vpavlin
    - fpokorny
    env:
    - name: THOTH_DEPLOYMENT_NAME
      value: thoth-test-core
    - name: THOTH_PORT
      value: '80'
    resources:
      requests:
        memory: "1Gi"
        cpu: "500m"
      limits:
        memory: "2Gi"
        cpu: "1"
  - name: Spark Notebook
    images:
    - 's2i-spark-notebook:3.6'
    services:
      spark:
        resources:
        - name: spark-cluster-template
          path: sparkClusterTemplate
        configuration:
          worker_instances: 1
          worker_memory_limit: 4Gi
        labels:
          opendatahub.io/component: jupyterhub
        return:
          SPARK_CLUSTER: 'metadata.name'
sizes:
  - name: Small
    resources:
      requests:
        memory: "1Gi"
        cpu: "1"
      limits:
        memory: "2Gi"
        cpu: "2"
  - name: Medium
    resources:
      requests:
        memory: "2Gi"
        cpu: "2"
      limits:
        memory: "4Gi"
        cpu: "4"
gpuTypes:
- type: nvidia
  node_tolerations:
  - key: nvidia.com/gpu
    operator: Exists
ui:
  sizeConfig:
    enabled: true
"#;

#[test]
fn an_odh_configmap_resolves_as_jsp_did() {
    let s = set(JSP_BASE);
    let thoth = resolve(&s, "vpavlin", Some("s2i-thoth-notebook:3.6"), &Choice::default());
    assert_eq!(thoth.profiles, vec!["globals", "Thoth Notebooks"]);
    assert_eq!(env_names(&thoth), vec!["SHARED_SETTING", "S3_SECRET", "THOTH_DEPLOYMENT_NAME", "THOTH_PORT"]);
    assert_eq!(thoth.resources.limits, quantities(&[("cpu", "1"), ("memory", "2Gi")]));
    assert_eq!(thoth.volumes[0]["persistentVolumeClaim"]["claimName"], "shared-datasets");
    assert!(thoth.tolerations.is_empty() && thoth.affinity.is_empty());

    let other = resolve(&s, "eje", Some("s2i-thoth-notebook:3.6"), &Choice::default());
    assert_eq!(other.profiles, vec!["globals"], "Thoth is for vpavlin and fpokorny only");

    let gpu_user = resolve(&s, "acorvin", None, &Choice::default());
    assert_eq!(gpu_user.tolerations[0]["key"], "gpu-node");
    assert!(gpu_user.affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"].is_object());

    let spark = resolve(&s, "eje", Some("s2i-spark-notebook:3.6"), &sized("Medium"));
    let service = &spark.services["spark"];
    assert_eq!(
        service.resources[0],
        TemplateRef { name: "spark-cluster-template".into(), path: "sparkClusterTemplate".into() }
    );
    assert_eq!(service.configuration["worker_instances"], 1);
    assert_eq!(service.labels["opendatahub.io/component"], "jupyterhub");
    assert_eq!(service.returns["SPARK_CLUSTER"].as_str(), "metadata.name");
    assert_eq!(spark.resources.limits, quantities(&[("cpu", "4"), ("memory", "4Gi")]));
    assert_eq!(s.ui()["sizeConfig"]["enabled"], true);
}

/// A document using every extension.
const RAY: &str = r#"
profiles:
- name: globals
  env:
  - name: PIP_INDEX_URL
    value: https://pypi.example.com/simple
- name: Ray
  slug: ray
  default: true
  description: A Ray cluster next to your notebook
  images: ["ray-ml-notebook:*", "quay.io/modh/ray:2.9"]
  groups: [data-science]
  users: [eje]
  wait: {timeout_seconds: 600}
  idle_timeout: 7200
  services:
    ray:
      resources:
      - {name: ray-templates, path: raycluster.yaml}
      - {name: ray-templates, path: dashboard-route.yaml}
      configuration:
        head_cpu: "1"
        worker_memory: 4Gi
      labels:
        app.kubernetes.io/part-of: ray
      return:
        RAY_HEAD_IMAGE: spec.headGroupSpec.template.spec.containers[0].image
      env:
        RAY_ADDRESS: "ray://{{cluster_name}}-head-svc.{{namespace}}.svc:10001"
      options:
        workers: {type: integer, default: 1, min: 0, max: 4, description: Ray workers}
sizes:
- name: Small
  description: 1 CPU, 2 GiB
  resources:
    requests: {cpu: "1", memory: 2Gi}
"#;

#[test]
fn a_document_with_every_extension_resolves_and_serialises() {
    let s = set(RAY);
    let member = Requester::new("someone", ["data-science"]);
    let choice = Choice { size: Some("Small".into()), ..with_options("ray", &[("workers", json!("2"))]) };
    let r = s.resolve(&member, Some("quay.io/modh/ray:2.9"), &choice).unwrap();
    let service = &r.services["ray"];
    assert_eq!(service.env["RAY_ADDRESS"], "ray://{{cluster_name}}-head-svc.{{namespace}}.svc:10001");
    assert_eq!(service.resources.len(), 2);
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        json!({
            "profiles": ["globals", "Ray"],
            "slug": "ray",
            "size": "Small",
            "env": [{"name": "PIP_INDEX_URL", "value": "https://pypi.example.com/simple"}],
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
            "tolerations": [],
            "affinity": {},
            "default_mount_path": "/opt/app-root/src",
            "gpu": 0,
            "volumes": [],
            "services": {"ray": serde_json::to_value(service).unwrap()},
            "options": {"workers": 2},
            "wait_seconds": 600,
            "idle_timeout_seconds": 7200,
        })
    );
    let service_json = serde_json::to_value(service).unwrap();
    assert_eq!(
        service_json["return"]["RAY_HEAD_IMAGE"],
        "spec.headGroupSpec.template.spec.containers[0].image"
    );
    assert_eq!(
        service_json["options"]["workers"],
        json!({"type": "integer", "default": 1, "min": 0, "max": 4, "description": "Ray workers"})
    );

    let outsider = s.resolve(&user("nobody"), Some("ray-ml-notebook:2.9"), &pick("ray")).unwrap_err();
    assert_eq!(outsider.code(), "profile_not_allowed");
}

#[test]
fn documents_concatenate_in_load_order_and_ui_merges_shallowly() {
    let base = parse("profiles:\n- name: globals\nui:\n  sizeConfig: {enabled: false}\n  gpuConfig: {enabled: true}\ngpuTypes:\n- type: a\n").unwrap();
    let team =
        parse("profiles:\n- name: team\nui:\n  sizeConfig: {enabled: true}\ngpuTypes:\n- type: b\n").unwrap();
    let s = ProfileSet::new([base, team]);
    assert_eq!(
        s.profiles().iter().map(|p| p.name.clone().unwrap()).collect::<Vec<_>>(),
        vec!["globals", "team"]
    );
    assert_eq!(s.ui()["sizeConfig"], json!({"enabled": true}));
    assert_eq!(s.ui()["gpuConfig"], json!({"enabled": true}));
    assert_eq!(s.gpu_types().len(), 2);
}

#[test]
fn max_resources_refuse_a_bigger_size_and_name_the_limit() {
    let set = set(r#"
profiles:
- name: capped
  max_resources: {cpu: 2, memory: 4Gi}
  resources: {requests: {cpu: 500m, memory: 1Gi}}
sizes:
- {name: Small, resources: {limits: {cpu: "2", memory: 4Gi}}}
- {name: Large, resources: {limits: {cpu: "4", memory: 8Gi}}}
"#);
    assert!(set.resolve(&user("a"), None, &sized("Small")).is_ok());
    let err = set.resolve(&user("a"), None, &sized("Large")).unwrap_err();
    assert_eq!((err.code(), err.field().as_deref()), ("above_maximum", Some("size")));
    assert!(
        err.to_string().contains("size \"Large\" asks for cpu 4, above this profile's maximum of 2"),
        "{err}"
    );
}

#[test]
fn max_resources_must_be_quantities() {
    let err = problem("profiles:\n- name: p\n  max_resources: {cpu: lots}\n");
    assert_eq!(err.field.as_deref(), Some("profiles[0].max_resources.cpu"), "{err}");
}

#[test]
fn refused_values_deep_in_a_profile_are_named_by_serdes_own_path() {
    let cases = [
        ("profiles:\n- name: a\n  env:\n    GOOD: x\n    BAD: [1]\n", "profiles[0].env.BAD", 5),
        (
            "profiles:\n- name: a\n  services:\n    s:\n      labels:\n        team: {x: 1}\n",
            "profiles[0].services.s.labels.team",
            6,
        ),
        (
            "profiles:\n- name: a\n- name: b\n  resources:\n    requests:\n      cpu: [1]\n",
            "profiles[1].resources.requests.cpu",
            6,
        ),
        (
            "sizes:\n- name: s\n  resources:\n    limits:\n      memory: {a: b}\n",
            "sizes[0].resources.limits.memory",
            5,
        ),
    ];
    for (yaml, field, line) in cases {
        let e = problem(yaml);
        assert_eq!((e.field.as_deref(), e.line), (Some(field), Some(line)), "{yaml}: {e}");
    }
}

/// Issue 14 item 7: `validate` accepted unknown profile keys (`sevrices`) silently.
#[test]
fn unknown_profile_keys_are_warned_about_with_the_nearest_known_key() {
    let text = "profiles:\n- name: a\n  sevrices: {}\n  colour: red\n- name: b\n  services: {}\n";
    let warnings = super::unknown_keys(text);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("line 3") && warnings[0].contains("did you mean `services`"),
        "{warnings:?}"
    );
    assert!(warnings[1].contains("`colour`") && !warnings[1].contains("did you mean"), "{warnings:?}");
}

#[test]
fn the_known_profile_keys_are_the_profile_fields() {
    let fields: Vec<String> = match serde_json::to_value(super::Profile::default()).unwrap() {
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        other => panic!("{other}"),
    };
    for field in &fields {
        assert!(super::file::PROFILE_KEYS.contains(&field.as_str()), "{field} is missing from PROFILE_KEYS");
    }
}
