//! The load tool (a `harness = false` bench target, so it builds only on `cargo bench`).
//!
//! ```sh
//! cargo bench --bench load -- dry      # memory (idle, 1,000 profiles) + dry-run render throughput
//! eval "$(scripts/cluster env)"        # a running control plane (scripts/cluster up)
//! cargo bench --bench load -- storm    # spawn storm 100 and 1,000 users vs. direct kube-rs applies,
//!                                      # API calls per spawn, peak RSS, ConfigMap change latency
//! cargo bench --bench load -- hostile  # issue 14: RSS through 2,000 slow connections and 10,000
//!                                      # odd-method requests; hostile ConfigMaps' load times
//! ```
//! Options (after `--`): `--duration SECS` (render, default 10), `--concurrency N` (render,
//! default 32), `--users 100,1000` (storm), `--namespace NS` (storm, default `sup-bench-<time>`;
//! deleted afterwards), `--client-threads N` (render client runtime, default 1).
//! It runs the release binary of this package (`CARGO_BIN_EXE_singleuser-profiles`).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use singleuser_profiles::catalog::{Catalog, ProfileSelector};
use singleuser_profiles::plan::{self, Plan, SpawnRequest};
use singleuser_profiles_testkit::client::{self, Connection};
use singleuser_profiles_testkit::process::Service;

const BIN: &str = env!("CARGO_BIN_EXE_singleuser-profiles");
const TOKEN: &str = "bench-hub-token";

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

// ---------------------------------------------------------------------------------------------
// options

struct Opts {
    mode: String,
    duration: u64,
    concurrency: usize,
    users: Vec<usize>,
    namespace: Option<String>,
    client_threads: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        mode: String::new(),
        duration: 10,
        concurrency: 32,
        users: vec![100, 1000],
        namespace: None,
        client_threads: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {} // cargo bench passes it
            "--duration" => o.duration = args.next().and_then(|v| v.parse().ok()).expect("--duration SECS"),
            "--concurrency" => {
                o.concurrency = args.next().and_then(|v| v.parse().ok()).expect("--concurrency N")
            }
            "--client-threads" => {
                o.client_threads = args.next().and_then(|v| v.parse().ok()).expect("--client-threads N")
            }
            "--users" => {
                o.users = args
                    .next()
                    .expect("--users N[,N]")
                    .split(',')
                    .map(|n| n.trim().parse().expect("--users N[,N]"))
                    .collect()
            }
            "--namespace" => o.namespace = Some(args.next().expect("--namespace NS")),
            m if !m.starts_with('-') && o.mode.is_empty() => o.mode = m.to_owned(),
            other => panic!("unknown argument {other}; see benches/load.rs"),
        }
    }
    o
}

fn main() {
    let o = opts();
    println!("# load tool: {} ({})", if o.mode.is_empty() { "dry" } else { &o.mode }, machine());
    match o.mode.as_str() {
        "" | "dry" => dry(&o),
        "render" => {
            let server = Server::dry_run(None);
            render_throughput(&server, &o);
        }
        "memory" => memory(),
        "storm" => storm(&o).expect("storm"),
        "hostile" => hostile(),
        other => panic!("unknown mode {other}: dry, render, memory, storm or hostile"),
    }
}

