//! The one way tests (and the load tool) run the service binary: start it on a free loopback
//! port, learn the port from its JSON log, wait until `/readyz` answers 200, keep its log for
//! failure messages, and stop it when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client;

/// How long a start may take before the test fails (a loaded 2-core CI machine included).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `<binary> serve` in `repo`, with no way to reach a cluster: no KUBECONFIG, a HOME without
/// `.kube`. Tests add their own flags and environment.
pub fn serve_command(binary: &str, repo: &Path, home: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .current_dir(repo)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home);
    command
}

/// A running service process.
pub struct Service {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Starts `command` (the binary, or a wrapper that execs it with the arguments given) with
    /// `--listen 127.0.0.1:0` appended and JSON logs, and waits until it is ready.
    pub async fn start(command: Command) -> Service {
        let service = Service::spawn(command).await;
        service.wait_ready().await;
        service
    }

    /// Starts `command` as [`Service::start`] does, but returns once it listens.
    pub async fn spawn(mut command: Command) -> Service {
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .env("SUP_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the service binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (listen_tx, listen_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = log.clone();
        // Reads the whole log, so the service never blocks on a full pipe. Only lines before
        // the address are parsed: under load the reader shares the CPUs with the service.
        std::thread::spawn(move || {
            let mut listening = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !listening {
                    if let Some(addr) = serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .and_then(|event| event["listen"].as_str().and_then(|a| a.parse().ok()))
                    {
                        listening = true;
                        let _ = listen_tx.send(addr);
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut service = Service { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), log };
        loop {
            if let Ok(addr) = listen_rx.try_recv() {
                service.addr = addr;
                return service;
            }
            if let Some(status) = service.child.try_wait().unwrap() {
                panic!("the service exited ({status}) before listening:\n{}", service.log());
            }
            assert!(Instant::now() < deadline, "the service did not listen within 60 s:\n{}", service.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(reply) = client::call(self.addr, "GET", "/readyz", None, None).await {
                if reply.status == http::StatusCode::OK {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the service was not ready within 60 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM, as the kubelet does.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM");
    }

    /// Waits (bounded) for the process to exit.
    pub async fn exit_status(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the service did not exit within {timeout:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
