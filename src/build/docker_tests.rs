//! Builds against the real Docker engine (`/var/run/docker.sock`), from
//! commits made of the fixture apps in `tests/fixtures/apps/`, with the
//! buildpacks' base images replaced by the stub image (see `testing`).
//! A few tests at the end need no engine: they prove the builder refuses
//! before calling it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use git2::{Oid, Repository};

use super::context::tests::{commit_entries, commit_files, dir_entries};
use super::testing::{ensure_stub_images, test_docker, TEST_BASE_IMAGE};
use super::*;
use crate::progress::Progress;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/apps")
        .join(name)
}

/// A bare repo holding one commit of the fixture app `name`.
fn fixture_repo(name: &str) -> (tempfile::TempDir, Oid) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repository::init_bare(dir.path()).expect("init");
    let oid = commit_files(&repo, dir_entries(&fixture_dir(name)), None);
    (dir, oid)
}

/// A child of `parent` with `path` set to `content` (the rest of the
/// fixture unchanged).
fn change_file(repo_path: &Path, fixture: &str, parent: Oid, path: &str, content: &str) -> Oid {
    let repo = Repository::open(repo_path).expect("open");
    let mut files = dir_entries(&fixture_dir(fixture));
    files.retain(|(p, _, _)| p != path);
    files.push((path.to_string(), content.as_bytes().to_vec(), 0o100644));
    commit_files(&repo, files, Some(parent))
}

/// A bare repo with one commit holding just `dockerfile` (plus `files`).
fn dockerfile_repo(dockerfile: &str, files: &[(&str, &[u8], char)]) -> (tempfile::TempDir, Oid) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repository::init_bare(dir.path()).expect("init");
    let mut entries: Vec<(&str, &[u8], char)> = vec![("Dockerfile", dockerfile.as_bytes(), 'f')];
    entries.extend_from_slice(files);
    let oid = commit_entries(&repo, &entries, None);
    (dir, oid)
}

/// Removes the images a test tagged, whatever happens.
struct Images(Mutex<Vec<String>>);

impl Images {
    fn new() -> Images {
        Images(Mutex::new(Vec::new()))
    }
    fn add(&self, tag: &str) {
        self.0.lock().unwrap().push(tag.to_string());
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let tags = self.0.lock().unwrap().clone();
        if !tags.is_empty() {
            // --no-prune: the untagged parent layers may be the build cache
            // another test's build is using right now ("unknown parent
            // image ID" when removed under it).
            let _ = std::process::Command::new("docker")
                .arg("rmi")
                .arg("-f")
                .arg("--no-prune")
                .args(&tags)
                .output();
        }
    }
}

struct Outcome {
    result: Result<BuildResult, BuildError>,
    /// Progress lines with the stage/detail indentation removed.
    lines: Vec<String>,
    /// What the log sink got (indentation kept).
    log: Vec<String>,
}

impl Outcome {
    fn text(&self) -> String {
        self.lines.join("\n")
    }
    fn ok(&self) -> &BuildResult {
        match &self.result {
            Ok(r) => r,
            Err(e) => panic!("build failed: {e}\n{}", self.text()),
        }
    }
    fn has(&self, needle: &str) -> bool {
        self.lines.iter().any(|l| l.contains(needle))
    }
    /// The image id a step left (" ---> ID" after "Step N/M : ...needle").
    fn step_image(&self, needle: &str) -> Option<String> {
        let i = self
            .lines
            .iter()
            .position(|l| l.starts_with("Step ") && l.contains(needle))?;
        self.lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with("Step "))
            .filter_map(|l| l.trim().strip_prefix("---> "))
            .find(|rest| !rest.starts_with("Running in") && !rest.starts_with("Using cache"))
            .map(str::to_string)
    }
}

fn request(repo: &Path, commit: Oid, app: &str, log: &Arc<Mutex<Vec<String>>>) -> BuildRequest {
    let sink = log.clone();
    BuildRequest {
        repo_path: repo.to_path_buf(),
        commit,
        app: app.to_string(),
        build_id: new_build_id(),
        build_args: HashMap::new(),
        no_cache: false,
        labels: HashMap::new(),
        log: Some(Arc::new(move |l: &str| {
            sink.lock().unwrap().push(l.to_string())
        })),
    }
}