fn machine() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cpus} CPUs, loadavg {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

// ---------------------------------------------------------------------------------------------
// the server under test

struct Server {
    service: Service,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    /// `serve` with `args`, through the tests' own runner; blocks until it is ready.
    fn start(args: &[&str], dir: tempfile::TempDir) -> Server {
        let mut command = Command::new(BIN);
        command.arg("serve").args(args).current_dir(common::repo());
        // A thread with a runtime of its own, so this works from sync and async callers alike.
        let service = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(Service::start(command))
        })
        .join()
        .expect("the server starts");
        let addr = service.addr;
        Server { service, addr, _dir: dir }
    }

    /// The defaults in dry-run mode (repo folders), or a profiles folder of `total` profiles.
    fn dry_run(profiles: Option<usize>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["--mode".to_owned(), "dry-run".to_owned()];
        if let Some(total) = profiles {
            let p = dir.path().join("profiles");
            common::write_profiles_dir(&p, total);
            args.extend(["--profiles".to_owned(), p.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start(&args, dir)
    }

    fn memory(&self) -> Mem {
        Mem::of(self.service.pid())
    }
}

#[derive(Debug, Clone, Copy)]
struct Mem {
    rss_kib: u64,
    hwm_kib: u64,
}

impl Mem {
    fn of(pid: u32) -> Mem {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Mem { rss_kib: field("VmRSS:"), hwm_kib: field("VmHWM:") }
    }
}

impl std::fmt::Display for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            self.rss_kib as f64 / 1024.0,
            self.hwm_kib as f64 / 1024.0
        )
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP: one keep-alive connection per worker, the tests' own client

type Conn = Connection;

async fn post(conn: &mut Conn, path: &str, body: Bytes, token: Option<&str>) -> Res<(u16, Bytes)> {
    let reply = conn.send(client::request("POST", path, token, Some(body))).await?;
    Ok((reply.status.as_u16(), reply.body))
}

// ---------------------------------------------------------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn render_body(i: usize) -> Bytes {
    Bytes::from(
        json!({"user": format!("user-{i}"), "profile": "ray", "size": "Small", "options": {"workers": 3}})
            .to_string(),
    )
}

// ---------------------------------------------------------------------------------------------
// hostile input (issue 14)

fn hostile() {
    println!(
        "\n## hostile connections (dry-run server, defaults: --max-connections 1024, --header-timeout 20, --idle-timeout 15)"
    );
    let server = Server::dry_run(None);
    let pid = server.service.pid();
    let addr = server.addr;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("idle: {}", server.memory());
    rt.block_on(async move {
        use tokio::io::AsyncWriteExt;
        // 2,000 connections trickling a request head that never ends, one header line a second.
        let started = Instant::now();
        let mut slow = Vec::new();
        for _ in 0..2000 {
            slow.push(tokio::spawn(async move {
                let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return };
                let _ = stream.write_all(b"POST /api/v1/spawn HTTP/1.1\r\nhost: x\r\n").await;
                for _ in 0..30 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if stream.write_all(b"x-slow: y\r\n").await.is_err() {
                        return;
                    }
                }
            }));
        }
        let mut peak = Mem::of(pid);
        while !slow.iter().all(|t| t.is_finished()) && started.elapsed() < Duration::from_secs(40) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = Mem::of(pid);
            if now.rss_kib > peak.rss_kib {
                peak = now;
            }
        }
        let healthz = client::call(addr, "GET", "/healthz", None, None).await.map(|r| r.status.as_u16());
        println!(
            "2,000 slow-header connections over {:.0} s: peak {peak}; then /healthz {healthz:?}, {}",
            started.elapsed().as_secs_f64(),
            Mem::of(pid)
        );
        for task in slow {
            task.abort();
        }

        // 10,000 requests with a new odd method each, on 8 kept-alive connections.
        let started = Instant::now();
        let mut workers = Vec::new();
        for w in 0..8 {
            workers.push(tokio::spawn(async move {
                let mut c = Conn::open(addr).await.unwrap();
                for i in 0..1250 {
                    let method = format!("Z{w}x{i}{}", "L".repeat(64));
                    let reply = c.call(&method, "/api/v1/spawn", None, None).await.unwrap();
                    assert_eq!(reply.status.as_u16(), 405);
                }
            }));
        }
        for worker in workers {
            worker.await.unwrap();
        }
        let metrics = client::call(addr, "GET", "/metrics", None, None).await.unwrap().text();
        let series =
            metrics.lines().filter(|l| l.starts_with("singleuser_profiles_http_requests_total{")).count();
        println!(
            "10,000 odd-method requests in {:.1} s: {}; /metrics {} bytes, {series} request series",
            started.elapsed().as_secs_f64(),
            Mem::of(pid),
            metrics.len()
        );
    });

    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("\n## hostile ConfigMaps (in process, {build} build)");
    let selector = ProfileSelector::default();
    let profiles =
        "profiles:\n- name: p\n  services:\n    s:\n      resources: [{name: tpl, path: t.yaml}]\n";
    let with_template = |template: String| {
        let manifest = format!(
            "kind: ConfigMap\nmetadata: {{name: jupyter-singleuser-profiles}}\ndata:\n  jupyterhub-singleuser-profiles.yaml: {}\n---\nkind: ConfigMap\nmetadata: {{name: tpl}}\ndata:\n  t.yaml: {}\n",
            serde_json::to_string(profiles).unwrap(),
            serde_json::to_string(&template).unwrap()
        );
        singleuser_profiles::catalog::parse_configmaps("hostile", &manifest).unwrap()
    };
    let words = "{{ user }} ".repeat(19_999);
    let placeholders = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: '{{{{cluster_name}}}}'}}\ndata:\n  a: '{words}'\n"
    );
    let nested =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\ndata: {}\n", "[".repeat(100_000));
    let cases = [
        (format!("{} KB template, 20,000 placeholders", placeholders.len() / 1000), placeholders),
        ("100,000 nested `[`".to_owned(), nested),
    ];
    for (label, template) in cases {
        let cms = with_template(template);
        let started = Instant::now();
        let catalog = Catalog::build(&selector, &cms, None);
        let took = started.elapsed();
        let outcome = match catalog.problems().first() {
            None => "loaded".to_owned(),
            Some(p) => format!("refused: {}", p.message.chars().take(120).collect::<String>()),
        };
        println!("{label}: {} ({outcome})", ms(took));
    }
    // 20,000 profiles anyone may pick (2.2 MB: over one ConfigMap's 1 MiB, so the cap is raised).
    let many: String = (0..20_000).map(|i| format!("- name: p{i}\n  slug: p{i}\n")).collect();
    let mut cms = common::repo_configmaps();
    let base = cms.iter_mut().find(|cm| cm.name == "jupyter-singleuser-profiles").unwrap();
    let text = base.data.get_mut("jupyterhub-singleuser-profiles.yaml").unwrap();
    *text = text.replacen("profiles:\n", &format!("profiles:\n{many}"), 1);
    let rules = singleuser_profiles::catalog::Rules {
        caps: singleuser_profiles::caps::Caps { configmap_bytes: 8 << 20, ..Default::default() },
        ..Default::default()
    };
    let catalog = Catalog::build_with(&selector, &rules, &cms, None);
    assert!(catalog.problems().is_empty(), "{:?}", catalog.problems());
    let who = singleuser_profiles::profile::Requester { user: "alice".into(), groups: vec![] };
    let started = Instant::now();
    let choices = catalog.profiles().choices(&who, None);
    println!(
        "choices (GET /api/v1/profiles) with 20,000 profiles: {} ({} choices)",
        ms(started.elapsed()),
        choices.len()
    );
    let started = Instant::now();
    let list = catalog.profiles().kubespawner_profile_list(&who, None);
    println!(
        "kubespawner profile_list with 20,000 profiles: {} ({} entries)",
        ms(started.elapsed()),
        list.len()
    );
}

