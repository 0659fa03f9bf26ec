use super::*;
use serde_json::json;

fn compile(text: &str) -> Template {
    Template::compile("ray-templates", "raycluster.yaml", text).unwrap()
}

/// Compiles and renders: an error from either step.
fn render(text: &str, context: &Value) -> Result<Value, TemplateError> {
    Template::compile("ray-templates", "raycluster.yaml", text)?.render(context)
}

/// A minimal valid object around `body` (indented mapping lines under `spec:`).
fn object_with(spec: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: test\nspec:\n{spec}\n")
}

fn empty_map() -> Map<String, Value> {
    Map::new()
}

// JSP compatibility

#[test]
fn jsp_placeholders_render_plain_values() {
    let text =
        object_with("  a: {{ user }}\n  b: {{ user}}\n  c: {{user }}\n  d: {{user}}\n  e: x-{{ user }}-y");
    let object = render(&text, &json!({"user": "eje-40redhat-2ecom"})).unwrap();
    assert_eq!(
        object["spec"],
        json!({"a": "eje-40redhat-2ecom", "b": "eje-40redhat-2ecom", "c": "eje-40redhat-2ecom",
               "d": "eje-40redhat-2ecom", "e": "x-eje-40redhat-2ecom-y"})
    );
}

#[test]
fn jsp_readme_spark_template_renders_as_in_jsp() {
    let text = r#"kind: SparkCluster
apiVersion: radanalytics.io/v1
metadata:
  name: spark-cluster-{{ user }}
spec:
  worker:
    instances: "{{ worker_instances }}"
    memoryLimit: "{{ worker_memory_limit }}"
  master:
    memoryLimit: "{{ master_memory_limit }}"
"#;
    let configuration =
        json!({"worker_instances": 1, "worker_memory_limit": "4Gi", "master_memory_limit": "1Gi"});
    let options = BTreeMap::new();
    let input = ContextInput {
        username: "Eje@RedHat.com",
        server: "",
        namespace: "rhods-notebooks",
        image: "s2i-spark-notebook:3.6",
        profile: "Spark Notebook",
        size: "",
        configuration: configuration.as_object().unwrap(),
        options: &options,
    };
    let object = render(text, &context(&input)).unwrap();
    assert_eq!(
        object,
        json!({"kind": "SparkCluster", "apiVersion": "radanalytics.io/v1",
               "metadata": {"name": "spark-cluster--45je-40-52ed-48at-2ecom"},
               "spec": {"worker": {"instances": "1", "memoryLimit": "4Gi"},
                        "master": {"memoryLimit": "1Gi"}}})
    );
}

/// The configuration of the corpus case `rule-quoting` (values JSP rendered as shown).
fn quoting_configuration() -> Value {
    json!({
        "colon": "key: value", "semicolon": "a;b", "comma": "numpy, pandas", "apostrophe": "O'Brien",
        "spaces": "a  b", "emoji": "🚀 ray", "hash": "x #1", "truthy": "true", "hex": "0x1F",
        "nullish": "null", "yes_word": "yes", "octal": "010", "number": 3, "boolean": true,
        "ratio": 0.5, "nothing": null, "packages": ["numpy", "pandas"], "user": "alice",
    })
}

