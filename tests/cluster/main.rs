//! Integration tests against the real test control plane (`scripts/cluster up`;
//! `scripts/test` runs them with the plane up). One test binary, so the crate
//! and the support code compile once.

mod cli;
mod control_plane;
mod deploy;
mod fuzz_regressions;
mod service;
mod support;