// ---------------------------------------------------------------------------------------------
// dry-run: memory and render throughput

fn dry(o: &Opts) {
    memory();
    let server = Server::dry_run(None);
    render_throughput(&server, o);
}

fn memory() {
    println!("\n## memory (dry-run server, /proc/<pid>/status)");
    for (label, profiles) in
        [("defaults (repo profiles/ + templates/)", None), ("1,000 profiles loaded", Some(1000))]
    {
        let server = Server::dry_run(profiles);
        std::thread::sleep(Duration::from_secs(2));
        let idle = server.memory();
        // One render of each kind, so the figure includes a warmed request path.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut c = Conn::open(server.addr).await.unwrap();
            for i in 0..100 {
                let (status, _) = post(&mut c, "/api/v1/render", render_body(i), None).await.unwrap();
                assert_eq!(status, 200);
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        println!("idle, {label}: {idle}; after 100 renders: {}", server.memory());
    }
}

fn render_throughput(server: &Server, o: &Opts) {
    println!(
        "\n## dry-run render throughput: POST /api/v1/render on loopback, {} connections, {} s, client runtime {} thread(s)",
        o.concurrency, o.duration, o.client_threads
    );
    let before = server.memory();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .enable_all()
        .build()
        .unwrap();
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..1000).map(render_body).collect());
    let run = |secs: f64, record: bool| {
        let bodies = bodies.clone();
        let addr = server.addr;
        let concurrency = o.concurrency;
        rt.block_on(async move {
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            let mut tasks = Vec::new();
            for w in 0..concurrency {
                let bodies = bodies.clone();
                tasks.push(tokio::spawn(async move {
                    let mut conn = Conn::open(addr).await.expect("connect");
                    let mut lat = Vec::with_capacity(if record { 200_000 } else { 0 });
                    let mut errors = 0usize;
                    let mut i = w;
                    while Instant::now() < deadline {
                        let body = bodies[i % bodies.len()].clone();
                        i += concurrency;
                        let t = Instant::now();
                        match post(&mut conn, "/api/v1/render", body, None).await {
                            Ok((200, _)) => {
                                if record {
                                    lat.push(t.elapsed())
                                }
                            }
                            _ => errors += 1,
                        }
                    }
                    (lat, errors)
                }));
            }
            let mut all = Vec::new();
            let mut errors = 0;
            for t in tasks {
                let (l, e) = t.await.unwrap();
                all.extend(l);
                errors += e;
            }
            (all, errors)
        })
    };
    run(2.0, false); // warm-up
    let started = Instant::now();
    let (mut lat, errors) = run(o.duration as f64, true);
    let wall = started.elapsed();
    lat.sort_unstable();
    let after = server.memory();
    println!(
        "requests {} in {:.2} s = {:.0} req/s; errors {errors}; p50 {} p90 {} p99 {} p99.9 {} max {}",
        lat.len(),
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64(),
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 90.0)),
        ms(percentile(&lat, 99.0)),
        ms(percentile(&lat, 99.9)),
        ms(*lat.last().unwrap_or(&Duration::ZERO)),
    );
    println!("server memory before: {before}; after: {after}");
    println!("machine after: {}", machine());
}