#[test]
fn quoted_placeholders_give_the_text_jsp_gave() {
    let keys = [
        "colon",
        "semicolon",
        "comma",
        "apostrophe",
        "spaces",
        "emoji",
        "hash",
        "truthy",
        "hex",
        "nullish",
        "yes_word",
        "octal",
        "number",
        "boolean",
        "ratio",
        "nothing",
        "packages",
    ];
    let spec: String = keys.iter().map(|k| format!("  {k}: \"{{{{ {k} }}}}\"\n")).collect();
    let object = render(
        &object_with(&format!("{spec}  mixed: \"pkgs={{{{ comma }}}}; user={{{{ user }}}}\"")),
        &quoting_configuration(),
    )
    .unwrap();
    assert_eq!(
        object["spec"],
        json!({
            "colon": "key: value", "semicolon": "a;b", "comma": "numpy, pandas", "apostrophe": "O'Brien",
            "spaces": "a  b", "emoji": "🚀 ray", "hash": "x #1", "truthy": "true", "hex": "0x1F",
            "nullish": "null", "yes_word": "yes", "octal": "010", "number": "3", "boolean": "True",
            "ratio": "0.5", "nothing": "None", "packages": "['numpy', 'pandas']",
            "mixed": "pkgs=numpy, pandas; user=alice",
        })
    );
    // Single quotes the same (JSP broke on an apostrophe in '...'; here it is text).
    let object = render(
        &object_with("  a: '{{ colon }}'\n  b: '{{ apostrophe }}'\n  c: 'x-{{ boolean }}'"),
        &quoting_configuration(),
    )
    .unwrap();
    assert_eq!(object["spec"], json!({"a": "key: value", "b": "O'Brien", "c": "x-True"}));
}

#[test]
fn unquoted_configuration_values_are_typed_as_jsp_read_them() {
    let keys = [
        "semicolon",
        "comma",
        "apostrophe",
        "spaces",
        "emoji",
        "truthy",
        "hex",
        "nullish",
        "yes_word",
        "octal",
        "number",
        "boolean",
        "ratio",
        "nothing",
        "packages",
    ];
    let spec: String = keys.iter().map(|k| format!("  {k}: {{{{ {k} }}}}\n")).collect();
    let object = render(
        &object_with(&format!("{spec}  mixed: pkgs={{{{ comma }}}} user={{{{ user }}}}")),
        &quoting_configuration(),
    )
    .unwrap();
    assert_eq!(
        object["spec"],
        json!({
            "semicolon": "a;b", "comma": "numpy, pandas", "apostrophe": "O'Brien", "spaces": "a  b",
            "emoji": "🚀 ray", "truthy": true, "hex": 31, "nullish": null, "yes_word": true, "octal": 8,
            "number": 3, "boolean": true, "ratio": 0.5, "nothing": "None", "packages": ["numpy", "pandas"],
            "mixed": "pkgs=numpy, pandas user=alice",
        })
    );
}

#[test]
fn configuration_lists_and_maps_placed_alone_become_structure() {
    let configuration = json!({
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "labels": {"team": "ml", "tier": 2},
        "flow_text": "[a, 010, yes]",
    });
    let text =
        object_with("  tolerations: {{ tolerations }}\n  labels: {{ labels }}\n  parsed: {{ flow_text }}");
    let object = render(&text, &configuration).unwrap();
    assert_eq!(
        object["spec"],
        json!({"tolerations": [{"key": "gpu", "operator": "Exists"}], "labels": {"team": "ml", "tier": 2},
               "parsed": ["a", 8, true]})
    );
}

#[test]
fn our_values_keep_their_type_wherever_they_stand() {
    let context = json!({
        "username": "0755", "image": "true", "options": {"flag": "yes", "count": 3, "on": false, "hex": "0x1F"},
    });
    let text = object_with(
        "  a: {{ username }}\n  b: {{ image }}\n  c: {{ options.flag }}\n  d: {{ options.count }}\n  e: {{ options.on }}\n  f: {{ options.hex }}\n  g: x{{ options.count }}",
    );
    assert_eq!(
        render(&text, &context).unwrap()["spec"],
        json!({"a": "0755", "b": "true", "c": "yes", "d": 3, "e": false, "f": "0x1F", "g": "x3"})
    );
}

#[test]
fn plain_literals_resolve_as_yaml_1_1_like_jsp() {
    let text = object_with(
        "  yes_word: yes\n  on_word: on\n  octal: 0755\n  sexagesimal: 1:30\n  underscored: 1_000\n  date: 2021-11-29\n  tilde: ~\n  quoted: 'yes'\n  tagged: !!str 010\n  block: |\n    yes",
    );
    assert_eq!(
        render(&text, &json!({})).unwrap()["spec"],
        json!({"yes_word": true, "on_word": true, "octal": 493, "sexagesimal": 90, "underscored": 1000,
               "date": "2021-11-29", "tilde": null, "quoted": "yes", "tagged": "010", "block": "yes\n"})
    );
}

