//! The load tool (a `harness = false` bench target, so it builds only on `cargo bench`).
//!
//! ```sh
//! cargo bench --bench load -- dry      # memory (idle, 1,000 profiles) + dry-run render throughput
//! cargo bench --bench load -- ratio    # render throughput and p99 as a fraction of an HTTP floor
//! cargo bench --bench load -- peer     # storm: baseline, service and JSP 0.7.0 (benches/jsp_storm.py)
//!                                      # each in a fresh namespace; --phases, --jsp-timeout SECS
//! eval "$(scripts/cluster env)"        # a running control plane (scripts/cluster up)
//! cargo bench --bench load -- storm    # spawn storm 100 and 1,000 users vs. direct kube-rs applies,
//!                                      # API calls per spawn, peak RSS, ConfigMap change latency
//! cargo bench --bench load -- hostile  # issue 14: RSS through 2,000 slow connections and 10,000
//!                                      # odd-method requests; hostile ConfigMaps' load times
//! ```
//! Options (after `--`): `--duration SECS` (render, default 10), `--concurrency N` (render,
//! default 32), `--users 100,1000` (storm), `--namespace NS` (storm, default `sup-bench-<time>`;
//! deleted afterwards), `--client-threads N` (render client runtime, default 1), `--connections
//! 4,8` and `--repeats N` (ratio, default 3).
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

// The service's allocator, so the HTTP floor (this binary, `floor-server`) allocates as it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    connections: Vec<usize>,
    repeats: usize,
    body: Option<std::path::PathBuf>,
    listen: Option<String>,
    phases: Vec<String>,
    jsp_timeout: u64,
}

fn opts() -> Opts {
    let mut o = Opts {
        mode: String::new(),
        duration: 10,
        concurrency: 32,
        users: vec![100, 1000],
        namespace: None,
        client_threads: 1,
        connections: vec![4, 8],
        repeats: 3,
        body: None,
        listen: None,
        phases: vec!["baseline".into(), "service".into(), "jsp".into()],
        jsp_timeout: 1800,
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
            "--connections" => {
                o.connections = args
                    .next()
                    .expect("--connections N[,N]")
                    .split(',')
                    .map(|n| n.trim().parse().expect("--connections N[,N]"))
                    .collect()
            }
            "--phases" => {
                o.phases =
                    args.next().expect("--phases a,b").split(',').map(|p| p.trim().to_owned()).collect()
            }
            "--jsp-timeout" => {
                o.jsp_timeout = args.next().and_then(|v| v.parse().ok()).expect("--jsp-timeout SECS")
            }
            "--repeats" => o.repeats = args.next().and_then(|v| v.parse().ok()).expect("--repeats N"),
            // floor-server only: the canned answer, and the address Service::start appends.
            "--body" => o.body = Some(args.next().expect("--body FILE").into()),
            "--listen" => o.listen = Some(args.next().expect("--listen ADDR")),
            m if !m.starts_with('-') && o.mode.is_empty() => o.mode = m.to_owned(),
            other => panic!("unknown argument {other}; see benches/load.rs"),
        }
    }
    o
}

fn main() {
    let o = opts();
    if o.mode == "floor-server" {
        return floor_server(&o);
    }
    println!("# load tool: {} ({})", if o.mode.is_empty() { "dry" } else { &o.mode }, machine());
    match o.mode.as_str() {
        "" | "dry" => dry(&o),
        "render" => {
            let server = Server::dry_run(None);
            render_throughput(&server, &o);
        }
        "memory" => memory(),
        "ratio" => ratio(&o),
        "peer" => peer(&o).expect("peer"),
        "storm" => storm(&o).expect("storm"),
        "hostile" => hostile(),
        other => panic!("unknown mode {other}: dry, render, ratio, memory, storm, peer or hostile"),
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
        Server::start_command(command, dir)
    }

    /// Any server `Service::start` can run: it listens where told and logs `listen` in JSON.
    fn start_command(command: Command, dir: tempfile::TempDir) -> Server {
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

    /// Cluster mode on `ns` with the hub token, without quotas: the storm is 1,000 users and
    /// the baseline's clusters count towards them too.
    fn cluster(ns: &str) -> Res<Server> {
        let dir = tempfile::tempdir()?;
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, TOKEN)?;
        let token_arg = token_file.display().to_string();
        let args = ["--mode", "cluster", "--namespace", ns, "--hub-token-file", &token_arg];
        let quotas = ["--max-clusters", "0", "--max-clusters-per-user", "0"];
        Ok(Server::start(&[&args[..], &quotas[..]].concat(), dir))
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
    let rt = client_runtime(o);
    let t = throughput(&rt, server, o.concurrency, o.duration as f64);
    println!("{}", t.line());
    println!("server memory before: {before}; after: {}", server.memory());
    println!("machine after: {}", machine());
}

/// The render client's runtime: `--client-threads` workers (1 by default, so the client takes
/// one of the 2 CPUs at most).
fn client_runtime(o: &Opts) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(o.client_threads).enable_all().build().unwrap()
}

