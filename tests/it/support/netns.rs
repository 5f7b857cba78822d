//! Tests inside a network namespace of their own: the outer test re-runs this test binary under
//! `unshare`, asking for one `#[ignore]`d inner test, which builds its network (veth pairs,
//! addresses, routes) with `ip` and finds itself inside by an environment variable. Needs root
//! (CI runs as root), `unshare` (util-linux) and `ip` (iproute2).

use std::process::Command;

/// Run the ignored test `inner` (e.g. `"egress::in_namespace"`) of this binary under `unshare`
/// with `namespaces` (e.g. `["--net"]`), `marker` set in its environment; fail unless it ran
/// and passed.
pub fn run_inside(namespaces: &[&str], inner: &str, marker: &str) {
    let exe = std::env::current_exe().expect("test binary path");
    let output = Command::new("unshare")
        .args(namespaces)
        .arg("--")
        .arg(exe)
        .args(["--exact", inner, "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(marker, "1")
        .output()
        .expect("run unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "inside the namespace:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the inner test did not run:\n{stdout}\n{stderr}");
}

/// Run a command (`ip ...`) and fail the test if it fails.
pub fn sh(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(status.success(), "{args:?} failed");
}