// strictness and error reporting

#[test]
fn unknown_variable_names_configmap_key_line_and_variable() {
    let text = object_with("  cpu: {{ cpu_reqest }}");
    let error = render(&text, &json!({"cpu_request": "500m"})).unwrap_err();
    assert_eq!(error.kind, ErrorKind::UnknownVariable);
    assert_eq!(error.code(), "unknown_variable");
    assert_eq!(error.line, Some(6));
    assert_eq!(error.variable.as_deref(), Some("cpu_reqest"));
    assert_eq!(
        error.to_string(),
        "template ConfigMap ray-templates key raycluster.yaml line 6: unknown variable \
         `cpu_reqest` — define it in the service's configuration or fix the template \
         (did you mean `cpu_request`?)"
    );
}

#[test]
fn unknown_option_suggests_the_option() {
    let error = render(&object_with("  replicas: {{options.wrkers}}"), &json!({"options": {"workers": 2}}))
        .unwrap_err();
    assert_eq!(error.variable.as_deref(), Some("options.wrkers"));
    assert!(error.message.ends_with("(did you mean `workers`?)"), "{}", error.message);
}

#[test]
fn unknown_variable_without_close_name_has_no_suggestion() {
    let error = render(&object_with("  x: {{ completely_different }}"), &json!({"user": "a"})).unwrap_err();
    assert!(!error.message.contains("did you mean"), "{}", error.message);
}

#[test]
fn unknown_variables_are_found_in_keys_quotes_and_block_scalars_at_their_line() {
    for (spec, line) in
        [("  {{ nope }}: v", 6), ("  a: 'x {{ nope }}'", 6), ("  script: |\n    echo\n    {{ nope }}", 8)]
    {
        let error = render(&object_with(spec), &json!({})).unwrap_err();
        assert_eq!((error.code(), error.line), ("unknown_variable", Some(line)), "{spec}");
    }
    // A placeholder in a comment is no part of the object.
    assert!(render(&object_with("  # {{ nope }}\n  a: 1"), &json!({})).is_ok());
}

#[test]
fn handlebars_blocks_jinja_and_raw_placeholders_are_refused_at_load_with_the_line() {
    for (text, needle) in [
        ("a: 1\nb: {{#if x}}\nc: {{/if}}\n", "handlebars blocks"),
        ("a: 1\nb: {{ user | lower }}\n", "Jinja filters"),
        ("a: 1\n{% if x %}\nb: 1\n", "Jinja statements"),
        ("a: 1\nb: {{{ raw }}}\n", "raw placeholders"),
        ("a: 1\nb: {{ }}\n", "empty placeholder"),
        ("a: 1\nb: {{ a b }}\n", "is not a placeholder"),
        ("a: 1\nb: {{ x\n", "never closed"),
    ] {
        let error = Template::compile("cm", "key", text).unwrap_err();
        assert_eq!((error.code(), error.line), ("template_syntax", Some(2)), "{text}: {error}");
        assert!(error.message.contains(needle), "{text}: {error}");
        assert!(error.to_string().starts_with("template ConfigMap cm key key line 2: "), "{error}");
    }
}

#[test]
fn error_without_line_omits_it() {
    let error = render("- a\n- b\n", &json!({})).unwrap_err();
    assert_eq!(error.line, None);
    assert!(
        error.to_string().starts_with("template ConfigMap ray-templates key raycluster.yaml: "),
        "{error}"
    );
}

// typing

#[test]
fn numbers_and_booleans_keep_their_yaml_type() {
    let text = object_with(
        "  replicas: {{options.workers}}\n  ratio: {{ratio}}\n  enabled: {{options.gpu}}\n  \
         quoted: \"{{options.workers}}\"",
    );
    let object = render(&text, &json!({"ratio": 0.5, "options": {"workers": 3, "gpu": false}})).unwrap();
    assert_eq!(object["spec"], json!({"replicas": 3, "ratio": 0.5, "enabled": false, "quoted": "3"}));
}