/// One throughput measurement: the latencies recorded, sorted, and the measured wall time.
struct Throughput {
    lat: Vec<Duration>,
    wall: Duration,
    errors: usize,
    /// CPU seconds the server process used while measured (warm-up excluded).
    server_cpu: f64,
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.lat.len() as f64 / self.wall.as_secs_f64()
    }

    fn p99(&self) -> Duration {
        percentile(&self.lat, 99.0)
    }

    /// The server's CPU per answered request: steadier than req/s on a shared machine, and
    /// free of the client's share of the CPUs.
    fn server_micros(&self) -> f64 {
        self.server_cpu * 1e6 / self.lat.len().max(1) as f64
    }

    fn line(&self) -> String {
        format!(
            "requests {} in {:.2} s = {:.0} req/s; errors {}; server CPU {:.1} µs/request; p50 {} p90 {} p99 {} p99.9 {} max {}",
            self.lat.len(),
            self.wall.as_secs_f64(),
            self.rate(),
            self.errors,
            self.server_micros(),
            ms(percentile(&self.lat, 50.0)),
            ms(percentile(&self.lat, 90.0)),
            ms(self.p99()),
            ms(percentile(&self.lat, 99.9)),
            ms(*self.lat.last().unwrap_or(&Duration::ZERO)),
        )
    }
}

/// `concurrency` keep-alive connections posting render requests (1,000 different users) to
/// `addr` back to back: 2 s of warm-up, then `secs` measured.
fn throughput(rt: &tokio::runtime::Runtime, server: &Server, concurrency: usize, secs: f64) -> Throughput {
    let addr = server.addr;
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..1000).map(render_body).collect());
    let run = |secs: f64, record: bool| {
        let bodies = bodies.clone();
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
    let (started, cpu) = (Instant::now(), cpu_seconds(server.service.pid()));
    let (mut lat, errors) = run(secs, true);
    let (wall, server_cpu) = (started.elapsed(), cpu_seconds(server.service.pid()) - cpu);
    lat.sort_unstable();
    Throughput { lat, wall, errors, server_cpu }
}

// ---------------------------------------------------------------------------------------------
// ratio: dry-run render against the HTTP floor, in the same run

/// The HTTP floor: this binary as a minimal axum server answering every `POST /api/v1/render`
/// with a canned copy of a render answer. It runs as the service does (its own process, the
/// same Tokio runtime settings, the same allocator, the service's own accept loop and
/// connection limits from the service's flag defaults), so what differs is what the service
/// does per request: middleware, auth, body limits, tracing, metrics, the render itself.
fn floor_server(o: &Opts) {
    use clap::Parser;
    use singleuser_profiles::api::listener::{self, ConnectionLimits};

    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        serve: singleuser_profiles::args::ServeArgs,
    }
    let args = Defaults::parse_from(["floor-server"]).serve;
    let body =
        Bytes::from(std::fs::read(o.body.as_ref().expect("floor-server --body FILE")).expect("--body"));
    let listen = o.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
    // serve::run's runtime: multi-thread, default worker count (one per CPU).
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let answer = move |_request: Bytes| {
            let body = body.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
        };
        let router = axum::Router::new()
            .route("/api/v1/render", axum::routing::post(answer))
            .route("/readyz", axum::routing::get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind(&listen).await.expect("--listen");
        // The line Service::start reads the port from.
        eprintln!("{}", json!({"listen": listener.local_addr().unwrap().to_string()}));
        let limits = ConnectionLimits {
            header_timeout: Duration::from_secs(args.header_timeout),
            idle_timeout: Duration::from_secs(args.idle_timeout),
            max_connections: args.max_connections,
        };
        let metrics = singleuser_profiles::metrics::Metrics::default();
        listener::serve(listener, router, limits, metrics, std::future::pending(), Duration::ZERO).await;
    });
}

