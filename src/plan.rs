//! A spawn plan: the user's resolved profile, the objects rendered for their notebook server,
//! and the environment and pod settings the notebook gets. Pure: no I/O, no kube types.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use serde_json_path::JsonPath;

use crate::catalog::Catalog;
use crate::labels::{CLUSTER_LABEL, MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL, SERVER_LABEL, USER_LABEL};
use crate::naming;
use crate::profile::{Choice, Requester, ResolveError, Resolved};
use crate::template::{self, ContextInput, TemplateError};

/// What a caller asks for: whose server, with which image and choices.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    /// JupyterHub user name, as the hub knows it.
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub image: Option<String>,
    /// Profile slug; none picks the default profile.
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub options: BTreeMap<String, Value>,
    /// Named server; empty for the default server.
    #[serde(default)]
    pub server: String,
    /// Where the notebook runs; the service's namespace when absent.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Which notebook server a cluster belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub user: String,
    pub server: String,
    pub namespace: String,
}

impl Owner {
    pub fn configmap_name(&self) -> String {
        naming::owner_configmap_name(&self.user, &self.server)
    }

    pub fn cluster_name(&self) -> String {
        naming::cluster_name(&self.user, &self.server)
    }

    /// Labels every object rendered for this server carries; also how they are found again.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            (USER_LABEL.to_owned(), naming::label_value(&self.user)),
            (SERVER_LABEL.to_owned(), naming::label_value(&self.server)),
        ])
    }

    /// The ConfigMap every rendered object is owned by: deleting it deletes them all.
    pub fn configmap(&self, cluster: &str, profile: &str, objects: &[Value]) -> Value {
        let listing: Vec<String> = objects.iter().map(describe).collect();
        let mut data = json!({
            "user": self.user,
            "server": self.server,
            "cluster": cluster,
            "profile": profile,
            "objects": listing.join("\n"),
        });
        if let Some(url) = objects.iter().find_map(dashboard_url) {
            data["dashboard_url"] = json!(url);
        }
        let mut labels = self.labels();
        labels.insert(OWNER_LABEL.to_owned(), "true".to_owned());
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.configmap_name(),
                "namespace": self.namespace,
                "labels": labels,
            },
            "data": data,
        })
    }
}

/// Why a spawn cannot be planned. Every variant is the caller's or the admin's to fix.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Profile(#[from] ResolveError),
    #[error("{0}")]
    Template(#[from] TemplateError),
    #[error(
        "template ConfigMap {configmap} key `{key}` (used by service `{service}`) is not loaded: it does not exist or failed to parse; see GET /api/v1/status"
    )]
    MissingTemplate { service: String, configmap: String, key: String },
    #[error("service `{service}`: `return` entry {env} has an invalid JSONPath `{path}`: {message}")]
    InvalidReturn { service: String, env: String, path: String, message: String },
    #[error("service `{service}`: env {env}: {message}; fix the profile's service env or its configuration")]
    ServiceEnv { service: String, env: String, message: String },
    #[error("{field}: {message}")]
    InvalidRequest { field: &'static str, message: String },
}

/// Everything a spawn will do, before anything touches the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub owner: Owner,
    pub cluster_name: String,
    pub profile: Resolved,
    /// Rendered objects, labelled and namespaced; owner references are added when applied.
    pub objects: Vec<Value>,
    #[serde(skip)]
    service_env: BTreeMap<String, String>,
    #[serde(skip)]
    returns: Vec<Return>,
}

#[derive(Debug, Clone)]
struct Return {
    env: String,
    path: JsonPath,
    /// Indices into `objects` of the service's own objects, in order.
    objects: std::ops::Range<usize>,
}

/// The notebook pod settings a spawner applies.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PodSettings {
    pub resources: crate::profile::Resources,
    /// The same resources in KubeSpawner's units (cores, bytes), so spawners set them as
    /// they are instead of parsing Kubernetes quantities.
    pub kubespawner: Map<String, Value>,
    pub tolerations: Vec<Value>,
    pub affinity: Map<String, Value>,
    pub labels: BTreeMap<String, String>,
    pub volumes: Vec<Value>,
    pub gpu: u32,
}

