use super::*;

#[test]
fn git_protocol_values() {
    for good in ["version=0", "version=1", "version=2"] {
        assert_eq!(git_protocol_env(Some(good)), Some(good));
    }
    for bad in [
        "",
        "version=3",
        "version=2:x",
        "version=2\n",
        " version=2",
        "version=22",
        "VERSION=2",
        "version=2;GIT_CONFIG_COUNT=1",
    ] {
        assert_eq!(git_protocol_env(Some(bad)), None, "{bad:?}");
    }
    assert_eq!(git_protocol_env(None), None);
}

/// Regression: a `GIT_CONFIG_*` variable in the rack's own environment
/// (the way a client's SSH env request would arrive if it were ever
/// copied into the process env) never reaches a child. The variable is set
/// on a second run of this test binary (running [`child_env_probe`]), never
/// in this process: the tests of one binary share its environment.
#[test]
fn child_env_is_allow_listed() {
    crate::testing::run_probe("process::tests::child_env_probe", |c| {
        c.env(
            "GIT_CONFIG_RACK_LEAK_TEST",
            "core.sshCommand=touch /tmp/pwned",
        );
    });
}

/// The body of [`child_env_is_allow_listed`], in a process whose
/// environment has `GIT_CONFIG_RACK_LEAK_TEST`.
#[tokio::test]
async fn child_env_probe() {
    // Only as the parent's child process: in the suite's own run this
    // process's environment is not the one under test.
    if !crate::testing::is_probe("child_env_probe") {
        return;
    }
    let mut cmd = command("env");
    set_git_protocol(&mut cmd, Some("version=2"));
    let out = cmd.output().await.expect("env runs");
    let text = String::from_utf8(out.stdout).expect("utf-8 env");
    let names: Vec<&str> = text.lines().filter_map(|l| l.split('=').next()).collect();
    assert!(!text.contains("GIT_CONFIG"), "{text}");
    for n in &names {
        assert!(
            ["PATH", "HOME", "GIT_PROTOCOL"].contains(n),
            "unexpected {n} in {text}"
        );
    }
    assert!(names.contains(&"GIT_PROTOCOL"));

    let mut cmd = command("env");
    set_git_protocol(&mut cmd, Some("version=2 GIT_CONFIG_COUNT=1"));
    let out = cmd.output().await.expect("env runs");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("GIT_PROTOCOL"));
}
