//! Integration tests against the real test control plane. `scripts/test` runs them with the
//! plane up (`cargo test --features plane-tests --test plane`); plain `cargo test` leaves this
//! target out, so it passes on a machine without a plane.

mod control_plane;
mod deploy;
mod node;
mod ray_node;
mod service;
mod support;

use singleuser_profiles_testkit::{client, process};

/// The binary under test.
const BINARY: &str = env!("CARGO_BIN_EXE_singleuser-profiles");
