use super::*;

#[test]
fn settings_table() {
    for (k, v) in [
        ("deploy_branch", "main"),
        ("port", "8080"),
        ("healthcheck.type", "tcp"),
        ("healthcheck.path", "/health"),
        ("healthcheck.timeout", "30"),
        ("resources.web.memory", "512m"),
        ("resources.worker.cpu", "0.5"),
        ("build_args", "NPM_TOKEN,GO_FLAGS"),
    ] {
        assert!(validate(k, v).is_ok(), "{k}={v}");
    }
    for (k, v) in [
        ("deploy_branch", "a..b"),
        ("deploy_branch", "-x"),
        ("port", "0"),
        ("port", "http"),
        ("healthcheck.type", "udp"),
        ("healthcheck.path", "health"),
        ("healthcheck.timeout", "-1"),
        ("resources.web.memory", "lots"),
        ("resources.Web.cpu", "1"),
        ("resources.web.disk", "1"),
        ("build_args", "A-B"),
        ("colour", "blue"),
    ] {
        assert!(validate(k, v).is_err(), "{k}={v}");
    }
}