async fn run(builder: &Builder, req: BuildRequest, images: &Images) -> Outcome {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let req = BuildRequest {
        log: Some(Arc::new(move |l: &str| {
            sink.lock().unwrap().push(l.to_string())
        })),
        ..req
    };
    images.add(&image_tag(&req.app, &req.build_id));
    let (progress, mut rx) = Progress::channel();
    let result = builder.build(req, progress).await;
    let mut lines = Vec::new();
    while let Ok(l) = rx.try_recv() {
        let l = l
            .strip_prefix("-----> ")
            .or_else(|| l.strip_prefix("       "))
            .unwrap_or(&l)
            .to_string();
        lines.push(l);
    }
    let log = log.lock().unwrap().clone();
    // Shown by `cargo test -- --nocapture` and for failing tests.
    eprintln!("{}", log.join("\n"));
    Outcome { result, lines, log }
}

/// Builds `commit` of `repo` as app `app` (default request settings).
async fn build_commit(
    b: &Builder,
    repo: &Path,
    commit: Oid,
    app: &str,
    images: &Images,
) -> Outcome {
    let log = Arc::new(Mutex::new(Vec::new()));
    run(b, request(repo, commit, app, &log), images).await
}

/// Builds one commit of the fixture app `fixture` as app `app`.
async fn build_fixture(b: &Builder, fixture: &str, app: &str, images: &Images) -> Outcome {
    let (repo, commit) = fixture_repo(fixture);
    build_commit(b, repo.path(), commit, app, images).await
}

fn builder(docker: Docker, options: BuildOptions) -> Builder {
    Builder::new(docker, options).expect("valid options")
}

/// A builder whose buildpacks build from the stub images.
async fn stub_builder(docker: &Docker) -> Builder {
    let base_images = ensure_stub_images(docker)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    builder(
        docker.clone(),
        BuildOptions {
            base_images,
            ..BuildOptions::default()
        },
    )
}

/// Waits (20 s at most) until no container runs a command containing
/// `marker`: the engine stopped the build step.
async fn wait_build_container_gone(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ps = docker_cli(&["ps", "-a", "--no-trunc", "--format", "{{.Command}}"]);
        if !ps.contains(marker) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "build container still there:\n{ps}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `docker run --rm IMAGE sh -c SCRIPT`, stdout.
fn sh_in(image: &str, script: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "/bin/sh",
            image,
            "-c",
            script,
        ])
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn image_cmd(docker: &Docker, tag: &str) -> Vec<String> {
    let img = docker.inspect_image(tag).await.expect("inspect image");
    img.config.and_then(|c| c.cmd).unwrap_or_default()
}