/// For each repeat and connection count, the floor and the service measured back to back by
/// the same client (the order alternates between repeats), then the ratios.
fn ratio(o: &Opts) {
    let service = Server::dry_run(None);
    let dir = tempfile::tempdir().unwrap();
    let canned = dir.path().join("render-answer.json");
    let rt = client_runtime(o);
    let answer = rt.block_on(async {
        let mut conn = Conn::open(service.addr).await.unwrap();
        let (status, body) = post(&mut conn, "/api/v1/render", render_body(0), None).await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        body
    });
    std::fs::write(&canned, &answer).unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["floor-server", "--body"]).arg(&canned);
    let floor = Server::start_command(command, dir);
    println!(
        "\n## render vs. HTTP floor: POST /api/v1/render, {} s each, connections {:?}, {} repeats, \
         client runtime {} thread(s); the floor answers the service's {}-byte render answer",
        o.duration,
        o.connections,
        o.repeats,
        o.client_threads,
        answer.len()
    );
    // (connections, floor req/s, p99 and CPU µs/request, then the service's)
    let mut rows = Vec::new();
    for repeat in 0..o.repeats {
        for &c in &o.connections {
            let mut order = [("floor", &floor), ("service", &service)];
            if repeat % 2 == 1 {
                order.reverse();
            }
            let mut got = BTreeMap::new();
            for (label, server) in order {
                let load = machine();
                let t = throughput(&rt, server, c, o.duration as f64);
                println!("repeat {} {c} conn {label:7}: {} ({load})", repeat + 1, t.line());
                got.insert(label, t);
            }
            let (f, s) = (&got["floor"], &got["service"]);
            println!(
                "repeat {} {c} conn ratio service/floor: throughput {:.2}, p99 {:.2}x",
                repeat + 1,
                s.rate() / f.rate(),
                s.p99().as_secs_f64() / f.p99().as_secs_f64()
            );
            rows.push((c, f.rate(), f.p99(), f.server_micros(), s.rate(), s.p99(), s.server_micros()));
        }
    }
    println!(
        "\n| connections | repeat | floor req/s | floor p99 | floor CPU µs/req | service req/s | service p99 | service CPU µs/req | throughput ratio | p99 ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for &c in &o.connections {
        for (i, (_, fr, fp, fc, sr, sp, sc)) in rows.iter().filter(|r| r.0 == c).enumerate() {
            println!(
                "| {c} | {} | {fr:.0} | {} | {fc:.1} | {sr:.0} | {} | {sc:.1} | {:.2} | {:.2}x |",
                i + 1,
                ms(*fp),
                ms(*sp),
                sr / fr,
                sp.as_secs_f64() / fp.as_secs_f64()
            );
        }
    }
    println!("service memory at the end: {}; machine after: {}", service.memory(), machine());
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
    (matches!(verb.as_str(), "APPLY" | "POST") && matches!(resource.as_str(), "configmaps" | "rayclusters" | "ingresses"))
        || (resource == "secrets" && verb == "GET") // JSP reads the user's Secret
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

/// The physical floor: the same server-side applies the service makes in the same order (owner
/// ConfigMap, then the rendered objects at once, with their ownerReference), straight from
/// kube-rs, rendered beforehand.
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
            let children = plan.objects.iter().map(|object| {
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
                let pp = &pp;
                async move {
                    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
                    api.patch(&name, pp, &Patch::Apply(&object)).await
                }
            });
            futures::future::try_join_all(children).await?;
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

/// The admin client of the running plane and a time stamp for namespace names.
async fn plane_client(mode: &str) -> Res<(Client, u64)> {
    if std::env::var_os("KUBECONFIG").is_none() {
        return Err(format!(
            "{mode} needs a control plane: scripts/cluster up; eval \"$(scripts/cluster env)\""
        )
        .into());
    }
    let client = Client::try_default().await?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    Ok((client, stamp))
}

fn storm(o: &Opts) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(storm_async(o))
}