impl Plan {
    pub fn wait(&self) -> Option<Duration> {
        self.profile.wait
    }

    /// The head Service address `ray.init()` connects to, for the first RayCluster rendered.
    pub fn ray_cluster(&self) -> Option<&Value> {
        self.objects.iter().find(|o| is_ray_cluster(o))
    }

    pub fn pod(&self) -> PodSettings {
        let mut labels = BTreeMap::new();
        labels.insert(CLUSTER_LABEL.to_owned(), self.cluster_name.clone());
        PodSettings {
            resources: self.profile.resources.clone(),
            kubespawner: crate::profile::kubespawner_resources(&self.profile.resources),
            tolerations: self.profile.tolerations.clone(),
            affinity: self.profile.affinity.clone(),
            labels,
            volumes: self.profile.volumes.clone(),
            gpu: self.profile.gpu,
        }
    }

    /// The notebook's environment, from the objects as applied (or as rendered in a dry run).
    /// Later sources win: Ray defaults, the profile's env, the services' env, `return` values.
    pub fn environment(&self, objects: &[Value]) -> BTreeMap<String, Value> {
        let mut env = BTreeMap::new();
        if let Some(rc) = objects.iter().find(|o| is_ray_cluster(o)) {
            let name = str_at(rc, "/metadata/name").unwrap_or(&self.cluster_name);
            let namespace = str_at(rc, "/metadata/namespace").unwrap_or(&self.owner.namespace);
            env.insert("RAY_CLUSTER".into(), json!(name));
            env.insert("RAY_ADDRESS".into(), json!(format!("ray://{name}-head-svc.{namespace}.svc:10001")));
        }
        if let Some(url) = objects.iter().find_map(dashboard_url) {
            env.insert("RAY_DASHBOARD_URL".into(), json!(url));
        }
        for var in &self.profile.env {
            let Some(name) = var.get("name").and_then(Value::as_str) else { continue };
            let value = match var.get("value") {
                Some(v) => v.clone(),
                None => {
                    let mut rest = var.as_object().cloned().unwrap_or_default();
                    rest.remove("name");
                    Value::Object(rest)
                }
            };
            env.insert(name.to_owned(), value);
        }
        for (name, value) in &self.service_env {
            env.insert(name.clone(), json!(value));
        }
        for ret in &self.returns {
            let found = objects
                .get(ret.objects.clone())
                .into_iter()
                .flatten()
                .find_map(|o| ret.path.query(o).first().cloned());
            if let Some(value) = found {
                let value = match value {
                    Value::String(s) => Value::String(s),
                    other => Value::String(other.to_string()),
                };
                env.insert(ret.env.clone(), value);
            }
        }
        env
    }
}