#[tokio::test]
async fn dockerfile_app_context_is_right_inside_the_image() {
    let docker = test_docker().await;
    let images = Images::new();
    let (repo, commit) = fixture_repo("dockerfile-httpd");
    let b = builder(docker.clone(), BuildOptions::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut req = request(repo.path(), commit, "t-httpd", &log);
    req.build_args.insert("GREETING".into(), "howdy".into());
    req.build_args
        .insert("SECRET_TOKEN".into(), "s3cr3t-value".into());
    let build_id = req.build_id.clone();
    let o = run(&b, req, &images).await;
    let r = o.ok();

    // Output in the stage format, and the same lines in the log.
    assert_eq!(
        o.lines[0],
        format!("Building t-httpd {} (Dockerfile)", &commit.to_string()[..7])
    );
    assert!(o.has("Step 1/"), "{}", o.text());
    assert!(
        o.lines
            .last()
            .unwrap()
            .starts_with(&format!("Build {build_id} succeeded in ")),
        "{}",
        o.text()
    );
    assert!(o.has("Not passing build args the Dockerfile does not declare with ARG: SECRET_TOKEN"));
    assert!(o.log.iter().any(|l| l.starts_with("       Step 1/")));
    assert!(o.log.iter().any(|l| l.starts_with("-----> Build ")));
    assert!(!o.log.join("\n").contains("s3cr3t-value"));
    assert!(r.image_id.starts_with("sha256:"), "{}", r.image_id);
    assert_eq!(r.kind, BuildKind::Dockerfile);
    assert_eq!(r.build_args, vec!["GREETING".to_string()]);
    assert!(
        r.context_bytes > 0 && r.context_bytes % 512 == 0,
        "{}",
        r.context_bytes
    );

    // No LABEL steps of rack's own (each would be an uncached step on every
    // build), command, and no build arg value in history (an image built
    // with app build args is re-imported without it).
    assert!(!o.has(": LABEL "), "{}", o.text());
    let img = docker.inspect_image(&r.tag).await.expect("inspect");
    assert_eq!(img.id.as_deref(), Some(r.image_id.as_str()));
    let labels = img
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    assert!(!labels.keys().any(|k| k.starts_with("rack.")), "{labels:?}");
    assert_eq!(image_cmd(&docker, &r.tag).await, vec!["/app/bin/start"]);
    let history = docker_cli(&["history", "--no-trunc", &r.tag]);
    assert!(!history.contains("GREETING=howdy"), "{history}");
    assert!(history.contains("Imported from -"), "{history}");
    assert!(
        !history.contains("s3cr3t") && !history.contains("SECRET_TOKEN"),
        "{history}"
    );
    let inspect = docker_cli(&["image", "inspect", &r.tag]);
    assert!(!inspect.contains("s3cr3t"));

    // .dockerignore, the executable bit and the symlink, seen from inside.
    let report = sh_in(
        &r.tag,
        "cd /app; for p in debug.log secrets secrets/token.txt docs/internal.md cache/blob.bin .git; do \
           [ -e $p ] && echo PRESENT $p; done; \
         [ -f docs/keep.md ] && echo keep-md; [ -f cache/keep.txt ] && echo keep-txt; \
         [ -x bin/start ] && echo exec $(stat -c %a bin/start); \
         [ -L public/latest.html ] && echo link $(readlink public/latest.html); \
         echo index $(stat -c %a public/index.html); cat public/greeting.txt; cat public/latest.html",
    );
    assert!(!report.contains("PRESENT"), "{report}");
    for want in [
        "keep-md",
        "keep-txt",
        "exec 755",
        "link index.html",
        "index 644",
        "howdy",
        "Hello from dockerfile-httpd",
    ] {
        assert!(report.contains(want), "{want} missing in:\n{report}");
    }

    // The same commit again: every step from the cache, same layers.
    let mut req2 = request(repo.path(), commit, "t-httpd", &log);
    req2.build_args.insert("GREETING".into(), "howdy".into());
    let o2 = run(&b, req2, &images).await;
    let r2 = o2.ok();
    assert!(o2.has("Using cache"), "{}", o2.text());
    assert_eq!(o.step_image("COPY . /app"), o2.step_image("COPY . /app"));
    assert!(o.step_image("COPY . /app").is_some());
    // With app build args the image is re-imported (no history), so each
    // build makes an image of its own from the cached steps.
    assert!(r2.image_id.starts_with("sha256:"), "{}", r2.image_id);

    // --no-cache rebuilds the steps.
    let mut req3 = request(repo.path(), commit, "t-httpd", &log);
    req3.no_cache = true;
    let o3 = run(&b, req3, &images).await;
    o3.ok();
    assert!(!o3.has("Using cache"), "{}", o3.text());
}

#[tokio::test]
async fn failing_step_fails_the_build_with_its_message() {
    let docker = test_docker().await;
    let images = Images::new();
    let (repo, commit) = fixture_repo("broken-build");
    let b = builder(docker.clone(), BuildOptions::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let req = request(repo.path(), commit, "t-broken", &log);
    let id = req.build_id.clone();
    let o = run(&b, req, &images).await;
    let Err(BuildError::Failed(msg)) = &o.result else {
        panic!("expected Failed, got {:?}\n{}", o.result, o.text())
    };
    assert!(msg.contains("returned a non-zero code: 3"), "{msg}");
    let log = o.log.join("\n");
    assert!(
        log.contains("rack-fixture: this step fails on purpose"),
        "{log}"
    );
    assert!(log.contains("returned a non-zero code: 3"), "{log}");
    assert!(
        o.lines
            .last()
            .unwrap()
            .starts_with(&format!("Build {id} failed: The command")),
        "{}",
        o.text()
    );
    assert!(
        docker
            .inspect_image(&image_tag("t-broken", &id))
            .await
            .is_err(),
        "no image for a failed build"
    );
    // forcerm: no container of the failed step is left behind.
    let left = docker_cli(&["ps", "-a", "--no-trunc", "--format", "{{.Command}}"]);
    assert!(!left.contains("this step fails on purpose"), "{left}");
}

#[tokio::test]
async fn timeout_stops_the_build_and_its_container() {
    let docker = test_docker().await;
    let images = Images::new();
    let marker = format!("rack-timeout-{}", new_build_id());
    let df = format!("FROM {TEST_BASE_IMAGE}\nRUN echo {marker} && sleep 60\n");
    let (repo, commit) = dockerfile_repo(&df, &[]);
    let mut opts = BuildOptions::default();
    opts.limits.timeout = Duration::from_secs(3);
    let b = builder(docker.clone(), opts);
    let started = Instant::now();
    let o = build_commit(&b, repo.path(), commit, "t-timeout", &images).await;
    assert!(
        matches!(o.result, Err(BuildError::Timeout(_))),
        "{:?}\n{}",
        o.result,
        o.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        o.has(&marker),
        "output before the timeout is kept:\n{}",
        o.text()
    );
    assert!(o
        .lines
        .last()
        .unwrap()
        .contains("failed: build timed out after 3s"));
    assert_eq!(b.running(), 0, "the slot is released");
    // Closing the request makes the engine stop the step's container.
    wait_build_container_gone(&marker).await;
}

#[tokio::test]
async fn network_none_and_memory_limit_apply_to_run_steps() {
    let docker = test_docker().await;
    let images = Images::new();
    let df = format!(
        "FROM {TEST_BASE_IMAGE}\nRUN echo nets: $(ls /sys/class/net) {}; \
         echo mem: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)\n",
        new_build_id()
    );
    let (repo, commit) = dockerfile_repo(&df, &[]);
    let mut opts = BuildOptions::default();
    opts.limits.network_mode = NetworkMode::None;
    opts.limits.memory_bytes = Some(256 * 1024 * 1024);
    let b = builder(docker.clone(), opts);
    let o = build_commit(&b, repo.path(), commit, "t-limits", &images).await;
    o.ok();
    let nets = o
        .lines
        .iter()
        .find(|l| l.starts_with("nets:"))
        .expect("nets line");
    assert!(nets.contains(" lo") && !nets.contains("eth0"), "{nets}");
    assert!(o.has("mem: 268435456"), "{}", o.text());
}

#[tokio::test]
async fn builds_beyond_the_limit_wait_for_a_slot() {
    let docker = test_docker().await;
    let images = Images::new();
    let b = builder(
        docker.clone(),
        BuildOptions {
            max_concurrent_builds: 1,
            ..BuildOptions::default()
        },
    );
    let slow = format!(
        "FROM {TEST_BASE_IMAGE}\nRUN sleep 3 && echo {}\n",
        new_build_id()
    );
    let fast = format!("FROM {TEST_BASE_IMAGE}\nRUN echo {}\n", new_build_id());
    let (repo1, c1) = dockerfile_repo(&slow, &[]);
    let (repo2, c2) = dockerfile_repo(&fast, &[]);
    let log = Arc::new(Mutex::new(Vec::new()));
    let r1 = request(repo1.path(), c1, "t-slot-a", &log);
    let r2 = request(repo2.path(), c2, "t-slot-b", &log);
    let first = run(&b, r1, &images);
    let second = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        run(&b, r2, &images).await
    };
    let (o1, o2) = tokio::join!(first, second);
    o1.ok();
    o2.ok();
    assert!(
        o2.has("Waiting for a build slot (1 builds running)"),
        "{}",
        o2.text()
    );
    assert!(!o1.has("Waiting for a build slot"));
}

/// One buildpack: build the fixture, check the stub calls and the command,
/// change a source file, rebuild, check the dependency step was reused.
struct Case {
    fixture: &'static str,
    buildpack: &'static str,
    /// Lines only the dependency step prints (first build only).
    dep_lines: &'static [&'static str],
    /// The dependency step, as in `Step N/M : ...`.
    dep_step: Option<&'static str>,
    /// Lines the steps after the source copy print (every build).
    src_lines: &'static [&'static str],
    change: (&'static str, &'static str),
    cmd: &'static [&'static str],
    /// Script run in the image, and what its output must contain.
    check: (&'static str, &'static [&'static str]),
}

/// The buildpack cases run one at a time: their stub base images are one
/// image, so parallel builds race to make the same first layers (`WORKDIR
/// /app`), and a rebuild may take another case's copy from the cache and
/// miss its own dependency layer below it.
static BUILDPACK_CASES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn buildpack_case(c: Case) {
    let _one_at_a_time = BUILDPACK_CASES.lock().await;
    let docker = test_docker().await;
    let images = Images::new();
    let b = stub_builder(&docker).await;
    let (repo, commit) = fixture_repo(c.fixture);
    let app = format!("t-bp-{}", c.buildpack);
    let log = Arc::new(Mutex::new(Vec::new()));

    // The first build ignores the cache (earlier runs left layers behind),
    // so the dependency step really runs; the second may reuse its layers.
    let mut first = request(repo.path(), commit, &app, &log);
    first.no_cache = true;
    let o1 = run(&b, first, &images).await;
    let r1 = o1.ok();
    assert_eq!(r1.kind, BuildKind::Buildpack(c.buildpack));
    assert!(
        o1.lines[0].ends_with(&format!("(buildpack {})", c.buildpack)),
        "{}",
        o1.lines[0]
    );
    for l in c.dep_lines.iter().chain(c.src_lines) {
        assert!(
            o1.has(l),
            "{}: {l:?} missing in:\n{}",
            c.buildpack,
            o1.text()
        );
    }
    let cmd = image_cmd(&docker, &r1.tag).await;
    let want: Vec<String> = c.cmd.iter().map(|s| s.to_string()).collect();
    if c.cmd.len() == 3 && c.cmd[0] == "/bin/sh" {
        // Shell-form CMD: compare the shell and check the script mentions c.cmd[2].
        assert_eq!(cmd[..2], want[..2], "{cmd:?}");
        assert!(cmd[2].contains(c.cmd[2]), "{cmd:?}");
    } else {
        assert_eq!(cmd, want);
    }
    let report = sh_in(&r1.tag, c.check.0);
    for w in c.check.1 {
        assert!(
            report.contains(w),
            "{}: {w:?} missing in:\n{report}",
            c.buildpack
        );
    }

    // A source-only change: the dependency layer comes from the cache.
    let commit2 = change_file(repo.path(), c.fixture, commit, c.change.0, c.change.1);
    let o2 = run(&b, request(repo.path(), commit2, &app, &log), &images).await;
    let r2 = o2.ok();
    assert_ne!(r1.image_id, r2.image_id);
    for l in c.dep_lines {
        assert!(
            !o2.has(l),
            "{}: dependency step ran again ({l:?}):\n{}",
            c.buildpack,
            o2.text()
        );
    }
    for l in c.src_lines {
        assert!(
            o2.has(l),
            "{}: {l:?} missing in the rebuild:\n{}",
            c.buildpack,
            o2.text()
        );
    }
    if let Some(step) = c.dep_step {
        let (a, b2) = (o1.step_image(step), o2.step_image(step));
        assert!(
            a.is_some(),
            "{}: no step {step:?} in:\n{}",
            c.buildpack,
            o1.text()
        );
        assert_eq!(
            a,
            b2,
            "{}: dependency layer not reused:\n{}",
            c.buildpack,
            o2.text()
        );
        assert!(o2.has("Using cache"));
    }
}

#[tokio::test]
async fn buildpack_node() {
    buildpack_case(Case {
        fixture: "buildpack-node",
        buildpack: "node",
        dep_lines: &["stub: npm ci --include=dev"],
        dep_step: Some("npm ci"),
        src_lines: &[
            "stub: npm run build --if-present",
            "stub: npm prune --omit=dev",
        ],
        change: ("index.js", "console.log(\"rack fixture: node v2\");\n"),
        cmd: &["npm", "start"],
        check: (
            "cat /app/node_modules/.stub-installed; cat /app/index.js",
            &["npm ci --include=dev", "rack fixture: node"],
        ),
    })
    .await;
}

#[tokio::test]
async fn buildpack_python() {
    buildpack_case(Case {
        fixture: "buildpack-python",
        buildpack: "python",
        dep_lines: &["stub: pip install -r requirements.txt"],
        dep_step: Some("pip install -r requirements.txt"),
        src_lines: &[],
        change: ("app.py", "print(\"rack fixture: python v2\")\n"),
        cmd: &["/bin/sh", "-c", "python3 \"$f\""],
        check: (
            "cat /usr/local/lib/stub-site/requirements.txt /app/app.py",
            &["flask==3.0.0", "rack fixture: python"],
        ),
    })
    .await;
}

#[tokio::test]
async fn buildpack_go() {
    buildpack_case(Case {
        fixture: "buildpack-go",
        buildpack: "go",
        dep_lines: &["stub: go mod download"],
        dep_step: Some("go mod download"),
        src_lines: &["stub: go build -o /out/app ."],
        change: (
            "main.go",
            "package main\n\nfunc main() { println(\"v2\") }\n",
        ),
        cmd: &["/usr/local/bin/app"],
        check: (
            "head -n 2 /usr/local/bin/app; ls /app",
            &["stub go binary .", "main.go", "go.mod"],
        ),
    })
    .await;
}

#[tokio::test]
async fn buildpack_rust() {
    buildpack_case(Case {
        fixture: "buildpack-rust",
        buildpack: "rust",
        dep_lines: &["stub: cargo compiled the placeholder main of rack-fixture-rust"],
        dep_step: Some("cargo build --release ||"),
        src_lines: &["stub: cargo compiled the real main of rack-fixture-rust"],
        change: (
            "src/main.rs",
            "fn main() { println!(\"rack fixture: rust v2\"); }\n",
        ),
        cmd: &["/usr/local/bin/app"],
        check: (
            "readlink /usr/local/bin/app; head -n 2 /usr/local/bin/rack-fixture-rust",
            &[
                "rack-fixture-rust",
                "stub cargo binary rack-fixture-rust (real)",
            ],
        ),
    })
    .await;
}

#[tokio::test]
async fn buildpack_static() {
    buildpack_case(Case {
        fixture: "buildpack-static",
        buildpack: "static",
        dep_lines: &[],
        dep_step: None,
        src_lines: &[],
        change: ("index.html", "<h1>static v2</h1>\n"),
        cmd: &["/bin/sh", "-c", "exec httpd -f -v -p \"${PORT:-5000}\""],
        check: ("ls /app", &["index.html", "about.html"]),
    })
    .await;
}

#[tokio::test]
async fn buildpack_procfile() {
    buildpack_case(Case {
        fixture: "buildpack-procfile",
        buildpack: "procfile",
        dep_lines: &[],
        dep_step: None,
        src_lines: &[],
        change: ("www/index.html", "<h1>procfile v2</h1>\n"),
        cmd: &["/bin/sh", "-c", "Procfile"],
        check: (
            "cat /app/Procfile; ls /app/www",
            &["web: exec httpd", "index.html"],
        ),
    })
    .await;
}

/// The stub-built node image really serves: `npm start` runs the
/// package.json start script (busybox httpd on $PORT).
#[tokio::test]
async fn stub_built_node_image_serves_http() {
    let docker = test_docker().await;
    let images = Images::new();
    let b = stub_builder(&docker).await;
    let o = build_fixture(&b, "buildpack-node", "t-bp-serve", &images).await;
    let tag = o.ok().tag.clone();
    let name = format!("rack-test-serve-{}", std::process::id());
    docker_cli(&[
        "run",
        "-d",
        "--rm",
        "--init",
        "--name",
        &name,
        "-e",
        "PORT=5000",
        &tag,
    ]);
    let mut body = String::new();
    for _ in 0..20 {
        let out = std::process::Command::new("docker")
            .args(["exec", &name, "wget", "-qO-", "http://127.0.0.1:5000/"])
            .output()
            .expect("docker exec");
        body = String::from_utf8_lossy(&out.stdout).into_owned();
        if body.contains("node fixture") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &name])
        .output();
    assert!(body.contains("node fixture"), "{body:?}");
}