async fn storm_async(o: &Opts) -> Res<()> {
    let (client, stamp) = plane_client("storm").await?;
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

    let server = Server::cluster(ns)?;
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

// ---------------------------------------------------------------------------------------------
// peer: the baseline, the service and JSP 0.7.0, each in a fresh namespace in the same state

/// The storm's JSP-format ConfigMaps (benches/storm), read alike by JSP and the service.
fn peer_configmaps() -> Vec<singleuser_profiles::catalog::ConfigMapSource> {
    singleuser_profiles::catalog::load_paths(&[common::repo().join("benches/storm")])
        .expect("benches/storm loads")
}

const PEER_IMAGE: &str = "ray-notebook:storm";

/// The user settings ConfigMap JSP's spawn page leaves (`jupyterhub-singleuser-profile-<user>`);
/// JSP needs it for the image (its default comes from OpenShift ImageStreams), and the service
/// reads it through its watch. User names are letters and digits, so JSP's escape keeps them.
fn user_settings(user: &str) -> singleuser_profiles::catalog::ConfigMapSource {
    singleuser_profiles::catalog::ConfigMapSource {
        name: format!("jupyterhub-singleuser-profile-{user}"),
        labels: BTreeMap::new(),
        data: BTreeMap::from([(
            "profile".to_owned(),
            format!("gpu: '0'\nlast_selected_image: {PEER_IMAGE}\nlast_selected_size: ''\n"),
        )]),
    }
}

fn peer_request(user: &str, ns: &str) -> SpawnRequest {
    SpawnRequest {
        user: user.to_owned(),
        image: Some(PEER_IMAGE.to_owned()),
        namespace: Some(ns.to_owned()),
        ..SpawnRequest::default()
    }
}

/// CPU seconds (user + system) a process used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // CLK_TCK is 100 on Linux
}

/// A namespace holding the storm's ConfigMaps and `n` users' settings (and the warm-up user's).
async fn prepare_namespace(client: &Client, ns: &str, n: usize) -> Res<()> {
    use futures::StreamExt;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}}))?)
        .await?;
    let mut cms = peer_configmaps();
    cms.push(user_settings("warmup"));
    cms.extend((0..n).map(|i| user_settings(&format!("user{i}"))));
    let results: Vec<Res<()>> =
        futures::stream::iter(cms.chunks(50).map(|chunk| apply_manifests(client, ns, chunk)))
            .buffer_unordered(8)
            .collect()
            .await;
    results.into_iter().collect()
}

/// Deletes a phase's namespace and waits (bounded) until it is gone with everything in it, so
/// the next phase meets the cluster as this one did.
async fn remove_namespace(client: &Client, ns: &str, max: Duration) -> Res<Duration> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let t = Instant::now();
    let _ = namespaces.delete(ns, &DeleteParams::background()).await;
    while namespaces.get_opt(ns).await?.is_some() {
        if t.elapsed() > max {
            println!("  namespace {ns} still there after {} s; going on", max.as_secs());
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(t.elapsed())
}

/// One phase's figures.
struct PhaseResult {
    label: &'static str,
    storm: StormResult,
    calls: f64,
    cpu_per_spawn: f64,
    peak: String,
}

fn jsp_python() -> Res<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("SUP_JSP_PYTHON_VENV") {
        return Ok(std::path::PathBuf::from(p).join("bin/python"));
    }
    let cache = std::env::var_os("SUP_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/singleuser-profiles")
    });
    std::fs::read_dir(&cache)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("jsp-venv-"))
                && p.join(".complete").exists()
        })
        .map(|p| p.join("bin/python"))
        .ok_or_else(|| {
            format!("no JSP venv in {}: run tests/jsp/run once (or set SUP_JSP_PYTHON_VENV)", cache.display())
                .into()
        })
}

