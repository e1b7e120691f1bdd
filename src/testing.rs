#![cfg(test)]
//! Helpers shared by the unit tests of several modules.

use std::process::Command;

/// A fresh data dir whose `rack.toml` holds `text`.
pub fn data_dir_with(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rack.toml"), text).unwrap();
    dir
}

/// Runs the test `path` (e.g. `process::tests::child_env_probe`) in a
/// second run of this test binary, with `env` applied to its environment,
/// and asserts it ran and passed. The tests of one binary share its
/// environment, so a test that needs other variables must not set them in
/// this process.
pub fn run_probe(path: &str, env: impl FnOnce(&mut Command)) {
    let probe = path.rsplit("::").next().unwrap_or(path);
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    env(&mut cmd);
    let out = cmd
        .env("RACK_TEST_PROBE", probe)
        .args(["--exact", path])
        .output()
        .expect("the test binary runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// Whether this process is the child [`run_probe`] started for `probe`:
/// a probe's body runs only there.
pub fn is_probe(probe: &str) -> bool {
    std::env::var("RACK_TEST_PROBE").as_deref() == Ok(probe)
}