#[tokio::test]
async fn unknown_base_image_is_named() {
    let docker = test_docker().await;
    let images = Images::new();
    let df = "ARG BASE_IMAGE=rack-test/does-not-exist:1\nFROM ${BASE_IMAGE}\nCMD [\"sh\"]\n";
    let (repo, commit) = dockerfile_repo(df, &[]);
    let b = builder(docker, BuildOptions::default());
    let o = build_commit(&b, repo.path(), commit, "t-nobase", &images).await;
    let Err(BuildError::Failed(msg)) = &o.result else {
        panic!("{:?}\n{}", o.result, o.text())
    };
    assert!(
        msg.starts_with("base image rack-test/does-not-exist:1 unavailable: "),
        "{msg}"
    );
}

#[tokio::test]
async fn dockerfile_syntax_error_fails_the_build() {
    let docker = test_docker().await;
    let images = Images::new();
    let (repo, commit) = dockerfile_repo(&format!("FROM {TEST_BASE_IMAGE}\nFOO bar\n"), &[]);
    let b = builder(docker, BuildOptions::default());
    let o = build_commit(&b, repo.path(), commit, "t-syntax", &images).await;
    let Err(BuildError::Failed(msg)) = &o.result else {
        panic!("{:?}\n{}", o.result, o.text())
    };
    assert!(msg.contains("FOO"), "{msg}");
    assert!(o.log.join("\n").contains(msg.as_str()));
}