/// Resolves the profile and renders every service template for one notebook server.
pub fn plan(catalog: &Catalog, request: &SpawnRequest, default_namespace: &str) -> Result<Plan, PlanError> {
    if request.user.trim().is_empty() {
        return Err(PlanError::InvalidRequest {
            field: "user",
            message: "the JupyterHub user name is required".into(),
        });
    }
    let namespace =
        request.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| default_namespace.to_owned());
    if !naming::is_dns1123_label(&namespace) {
        return Err(PlanError::InvalidRequest {
            field: "namespace",
            message: format!(
                "`{namespace}` is not a valid namespace name (lower-case letters, digits and '-', at most 63)"
            ),
        });
    }
    let owner = Owner { user: request.user.clone(), server: request.server.clone(), namespace };
    let who = Requester { user: request.user.clone(), groups: request.groups.clone() };
    let choice = Choice {
        profile: request.profile.clone(),
        size: request.size.clone(),
        options: request.options.clone(),
    };
    let profile = catalog.profiles().resolve(&who, request.image.as_deref(), &choice)?;

    let cluster_name = owner.cluster_name();
    let escaped_user = naming::escape_user(&request.user);
    let labels = owner.labels();
    let mut objects = Vec::new();
    let mut service_env = BTreeMap::new();
    let mut returns = Vec::new();
    for (service_name, service) in &profile.services {
        let context = template::context(&ContextInput {
            username: &request.user,
            server: &request.server,
            namespace: &owner.namespace,
            image: request.image.as_deref().unwrap_or_default(),
            profile: profile.slug.as_deref().unwrap_or_default(),
            size: profile.size.as_deref().unwrap_or_default(),
            configuration: &service.configuration,
            options: &profile.options,
        });
        let first = objects.len();
        for reference in &service.resources {
            let template = catalog.template(&reference.name, &reference.path).ok_or_else(|| {
                PlanError::MissingTemplate {
                    service: service_name.clone(),
                    configmap: reference.name.clone(),
                    key: reference.path.clone(),
                }
            })?;
            let mut object = template.render(&context)?;
            template::apply_name_rule(&mut object, &escaped_user, &cluster_name);
            finish_object(&mut object, &owner.namespace, &labels, &service.labels);
            objects.push(object);
        }
        for (name, text) in &service.env {
            let value = template::render_text(text, &context).map_err(|message| PlanError::ServiceEnv {
                service: service_name.clone(),
                env: name.clone(),
                message,
            })?;
            service_env.insert(name.clone(), value);
        }
        for (env, path) in &service.returns {
            let full = if path.starts_with('$') { path.clone() } else { format!("$.{path}") };
            let path = JsonPath::parse(&full).map_err(|e| PlanError::InvalidReturn {
                service: service_name.clone(),
                env: env.clone(),
                path: path.clone(),
                message: e.to_string(),
            })?;
            returns.push(Return { env: env.clone(), path, objects: first..objects.len() });
        }
    }
    Ok(Plan { owner, cluster_name, profile, objects, service_env, returns })
}

