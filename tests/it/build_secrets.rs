//! Secrets in `build_args`: a config value passed as a build arg reaches
//! the build's `RUN` steps but neither the image's metadata (`docker
//! history --no-trunc`, `docker image inspect`), nor the push output, nor
//! the build log, nor a failing `FROM`'s error.

use crate::builds::{docker, require_docker};
use crate::git::work;
use crate::harness::Rack;
use crate::http;

const CMD: &str = "CMD [\"sh\", \"-c\", \"mkdir -p /www && cat /token-len > /www/index.html && exec httpd -f -p $PORT -h /www\"]";

#[test]
fn build_arg_secrets_stay_out_of_image_history_logs_and_errors() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let app = "bsec";
    rack.ssh(a, &format!("apps:create {app}")).ok();
    // Lowercase letters and digits: usable in an image name below.
    let secret = format!("tok{}zqx7", std::process::id());
    rack.ssh(a, &format!("config:set {app} TOKEN={secret}"))
        .ok();
    rack.ssh(a, &format!("apps:set {app} build_args=TOKEN"))
        .ok();
    let w = work(&rack, a, "w");
    std::fs::write(
        w.dir.join("Dockerfile"),
        format!(
            "FROM rack-test/busybox:latest\n\
             ARG TOKEN\n\
             RUN test -n \"$TOKEN\" && printf %s \"$TOKEN\" | wc -c > /token-len && echo \"the token is $TOKEN\"\n\
             EXPOSE 5000\n\
             {CMD}\n"
        ),
    )
    .unwrap();
    w.git(&["add", "-A"]).ok();
    w.git(&["commit", "-q", "-m", "uses a secret build arg"])
        .ok();
    let push = w.git(&["push", &rack.git_url(app), "main"]);
    push.ok();
    assert!(!push.stderr.contains(&secret), "{}", push.stderr);
    assert!(
        push.stderr.contains("the token is [redacted]"),
        "{}",
        push.stderr
    );

    let builds = rack.ssh(a, &format!("builds {app} --json")).ok().json();
    let id = builds[0]["id"].as_str().unwrap().to_string();
    let tag = format!("rack/{app}:{id}");
    let history = docker(&["history", "--no-trunc", &tag]);
    history.ok();
    assert!(!history.stdout.contains(&secret), "{}", history.stdout);
    let inspect = docker(&["image", "inspect", &tag]);
    inspect.ok();
    assert!(!inspect.stdout.contains(&secret), "{}", inspect.stdout);
    let logs = rack
        .ssh(a, &format!("builds:logs {app} {id}"))
        .ok()
        .stdout
        .clone();
    assert!(logs.contains("Step 1/"), "{logs}");
    assert!(!logs.contains(&secret), "{logs}");

    // The step did see the value, and the image still runs as built
    // (CMD, EXPOSE kept): the router serves what it wrote.
    let r = http::get(rack.http_port, &format!("{app}.localhost"), "/").expect("router answers");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(&secret.len().to_string()), "{}", r.body);

    // A FROM naming the secret fails without printing it.
    std::fs::write(
        w.dir.join("Dockerfile"),
        format!("ARG TOKEN\nFROM rack-test/${{TOKEN}}:latest\n{CMD}\n"),
    )
    .unwrap();
    w.git(&["commit", "-qam", "from a secret"]).ok();
    let failed = w.git(&["push", &rack.git_url(app), "main"]);
    assert_ne!(failed.code, 0, "{}", failed.stderr);
    assert!(failed.stderr.contains("failed"), "{}", failed.stderr);
    assert!(!failed.stderr.contains(&secret), "{}", failed.stderr);
    let builds = rack.ssh(a, &format!("builds {app} --json"));
    builds.ok();
    assert!(!builds.stdout.contains(&secret), "{}", builds.stdout);
    let id = builds.json()[0]["id"].as_str().unwrap().to_string();
    let logs = rack
        .ssh(a, &format!("builds:logs {app} {id}"))
        .ok()
        .stdout
        .clone();
    assert!(!logs.contains(&secret), "{logs}");
    let events = rack.ssh(a, "events").ok().stdout.clone();
    assert!(!events.contains(&secret), "{events}");
}