#[test]
fn everyday_values_render_as_written() {
    let text =
        object_with("  image: {{image}}\n  cpu: {{cpu}}\n  address: {{address}}\n  title: \"{{title}}\"");
    let values = json!({
        "image": "quay.io/project-codeflare/ray:2.9.0-py39-cu118",
        "cpu": "500m",
        "address": "ray://ray-a-head-svc.ns.svc:10001",
        "title": "Jürgen Müller",
    });
    assert_eq!(render(&text, &values).unwrap()["spec"], values);
}

// YAML injection: values substitute into the parsed tree, so none changes its shape.

const PAYLOADS: &[&str] = &[
    "x\nkind: Secret",
    "x\n  evil: 1",
    "x\r\nevil: 1",
    "x\u{2028}evil: 1",
    "x\u{85}evil: 1",
    "a\", \"evil\": \"b",
    "a\\\", evil: \"b",
    "a', evil: 'b",
    "x, evil: y",
    "x}, evil: {y: 1",
    "x], [evil",
    "x # comment",
    "#comment",
    "&anchor x",
    "*alias",
    "!!binary aGVsbG8=",
    "- item",
    "-",
    "---\nkind: Secret",
    "...",
    "a: b",
    "evil:",
    "{evil: 1}",
    "[1, 2]",
    "|\n  evil",
    "> folded",
    "? complex",
    "%YAML 1.2",
    "@reserved",
    "`backtick`",
    " leading",
    "trailing ",
    "\u{0}\u{7}\u{1b}",
    "\u{feff}bom",
    "{{{triple}}}",
    "{{ user }}",
    "\u{E000}0\u{E001}",
    "true",
    "0755",
    "null",
];

/// Every scalar replaced by null: what an injection would have to change.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        _ => Value::Null,
    }
}

/// Renders `spec` (placeholder `{{ username }}` and `{{ options.v }}`, the values users choose)
/// with each payload: every render has the benign render's shape. Returns the renders.
fn assert_no_injection(spec: &str) -> Vec<(&'static str, Value)> {
    let template = compile(&object_with(spec));
    let benign = shape(&template.render(&json!({"username": "benign", "options": {"v": "benign"}})).unwrap());
    let mut rendered = Vec::new();
    for payload in PAYLOADS {
        let object = template
            .render(&json!({"username": payload, "options": {"v": payload}}))
            .unwrap_or_else(|e| panic!("{spec:?} with {payload:?}: {e}"));
        assert_eq!(shape(&object), benign, "{spec:?} with {payload:?} changed the structure: {object}");
        rendered.push((*payload, object));
    }
    rendered
}

#[test]
fn injection_in_plain_value_yields_the_exact_string() {
    for spec in
        ["  description: {{ username }}\n  other: fixed", "  description: {{ options.v }}\n  other: fixed"]
    {
        for (payload, object) in assert_no_injection(spec) {
            assert_eq!(object["spec"]["description"], *payload, "{spec}");
        }
    }
}

#[test]
fn injection_in_block_sequence_yields_the_exact_string() {
    for (payload, object) in assert_no_injection("  items:\n    - {{ username }}\n    - fixed") {
        assert_eq!(object["spec"]["items"][0], *payload);
    }
}

#[test]
fn injection_in_flow_mapping_and_sequence_yields_the_exact_string() {
    for spec in ["  labels: {a: {{ username }}, b: fixed}", "  args: [{{ options.v }}, fixed]"] {
        for (payload, object) in assert_no_injection(spec) {
            let field =
                object["spec"].get("labels").map_or(&object["spec"]["args"][0], |labels| &labels["a"]);
            assert_eq!(*field, *payload, "{spec}");
        }
    }
}

