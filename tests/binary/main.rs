//! The built binary and the checks that need no control plane: `serve` on a machine with no
//! cluster, `render`, `validate`, shutdown, hostile connections, and the fuzz regressions.
//! Plain `cargo test` runs these anywhere; the tests that need the plane are in `tests/plane/`.

mod cli;
mod fuzz_regressions;
mod hostile;
mod shutdown;

use singleuser_profiles_testkit::{client, process};

/// The binary under test.
const BINARY: &str = env!("CARGO_BIN_EXE_singleuser-profiles");

/// `serve` of the binary under test in the repository, with no way to reach a cluster.
fn serve_command(home: &std::path::Path) -> std::process::Command {
    process::serve_command(BINARY, std::path::Path::new(env!("CARGO_MANIFEST_DIR")), home)
}