/// JSP's spawn path for `n` users at once in `ns` (benches/jsp_storm.py), bounded by `max`.
async fn jsp_phase(client: &Client, ns: &str, n: usize, max: Duration) -> Res<PhaseResult> {
    use std::io::{BufRead, BufReader, Write};
    let python = jsp_python()?;
    let mut child = Command::new(&python)
        .arg(common::repo().join("benches/jsp_storm.py"))
        .args(["--namespace", ns, "--users", &n.to_string(), "--image", PEER_IMAGE])
        .args(["--max-seconds", &max.as_secs().to_string()])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let next_line = |timeout: Duration| {
        let rx = rx.clone();
        tokio::task::spawn_blocking(move || rx.lock().unwrap().recv_timeout(timeout).ok())
    };
    let started = Instant::now();
    let ready = next_line(max).await?;
    if ready.as_deref() != Some("ready") {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("the JSP harness did not get ready: {ready:?}").into());
    }
    println!(
        "  JSP harness ready ({n} spawners built, warm-up spawn done) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    settle(client, 30.0, Duration::from_secs(120)).await?;
    let before = apiserver_counts(client).await?;
    child.stdin.as_mut().expect("piped").write_all(b"go\n")?;
    // The bound is checked before each spawn starts; the one running then still finishes.
    let line = next_line(max + Duration::from_secs(300)).await?;
    let after = apiserver_counts(client).await?;
    let _ = child.kill();
    let _ = child.wait();
    let Some(line) = line else {
        return Err(format!(
            "JSP's storm of {n} did not end within {} s (harness pid {pid} killed)",
            max.as_secs()
        )
        .into());
    };
    let v: Value = serde_json::from_str(&line)?;
    let secs = |x: &Value| Duration::from_secs_f64(x.as_f64().unwrap_or(0.0));
    let storm = StormResult {
        lat: v["latencies"].as_array().map(|a| a.iter().map(secs).collect()).unwrap_or_default(),
        wall: secs(&v["wall"]),
        errors: v["errors"].as_u64().unwrap_or(0) as usize,
        first_error: v["first_error"].as_str().map(str::to_owned),
    };
    let unstarted = v["unstarted"].as_u64().unwrap_or(0) as usize;
    let mut storm = storm;
    // A spawn not begun within the bound would have ended after the wall time: counted as that,
    // the percentiles are lower bounds.
    storm.lat.extend(std::iter::repeat_n(storm.wall, unstarted));
    println!("jsp, JSP 0.7.0 hooks on one asyncio loop: {}", storm.line());
    if unstarted > 0 {
        println!(
            "  {unstarted} of {n} spawns not begun within --jsp-timeout {} s, counted as taking the wall time: \
             the percentiles are lower bounds",
            max.as_secs()
        );
    }
    let calls = print_counts("jsp", &delta(&after, &before), n);
    let kib = |k: &str| v[k].as_f64().unwrap_or(0.0) / 1024.0;
    let peak = format!(
        "VmRSS {:.1} MiB before, VmHWM {:.1} MiB (Python process; spawners built in {:.1} s)",
        kib("rss_before_kib"),
        kib("hwm_kib"),
        v["build_seconds"].as_f64().unwrap_or(0.0)
    );
    println!("  {peak}");
    let cpu_per_spawn = v["cpu_seconds"].as_f64().unwrap_or(0.0) / n as f64;
    Ok(PhaseResult { label: "jsp", storm, calls, cpu_per_spawn, peak })
}

async fn service_phase(client: &Client, ns: &str, n: usize) -> Res<PhaseResult> {
    let server = Server::cluster(ns)?;
    let warm = spawn_storm(server.addr, vec![peer_request("warmup", ns)]).await;
    if warm.errors > 0 {
        return Err(format!("the warm-up spawn failed: {}", warm.line()).into());
    }
    settle(client, 30.0, Duration::from_secs(120)).await?;
    let mem_before = server.memory();
    let cpu = cpu_seconds(server.service.pid());
    let before = apiserver_counts(client).await?;
    let requests = (0..n).map(|i| peer_request(&format!("user{i}"), ns)).collect();
    let storm = spawn_storm(server.addr, requests).await;
    let after = apiserver_counts(client).await?;
    let cpu_per_spawn = (cpu_seconds(server.service.pid()) - cpu) / n as f64;
    println!("service, POST /api/v1/spawn: {}", storm.line());
    let calls = print_counts("service", &delta(&after, &before), n);
    let peak = format!("{mem_before} before; after: {}", server.memory());
    println!("  server memory {peak}");
    Ok(PhaseResult { label: "service", storm, calls, cpu_per_spawn, peak })
}

