//! Wiring for `serve`: pick the mode, load config, start the watch and the HTTP server, drain
//! on SIGTERM.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::Client;

use crate::api::OAuth;
use crate::api::listener::{self, ConnectionLimits};
use crate::api::{Authenticator, HubToken, Limits, Verifier};
use crate::app::{App, ClusterSetup, LauncherSetup};
use crate::args::{Mode, ServeArgs};
use crate::cluster;
use crate::launcher::ImageList;
use crate::lifecycle::{Quota, Reaping};
use crate::metrics::Metrics;

pub fn run(args: ServeArgs) -> Result<ExitCode, String> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(serve(args))
}

/// A client when a cluster answers, with the reason when it does not.
async fn connect(args: &ServeArgs) -> Result<Client, String> {
    let mut config = kube::Config::infer().await.map_err(|e| e.to_string())?;
    config.connect_timeout = Some(Duration::from_secs(5));
    let client = cluster::bounded_client(config, Duration::from_secs(args.api_timeout), args.api_concurrency)
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(5), client.apiserver_version())
        .await
        .map_err(|_| "the API server did not answer within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(client)
}

fn read_token(args: &ServeArgs) -> Result<Option<HubToken>, String> {
    let text = match (&args.hub_token_file, &args.hub_token) {
        (Some(path), _) => {
            std::fs::read_to_string(path).map_err(|e| format!("--hub-token-file {}: {e}", path.display()))?
        }
        (None, Some(token)) => token.clone(),
        (None, None) => return Ok(None),
    };
    HubToken::new(&text).map(Some).ok_or_else(|| "the hub token is empty".to_owned())
}

async fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    let metrics = Metrics::default();
    let selector = args.selector.selector()?;
    let rules = args.rules.rules()?;
    let hub_token = read_token(&args)?;

    let client = match args.mode {
        Mode::DryRun => None,
        Mode::Cluster => {
            Some(connect(&args).await.map_err(|e| format!("no Kubernetes cluster reachable: {e}"))?)
        }
        Mode::Auto => match connect(&args).await {
            Ok(client) => Some(client),
            Err(reason) => {
                tracing::warn!(%reason, "no Kubernetes cluster reachable");
                None
            }
        },
    };

    let mut verifiers = Vec::new();
    if let Some(url) = &args.hub_api_url {
        verifiers.push(Verifier::jupyterhub(url, Duration::from_secs(args.api_timeout))?);
    }
    if args.token_review {
        let client = client.clone().ok_or("--token-review needs a cluster; it is not reachable")?;
        verifiers.push(Verifier::TokenReview(client));
    }
    let auth = Authenticator::new(hub_token.clone(), verifiers);
    let launcher = launcher_setup(&args, hub_token.as_ref())?;

    let builder = match client {
        Some(client) => {
            if hub_token.is_none() {
                return Err(
                    "cluster mode needs the hub's token: set --hub-token-file or SUP_HUB_TOKEN".into()
                );
            }
            let namespace = args.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
            tracing::info!(%namespace, "cluster mode: watching ConfigMaps and applying for real");
            let setup = ClusterSetup {
                client,
                selector,
                rules,
                reaping: Reaping {
                    grace: Duration::from_secs(args.orphan_grace),
                    interval: Duration::from_secs(args.reap_interval.max(1)),
                },
                quota: Quota { per_user: args.max_clusters_per_user, total: args.max_clusters },
                spawn_concurrency: args.spawn_concurrency,
            };
            App::cluster(setup, &namespace)
        }
        None => {
            let (catalog, users) = args.folders.load(&selector, &rules)?;
            for problem in catalog.problems() {
                tracing::warn!("{problem}");
            }
            metrics.config_problems.set(catalog.problems().len() as i64);
            metrics.config_loaded.set(1);
            let source = format!(
                "folders {} and {}",
                args.folders.profiles_dir.display(),
                args.folders.templates_dir.display()
            );
            tracing::warn!(
                "DRY RUN: serving {source}; spawn answers what it would apply and writes nothing. \
                 Point KUBECONFIG at a cluster (or run in one) to apply for real."
            );
            if auth.is_open() {
                tracing::warn!(
                    "the API is OPEN: no hub token configured (acceptable for a local dry run only)"
                );
            }
            let namespace = args.namespace.clone().unwrap_or_else(|| "default".to_owned());
            App::dry_run(catalog, users, source, &namespace)
        }
    };

    let limits = Limits {
        body_bytes: args.body_limit,
        body_timeout: Duration::from_secs(args.body_timeout),
        request_timeout: Duration::from_secs(args.request_timeout),
        spawn_timeout: Duration::from_secs(args.spawn_timeout),
    };
    let app = builder
        .auth(auth)
        .metrics(metrics.clone())
        .limits(limits)
        .launcher(launcher)
        .render_cache_bytes(args.render_cache_bytes)
        .build();
    let connections = ConnectionLimits {
        header_timeout: Duration::from_secs(args.header_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        max_connections: args.max_connections,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
    tracing::info!(listen = %listener.local_addr().map_err(|e| e.to_string())?, "serving");

    let delay = Duration::from_secs(args.shutdown_delay);
    let grace = Duration::from_secs(args.shutdown_grace);
    let shutting_down = app.state.shutting_down.clone();
    let shutdown = async move {
        shutdown_signal().await;
        shutting_down.store(true, Ordering::Relaxed);
        tracing::info!(
            delay_seconds = delay.as_secs(),
            "shutting down: readiness is now false; still serving until the delay is over"
        );
        tokio::time::sleep(delay).await;
        tracing::info!(grace_seconds = grace.as_secs(), "shutting down: draining in-flight requests");
    };
    listener::serve(listener, app.router.clone(), connections, metrics, shutdown, grace).await;
    Ok(ExitCode::SUCCESS)
}

/// JSP's spawner API: its prefix, images and (with a client id) the browser login.
fn launcher_setup(args: &ServeArgs, hub_token: Option<&HubToken>) -> Result<LauncherSetup, String> {
    let launcher = &args.launcher;
    let images = ImageList {
        images: launcher.launcher_images.clone(),
        default: launcher.launcher_default_image.clone(),
    };
    for problem in images.problems() {
        tracing::warn!("{problem}");
    }
    let oauth = match &launcher.oauth_client_id {
        None => None,
        Some(client_id) => {
            let api = args.hub_api_url.as_deref().ok_or("--oauth-client-id needs --hub-api-url")?;
            let secret =
                hub_token.ok_or("--oauth-client-id needs the hub token (the service's api_token)")?;
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(args.api_timeout))
                .build()
                .map_err(|e| e.to_string())?;
            Some(OAuth {
                client_id: client_id.clone(),
                client_secret: secret.clone(),
                callback_path: launcher.oauth_redirect_uri.clone(),
                authorize_url: launcher.oauth_authorize_url.clone(),
                token_url: format!("{}/oauth2/token", api.trim_end_matches('/')),
                http,
            })
        }
    };
    Ok(LauncherSetup { prefix: launcher.jsp_api_prefix.clone(), images, oauth })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