// ---------------------------------------------------------------------------------------------
// storm: the real control plane

/// `apiserver_request_total` summed by (verb, resource, subresource).
type Counts = BTreeMap<(String, String, String), f64>;

async fn apiserver_counts(client: &Client) -> Res<Counts> {
    let text = client.request_text(http::Request::get("/metrics").body(Vec::new())?).await?;
    let mut out = Counts::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let label = |name: &str| {
            let key = format!("{name}=\"");
            labels
                .find(&key)
                .map(|i| {
                    let rest = &labels[i + key.len()..];
                    rest[..rest.find('"').unwrap_or(0)].to_owned()
                })
                .unwrap_or_default()
        };
        *out.entry((label("verb"), label("resource"), label("subresource"))).or_default() +=
            value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(out)
}

fn delta(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

/// The resources a spawn writes, and what ODH's library used to read per spawn.
fn is_spawn_path(key: &(String, String, String)) -> bool {
    let (verb, resource, _) = key;
    (verb == "APPLY" && matches!(resource.as_str(), "configmaps" | "rayclusters" | "ingresses"))
        || (resource == "configmaps" && matches!(verb.as_str(), "GET" | "LIST" | "WATCH"))
        || resource.is_empty() // discovery (/api, /apis) and other non-resource GETs
}

fn print_counts(label: &str, d: &Counts, spawns: usize) -> f64 {
    let path: f64 = d.iter().filter(|(k, _)| is_spawn_path(k)).map(|(_, v)| v).sum();
    let total: f64 = d.values().sum();
    println!(
        "  {label}: spawn-path calls {path:.0} = {:.2}/spawn (all calls incl. controllers: {total:.0})",
        path / spawns as f64
    );
    let mut rows: Vec<_> = d.iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(a.1));
    let shown: Vec<String> = rows
        .iter()
        .take(12)
        .map(|((verb, res, sub), v)| {
            let mark = if is_spawn_path(&(verb.clone(), res.clone(), sub.clone())) { "*" } else { "" };
            let res = if sub.is_empty() { res.clone() } else { format!("{res}/{sub}") };
            format!("{mark}{verb} {} {v:.0}", if res.is_empty() { "<non-resource>" } else { &res })
        })
        .collect();
    println!("    by verb/resource (* = spawn path): {}", shown.join(", "));
    path / spawns as f64
}

/// Waits until the API server handles fewer than `rate` requests/s (controllers settle).
async fn settle(client: &Client, rate: f64, max: Duration) -> Res<f64> {
    let deadline = Instant::now() + max;
    loop {
        let a: f64 = apiserver_counts(client).await?.values().sum();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let b: f64 = apiserver_counts(client).await?.values().sum();
        let r = (b - a) / 2.0;
        if r < rate || Instant::now() > deadline {
            return Ok(r);
        }
    }
}