#[test]
fn injection_as_mapping_key_yields_the_exact_key() {
    let template = compile(&object_with("  {{ username }}: value"));
    for payload in PAYLOADS {
        let object = template.render(&json!({"username": payload})).unwrap();
        assert_eq!(object["spec"], json!({*payload: "value"}), "{payload:?}");
        assert_eq!(object.as_object().unwrap().len(), 4, "{payload:?}");
    }
}

#[test]
fn injection_inside_quotes_comments_and_block_scalars_stays_text() {
    for spec in [
        "  description: \"{{ username }}\"",
        "  description: '{{ username }}'",
        "  # note: {{ username }}\n  other: fixed",
        "  script: |\n    echo {{ username }}\n  other: fixed",
        "  name: ray-{{ username }}-x",
    ] {
        for (payload, object) in assert_no_injection(spec) {
            if let Some(text) = object["spec"].get("description").or(object["spec"].get("name")) {
                assert!(
                    text.as_str().is_some_and(|t| t.contains(payload)),
                    "{spec} with {payload:?}: {object}"
                );
            }
        }
    }
}

// YAML and object checks

#[test]
fn invalid_yaml_points_at_the_template_line_at_load() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{user}}\n bad: indent\n";
    let error = Template::compile("cm", "key", text).unwrap_err();
    assert_eq!((error.code(), error.line), ("invalid_yaml", Some(5)), "{error}");
    assert!(error.message.starts_with("the template is not valid YAML"), "{}", error.message);
}

#[test]
fn not_an_object_explains_what_was_rendered() {
    for (text, expected) in [
        ("- a\n- b\n", "not a list"),
        ("just text\n", "not the scalar `\"just text\"`"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "without metadata.name"),
        ("kind: ConfigMap\nmetadata:\n  name: \"\"\n", "without apiVersion, metadata.name"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ empty }}\n", "without metadata.name"),
    ] {
        let error = render(text, &json!({"empty": ""})).unwrap_err();
        assert_eq!(error.code(), "not_an_object", "{text}");
        assert!(error.message.ends_with(expected), "{text}: {}", error.message);
    }
}

#[test]
fn several_documents_are_not_one_object() {
    let object = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";
    let error = render(&format!("{object}---\n{object}"), &json!({})).unwrap_err();
    assert_eq!(error.code(), "not_an_object");
    assert!(error.message.contains("2 YAML documents"), "{}", error.message);
    // Separators and trailing empty documents are fine.
    assert!(render(&format!("---\n{object}---\n"), &json!({})).is_ok());
}

#[test]
fn empty_output_is_an_error() {
    for text in ["", "\n\n", "# only a comment\n", "---\n"] {
        let error = render(text, &json!({"x": false})).unwrap_err();
        assert_eq!(error.code(), "empty_output", "{text:?}");
    }
}

// service env text

#[test]
fn render_text_interpolates_like_objects() {
    let context = json!({"cluster_name": "ray-a", "namespace": "ns", "port": 10001, "flag": true, "options": {"on": true}});
    assert_eq!(
        render_text("ray://{{cluster_name}}-head-svc.{{ namespace }}.svc:{{port}}", &context).unwrap(),
        "ray://ray-a-head-svc.ns.svc:10001"
    );
    assert_eq!(render_text("{{ flag }}/{{ options.on }}", &context).unwrap(), "True/true");
    assert_eq!(render_text("x {{ nope }}", &context).unwrap_err(), "unknown variable `nope`");
    assert!(render_text("{{#if x}}", &context).unwrap_err().contains("handlebars blocks"));
}

// context

