//! A spawn plan: the user's resolved profile, the objects rendered for their notebook server,
//! and the environment and pod settings the notebook gets. Pure: no I/O, no kube types.

use std::collections::BTreeMap;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::catalog::Catalog;
use crate::labels::{CLUSTER_LABEL, MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL, SERVER_LABEL, USER_LABEL};
use crate::profile::{
    Choice, PodVolumes, Profile, Requester, ResolveError, Resolved, UserSettings, pod_volumes, quantity_value,
};
use crate::python;
use crate::template::{self, ContextInput, TemplateError};
use crate::{naming, pointer};

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
    /// The owner a request names, checked as every endpoint checks it: a user is required, and
    /// the namespace (the default one when absent or empty) must be a valid namespace name.
    pub fn checked(
        user: &str,
        server: &str,
        namespace: Option<&str>,
        default_namespace: &str,
    ) -> Result<Owner, PlanError> {
        if user.trim().is_empty() {
            return Err(PlanError::InvalidRequest {
                field: "user",
                message: "the JupyterHub user name is required".into(),
            });
        }
        let namespace = namespace.filter(|n| !n.is_empty()).unwrap_or(default_namespace);
        if !naming::is_dns1123_label(namespace) {
            return Err(PlanError::InvalidRequest {
                field: "namespace",
                message: format!(
                    "{namespace:?} is not a valid namespace name (lower-case letters, digits and '-', at most 63)"
                ),
            });
        }
        Ok(Owner { user: user.to_owned(), server: server.to_owned(), namespace: namespace.to_owned() })
    }

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
    #[error(
        "service `{service}` has no `resources`: add the template ConfigMap name and key to render (JSP refused such a service too) or remove the service"
    )]
    ServiceWithoutResources { service: String },
    #[error("service `{service}`: env {env}: {message}; fix the profile's service env or its configuration")]
    ServiceEnv { service: String, env: String, message: String },
    #[error("{field}: {message}")]
    InvalidRequest { field: &'static str, message: String },
    #[error("profile {profiles}: {message}")]
    Volume { profiles: String, message: String },
    #[error(
        "your saved settings (ConfigMap {configmap}) cannot be read: {message}; save your choices again on the spawn page, or ask an admin to fix or delete that ConfigMap"
    )]
    UserSettings { configmap: String, message: String },
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
    service_env: IndexMap<String, String>,
    /// Per service of `profile.services`, in order: the indices of its objects in `objects`.
    #[serde(skip)]
    service_objects: Vec<std::ops::Range<usize>>,
    #[serde(skip)]
    volumes: PodVolumes,
    #[serde(skip)]
    env_from: Vec<Value>,
}

/// JSP's memory limit in bytes for `MEM_LIMIT` (`get_mem_limit`): a `Ti`/`Gi`/`Mi`/`Ki`
/// quantity multiplied out, anything else unchanged (`1G` stays `1G`). JSP raised on a
/// fractional one (`1.5Gi`); that gives its exact byte count here.
fn mem_limit(quantity: &str) -> String {
    for (suffix, power) in [("Ti", 4), ("Gi", 3), ("Mi", 2), ("Ki", 1)] {
        if quantity.contains(suffix) {
            let scale = 1024i128.pow(power);
            let number = quantity.strip_suffix(suffix).and_then(|n| n.parse::<i128>().ok());
            return match number {
                Some(n) => (n * scale).to_string(),
                None => quantity_value(quantity)
                    .map_or_else(|_| quantity.to_owned(), |v| (v.ceil() as i128).to_string()),
            };
        }
    }
    quantity.to_owned()
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
    /// Pod volumes, JSP's names (see [`crate::profile::pod_volumes`]).
    pub volumes: Vec<Value>,
    /// The notebook container's mounts of `volumes`.
    pub volume_mounts: Vec<Value>,
    /// The notebook container's `envFrom`: the user's secret env (JSP's `-envs` Secret).
    pub env_from: Vec<Value>,
    pub gpu: u32,
}

