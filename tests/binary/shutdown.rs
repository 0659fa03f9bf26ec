//! SIGTERM: readiness turns false at once, the service keeps answering for the configured
//! delay (so load balancers see "not ready" before connections are refused), then drains and
//! exits 0.

use std::time::Duration;

use http::StatusCode;

use crate::client;
use crate::process::Service;
use crate::serve_command;

#[tokio::test]
async fn sigterm_turns_readiness_false_then_waits_then_drains() {
    let home = tempfile::tempdir().unwrap();
    let mut command = serve_command(home.path());
    command.args(["--mode", "dry-run", "--shutdown-delay", "3"]);
    let mut service = Service::start(command).await;

    service.terminate();
    // Within the delay the listener still accepts, and readiness says why it is false.
    let mut seen = None;
    for _ in 0..100 {
        let reply = client::call(service.addr, "GET", "/readyz", None, None).await.unwrap();
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            seen = Some(reply.text());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen.as_deref(), Some("not ready: shutting down"), "{}", service.log());
    let render = serde_json::json!({"user": "alice"});
    let reply = client::call(service.addr, "POST", "/api/v1/render", None, Some(&render)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "work is still served during the delay");

    let status = service.exit_status(Duration::from_secs(30)).await;
    assert!(status.success(), "a drained shutdown exits 0: {status:?}\n{}", service.log());
    let log = service.log();
    let flipped = log.find("readiness is now false").expect("the log says readiness turned false");
    let draining = log.find("draining in-flight requests").expect("the log says it drains");
    assert!(flipped < draining, "readiness flips before the drain starts:\n{log}");
}