async fn baseline_phase(
    client: &Client,
    ns: &str,
    n: usize,
    kinds: &BTreeMap<String, ApiResource>,
) -> Res<PhaseResult> {
    let catalog = Catalog::build(&ProfileSelector::default(), &peer_configmaps(), None);
    let plan_for = |user: &str| plan::plan(&catalog, &peer_request(user, ns), ns);
    let warm = baseline(client, vec![plan_for("warmup")?], kinds).await;
    if warm.errors > 0 {
        return Err(format!("the warm-up apply failed: {}", warm.line()).into());
    }
    let plans: Vec<Plan> = (0..n).map(|i| plan_for(&format!("user{i}"))).collect::<Result<_, _>>()?;
    settle(client, 30.0, Duration::from_secs(120)).await?;
    let me = std::process::id();
    let mem_before = Mem::of(me);
    let cpu = cpu_seconds(me);
    let before = apiserver_counts(client).await?;
    let storm = baseline(client, plans, kinds).await;
    let after = apiserver_counts(client).await?;
    let cpu_per_spawn = (cpu_seconds(me) - cpu) / n as f64;
    println!("baseline, direct kube-rs SSA from the load tool: {}", storm.line());
    let calls = print_counts("baseline", &delta(&after, &before), n);
    let peak = format!("load tool {mem_before} before; after: {}", Mem::of(me));
    println!("  {peak}");
    Ok(PhaseResult { label: "baseline", storm, calls, cpu_per_spawn, peak })
}

fn peer(o: &Opts) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(peer_async(o))
}

async fn peer_async(o: &Opts) -> Res<()> {
    let (client, stamp) = plane_client("peer").await?;
    let mut kinds = BTreeMap::new();
    for (gv, kind) in [("v1", "ConfigMap"), ("ray.io/v1", "RayCluster"), ("networking.k8s.io/v1", "Ingress")]
    {
        let (group, version) = gv.split_once('/').unwrap_or(("", gv));
        let (ar, _) =
            kube::discovery::pinned_kind(&client, &GroupVersionKind::gvk(group, version, kind)).await?;
        kinds.insert(format!("{gv}/{kind}"), ar);
    }
    println!("\n## spawn storm: baseline, service and JSP 0.7.0, each phase in a fresh namespace");
    let jsp_max = Duration::from_secs(o.jsp_timeout);
    for &n in &o.users {
        println!("\n### {n} users at once ({})", machine());
        let mut results = Vec::new();
        for phase in o.phases.iter().map(String::as_str) {
            let ns = format!("sup-peer-{stamp}-{n}-{phase}");
            let t = Instant::now();
            prepare_namespace(&client, &ns, n).await?;
            let r = settle(&client, 30.0, Duration::from_secs(120)).await?;
            println!(
                "\n{phase} in {ns}: {n} users' settings and the storm ConfigMaps in {:.1} s; API server at {r:.0} req/s ({})",
                t.elapsed().as_secs_f64(),
                machine()
            );
            let result = match phase {
                "baseline" => baseline_phase(&client, &ns, n, &kinds).await,
                "service" => service_phase(&client, &ns, n).await,
                "jsp" => jsp_phase(&client, &ns, n, jsp_max).await,
                other => Err(format!("unknown phase {other}: baseline, service, jsp").into()),
            };
            match result {
                Ok(r) => results.push(r),
                Err(e) => println!("  {phase} failed: {e}"),
            }
            let gone = remove_namespace(&client, &ns, Duration::from_secs(300)).await?;
            println!("  namespace removed in {:.1} s", gone.as_secs_f64());
        }
        println!(
            "\n| users | phase | p50 | p99 | wall | errors | spawn-path calls / spawn | CPU s / spawn | memory |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for r in &results {
            println!(
                "| {n} | {} | {} | {} | {:.2} s | {} | {:.2} | {:.4} | {} |",
                r.label,
                ms(percentile(&r.storm.lat, 50.0)),
                ms(percentile(&r.storm.lat, 99.0)),
                r.storm.wall.as_secs_f64(),
                r.storm.errors,
                r.calls,
                r.cpu_per_spawn,
                r.peak
            );
        }
        let find = |l: &str| results.iter().find(|r| r.label == l);
        if let Some(s) = find("service") {
            for other in ["jsp", "baseline"] {
                if let Some(b) = find(other) {
                    let q = |p: f64| {
                        percentile(&s.storm.lat, p).as_secs_f64() / percentile(&b.storm.lat, p).as_secs_f64()
                    };
                    println!(
                        "ratio service/{other}: p50 {:.3}x, p99 {:.3}x, wall {:.3}x, calls {:.2}x, CPU {:.3}x",
                        q(50.0),
                        q(99.0),
                        s.storm.wall.as_secs_f64() / b.storm.wall.as_secs_f64(),
                        s.calls / b.calls,
                        s.cpu_per_spawn / b.cpu_per_spawn
                    );
                }
            }
        }
    }
    Ok(())
}