/// What JSP set on every notebook: the raw JupyterHub user name.
pub const USER_NAME_ENV: &str = "JUPYTERHUB_USER_NAME";
/// What JSP set when the notebook has a memory limit: the limit in bytes.
pub const MEM_LIMIT_ENV: &str = "MEM_LIMIT";

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
        // JSP's label (ODH's Spark template selects the notebook by it), as a valid label value.
        labels.insert(USER_LABEL.to_owned(), naming::label_value(&self.owner.user));
        PodSettings {
            resources: self.profile.resources.clone(),
            kubespawner: crate::profile::kubespawner_resources(&self.profile.resources),
            tolerations: self.profile.tolerations.clone(),
            affinity: self.profile.affinity.clone(),
            labels,
            volumes: self.volumes.volumes.clone(),
            volume_mounts: self.volumes.mounts.clone(),
            env_from: self.env_from.clone(),
            gpu: self.profile.gpu,
        }
    }

    /// The notebook's environment, from the objects as applied (or as rendered in a dry run),
    /// in JSP's order: (our Ray variables,) the `return` values, (the services' templated env,)
    /// the profile env in merge order, `MEM_LIMIT`, `JUPYTERHUB_USER_NAME`. A name set twice
    /// keeps its first position and takes the later value, which is what the container saw
    /// when JSP listed both.
    pub fn environment(&self, objects: &[Value]) -> IndexMap<String, Value> {
        let mut env = IndexMap::new();
        if let Some(rc) = objects.iter().find(|o| is_ray_cluster(o)) {
            let name = pointer::str(rc, "/metadata/name").unwrap_or(&self.cluster_name);
            let namespace = pointer::str(rc, "/metadata/namespace").unwrap_or(&self.owner.namespace);
            env.insert("RAY_CLUSTER".into(), json!(name));
            env.insert("RAY_ADDRESS".into(), json!(format!("ray://{name}-head-svc.{namespace}.svc:10001")));
            // The token by reference only: KubeRay writes it into its Secret, the kubelet into
            // the container; this service never sees it (and has no rights on Secrets).
            if let Some(secret) = ray_token_secret(rc) {
                env.insert(RAY_AUTH_MODE_ENV.into(), json!("token"));
                env.insert(
                    RAY_AUTH_TOKEN_ENV.into(),
                    json!({"valueFrom": {"secretKeyRef": {"name": secret, "key": RAY_TOKEN_SECRET_KEY}}}),
                );
            }
        }
        if let Some(url) = objects.iter().find_map(dashboard_url) {
            env.insert("RAY_DASHBOARD_URL".into(), json!(url));
        }
        // JSP: every path on every object of every service, the last object deciding even when
        // it does not match (""); several matches joined with ",", values as Python's str().
        for (service, range) in self.profile.services.values().zip(&self.service_objects) {
            for object in objects.get(range.clone()).into_iter().flatten() {
                for (name, path) in &service.returns {
                    let found: Vec<String> = path.find(object).iter().map(|v| python::str(v)).collect();
                    env.insert(name.clone(), Value::String(found.join(",")));
                }
            }
        }
        for (name, value) in &self.service_env {
            env.insert(name.clone(), json!(value));
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
        if let Some(memory) = self.profile.resources.limits.get("memory") {
            env.insert(MEM_LIMIT_ENV.into(), json!(mem_limit(memory)));
        }
        env.insert(USER_NAME_ENV.into(), json!(self.owner.user));
        env
    }
}

/// Resolves the profile and renders every service template for one notebook server, for a
/// user without saved settings; see [`plan_with`].
pub fn plan(catalog: &Catalog, request: &SpawnRequest, default_namespace: &str) -> Result<Plan, PlanError> {
    plan_with(catalog, None, request, default_namespace)
}

/// The name JSP gave the user's settings when it merged them as the last profile.
pub const USER_SETTINGS_PROFILE: &str = "@singleuser@";

