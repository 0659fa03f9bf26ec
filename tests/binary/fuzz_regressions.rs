//! Every input a fuzz target once failed on, kept under `fuzz/regressions/<target>/` (see
//! fuzz/README.md), replayed through the same checks the fuzzer runs. Needs no control plane.

use std::path::Path;

#[path = "../../fuzz/src/lib.rs"]
mod targets;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut inputs: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    inputs.sort();
    for input in inputs {
        // The panic message that follows names the input.
        eprintln!("replaying {}", input.display());
        check(&std::fs::read(&input).unwrap());
    }
}

#[test]
fn configmaps_regressions() {
    replay("configmaps", targets::configmaps);
}

#[test]
fn plan_regressions() {
    replay("plan", targets::plan);
}

#[test]
fn template_regressions() {
    replay("template", targets::template);
}