#[test]
fn context_holds_our_names_configuration_over_them_then_user_and_options() {
    let configuration = json!({"cpu_request": "1", "user": "impostor", "options": "x", "image": "other"});
    let options = BTreeMap::from([("workers".to_owned(), json!(4))]);
    let input = ContextInput {
        username: "Eje@RedHat.com",
        server: "gpu",
        namespace: "ns",
        image: "ray-ml-notebook:2.9",
        profile: "ray",
        size: "Small",
        configuration: configuration.as_object().unwrap(),
        options: &options,
    };
    let context = context(&input);
    assert_eq!(
        context,
        json!({
            "user": "-45je-40-52ed-48at-2ecom",
            "username": "Eje@RedHat.com",
            "server": "gpu",
            "namespace": "ns",
            "cluster_name": naming::cluster_name("Eje@RedHat.com", "gpu"),
            // JSP rendered the configuration's value of a name ours also defines...
            "image": "other",
            "profile": "ray",
            "size": "Small",
            // KubeSpawner's label values for the notebook pod (safe slugs, not `user`).
            "notebook_user_label": "eje-redhat-com---68e0c225",
            "notebook_server_label": "gpu",
            "cpu_request": "1",
            // ...except `user` (JSP set it over the configuration) and our `options`.
            "options": {"workers": 4},
        })
    );
}

#[test]
fn reserved_names_are_exactly_what_context_defines() {
    let options = BTreeMap::new();
    let configuration = empty_map();
    let input = ContextInput {
        username: "a",
        server: "",
        namespace: "",
        image: "",
        profile: "",
        size: "",
        configuration: &configuration,
        options: &options,
    };
    let context = context(&input);
    let mut names: Vec<&str> = context.as_object().unwrap().keys().map(String::as_str).collect();
    let mut reserved = RESERVED_NAMES.to_vec();
    names.sort_unstable();
    reserved.sort_unstable();
    assert_eq!(names, reserved);
}

// name rule

fn named(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}})
}

fn after_name_rule(name: &str, user: &str, cluster: &str) -> String {
    let mut object = named(name);
    apply_name_rule(&mut object, user, cluster);
    object["metadata"]["name"].as_str().unwrap().to_owned()
}

#[test]
fn name_rule_appends_the_user_to_fixed_names() {
    assert_eq!(
        after_name_rule("ray-dashboard", "eje-40redhat-2ecom", "ray-eje-40redhat-2ecom"),
        "ray-dashboard-eje-40redhat-2ecom"
    );
    // A short user that happens to be a substring does not own the name (JSP's substring test did).
    assert_eq!(after_name_rule("ray-dashboard", "a", "ray-a"), "ray-dashboard-a");
    // No dash collapsing: `Eje` and `45je` stay apart.
    assert_eq!(after_name_rule("x-", "-45je", "ray--45je"), "x---45je");
    assert_eq!(after_name_rule("x-", "45je", "ray-45je"), "x--45je");
}

#[test]
fn name_rule_keeps_names_that_name_their_owner() {
    assert_eq!(after_name_rule("spark-cluster-alice", "alice", "ray-alice"), "spark-cluster-alice");
    assert_eq!(after_name_rule("alice.dashboard", "alice", "ray-alice"), "alice.dashboard");
    assert_eq!(after_name_rule("spark-cluster--45je", "-45je", "ray--45je"), "spark-cluster--45je");
    assert_eq!(after_name_rule("spark-45je", "-45je", "ray--45je"), "spark-45je");
    // A hash-shortened cluster name no longer contains the user, but still names the owner.
    let user = "a".repeat(60);
    let cluster = naming::cluster_name(&user, "");
    let route = format!("{cluster}-dashboard");
    assert_eq!(after_name_rule(&route, &user, &cluster), route);
}

#[test]
fn name_rule_ignores_objects_without_a_name() {
    let mut object = json!({"kind": "x"});
    apply_name_rule(&mut object, "alice", "ray-alice");
    assert_eq!(object, json!({"kind": "x"}));
}

// a realistic template

const RAY_CLUSTER: &str = r#"apiVersion: ray.io/v1
kind: RayCluster
metadata:
  name: {{ cluster_name }}
  labels:
    app.kubernetes.io/name: ray
    opendatahub.io/user: {{ user }}
  annotations:
    opendatahub.io/username: {{ username }}