async fn apply_manifests(
    client: &Client,
    ns: &str,
    cms: &[singleuser_profiles::catalog::ConfigMapSource],
) -> Res<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
    );
    for cm in cms {
        let obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": cm.name, "labels": cm.labels},
            "data": cm.data,
        });
        api.patch(&cm.name, &PatchParams::apply("bench-admin").force(), &Patch::Apply(&obj)).await?;
    }
    Ok(())
}

struct StormResult {
    lat: Vec<Duration>,
    wall: Duration,
    errors: usize,
    first_error: Option<String>,
}

impl StormResult {
    fn line(&self) -> String {
        format!(
            "ok {} errors {} wall {:.2} s, p50 {} p90 {} p99 {} max {}{}",
            self.lat.len(),
            self.errors,
            self.wall.as_secs_f64(),
            ms(percentile(&self.lat, 50.0)),
            ms(percentile(&self.lat, 90.0)),
            ms(percentile(&self.lat, 99.0)),
            ms(*self.lat.last().unwrap_or(&Duration::ZERO)),
            self.first_error.as_deref().map(|e| format!(" (first error: {e})")).unwrap_or_default()
        )
    }
}

fn storm_request(prefix: &str, i: usize, ns: &str) -> SpawnRequest {
    SpawnRequest {
        user: format!("{prefix}-{i}"),
        profile: Some("ray".into()),
        namespace: Some(ns.to_owned()),
        // Workers 0: the operator creates only the head pod, so it disturbs the next phase less.
        options: BTreeMap::from([("workers".into(), json!(0))]),
        ..SpawnRequest::default()
    }
}

/// The physical floor: the same server-side applies the service makes (owner ConfigMap, then
/// each rendered object with its ownerReference), straight from kube-rs, rendered beforehand.
async fn baseline(client: &Client, plans: Vec<Plan>, kinds: &BTreeMap<String, ApiResource>) -> StormResult {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for plan in plans {
        let client = client.clone();
        let kinds = kinds.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let pp = PatchParams::apply("singleuser-profiles").force();
            let ns = plan.owner.namespace.clone();
            let owner_cm = plan.owner.configmap(&plan.cluster_name, "ray", &plan.objects);
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &kinds["v1/ConfigMap"]);
            let stored = api.patch(&plan.owner.configmap_name(), &pp, &Patch::Apply(&owner_cm)).await?;
            let uid = stored.metadata.uid.unwrap_or_default();
            for object in &plan.objects {
                let mut object = object.clone();
                object["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "v1", "kind": "ConfigMap", "name": plan.owner.configmap_name(),
                    "uid": uid, "blockOwnerDeletion": true,
                }]);
                let key = format!(
                    "{}/{}",
                    object["apiVersion"].as_str().unwrap(),
                    object["kind"].as_str().unwrap()
                );
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &kinds[&key]);
                let name = object["metadata"]["name"].as_str().unwrap().to_owned();
                api.patch(&name, &pp, &Patch::Apply(&object)).await?;
            }
            Ok::<_, kube::Error>(t.elapsed())
        }));
    }
    collect(started, tasks).await
}