/// Namespace and labels on a rendered object; the service's own labels first, ours win.
fn finish_object(
    object: &mut Value,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    extra: &BTreeMap<String, String>,
) {
    let metadata = object
        .as_object_mut()
        .expect("rendered objects are mappings")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let Some(metadata) = metadata.as_object_mut() else { return };
    metadata.insert("namespace".into(), json!(namespace));
    let object_labels = metadata.entry("labels").or_insert_with(|| json!({}));
    if !object_labels.is_object() {
        *object_labels = json!({});
    }
    let object_labels = object_labels.as_object_mut().expect("just made an object");
    for (k, v) in extra.iter().chain(labels) {
        object_labels.insert(k.clone(), json!(v));
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

pub fn is_ray_cluster(object: &Value) -> bool {
    str_at(object, "/kind") == Some("RayCluster")
        && str_at(object, "/apiVersion").is_some_and(|v| v.starts_with("ray.io/"))
}

/// `apiVersion kind name`, one line per object, as kept in the owner ConfigMap.
pub fn describe(object: &Value) -> String {
    format!(
        "{} {} {}",
        str_at(object, "/apiVersion").unwrap_or_default(),
        str_at(object, "/kind").unwrap_or_default(),
        str_at(object, "/metadata/name").unwrap_or_default()
    )
}

/// The Ray dashboard URL of a rendered Route or Ingress, when it has a host.
pub fn dashboard_url(object: &Value) -> Option<String> {
    let (host, tls, path) = match (str_at(object, "/kind")?, str_at(object, "/apiVersion")?) {
        ("Route", v) if v.starts_with("route.openshift.io/") => (
            str_at(object, "/spec/host").or_else(|| str_at(object, "/status/ingress/0/host"))?,
            object.pointer("/spec/tls").is_some_and(|t| !t.is_null()),
            str_at(object, "/spec/path").unwrap_or("/"),
        ),
        ("Ingress", v) if v.starts_with("networking.k8s.io/") => (
            str_at(object, "/spec/rules/0/host")?,
            object.pointer("/spec/tls").and_then(Value::as_array).is_some_and(|t| !t.is_empty()),
            str_at(object, "/spec/rules/0/http/paths/0/path").unwrap_or("/"),
        ),
        _ => return None,
    };
    if host.is_empty() {
        return None;
    }
    let scheme = if tls { "https" } else { "http" };
    Some(format!("{scheme}://{host}{path}"))
}

/// Renders every profile a user can pick, as `validate` does for an admin's CI: a template
/// with an unknown variable or invalid YAML is found before any user presses Start.
pub fn lint(catalog: &Catalog) -> Vec<String> {
    let mut problems = Vec::new();
    let slugged: Vec<_> = catalog.profiles().profiles().iter().filter(|p| p.slug.is_some()).collect();
    let mut requests: Vec<(String, SpawnRequest)> = slugged
        .iter()
        .map(|p| {
            let slug = p.slug.clone().unwrap_or_default();
            let user = p.users.iter().find(|u| *u != "*").cloned().unwrap_or_else(|| "lint-user".into());
            // A concrete image the profile matches: its first entry, globs made concrete.
            let image = p.images.first().map(|i| i.replace('*', "lint").replace('?', "x"));
            let request = SpawnRequest {
                user,
                groups: p.groups.clone(),
                image,
                profile: Some(slug.clone()),
                ..SpawnRequest::default()
            };
            (format!("profile `{slug}`"), request)
        })
        .collect();
    if slugged.is_empty() {
        requests.push((
            "the default profile".into(),
            SpawnRequest { user: "lint-user".into(), ..SpawnRequest::default() },
        ));
    }
    for (what, request) in requests {
        if let Err(err) = plan(catalog, &request, "lint") {
            problems.push(format!("{what} does not render: {err}"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ConfigMapSource, ProfileSelector};

    const PROFILES: &str = r#"
profiles:
- name: globals
  env:
  - {name: FROM_SECRET, valueFrom: {secretKeyRef: {name: s, key: k}}}
- name: Ray
  slug: ray
  services:
    ray:
      resources:
      - {name: tpl, path: rc.yaml}
      - {name: tpl, path: route.yaml}
      configuration: {head_port: 10001}
      env:
        RAY_ADDRESS: "ray://{{cluster_name}}-head-svc.{{namespace}}.svc:{{head_port}}"
        GREETING: "hello {{username}}"
      return:
        HEAD_IMAGE: spec.headGroupSpec.template.spec.containers[0].image
        MISSING: spec.nothing
      labels: {team: ml}
"#;

    const RC: &str = "apiVersion: ray.io/v1\nkind: RayCluster\nmetadata:\n  name: {{cluster_name}}\nspec:\n  headGroupSpec:\n    template:\n      spec:\n        containers:\n        - {name: head, image: ray:2}\n";
    const ROUTE: &str = "apiVersion: route.openshift.io/v1\nkind: Route\nmetadata:\n  name: dashboard\nspec:\n  host: dash.apps.example.com\n  tls: {termination: edge}\n";

    fn catalog() -> Catalog {
        let cm = |name: &str, data: &[(&str, &str)]| ConfigMapSource {
            name: name.into(),
            labels: Default::default(),
            data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let sources = [
            cm("jupyter-singleuser-profiles", &[(crate::profile::PROFILES_KEY, PROFILES)]),
            cm("tpl", &[("rc.yaml", RC), ("route.yaml", ROUTE)]),
        ];
        let catalog = Catalog::build(&ProfileSelector::default(), &sources, None);
        assert!(catalog.problems().is_empty(), "{:?}", catalog.problems());
        catalog
    }

    fn request(user: &str) -> SpawnRequest {
        SpawnRequest { user: user.into(), ..SpawnRequest::default() }
    }

    #[test]
    fn objects_are_namespaced_labelled_and_follow_the_name_rule() {
        let plan = plan(&catalog(), &request("Eve"), "ns").unwrap();
        assert_eq!(plan.objects.len(), 2);
        for object in &plan.objects {
            assert_eq!(object["metadata"]["namespace"], json!("ns"));
            assert_eq!(object["metadata"]["labels"][MANAGED_BY_LABEL], json!(MANAGED_BY));
            assert_eq!(object["metadata"]["labels"]["team"], json!("ml"));
            assert_eq!(object["metadata"]["labels"][USER_LABEL], json!(naming::label_value("Eve")));
        }
        // A fixed name gets the escaped user appended, as JSP did.
        assert_eq!(plan.objects[1]["metadata"]["name"], json!("dashboard--45ve"));
    }

    #[test]
    fn environment_layers_ray_defaults_profile_env_service_env_and_returns() {
        let plan = plan(&catalog(), &request("eve"), "ns").unwrap();
        let env = plan.environment(&plan.objects);
        assert_eq!(env["RAY_CLUSTER"], json!("ray-eve"));
        // The service's templated env wins over the computed default.
        assert_eq!(env["RAY_ADDRESS"], json!("ray://ray-eve-head-svc.ns.svc:10001"));
        assert_eq!(env["GREETING"], json!("hello eve"));
        assert_eq!(env["RAY_DASHBOARD_URL"], json!("https://dash.apps.example.com/"));
        assert_eq!(env["FROM_SECRET"], json!({"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}));
        assert_eq!(env["HEAD_IMAGE"], json!("ray:2"));
        assert!(!env.contains_key("MISSING"), "a path that matches nothing sets nothing");
    }

    #[test]
    fn returns_read_the_applied_objects() {
        let plan = plan(&catalog(), &request("eve"), "ns").unwrap();
        let mut applied = plan.objects.clone();
        applied[0]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] =
            json!("ray:applied");
        assert_eq!(plan.environment(&applied)["HEAD_IMAGE"], json!("ray:applied"));
    }

    #[test]
    fn the_owner_configmap_lists_what_it_owns() {
        let plan = plan(&catalog(), &SpawnRequest { server: "gpu".into(), ..request("eve") }, "ns").unwrap();
        let owner = plan.owner.configmap(&plan.cluster_name, "ray", &plan.objects);
        assert_eq!(owner["metadata"]["name"], json!("singleuser-service-ref-eve--gpu"));
        assert_eq!(owner["metadata"]["labels"][SERVER_LABEL], json!("gpu"));
        assert_eq!(owner["data"]["user"], json!("eve"));
        assert_eq!(owner["data"]["dashboard_url"], json!("https://dash.apps.example.com/"));
        let listed = owner["data"]["objects"].as_str().unwrap();
        assert!(listed.starts_with("ray.io/v1 RayCluster ray-eve-"), "{listed}");
    }

    #[test]
    fn dashboard_urls_come_from_ingress_and_route_hosts() {
        let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "spec": {"tls": [{}], "rules": [{"host": "h.example.com", "http": {"paths": [{"path": "/ray"}]}}]}});
        assert_eq!(dashboard_url(&ingress).as_deref(), Some("https://h.example.com/ray"));
        let assigned = json!({"apiVersion": "route.openshift.io/v1", "kind": "Route", "spec": {},
            "status": {"ingress": [{"host": "r.apps"}]}});
        assert_eq!(dashboard_url(&assigned).as_deref(), Some("http://r.apps/"));
        assert_eq!(dashboard_url(&json!({"apiVersion": "v1", "kind": "Service"})), None);
    }

    #[test]
    fn lint_renders_every_pickable_profile() {
        assert!(lint(&catalog()).is_empty());
        let sources = [ConfigMapSource {
            name: "jupyter-singleuser-profiles".into(),
            labels: Default::default(),
            data: [(crate::profile::PROFILES_KEY.to_owned(), PROFILES.to_owned())].into(),
        }];
        let catalog = Catalog::build(&ProfileSelector::default(), &sources, None);
        let problems = lint(&catalog);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("profile `ray`") && problems[0].contains("tpl"), "{problems:?}");
    }
}