#[tokio::test]
async fn dropping_the_build_cancels_it() {
    let docker = test_docker().await;
    let images = Images::new();
    let marker = format!("rack-cancel-{}", new_build_id());
    let df = format!("FROM {TEST_BASE_IMAGE}\nRUN echo {marker} && sleep 60\n");
    let (repo, commit) = dockerfile_repo(&df, &[]);
    let b = builder(docker.clone(), BuildOptions::default());
    let log = Arc::new(Mutex::new(Vec::new()));
    let req = request(repo.path(), commit, "t-cancel", &log);
    images.add(&image_tag("t-cancel", &req.build_id));
    let network = format!("rack-build-{}", req.build_id);
    // The client goes away after 2 s: the future is dropped.
    let r = tokio::time::timeout(Duration::from_secs(2), b.build(req, Progress::discard())).await;
    assert!(r.is_err(), "the build should still be running");
    assert_eq!(b.running(), 0, "the slot is released");
    wait_build_container_gone(&marker).await;
    // And the build's own network goes too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nets = docker_cli(&["network", "ls", "--format", "{{.Name}}"]);
        if !nets.lines().any(|n| n == network) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "build network {network} still there"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn large_context_streams_through() {
    let docker = test_docker().await;
    let images = Images::new();
    let big: Vec<u8> = (0..24 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let df = format!(
        "FROM {TEST_BASE_IMAGE}\nCOPY big.bin /big.bin\nRUN echo size: $(wc -c < /big.bin) {}\n",
        new_build_id()
    );
    let (repo, commit) = dockerfile_repo(&df, &[("big.bin", &big, 'f')]);
    let b = builder(docker, BuildOptions::default());
    let o = build_commit(&b, repo.path(), commit, "t-big", &images).await;
    let r = o.ok();
    assert!(o.has("size: 25165824"), "{}", o.text());
    assert!(r.context_bytes > 24 * 1024 * 1024, "{}", r.context_bytes);
}

// ---- No engine needed: refused before Docker is called. ----

fn offline_builder() -> Builder {
    let docker = Docker::connect_with_http("http://127.0.0.1:1", 2, bollard::API_DEFAULT_VERSION)
        .expect("lazy client");
    builder(docker, BuildOptions::default())
}

#[tokio::test]
async fn buildkit_syntax_fails_fast() {
    let images = Images::new();
    let o = build_fixture(&offline_builder(), "buildkit-only", "t-bk", &images).await;
    let Err(BuildError::BuildKit(msg)) = &o.result else {
        panic!("{:?}", o.result)
    };
    assert!(
        msg.contains("--mount") && msg.contains("classic builder"),
        "{msg}"
    );
    assert!(
        o.lines
            .last()
            .unwrap()
            .contains("failed: Dockerfile line 4"),
        "{}",
        o.text()
    );
}

#[tokio::test]
async fn no_buildpack_lists_what_was_looked_for() {
    let images = Images::new();
    let o = build_fixture(&offline_builder(), "no-buildpack", "t-nobp", &images).await;
    let Err(BuildError::NoBuildpack(msg)) = &o.result else {
        panic!("{:?}", o.result)
    };
    for what in [
        "Dockerfile",
        "package.json",
        "requirements.txt",
        "go.mod",
        "Cargo.toml",
        "index.html",
        "Procfile",
    ] {
        assert!(msg.contains(what), "{msg}");
    }
}

#[tokio::test]
async fn unreachable_engine_is_reported() {
    let images = Images::new();
    let o = build_fixture(&offline_builder(), "dockerfile-httpd", "t-down", &images).await;
    assert!(
        matches!(o.result, Err(BuildError::Unreachable(_))),
        "{:?}",
        o.result
    );
    let e = connect_docker(Some("/nonexistent/docker.sock"))
        .await
        .expect_err("no socket");
    assert!(
        e.to_string()
            .contains("Docker engine not reachable: /nonexistent/docker.sock"),
        "{e}"
    );
}
