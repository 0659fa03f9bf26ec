//! The command line's arguments: every flag with its environment twin (clap derive). The
//! commands themselves live in [`crate::cli`] and [`crate::serve`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::caps::Caps;
use crate::catalog::{self, Catalog, ProfileSelector, Rules, UserIndex};
use crate::policy::Policy;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Mode {
    /// Use the cluster when one is reachable, else a dry run from the folders.
    Auto,
    /// Watch ConfigMaps and apply for real; fail when no cluster is reachable.
    Cluster,
    /// Serve the folders; spawn answers without writing anything.
    DryRun,
}

/// Where the profile ConfigMaps are found (in a cluster or among files).
#[derive(Debug, Clone, Args)]
pub struct SelectorArgs {
    /// Name of the base profiles ConfigMap, read first.
    #[arg(long, env = "SUP_PROFILES_CONFIGMAP", default_value = "jupyter-singleuser-profiles")]
    pub profiles_configmap: String,
    /// Label selector (key=value[,key=value]) of the other profile ConfigMaps.
    #[arg(long, env = "SUP_PROFILES_SELECTOR", default_value = "jupyterhub=singleuser-profiles")]
    pub profiles_selector: String,
}

impl SelectorArgs {
    pub fn selector(&self) -> Result<ProfileSelector, String> {
        ProfileSelector::new(&self.profiles_configmap, &self.profiles_selector)
            .map_err(|e| format!("--profiles-selector: {e}"))
    }
}

/// The caps on configuration and the template policy (README "Caps and template policy").
#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    /// Largest ConfigMap, in bytes of data; a larger one is ignored with a problem.
    #[arg(long, env = "SUP_MAX_CONFIGMAP_BYTES", default_value_t = Caps::default().configmap_bytes)]
    pub max_configmap_bytes: usize,
    /// Largest template, in bytes.
    #[arg(long, env = "SUP_MAX_TEMPLATE_BYTES", default_value_t = Caps::default().template_bytes)]
    pub max_template_bytes: usize,
    /// Most `{{ }}` placeholders in one template.
    #[arg(long, env = "SUP_MAX_PLACEHOLDERS", default_value_t = Caps::default().placeholders)]
    pub max_placeholders: usize,
    /// Deepest nesting of YAML collections in a template.
    #[arg(long, env = "SUP_MAX_YAML_DEPTH", default_value_t = Caps::default().depth)]
    pub max_yaml_depth: usize,
    /// Largest rendered object, in bytes of JSON.
    #[arg(long, env = "SUP_MAX_RENDERED_BYTES", default_value_t = Caps::default().rendered_bytes)]
    pub max_rendered_bytes: usize,
    /// Kinds templates may create, comma-separated. Secrets, RBAC and cluster-scoped kinds are
    /// refused whatever this says.
    #[arg(
        long,
        env = "SUP_TEMPLATE_KINDS",
        value_delimiter = ',',
        default_value = "RayCluster,Service,Route,Ingress,NetworkPolicy,ConfigMap"
    )]
    pub template_kinds: Vec<String>,
}

impl RulesArgs {
    pub fn rules(&self) -> Result<Rules, String> {
        let caps = Caps {
            configmap_bytes: self.max_configmap_bytes,
            template_bytes: self.max_template_bytes,
            placeholders: self.max_placeholders,
            depth: self.max_yaml_depth,
            rendered_bytes: self.max_rendered_bytes,
        };
        let policy = Policy::new(&self.template_kinds).map_err(|e| format!("--template-kinds: {e}"))?;
        Ok(Rules { caps, policy })
    }
}

/// The folders of ConfigMap files used by the dry run, `render` and `validate`.
#[derive(Debug, Clone, Args)]
pub struct FolderArgs {
    #[arg(long = "profiles", env = "SUP_PROFILES_DIR", default_value = "profiles")]
    pub profiles_dir: PathBuf,
    #[arg(long = "templates", env = "SUP_TEMPLATES_DIR", default_value = "templates")]
    pub templates_dir: PathBuf,
}