/// Resolves the profile and renders every service template for one notebook server. `settings`
/// are the user's own (JSP's spawn page), read from `default_namespace`: their GPU count and
/// env merge as the last profile, and their size and image apply when the request names none.
pub fn plan_with(
    catalog: &Catalog,
    settings: Option<&UserSettings>,
    request: &SpawnRequest,
    default_namespace: &str,
) -> Result<Plan, PlanError> {
    let owner =
        Owner::checked(&request.user, &request.server, request.namespace.as_deref(), default_namespace)?;
    let who = Requester { user: request.user.clone(), groups: request.groups.clone() };
    let settings = settings.filter(|s| !s.is_empty());
    let presets = match settings.and_then(|s| s.presets.clone()).transpose() {
        Ok(presets) => presets.unwrap_or_default(),
        Err(message) => {
            return Err(PlanError::UserSettings {
                configmap: crate::profile::settings_configmap_name(&request.user),
                message,
            });
        }
    };
    // The user's env ConfigMap is in this service's namespace; a notebook elsewhere cannot
    // refer to it, so it gets the values themselves (and no reference to the Secret).
    let same_namespace = owner.namespace == default_namespace;
    let personal = settings.map(|s| Profile {
        name: Some(USER_SETTINGS_PROFILE.to_owned()),
        gpu: presets.gpu,
        env: s.env(&request.user, !same_namespace),
        ..Profile::default()
    });
    let env_from = match settings {
        Some(s) if same_namespace => s.env_from(&request.user),
        _ => Vec::new(),
    };
    let image = request.image.clone().or(presets.last_selected_image);
    let choice = Choice {
        profile: request.profile.clone(),
        size: request.size.clone().or(presets.last_selected_size),
        options: request.options.clone(),
        personal,
    };
    let profile = catalog.profiles().resolve(&who, image.as_deref(), &choice)?;
    let volumes = pod_volumes(&profile.volumes, &profile.default_mount_path)
        .map_err(|e| PlanError::Volume { profiles: profile.profiles.join(", "), message: e.message })?;

    let cluster_name = owner.cluster_name();
    let escaped_user = naming::escape_user(&request.user);
    let labels = owner.labels();
    let mut objects = Vec::new();
    let mut service_env = IndexMap::new();
    let mut service_objects = Vec::with_capacity(profile.services.len());
    for (service_name, service) in &profile.services {
        if service.resources.is_empty() {
            return Err(PlanError::ServiceWithoutResources { service: service_name.clone() });
        }
        let context = template::context(&ContextInput {
            username: &request.user,
            server: &request.server,
            namespace: &owner.namespace,
            image: image.as_deref().unwrap_or_default(),
            profile: profile.slug.as_deref().unwrap_or_default(),
            size: profile.size.as_deref().unwrap_or_default(),
            configuration: &service.configuration,
            options: &profile.options,
        });
        let first = objects.len();
        for reference in &service.resources {
            let template = catalog.template(&reference.name, &reference.path).ok_or_else(|| {
                // A template that failed to compile says why, with its line.
                match catalog.template_error(&reference.name, &reference.path) {
                    Some(error) => PlanError::Template(error.clone()),
                    None => PlanError::MissingTemplate {
                        service: service_name.clone(),
                        configmap: reference.name.clone(),
                        key: reference.path.clone(),
                    },
                }
            })?;
            let mut object = template.render(&context)?;
            template::apply_name_rule(&mut object, &escaped_user, &cluster_name);
            finish_object(&mut object, &owner.namespace, &labels, &service.labels);
            template.check_rendered(&object, &catalog.rules().caps, &catalog.rules().policy)?;
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
        service_objects.push(first..objects.len());
    }
    Ok(Plan { owner, cluster_name, profile, objects, service_env, service_objects, volumes, env_from })
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

/// Ray's variables for token authentication (Ray 2.52+), as KubeRay sets them on Ray pods.
pub const RAY_AUTH_MODE_ENV: &str = "RAY_AUTH_MODE";
pub const RAY_AUTH_TOKEN_ENV: &str = "RAY_AUTH_TOKEN";
/// The key of KubeRay's token Secret (`utils.RAY_AUTH_TOKEN_SECRET_KEY`).
pub const RAY_TOKEN_SECRET_KEY: &str = "auth_token";

/// The Secret holding a RayCluster's token when it has token auth: `authOptions.secretName`,
/// else the one KubeRay generates. None without token auth, and with `enableK8sTokenAuth`
/// (Ray then checks Kubernetes ServiceAccount tokens; there is no Secret).
pub fn ray_token_secret(ray_cluster: &Value) -> Option<String> {
    let auth = pointer::get(ray_cluster, "/spec/authOptions")?;
    if auth.get("mode").and_then(Value::as_str) != Some("token")
        || auth.get("enableK8sTokenAuth").and_then(Value::as_bool) == Some(true)
    {
        return None;
    }
    match auth.get("secretName").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => Some(name.to_owned()),
        _ => Some(naming::kuberay_token_secret(pointer::str(ray_cluster, "/metadata/name")?)),
    }
}

pub fn is_ray_cluster(object: &Value) -> bool {
    pointer::str(object, "/kind") == Some("RayCluster")
        && pointer::str(object, "/apiVersion").is_some_and(|v| v.starts_with("ray.io/"))
}

/// `apiVersion kind name`, one line per object, as kept in the owner ConfigMap.
pub fn describe(object: &Value) -> String {
    format!(
        "{} {} {}",
        pointer::str(object, "/apiVersion").unwrap_or_default(),
        pointer::str(object, "/kind").unwrap_or_default(),
        pointer::str(object, "/metadata/name").unwrap_or_default()
    )
}

/// The Ray dashboard URL of a rendered Route or Ingress, when it has a host.
pub fn dashboard_url(object: &Value) -> Option<String> {
    let (host, tls, path) = match (pointer::str(object, "/kind")?, pointer::str(object, "/apiVersion")?) {
        ("Route", v) if v.starts_with("route.openshift.io/") => (
            pointer::str(object, "/spec/host").or_else(|| pointer::str(object, "/status/ingress/0/host"))?,
            pointer::get(object, "/spec/tls").is_some_and(|t| !t.is_null()),
            pointer::str(object, "/spec/path").unwrap_or("/"),
        ),
        ("Ingress", v) if v.starts_with("networking.k8s.io/") => (
            pointer::str(object, "/spec/rules/0/host")?,
            pointer::get(object, "/spec/tls").and_then(Value::as_array).is_some_and(|t| !t.is_empty()),
            pointer::str(object, "/spec/rules/0/http/paths/0/path").unwrap_or("/"),
        ),
        _ => return None,
    };
    if host.is_empty() {
        return None;
    }
    let scheme = if tls { "https" } else { "http" };
    Some(format!("{scheme}://{host}{path}"))
}

/// Renders every profile for every image it names, as `validate` does for an admin's CI: a
/// spawn that would fail (a template with an unknown variable or invalid YAML, a missing
/// template, an invalid volume, a service without templates) is found before any user presses
/// Start. Each request is made for a user the profile admits; slugged profiles are picked by
/// their slug, the others (every JSP profile) apply by image and user. Every message names the
/// profile, the image and what failed (the template's ConfigMap, key and line).
pub fn lint(catalog: &Catalog) -> Lint {
    let profiles = catalog.profiles().profiles();
    let mut requests: Vec<(String, SpawnRequest)> = Vec::new();
    for (index, profile) in profiles.iter().enumerate() {
        let name = profile.label().map_or_else(|| format!("profiles[{index}]"), |n| format!("`{n}`"));
        let user = profile.users.iter().find(|u| *u != "*").cloned().unwrap_or_else(|| "lint-user".into());
        // A concrete image for each entry, globs made concrete; no images: any image.
        let images: Vec<Option<String>> = if profile.images.is_empty() {
            vec![None]
        } else {
            profile.images.iter().map(|i| Some(i.replace('*', "lint").replace('?', "x"))).collect()
        };
        for image in images {
            let request = SpawnRequest {
                user: user.clone(),
                groups: profile.groups.clone(),
                image: image.clone(),
                profile: profile.slug.clone(),
                ..SpawnRequest::default()
            };
            if requests.iter().any(|(_, r)| *r == request) {
                continue;
            }
            let image = image.map_or_else(|| "any image".to_owned(), |i| format!("image {i}"));
            requests.push((format!("profile {name} ({image}, user {}", request.user), request));
        }
    }
    let mut problems: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (what, request) in requests {
        match plan(catalog, &request, "lint") {
            Ok(plan) => {
                for warning in plan.security_warnings() {
                    if seen.insert(warning.clone()) {
                        warnings.push(warning);
                    }
                }
            }
            Err(err) => {
                // Profiles merged into the same request fail the same way: say it once.
                if seen.insert(err.to_string()) {
                    let who = Requester { user: request.user.clone(), groups: request.groups.clone() };
                    let choice = Choice { profile: request.profile.clone(), ..Choice::default() };
                    let merged = match catalog.profiles().resolve(&who, request.image.as_deref(), &choice) {
                        Ok(resolved) if resolved.profiles.len() > 1 => {
                            format!(", merged with {}", resolved.profiles.join(", "))
                        }
                        _ => String::new(),
                    };
                    problems.push(format!("{what}{merged}) does not render: {err}"));
                }
            }
        }
    }
    Lint { problems, warnings }
}

/// What `validate` found: problems fail it (a spawn would fail), warnings do not (a spawn
/// works, but less safely than it should).
#[derive(Debug, Default)]
pub struct Lint {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

impl Plan {
    /// A service whose RayCluster lacks token auth, or has no NetworkPolicy beside it that
    /// selects all of its pods, renders a cluster any pod in the namespace can run code in.
    /// JSP-format profiles commonly do; they keep working, and `validate` says so.
    pub fn security_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for ((name, service), range) in self.profile.services.iter().zip(&self.service_objects) {
            let objects = &self.objects[range.clone()];
            for (object, reference) in objects.iter().zip(&service.resources) {
                if !is_ray_cluster(object) {
                    continue;
                }
                let cluster = pointer::str(object, "/metadata/name").unwrap_or_default();
                let what = format!(
                    "service `{name}`: the RayCluster of template ConfigMap {} key `{}`",
                    reference.name, reference.path
                );
                let k8s_auth =
                    pointer::get(object, "/spec/authOptions/enableK8sTokenAuth") == Some(&json!(true));
                if ray_token_secret(object).is_none() && !k8s_auth {
                    warnings.push(format!(
                        "{what} has no token authentication: any pod that reaches it can run code in it; add `spec.authOptions: {{mode: token}}` (README: Security)"
                    ));
                }
                if !objects.iter().any(|o| selects_ray_pods(o, cluster)) {
                    warnings.push(format!(
                        "{what} has no NetworkPolicy beside it selecting its pods (`ray.io/cluster: {{{{ cluster_name }}}}`): every pod in the namespace can connect to it; add one to the service's resources, as templates/ray-cluster-templates.yaml `ray-cluster-networkpolicy.yaml` does (README: Security)"
                    ));
                }
            }
        }
        warnings
    }
}

/// Whether `object` is a NetworkPolicy restricting ingress to every pod of Ray cluster
/// `cluster` (head and workers: its selector asks for nothing but `ray.io/cluster=<cluster>`).
fn selects_ray_pods(object: &Value, cluster: &str) -> bool {
    if pointer::str(object, "/kind") != Some("NetworkPolicy")
        || !pointer::str(object, "/apiVersion").is_some_and(|v| v.starts_with("networking.k8s.io/"))
    {
        return false;
    }
    let selector = pointer::get(object, "/spec/podSelector").cloned().unwrap_or(json!({}));
    let expressions =
        selector.get("matchExpressions").and_then(Value::as_array).is_some_and(|e| !e.is_empty());
    let labels_match = selector.get("matchLabels").and_then(Value::as_object).is_none_or(|labels| {
        labels.iter().all(|(key, value)| key == crate::labels::RAY_CLUSTER_LABEL && value == cluster)
    });
    // A policy restricts ingress unless policyTypes leaves Ingress out.
    let ingress = pointer::get(object, "/spec/policyTypes")
        .and_then(Value::as_array)
        .is_none_or(|types| types.iter().any(|t| t == "Ingress"));
    !expressions && labels_match && ingress
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ConfigMapSource, ProfileSelector};

    fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMapSource {
        ConfigMapSource {
            name: name.into(),
            labels: Default::default(),
            data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    const PROFILES: &str = r#"
profiles:
- name: globals
  env:
  - {name: FROM_SECRET, valueFrom: {secretKeyRef: {name: s, key: k}}}
  - {name: LAST_IMAGE, value: from-profile}
  - {name: JUPYTERHUB_USER_NAME, value: set-by-admin}
  resources:
    limits: {memory: 2Gi}
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
        NAMES: $..name
        LAST_IMAGE: spec.headGroupSpec.template.spec.containers[0].image
        HOST: spec.host
      labels: {team: ml}
"#;

    const RC: &str = "apiVersion: ray.io/v1\nkind: RayCluster\nmetadata:\n  name: {{cluster_name}}\nspec:\n  headGroupSpec:\n    template:\n      spec:\n        containers:\n        - {name: head, image: ray:2}\n";
    const ROUTE: &str = "apiVersion: route.openshift.io/v1\nkind: Route\nmetadata:\n  name: dashboard\nspec:\n  host: dash.apps.example.com\n  tls: {termination: edge}\n";

    fn catalog() -> Catalog {
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
    fn environment_follows_jsp_order_and_precedence() {
        let plan = plan(&catalog(), &request("eve"), "ns").unwrap();
        let env = plan.environment(&plan.objects);
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "RAY_CLUSTER",
                "RAY_ADDRESS",
                "RAY_DASHBOARD_URL",
                // `return` values in written order, then the service env, the profile env,
                // MEM_LIMIT; a name set again keeps its first position.
                "HEAD_IMAGE",
                "NAMES",
                "LAST_IMAGE",
                "HOST",
                "GREETING",
                "FROM_SECRET",
                "JUPYTERHUB_USER_NAME",
                "MEM_LIMIT",
            ]
        );
        // The service's templated env wins over the computed default.
        assert_eq!(env["RAY_ADDRESS"], json!("ray://ray-eve-head-svc.ns.svc:10001"));
        assert_eq!(env["GREETING"], json!("hello eve"));
        assert_eq!(env["RAY_DASHBOARD_URL"], json!("https://dash.apps.example.com/"));
        assert_eq!(env["FROM_SECRET"], json!({"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}));
        // The last object (the Route) decides every `return`, even where it does not match.
        assert_eq!(env["HEAD_IMAGE"], json!(""));
        assert_eq!(env["HOST"], json!("dash.apps.example.com"));
        assert_eq!(env["NAMES"], json!("dashboard-eve"), "the Route's own names only");
        // The profile env comes after the `return` values, so its value is the one seen.
        assert_eq!(env["LAST_IMAGE"], json!("from-profile"));
        assert_eq!(env["MEM_LIMIT"], json!("2147483648"));
        assert_eq!(env["JUPYTERHUB_USER_NAME"], json!("eve"), "the user, whatever a profile says");
    }

    #[test]
    fn returns_read_the_applied_objects_and_join_several_matches() {
        let plan = plan(&catalog(), &request("eve"), "ns").unwrap();
        let mut applied = plan.objects.clone();
        applied[1]["spec"]["host"] = json!("assigned.apps.example.com");
        applied[1]["spec"]["x"] = json!([{"name": "a"}, {"name": true}]);
        let env = plan.environment(&applied);
        assert_eq!(env["HOST"], json!("assigned.apps.example.com"));
        assert_eq!(env["NAMES"], json!("dashboard-eve,a,True"));
    }

    #[test]
    fn mem_limit_is_jsp_bytes() {
        for (quantity, bytes) in [
            ("2Gi", "2147483648"),
            ("1500Mi", "1572864000"),
            ("1Ti", "1099511627776"),
            ("512Ki", "524288"),
            ("1.5Gi", "1610612736"),
            ("1G", "1G"),
            ("1500M", "1500M"),
            ("2147483648", "2147483648"),
        ] {
            assert_eq!(mem_limit(quantity), bytes, "{quantity}");
        }
    }

    #[test]
    fn the_pod_is_labelled_with_the_user_and_cluster() {
        let pod = plan(&catalog(), &request("eje@redhat.com"), "ns").unwrap().pod();
        assert_eq!(pod.labels[USER_LABEL], "eje-40redhat-2ecom");
        assert_eq!(pod.labels[CLUSTER_LABEL], "ray-eje-40redhat-2ecom");
        // JSP's `-45ve` is no valid label value (the API server refused JSP's pod).
        let pod = plan(&catalog(), &request("Eve"), "ns").unwrap().pod();
        assert_eq!(pod.labels[USER_LABEL], naming::label_value("Eve"));
    }

    #[test]
    fn a_template_that_does_not_compile_refuses_the_spawn_with_its_error() {
        let sources = [
            cm(
                "jupyter-singleuser-profiles",
                &[(
                    crate::profile::PROFILES_KEY,
                    "profiles:\n- services:\n    s: {resources: [{name: tpl, path: bad.yaml}]}\n",
                )],
            ),
            cm(
                "tpl",
                &[("bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: [unclosed\n")],
            ),
        ];
        let catalog = Catalog::build(&ProfileSelector::default(), &sources, None);
        let Err(PlanError::Template(error)) = plan(&catalog, &request("eve"), "ns") else {
            panic!("a template error")
        };
        assert_eq!(
            (error.code(), error.configmap.as_str(), error.key.as_str()),
            ("invalid_yaml", "tpl", "bad.yaml")
        );
        assert!(error.line.is_some(), "{error}");
    }

    #[test]
    fn a_service_without_resources_is_refused() {
        let sources = [cm(
            "jupyter-singleuser-profiles",
            &[(crate::profile::PROFILES_KEY, "profiles:\n- services:\n    s: {configuration: {a: 1}}\n")],
        )];
        let catalog = Catalog::build(&ProfileSelector::default(), &sources, None);
        let err = plan(&catalog, &request("eve"), "ns").unwrap_err();
        assert!(matches!(err, PlanError::ServiceWithoutResources { ref service } if service == "s"), "{err}");
    }

    /// A value only a spawn supplies (a user's option) can break a label: the policy checks
    /// every rendered object, not only the load-time probe.
    #[test]
    fn every_rendered_object_is_held_to_the_policy() {
        let profiles = "profiles:\n- slug: p\n  services:\n    s:\n      options: {team: {type: string, default: ml}}\n      resources: [{name: tpl, path: cm.yaml}]\n";
        let template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: '{{cluster_name}}'\n  labels: {team: '{{options.team}}'}\n";
        let sources = [
            cm("jupyter-singleuser-profiles", &[(crate::profile::PROFILES_KEY, profiles)]),
            cm("tpl", &[("cm.yaml", template)]),
        ];
        let catalog = Catalog::build(&ProfileSelector::default(), &sources, None);
        assert!(catalog.problems().is_empty(), "{:?}", catalog.problems());
        assert!(plan(&catalog, &request("eve"), "ns").is_ok());
        let odd =
            SpawnRequest { options: [("team".to_owned(), json!("not a label!"))].into(), ..request("eve") };
        let err = plan(&catalog, &odd, "ns").unwrap_err();
        assert!(matches!(&err, PlanError::Template(e) if e.code() == "template_policy"), "{err}");
        assert!(
            err.to_string().contains("ConfigMap tpl key cm.yaml") && err.to_string().contains("label team"),
            "{err}"
        );
    }

    fn settings(presets: &str, envs: &[(&str, &str)]) -> UserSettings {
        UserSettings {
            presets: Some(crate::profile::parse_presets(presets)),
            envs: (!envs.is_empty())
                .then(|| envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        }
    }

    fn gpu_catalog() -> Catalog {
        let profiles = "profiles:\n- name: gpu\n  gpu: 1\n  env: [{name: A_PROFILE, value: p}]\nsizes:\n- name: Small\n  resources: {limits: {cpu: '1', memory: 1Gi}}\n- name: Large\n  resources: {limits: {cpu: '4', memory: 4Gi}}\ngpuTypes:\n- {type: t4, node_tolerations: [{key: gpu, operator: Exists}]}\n";
        let sources = [cm("jupyter-singleuser-profiles", &[(crate::profile::PROFILES_KEY, profiles)])];
        Catalog::build(&ProfileSelector::default(), &sources, None)
    }

    #[test]
    fn the_users_settings_merge_last_within_what_a_user_may_choose() {
        let catalog = gpu_catalog();
        let saved = settings(
            "gpu: 2\nlast_selected_size: Large\nresources: {limits: {cpu: '64'}}\n",
            &[("Z_MINE", "1"), ("B_MINE", "2")],
        );
        let plan = plan_with(&catalog, Some(&saved), &request("eve"), "ns").unwrap();
        assert_eq!(plan.profile.profiles, ["gpu", USER_SETTINGS_PROFILE]);
        assert_eq!(plan.profile.gpu, 2, "the user's GPU count overrides the profile's");
        assert_eq!(plan.profile.size.as_deref(), Some("Large"), "the saved size applies");
        assert_eq!(plan.profile.resources.limits["cpu"], "4", "but never the user's own resources");
        let env = plan.environment(&plan.objects);
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(names, ["A_PROFILE", "B_MINE", "Z_MINE", MEM_LIMIT_ENV, USER_NAME_ENV]);
        let cm = crate::profile::envs_configmap_name("eve");
        assert_eq!(env["B_MINE"], json!({"valueFrom": {"configMapKeyRef": {"name": cm, "key": "B_MINE"}}}));
        assert_eq!(plan.pod().env_from, [json!({"secretRef": {"name": cm, "optional": true}})]);
        // A size in the request wins over the saved one.
        let sized = SpawnRequest { size: Some("Small".into()), ..request("eve") };
        assert_eq!(
            plan_with(&catalog, Some(&saved), &sized, "ns").unwrap().profile.size.as_deref(),
            Some("Small")
        );
    }

    #[test]
    fn jsps_string_zero_switches_a_profiles_gpu_off_and_a_number_zero_keeps_it() {
        let catalog = gpu_catalog();
        let gpu = |presets: &str| {
            plan_with(&catalog, Some(&settings(presets, &[])), &request("eve"), "ns").unwrap().pod().gpu
        };
        assert_eq!(gpu("gpu: '0'\n"), 0, "JSP's first-save default");
        assert_eq!(gpu("gpu: 0\n"), 1, "an explicit 0 from the UI keeps the profile's");
        assert_eq!(gpu("last_selected_size: ''\n"), 1);
        assert_eq!(plan(&catalog, &request("eve"), "ns").unwrap().pod().gpu, 1, "no settings at all");
        let pod = plan_with(&catalog, Some(&settings("gpu: 3\n", &[])), &request("eve"), "ns").unwrap().pod();
        assert_eq!((pod.gpu, pod.resources.limits[crate::profile::GPU_RESOURCE].as_str()), (3, "3"));
        assert_eq!(pod.tolerations, [json!({"key": "gpu", "operator": "Exists"})]);
    }

    #[test]
    fn a_notebook_in_another_namespace_gets_the_users_env_values() {
        let saved = settings("", &[("MINE", "value")]);
        let elsewhere = SpawnRequest { namespace: Some("notebooks".into()), ..request("eve") };
        let plan = plan_with(&gpu_catalog(), Some(&saved), &elsewhere, "ns").unwrap();
        assert_eq!(plan.environment(&plan.objects)["MINE"], json!("value"));
        assert!(plan.pod().env_from.is_empty(), "the Secret is in the service's namespace");
    }

    #[test]
    fn saved_image_applies_when_the_request_names_none_and_broken_settings_refuse() {
        let sources = [cm(
            "jupyter-singleuser-profiles",
            &[(crate::profile::PROFILES_KEY, "profiles:\n- name: cuda\n  images: ['cuda:1']\n  gpu: 1\n")],
        )];
        let catalog = Catalog::build(&ProfileSelector::default(), &sources, None);
        let saved = settings("last_selected_image: cuda:1\n", &[]);
        assert_eq!(plan_with(&catalog, Some(&saved), &request("eve"), "ns").unwrap().profile.gpu, 1);
        let broken = settings("gpu: many\n", &[]);
        let err = plan_with(&catalog, Some(&broken), &request("eve"), "ns").unwrap_err();
        assert!(matches!(err, PlanError::UserSettings { .. }), "{err}");
        assert!(err.to_string().contains("jupyterhub-singleuser-profile-eve"), "{err}");
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
    fn the_token_secret_is_kuberays_unless_auth_is_off_or_by_kubernetes_tokens() {
        let rc = |auth: Value| json!({"metadata": {"name": "ray-a"}, "spec": {"authOptions": auth}});
        assert_eq!(ray_token_secret(&rc(json!({"mode": "token"}))).as_deref(), Some("ray-a"));
        assert_eq!(
            ray_token_secret(&rc(json!({"mode": "token", "secretName": "mine"}))).as_deref(),
            Some("mine")
        );
        assert_eq!(ray_token_secret(&rc(json!({"mode": "disabled"}))), None);
        // KubeRay enables auth only for an explicit `mode: token`.
        assert_eq!(ray_token_secret(&rc(json!({}))), None);
        assert_eq!(ray_token_secret(&rc(json!({"mode": "token", "enableK8sTokenAuth": true}))), None);
        assert_eq!(ray_token_secret(&json!({"metadata": {"name": "ray-a"}, "spec": {}})), None);
    }

    #[test]
    fn a_token_cluster_gives_the_notebook_a_reference_and_no_value() {
        let plan = plan(&catalog(), &request("alice"), "ns").unwrap();
        let mut objects = plan.objects.clone();
        assert!(!plan.environment(&objects).contains_key(RAY_AUTH_TOKEN_ENV), "no auth, no token");
        objects[0]["spec"]["authOptions"] = json!({"mode": "token"});
        let env = plan.environment(&objects);
        assert_eq!(env[RAY_AUTH_MODE_ENV], json!("token"));
        assert_eq!(
            env[RAY_AUTH_TOKEN_ENV],
            json!({"valueFrom": {"secretKeyRef": {"name": "ray-alice", "key": "auth_token"}}})
        );
        // Ours come first, with RAY_ADDRESS, so a profile's env can still override them.
        let names: Vec<&str> = env.keys().map(String::as_str).take(4).collect();
        assert_eq!(names, ["RAY_CLUSTER", "RAY_ADDRESS", RAY_AUTH_MODE_ENV, RAY_AUTH_TOKEN_ENV]);
    }

    #[test]
    fn security_warnings_name_the_template_and_what_is_missing() {
        let plan = plan(&catalog(), &request("alice"), "ns").unwrap();
        let warnings = plan.security_warnings();
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(
            warnings[0].starts_with("service `ray`: the RayCluster of template ConfigMap tpl key `rc.yaml`")
        );
        assert!(warnings[0].contains("no token authentication") && warnings[0].contains("authOptions"));
        assert!(warnings[1].contains("no NetworkPolicy") && warnings[1].contains("ray.io/cluster"));

        let mut plan = plan;
        plan.objects[0]["spec"]["authOptions"] = json!({"mode": "token"});
        let policy = |selector: Value, types: Value| {
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p"},
                   "spec": {"podSelector": selector, "policyTypes": types}})
        };
        let cases = [
            (json!({"matchLabels": {"ray.io/cluster": "ray-alice"}}), json!(["Ingress"]), true),
            (json!({}), json!(["Ingress", "Egress"]), true),
            // Only the head: the workers stay open.
            (
                json!({"matchLabels": {"ray.io/cluster": "ray-alice", "ray.io/node-type": "head"}}),
                json!(["Ingress"]),
                false,
            ),
            (json!({"matchLabels": {"ray.io/cluster": "ray-bob"}}), json!(["Ingress"]), false),
            (json!({"matchLabels": {"ray.io/cluster": "ray-alice"}}), json!(["Egress"]), false),
        ];
        for (selector, types, selects) in cases {
            plan.objects[1] = policy(selector.clone(), types.clone());
            let warnings = plan.security_warnings();
            assert_eq!(warnings.is_empty(), selects, "{selector} {types}: {warnings:#?}");
        }
    }

    #[test]
    fn lint_renders_every_pickable_profile() {
        assert!(lint(&catalog()).problems.is_empty());
        let sources = [cm("jupyter-singleuser-profiles", &[(crate::profile::PROFILES_KEY, PROFILES)])];
        let catalog = Catalog::build(&ProfileSelector::default(), &sources, None);
        let problems = lint(&catalog).problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        // The JSP-style `globals` request merges the default `Ray`, whose template is missing.
        assert!(
            problems[0].starts_with(
                "profile `globals` (any image, user lint-user, merged with globals, Ray) does not render"
            ),
            "{problems:?}"
        );
        assert!(problems[0].contains("template ConfigMap tpl key `rc.yaml`"), "{problems:?}");
    }

    #[test]
    fn lint_renders_jsp_profiles_for_every_image_they_name() {
        // JSP profiles have no slug: the broken template only renders for the second image.
        let profiles = "profiles:\n- name: Spark\n  images: ['spark:1', 'spark:2']\n  users: [eje]\n  services:\n    s:\n      resources: [{name: tpl, path: ok.yaml}]\n- name: Spark 2\n  images: ['spark:2']\n  services:\n    t:\n      resources: [{name: tpl, path: typo.yaml}]\n- name: volumes\n  images: ['vol:1']\n  volumes: [{name: a.b, persistentVolumeClaim: {claimName: c}}]\n";
        let ok = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n";
        let typo =
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: t\ndata:\n  a: '{{ worker_memroy }}'\n";
        let sources = [
            cm("jupyter-singleuser-profiles", &[(crate::profile::PROFILES_KEY, profiles)]),
            cm("tpl", &[("ok.yaml", ok), ("typo.yaml", typo)]),
        ];
        let catalog = Catalog::build(&ProfileSelector::default(), &sources, None);
        let problems = lint(&catalog).problems;
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].starts_with(
                "profile `Spark` (image spark:2, user eje, merged with Spark, Spark 2) does not render"
            ),
            "{problems:#?}"
        );
        assert!(
            problems[0].contains("template ConfigMap tpl key typo.yaml line 6")
                && problems[0].contains("worker_memroy")
        );
        assert!(problems[1].starts_with("profile `volumes` (image vol:1"), "{problems:#?}");
    }
}