spec:
  rayVersion: "2.9.0"
  headGroupSpec:
    rayStartParams:
      dashboard-host: "0.0.0.0"
      num-cpus: "0"
    template:
      spec:
        containers:
          - name: ray-head
            image: {{ image }}
            resources:
              requests: {cpu: {{ head_cpu }}, memory: {{ head_memory }}}
              limits: {cpu: {{ head_cpu }}, memory: {{ head_memory }}}
            securityContext:
              allowPrivilegeEscalation: false
              capabilities: {drop: [ALL]}
              runAsNonRoot: true
              seccompProfile: {type: RuntimeDefault}
            env:
              - name: HOME
                value: /tmp/home
            volumeMounts:
              - {name: shm, mountPath: /dev/shm}
        volumes:
          - name: shm
            emptyDir: {medium: Memory}
  workerGroupSpecs:
    - groupName: workers
      replicas: {{ options.workers }}
      minReplicas: {{ options.workers }}
      maxReplicas: {{ options.workers }}
      rayStartParams: {}
      template:
        spec:
          containers:
            - name: ray-worker
              image: {{ image }}
              resources:
                limits:
                  cpu: {{ worker_cpu }}
                  memory: {{ worker_memory }}
                  nvidia.com/gpu: {{ options.gpu }}
"#;

#[test]
fn kuberay_raycluster_template_renders() {
    let configuration =
        json!({"head_cpu": "1", "head_memory": "4Gi", "worker_cpu": 2, "worker_memory": "8Gi"});
    let options = BTreeMap::from([("workers".to_owned(), json!(3)), ("gpu".to_owned(), json!(1))]);
    let input = ContextInput {
        username: "eje@redhat.com",
        server: "",
        namespace: "rhods-notebooks",
        image: "quay.io/project-codeflare/ray:2.9.0-py39-cu118",
        profile: "ray",
        size: "Medium",
        configuration: configuration.as_object().unwrap(),
        options: &options,
    };
    let template = compile(RAY_CLUSTER);
    let mut object = template.render(&context(&input)).unwrap();
    apply_name_rule(&mut object, "eje-40redhat-2ecom", "ray-eje-40redhat-2ecom");
    assert_eq!(object["metadata"]["name"], "ray-eje-40redhat-2ecom");
    assert_eq!(object["metadata"]["annotations"]["opendatahub.io/username"], "eje@redhat.com");
    assert_eq!(object["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"], "0.0.0.0");
    let head = &object["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0];
    assert_eq!(head["image"], "quay.io/project-codeflare/ray:2.9.0-py39-cu118");
    // A plain placeholder is typed by YAML: the string "1" lands as the integer 1 (a quantity).
    assert_eq!(head["resources"]["limits"], json!({"cpu": 1, "memory": "4Gi"}));
    assert_eq!(head["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    let workers = &object["spec"]["workerGroupSpecs"][0];
    assert_eq!(workers["replicas"], 3);
    assert_eq!(
        workers["template"]["spec"]["containers"][0]["resources"]["limits"],
        json!({"cpu": 2, "memory": "8Gi", "nvidia.com/gpu": 1})
    );

    // The same compiled template serves the next user.
    let options = BTreeMap::from([("workers".to_owned(), json!(1)), ("gpu".to_owned(), json!(0))]);
    let object =
        template.render(&context(&ContextInput { username: "bob", options: &options, ..input })).unwrap();
    assert_eq!(object["metadata"]["name"], "ray-bob");
    let worker = &object["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0];
    assert_eq!(worker["resources"]["limits"], json!({"cpu": 2, "memory": "8Gi", "nvidia.com/gpu": 0}));
}

#[test]
fn templates_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Template>();
}

#[test]
fn suggestions_are_at_most_two_edits_away_at_the_level_that_fails() {
    let context = json!({"cpu_request": "1", "options": {"workers": 2}});
    let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(suggestion(&context, &path("cpu_reqest")).as_deref(), Some("cpu_request"));
    assert_eq!(suggestion(&context, &path("options.wrokers")).as_deref(), Some("workers"));
    assert_eq!(suggestion(&context, &path("memory")), None);
}