async fn collect<E: std::fmt::Display>(
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<Result<Duration, E>>>,
) -> StormResult {
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await.unwrap() {
            Ok(d) => lat.push(d),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let wall = started.elapsed();
    lat.sort_unstable();
    StormResult { lat, wall, errors, first_error }
}

/// N users pressing Start at once: N concurrent `POST /api/v1/spawn`, one connection each.
async fn spawn_storm(addr: SocketAddr, requests: Vec<SpawnRequest>) -> StormResult {
    // Connect first, so the storm measures spawns rather than TCP accepts.
    let mut conns = Vec::new();
    for _ in &requests {
        conns.push(Conn::open(addr).await.expect("connect"));
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len() + 1));
    let mut tasks = Vec::new();
    for (req, mut conn) in requests.into_iter().zip(conns) {
        let barrier = barrier.clone();
        let body = Bytes::from(serde_json::to_vec(&req).unwrap());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let t = Instant::now();
            match post(&mut conn, "/api/v1/spawn", body, Some(TOKEN)).await {
                Ok((200, _)) => Ok(t.elapsed()),
                Ok((status, body)) => Err(format!("{status}: {}", String::from_utf8_lossy(&body))),
                Err(e) => Err(e.to_string()),
            }
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    collect(started, tasks).await
}

async fn render_env(conn: &mut Conn, name: &str) -> Res<Option<String>> {
    let probe = Bytes::from(r#"{"user":"cfg-probe","profile":"ray"}"#);
    let (status, body) = post(conn, "/api/v1/render", probe, Some(TOKEN)).await?;
    if status != 200 {
        return Err(format!("render {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    let v: Value = serde_json::from_slice(&body)?;
    Ok(v["environment"][name].as_str().map(str::to_owned))
}

/// Edits the base profile ConfigMap and polls render until the edit shows; returns the delays.
async fn config_latency(
    client: &Client,
    ns: &str,
    addr: SocketAddr,
    base: &singleuser_profiles::catalog::ConfigMapSource,
    rounds: usize,
    tag: &str,
) -> Res<Vec<Duration>> {
    let mut conn = Conn::open(addr).await?;
    let key = "jupyterhub-singleuser-profiles.yaml";
    let original = &base.data[key];
    assert!(original.contains("value: \"0\""), "the globals env value to edit");
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
    );
    let mut out = Vec::new();
    for round in 0..rounds {
        let marker = format!("{tag}-{round}");
        let text = original.replacen("value: \"0\"", &format!("value: \"{marker}\""), 1);
        let patch = json!({"data": {key: text}});
        let t = Instant::now();
        api.patch(&base.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        loop {
            if render_env(&mut conn, "RAY_USAGE_STATS_ENABLED").await?.as_deref() == Some(marker.as_str()) {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                return Err("a ConfigMap edit did not show within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(out)
}

fn storm(o: &Opts) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(storm_async(o))
}

async fn storm_async(o: &Opts) -> Res<()> {
    if std::env::var_os("KUBECONFIG").is_none() {
        return Err("storm needs a control plane: scripts/cluster up; eval \"$(scripts/cluster env)\"".into());
    }
    let client = Client::try_default().await?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let ns = o.namespace.clone().unwrap_or_else(|| format!("sup-bench-{stamp}"));
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}}))?)
        .await?;
    println!(
        "\n## spawn storm against {} in namespace {ns}",
        std::env::var("KUBECONFIG").unwrap_or_default()
    );
    let result = storm_in(o, &client, &ns).await;
    println!("\ndeleting namespace {ns}");
    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
    result
}

async fn storm_in(o: &Opts, client: &Client, ns: &str) -> Res<()> {
    let repo_cms = common::repo_configmaps();
    apply_manifests(client, ns, &repo_cms).await?;

    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN)?;
    let token_arg = token_file.display().to_string();
    // No quotas: the storm is 1,000 users and the baseline's clusters count towards them too.
    let server = Server::start(
        &[
            "--mode",
            "cluster",
            "--namespace",
            ns,
            "--hub-token-file",
            &token_arg,
            "--max-clusters",
            "0",
            "--max-clusters-per-user",
            "0",
        ],
        dir,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("server idle in cluster mode (repo profiles, ConfigMap watch): {}", server.memory());

    // A ConfigMap edit visible to spawns.
    let base = repo_cms.iter().find(|cm| cm.name == "jupyter-singleuser-profiles").unwrap();
    let delays = config_latency(client, ns, server.addr, base, 5, "edit").await?;
    println!(
        "ConfigMap edit -> visible in render (5 rounds, repo profiles): {}",
        delays.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
    );

    // Discovery for the baseline (outside the timed part) and a warm-up spawn for the service.
    let catalog = Catalog::build(&ProfileSelector::default(), &repo_cms, None);
    let mut kinds = BTreeMap::new();
    for (gv, kind) in [("v1", "ConfigMap"), ("ray.io/v1", "RayCluster"), ("networking.k8s.io/v1", "Ingress")]
    {
        let (group, version) = gv.split_once('/').unwrap_or(("", gv));
        let (ar, _) =
            kube::discovery::pinned_kind(client, &GroupVersionKind::gvk(group, version, kind)).await?;
        kinds.insert(format!("{gv}/{kind}"), ar);
    }
    let before = apiserver_counts(client).await?;
    let warm = spawn_storm(server.addr, vec![storm_request("warmup", 0, ns)]).await;
    let after = apiserver_counts(client).await?;
    println!("first spawn (cold discovery cache): {}", warm.line());
    print_counts("first spawn", &delta(&after, &before), 1);

    for &n in &o.users {
        println!("\n### {n} users at once  ({})", machine());
        // Baseline, service, baseline again: the API server and its controllers warm up and
        // fill up as the run goes, so the service is bracketed by two baselines.
        let mut bases = Vec::new();
        let mut base_calls = 0.0;
        let mut storm = None;
        let mut storm_calls = 0.0;
        for phase in ["baseline-a", "service", "baseline-b"] {
            let r = settle(client, 30.0, Duration::from_secs(120)).await?;
            let before = apiserver_counts(client).await?;
            let mem_before = server.memory();
            if phase == "service" {
                let requests = (0..n).map(|i| storm_request(&format!("storm{n}"), i, ns)).collect();
                let result = spawn_storm(server.addr, requests).await;
                let after = apiserver_counts(client).await?;
                println!(
                    "service, POST /api/v1/spawn (API server at {r:.0} req/s before): {}",
                    result.line()
                );
                storm_calls = print_counts("service", &delta(&after, &before), n);
                println!("  server memory before: {mem_before}; after: {}", server.memory());
                storm = Some(result);
            } else {
                let plans: Vec<Plan> = (0..n)
                    .map(|i| plan::plan(&catalog, &storm_request(&format!("{phase}{n}"), i, ns), ns))
                    .collect::<Result<_, _>>()?;
                let result = baseline(client, plans, &kinds).await;
                let after = apiserver_counts(client).await?;
                println!(
                    "{phase}, direct kube-rs SSA (API server at {r:.0} req/s before): {}",
                    result.line()
                );
                base_calls = print_counts(phase, &delta(&after, &before), n);
                println!("  server memory (idle, watching) before: {mem_before}; after: {}", server.memory());
                bases.push(result);
            }
        }
        let storm = storm.expect("service phase ran");
        for (label, base) in ["baseline-a", "baseline-b"].iter().zip(&bases) {
            println!(
                "ratio service/{label}: p50 {:.2}x, p99 {:.2}x, wall {:.2}x",
                percentile(&storm.lat, 50.0).as_secs_f64() / percentile(&base.lat, 50.0).as_secs_f64(),
                percentile(&storm.lat, 99.0).as_secs_f64() / percentile(&base.lat, 99.0).as_secs_f64(),
                storm.wall.as_secs_f64() / base.wall.as_secs_f64(),
            );
        }
        // The API server and KubeRay fill up as the run goes, so baseline A meets an emptier
        // cluster than the service and baseline B a fuller one; their mean brackets the service.
        let mean_p99 = bases.iter().map(|b| percentile(&b.lat, 99.0).as_secs_f64()).sum::<f64>() / 2.0;
        println!(
            "ratio service/mean of the baselines: p99 {:.2}x",
            percentile(&storm.lat, 99.0).as_secs_f64() / mean_p99
        );
        println!("spawn-path calls per spawn: service {storm_calls:.2}, baseline {base_calls:.2}");
    }

    // 1,000 profiles through the watch: load, memory, edit latency.
    println!("\n### 1,000 profiles via the ConfigMap watch");
    let big = common::configmaps_with_profiles(1000);
    let extra: Vec<_> = big.into_iter().filter(|cm| cm.name == "zz-bench-profiles").collect();
    apply_manifests(client, ns, &extra).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("server with 1,000 profiles (cluster mode): {}", server.memory());
    let delays = config_latency(client, ns, server.addr, base, 5, "big").await?;
    println!(
        "ConfigMap edit -> visible in render (5 rounds, 1,000 profiles): {}",
        delays.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
    );
    println!("server at the end: {}", server.memory());
    let log = std::fs::read_to_string(server._dir.path().join("server.log")).unwrap_or_default();
    let warns: Vec<&str> = log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
    println!("server log: {} lines, {} WARN/ERROR", log.lines().count(), warns.len());
    for line in warns.iter().take(5) {
        println!("  {line}");
    }
    Ok(())
}