impl FolderArgs {
    /// The catalog of the folders' ConfigMaps, and the users' settings among them.
    pub fn load(&self, selector: &ProfileSelector, rules: &Rules) -> Result<(Catalog, UserIndex), String> {
        let files = catalog::load_files(&[&self.profiles_dir, &self.templates_dir], rules.caps.file_bytes())
            .map_err(|e| e.to_string())?;
        let cms: Vec<_> = files.into_iter().flat_map(|(_, cms)| cms).collect();
        let (users, rest) = UserIndex::split(selector, &cms);
        Ok((Catalog::build_with(selector, rules, rest, None), users))
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, env = "SUP_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    #[arg(long, env = "SUP_MODE", value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Namespace to watch and to spawn into by default [default: the client's namespace].
    #[arg(long, env = "SUP_NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub selector: SelectorArgs,
    #[command(flatten)]
    pub folders: FolderArgs,
    #[command(flatten)]
    pub rules: RulesArgs,
    /// The hub's API token (prefer --hub-token-file).
    #[arg(long, env = "SUP_HUB_TOKEN", hide_env_values = true)]
    pub hub_token: Option<String>,
    /// File holding the hub's API token.
    #[arg(long, env = "SUP_HUB_TOKEN_FILE")]
    pub hub_token_file: Option<PathBuf>,
    /// JupyterHub's API (e.g. `http://hub:8081/hub/api`): user tokens are verified there and
    /// may act only for their own user.
    #[arg(long, env = "SUP_HUB_API_URL")]
    pub hub_api_url: Option<String>,
    /// Verify user tokens with a Kubernetes TokenReview (the ODH dashboard's user tokens).
    #[arg(long, env = "SUP_TOKEN_REVIEW")]
    pub token_review: bool,
    /// Ray clusters one user may hold at once (0: no cap).
    #[arg(long, env = "SUP_MAX_CLUSTERS_PER_USER", default_value_t = 5)]
    pub max_clusters_per_user: usize,
    /// Ray clusters the service runs at once in its namespace (0: no cap).
    #[arg(long, env = "SUP_MAX_CLUSTERS", default_value_t = 1000)]
    pub max_clusters: usize,
    /// Seconds a cluster may wait for its notebook pod before it is reaped (0: never reap;
    /// for spawners that run no pods).
    #[arg(long, env = "SUP_ORPHAN_GRACE", default_value_t = 900)]
    pub orphan_grace: u64,
    /// Seconds between reaper passes.
    #[arg(long, env = "SUP_REAP_INTERVAL", default_value_t = 30)]
    pub reap_interval: u64,
    /// Seconds any request may take (spawn excepted).
    #[arg(long, env = "SUP_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout: u64,
    /// Seconds a spawn may take, waiting for the Ray head included.
    #[arg(long, env = "SUP_SPAWN_TIMEOUT", default_value_t = 600)]
    pub spawn_timeout: u64,
    /// Seconds one Kubernetes API call may take before the caller gets a 503.
    #[arg(long, env = "SUP_API_TIMEOUT", default_value_t = 10)]
    pub api_timeout: u64,
    /// Kubernetes API calls in flight at once; more wait their turn. Fewer than the spawn
    /// slots made a 1,000-user storm 1.3x slower than the same applies made directly; twice
    /// as many (a spawn sends its objects at once) measured within the noise (BENCHMARKS.md).
    #[arg(long, env = "SUP_API_CONCURRENCY", default_value_t = crate::cluster::DEFAULT_SPAWN_CONCURRENCY)]
    pub api_concurrency: usize,
    /// Spawns planned and written at once; more queue (waiting for a Ray head does not count).
    #[arg(long, env = "SUP_SPAWN_CONCURRENCY", default_value_t = crate::cluster::DEFAULT_SPAWN_CONCURRENCY)]
    pub spawn_concurrency: usize,
    /// Bytes of dry-run render answers kept for requests asked again with the configuration
    /// unchanged (0: none kept).
    #[arg(long, env = "SUP_RENDER_CACHE_BYTES", default_value_t = crate::api::renders::DEFAULT_RENDER_CACHE_BYTES)]
    pub render_cache_bytes: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "SUP_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,
    /// Seconds a request body may take to arrive in full; a slower one gets a 408.
    #[arg(long, env = "SUP_BODY_TIMEOUT", default_value_t = 10)]
    pub body_timeout: u64,
    /// Seconds a request head may take, counted from when the server starts waiting for it (a
    /// kept-alive connection without a complete new request is closed after this long too).
    #[arg(long, env = "SUP_HEADER_TIMEOUT", default_value_t = 20)]
    pub header_timeout: u64,
    /// Seconds a connection may sit with nothing in flight and no bytes moving (before its
    /// first request too); keep it below --header-timeout, which bounds idle time as well.
    #[arg(long, env = "SUP_IDLE_TIMEOUT", default_value_t = 15)]
    pub idle_timeout: u64,
    /// Open connections at most; past it, accepting waits until one closes.
    #[arg(long, env = "SUP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// JSP's spawner API (boxed: the serve command's arguments are large enough already).
    #[command(flatten)]
    pub launcher: Box<LauncherArgs>,
    /// Seconds between SIGTERM and closing the listener: readiness is false meanwhile, so load
    /// balancers stop sending work before connections are refused.
    #[arg(long, env = "SUP_SHUTDOWN_DELAY", default_value_t = 5)]
    pub shutdown_delay: u64,
    /// Seconds to drain in-flight requests after the listener closed.
    #[arg(long, env = "SUP_SHUTDOWN_GRACE", default_value_t = 25)]
    pub shutdown_grace: u64,
}

/// JSP's spawner API and the spawn page's browser login.
#[derive(Debug, Args)]
pub struct LauncherArgs {
    /// Path prefix of JSP's spawner API (JupyterHub's proxy forwards `/services/<name>/` unchanged).
    #[arg(long, env = "SUP_JSP_API_PREFIX", default_value = crate::api::jsp::DEFAULT_PREFIX, value_parser = parse_prefix)]
    pub jsp_api_prefix: String,
    /// Images the spawn page offers beside the profiles' exact images: `repository:tag`, comma-separated.
    #[arg(long, env = "SUP_LAUNCHER_IMAGES", value_delimiter = ',')]
    pub launcher_images: Vec<String>,
    /// The image of a user who picked none [default: the first offered].
    #[arg(long, env = "SUP_LAUNCHER_DEFAULT_IMAGE")]
    pub launcher_default_image: Option<String>,
    /// The service's OAuth client id in JupyterHub (`service-<name>`): browsers without a
    /// session are sent through the hub's login. Needs --hub-api-url and the hub token (the
    /// service's `api_token`, its client secret).
    #[arg(long, env = "SUP_OAUTH_CLIENT_ID")]
    pub oauth_client_id: Option<String>,
    /// The callback path registered as the service's `oauth_redirect_uri`.
    #[arg(long, env = "SUP_OAUTH_REDIRECT_URI", default_value = "/services/jsp-api/oauth_callback")]
    pub oauth_redirect_uri: String,
    /// The hub's authorize endpoint as the browser reaches it.
    #[arg(long, env = "SUP_OAUTH_AUTHORIZE_URL", default_value = "/hub/api/oauth2/authorize")]
    pub oauth_authorize_url: String,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub folders: FolderArgs,
    #[command(flatten)]
    pub selector: SelectorArgs,
    #[command(flatten)]
    pub rules: RulesArgs,
    #[arg(long, env = "SUP_USER")]
    pub user: String,
    /// Comma-separated JupyterHub groups.
    #[arg(long, env = "SUP_GROUPS", value_delimiter = ',')]
    pub groups: Vec<String>,
    #[arg(long, env = "SUP_IMAGE")]
    pub image: Option<String>,
    /// Profile slug.
    #[arg(long, env = "SUP_PROFILE")]
    pub profile: Option<String>,
    #[arg(long, env = "SUP_SIZE")]
    pub size: Option<String>,
    /// A user option, `name=value`; repeat for more.
    #[arg(long = "option", env = "SUP_OPTIONS", value_delimiter = ',', value_parser = parse_option)]
    pub options: Vec<(String, Value)>,
    /// Named server (empty: the default server).
    #[arg(long, env = "SUP_SERVER", default_value = "")]
    pub server: String,
    #[arg(long, env = "SUP_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// yaml: the objects, `---`-separated; json: the body `POST /api/v1/render` answers.
    #[arg(short = 'o', long, env = "SUP_OUTPUT", value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// ConfigMap files or folders [default: profiles templates].
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub selector: SelectorArgs,
    #[command(flatten)]
    pub rules: RulesArgs,
}

/// A path prefix: starts with `/`, no trailing `/`, not the root.
fn parse_prefix(text: &str) -> Result<String, String> {
    let prefix = text.trim().trim_end_matches('/');
    match prefix.starts_with('/') && prefix.len() > 1 {
        true => Ok(prefix.to_owned()),
        false => Err(format!("`{text}` is no path prefix: give one like /services/jsp-api/api")),
    }
}

/// `name=value`; the value is JSON when it parses as a number or boolean, else a string.
fn parse_option(text: &str) -> Result<(String, Value), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("`{text}` is not name=value"))?;
    let value = match serde_json::from_str::<Value>(value) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(value.to_owned()),
    };
    Ok((name.trim().to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_typed_values() {
        assert_eq!(parse_option("workers=3").unwrap(), ("workers".into(), serde_json::json!(3)));
        assert_eq!(parse_option("gpu=true").unwrap(), ("gpu".into(), serde_json::json!(true)));
        assert_eq!(parse_option("mode=fast").unwrap(), ("mode".into(), serde_json::json!("fast")));
        assert!(parse_option("novalue").is_err());
    }

    #[test]
    fn prefixes_are_paths_without_a_trailing_slash() {
        assert_eq!(parse_prefix("/services/jsp-api/api/").unwrap(), "/services/jsp-api/api");
        assert!(parse_prefix("/").is_err());
        assert!(parse_prefix("services").is_err());
    }
}
