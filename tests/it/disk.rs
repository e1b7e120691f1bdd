//! Disk bounds: a build that prints without end keeps at most
//! `[build] max_log_bytes` of log (then a marker); a tree that references
//! one blob many times (small in git, huge once expanded) is refused at
//! `[build] max_context_bytes`.

use crate::builds::require_docker;
use crate::git::work;
use crate::harness::Rack;

const WEB: &str = "CMD [\"sh\", \"-c\", \"mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p $PORT -h /www\"]";

#[test]
fn build_log_is_capped_and_amplified_contexts_are_refused() {
    require_docker();
    let rack = Rack::start_with("[build]\nmax_log_bytes = 65536\nmax_context_bytes = 4000000\n");
    let a = &rack.admin;

    // A noisy build: about 1 MB of output.
    rack.ssh(a, "apps:create noisy").ok();
    let w = work(&rack, a, "w");
    std::fs::write(
        w.dir.join("Dockerfile"),
        format!(
            "FROM rack-test/busybox:latest\n\
             RUN echo {}; i=0; while [ $i -lt 20000 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done\n\
             {WEB}\n",
            crate::builds::nonce()
        ),
    )
    .unwrap();
    w.git(&["add", "-A"]).ok();
    w.git(&["commit", "-q", "-m", "noisy"]).ok();
    w.git(&["push", &rack.git_url("noisy"), "main"]).ok();
    let builds = rack.ssh(a, "builds noisy --json").ok().json();
    let id = builds[0]["id"].as_str().unwrap().to_string();
    let log = std::fs::read_to_string(
        rack.data_dir()
            .join("logs")
            .join("builds")
            .join("noisy")
            .join(format!("{id}.log")),
    )
    .expect("the build log file");
    assert!(log.len() <= 65536 + 200, "{} bytes kept", log.len());
    assert!(log.contains("line-1-"), "{}", &log[..log.len().min(2000)]);
    assert!(
        log.trim_end()
            .ends_with("build log truncated: over 65536 bytes ([build] max_log_bytes)"),
        "{}",
        &log[log.len().saturating_sub(500)..]
    );

    // One 1 MiB blob at 8 paths: 1 MiB in the pack, 8 MiB of context.
    rack.ssh(a, "apps:create amplified").ok();
    let w = work(&rack, a, "w2");
    let mut blob = Vec::with_capacity(1 << 20);
    let mut x: u32 = 12345;
    while blob.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        blob.extend_from_slice(&x.to_le_bytes());
    }
    for i in 0..8 {
        std::fs::write(w.dir.join(format!("copy{i}.bin")), &blob).unwrap();
    }
    std::fs::write(
        w.dir.join("Dockerfile"),
        format!("FROM rack-test/busybox:latest\n{WEB}\n"),
    )
    .unwrap();
    w.git(&["add", "-A"]).ok();
    w.git(&["commit", "-q", "-m", "amplified"]).ok();
    let push = w.git(&["push", &rack.git_url("amplified"), "main"]);
    assert_ne!(push.code, 0, "{}", push.stderr);
    assert!(
        push.stderr
            .contains("the build context exceeds 4000000 bytes ([build] max_context_bytes)"),
        "{}",
        push.stderr
    );
    // The rack goes on: the first app still deploys.
    rack.ssh(a, "apps:deploy noisy").ok();
}

/// Every object file and pack under the repo's `objects/`.
fn object_files(rack: &Rack, app: &str) -> Vec<String> {
    let root = rack.data_dir().join(format!("repos/{app}.git/objects"));
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_push_whose_deploy_fails_adds_no_objects() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create refused").ok();
    let w = work(&rack, a, "w");
    std::fs::write(
        w.dir.join("Dockerfile"),
        format!("FROM rack-test/busybox:latest\n{WEB}\n"),
    )
    .unwrap();
    w.git(&["add", "-A"]).ok();
    w.git(&["commit", "-q", "-m", "good"]).ok();
    w.git(&["push", &rack.git_url("refused"), "main"]).ok();
    let before = object_files(&rack, "refused");

    // A 256 KiB file and a build that fails.
    std::fs::write(w.dir.join("payload.bin"), vec![7u8; 256 * 1024]).unwrap();
    std::fs::write(
        w.dir.join("Dockerfile"),
        format!(
            "FROM rack-test/busybox:latest\nRUN echo {} && exit 3\n{WEB}\n",
            crate::builds::nonce()
        ),
    )
    .unwrap();
    w.git(&["add", "-A"]).ok();
    w.git(&["commit", "-q", "-m", "fails to build"]).ok();
    let push = w.git(&["push", &rack.git_url("refused"), "main"]);
    assert_ne!(push.code, 0, "{}", push.stderr);
    assert!(
        push.stderr.contains("build failed") || push.stderr.contains("failed"),
        "{}",
        push.stderr
    );
    assert_eq!(object_files(&rack, "refused"), before);
    crate::git::fsck(&rack, "refused");

    // Pushed again (now building), it lands whole.
    std::fs::write(
        w.dir.join("Dockerfile"),
        format!("FROM rack-test/busybox:latest\n{WEB}\n"),
    )
    .unwrap();
    w.git(&["commit", "-qam", "fixed"]).ok();
    w.git(&["push", &rack.git_url("refused"), "main"]).ok();
    assert_ne!(object_files(&rack, "refused"), before);
    crate::git::fsck(&rack, "refused");
}

#[test]
fn a_push_past_the_repository_quota_is_refused() {
    require_docker();
    let rack = Rack::start_with("[limits]\nmax_repo_bytes = 400000\n");
    let a = &rack.admin;
    rack.ssh(a, "apps:create quota").ok();
    let w = work(&rack, a, "w");
    std::fs::write(
        w.dir.join("Dockerfile"),
        format!("FROM rack-test/busybox:latest\n{WEB}\n"),
    )
    .unwrap();
    w.git(&["add", "-A"]).ok();
    w.git(&["commit", "-q", "-m", "small"]).ok();
    w.git(&["push", &rack.git_url("quota"), "main"]).ok();
    let before = object_files(&rack, "quota");

    // 1 MiB that does not compress.
    let mut blob = Vec::with_capacity(1 << 20);
    let mut x: u32 = 987654321;
    while blob.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        blob.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(w.dir.join("big.bin"), &blob).unwrap();
    w.git(&["add", "-A"]).ok();
    w.git(&["commit", "-q", "-m", "big"]).ok();
    let push = w.git(&["push", &rack.git_url("quota"), "main"]);
    assert_ne!(push.code, 0, "{}", push.stderr);
    assert!(
        push.stderr.contains(
            "the repository would exceed its quota of 400000 bytes ([limits] max_repo_bytes"
        ),
        "{}",
        push.stderr
    );
    assert_eq!(object_files(&rack, "quota"), before);
    // The rack still answers.
    rack.ssh(a, "apps").ok();
}
