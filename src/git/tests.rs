//! End-to-end tests of receive-pack and upload-pack with the real `git`
//! client, without SSH: `GIT_SSH_COMMAND` is a small python relay that
//! sends `GIT_PROTOCOL` and the exec string as a first line, then pipes
//! stdin/stdout to a TCP port where the test serves the request with
//! [`parse_exec`], [`receive_pack`] and [`upload_pack`], as the SSH layer
//! will.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use git2::Oid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::progress::Progress;
use receive::MOVED_WHILE_WAITING;

const RELAY: &str = r#"
import os, socket, sys, threading
port = int(sys.argv[1])
cmd = sys.argv[-1]
proto = os.environ.get("GIT_PROTOCOL", "-")
s = socket.create_connection(("127.0.0.1", port))
s.sendall((proto + "\t" + cmd + "\n").encode())
def pump_in():
    try:
        while True:
            d = os.read(0, 65536)
            if not d:
                break
            s.sendall(d)
    except OSError:
        pass
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
threading.Thread(target=pump_in, daemon=True).start()
while True:
    try:
        d = s.recv(65536)
    except OSError:
        break
    if not d:
        break
    while d:
        n = os.write(1, d)
        d = d[n:]
os._exit(0)
"#;

#[derive(Clone, Debug)]
enum HookMode {
    /// Checks the ref, applies, succeeds.
    Apply,
    /// Succeeds without applying: receive-pack must apply.
    NoApply,
    Fail(String),
    /// Moves the ref to this commit behind the push's back, then applies.
    Race(Oid),
}

#[derive(Clone, Debug)]
struct HookCall {
    refname: String,
    old: Oid,
    new: Oid,
    options: Vec<String>,
}

struct TestHook {
    mode: Mutex<HookMode>,
    delay: Mutex<Duration>,
    calls: Mutex<Vec<HookCall>>,
}

impl PushHook for TestHook {
    fn deploy<'a>(
        &'a self,
        push: &'a DeployPush,
        progress: Progress,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(HookCall {
                refname: push.refname.clone(),
                old: push.old,
                new: push.new,
                options: push.push_options.clone(),
            });
            progress.stage(format!(
                "Building {} {}",
                push.app,
                &push.new.to_string()[..7]
            ));
            let delay = *self.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            progress.detail("Step 1/1 : FROM scratch");
            let mode = self.mode.lock().unwrap().clone();
            match mode {
                HookMode::Apply => {
                    if !push.ref_unchanged()? {
                        return Err(MOVED_WHILE_WAITING.into());
                    }
                    push.apply()?;
                    progress.stage(format!("Deployed {}", push.app));
                    Ok(())
                }
                HookMode::NoApply => Ok(()),
                HookMode::Fail(reason) => Err(reason),
                HookMode::Race(oid) => {
                    let repo = git2::Repository::open_bare(push.repo()).unwrap();
                    repo.reference(&push.refname, oid, true, "race").unwrap();
                    push.apply()
                }
            }
        })
    }
}

type BeforeCommands = Box<dyn FnOnce() + Send>;

struct State {
    repos: PathBuf,
    deploy_branch: Mutex<Option<String>>,
    limits: Mutex<ReceiveLimits>,
    hook: TestHook,
    /// Runs on the server after the advertisement, before the commands.
    before_commands: Mutex<Option<BeforeCommands>>,
    /// Everything the last receive-pack wrote.
    output: Arc<Mutex<Vec<u8>>>,
}

struct T {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    repo: PathBuf,
    work: PathBuf,
    url: String,
    ssh: String,
    state: Arc<State>,
    outcomes: tokio::sync::Mutex<mpsc::UnboundedReceiver<Result<ReceiveOutcome, String>>>,
}

/// A reader that runs a closure on its first read (after the server wrote
/// its advertisement): a way to move a ref "concurrently".
struct OnFirstRead<R> {
    inner: R,
    f: Option<BeforeCommands>,
}

impl<R: AsyncRead + Unpin> AsyncRead for OnFirstRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(f) = self.f.take() {
            f();
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// A writer that keeps a copy of everything written.
struct Tee<W> {
    inner: W,
    log: Arc<Mutex<Vec<u8>>>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Tee<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.log.lock().unwrap().extend_from_slice(&buf[..*n]);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    tx: mpsc::UnboundedSender<Result<ReceiveOutcome, String>>,
) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let state = state.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut first = Vec::new();
            loop {
                let mut b = [0u8; 1];
                if sock.read_exact(&mut b).await.is_err() {
                    return;
                }
                if b[0] == b'\n' {
                    break;
                }
                first.push(b[0]);
            }
            let first = String::from_utf8(first).unwrap();
            let (proto, cmd) = first.split_once('\t').unwrap();
            let proto = (proto != "-").then_some(proto);
            let (rd, wr) = sock.into_split();
            let mut wr = Tee {
                inner: wr,
                log: state.output.clone(),
            };
            match parse_exec(cmd) {
                Ok(Some(GitService::ReceivePack { app })) => {
                    let repo = repo_path(&state.repos, &app);
                    if !repo.exists() {
                        let msg = format!(
                            "app '{app}' does not exist; create it with: ssh -p 2222 git@HOST apps:create {app}"
                        );
                        wr.write_all(&err_response(&msg)).await.unwrap();
                        return;
                    }
                    state.output.lock().unwrap().clear();
                    let req = ReceiveRequest {
                        app,
                        repo,
                        deploy_branch: state.deploy_branch.lock().unwrap().clone(),
                        limits: state.limits.lock().unwrap().clone(),
                    };
                    let rd = OnFirstRead {
                        inner: rd,
                        f: state.before_commands.lock().unwrap().take(),
                    };
                    let r = receive_pack(req, rd, &mut wr, &state.hook).await;
                    if let Ok(o) = &r {
                        if let Some(b) = &o.new_deploy_branch {
                            *state.deploy_branch.lock().unwrap() = Some(b.clone());
                        }
                    }
                    let _ = wr.shutdown().await;
                    let _ = tx.send(r.map_err(|e| e.to_string()));
                }
                Ok(Some(GitService::UploadPack { app })) => {
                    let code = upload_pack(&repo_path(&state.repos, &app), proto, rd, &mut wr)
                        .await
                        .unwrap();
                    assert_eq!(code, 0);
                    let _ = wr.shutdown().await;
                }
                Ok(None) => wr
                    .write_all(&err_response("not a git command"))
                    .await
                    .unwrap(),
                Err(e) => wr.write_all(&err_response(&e.to_string())).await.unwrap(),
            }
        });
    }
}

impl T {
    async fn new() -> T {
        // As `rack server` runs receive-pack.
        init_process();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let home = root.join("home");
        let repos = root.join("repos");
        let work = root.join("work");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let repo = repo_path(&repos, "myapp");
        init_bare(&repo).unwrap();
        let relay = root.join("relay.py");
        std::fs::write(&relay, RELAY).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            repos,
            deploy_branch: Mutex::new(None),
            limits: Mutex::new(ReceiveLimits {
                keepalive: Duration::from_millis(200),
                ..Default::default()
            }),
            hook: TestHook {
                mode: Mutex::new(HookMode::Apply),
                delay: Mutex::new(Duration::ZERO),
                calls: Mutex::new(vec![]),
            },
            before_commands: Mutex::new(None),
            output: Arc::new(Mutex::new(vec![])),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(serve(state.clone(), listener, tx));
        let t = T {
            _tmp: tmp,
            home,
            repo,
            url: "ssh://git@rack.test/myapp.git".into(),
            ssh: format!("python3 {} {port}", relay.display()),
            root,
            work,
            state,
            outcomes: tokio::sync::Mutex::new(rx),
        };
        t.git_ok(&t.work, &["init", "-q", "-b", "main"]).await;
        t
    }

    async fn git_in(&self, dir: &Path, args: &[&str]) -> Output {
        tokio::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .env("GIT_SSH_COMMAND", &self.ssh)
            .env("GIT_SSH_VARIANT", "ssh")
            .kill_on_drop(true)
            .output()
            .await
            .unwrap()
    }

    async fn git_ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.git_in(dir, args).await;
        assert!(
            out.status.success(),
            "git {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    async fn commit(&self, dir: &Path, file: &str, content: &[u8]) -> Oid {
        std::fs::write(dir.join(file), content).unwrap();
        self.git_ok(dir, &["add", "-A"]).await;
        self.git_ok(dir, &["commit", "-q", "-m", &format!("change {file}")])
            .await;
        Oid::from_str(&self.git_ok(dir, &["rev-parse", "HEAD"]).await).unwrap()
    }

    /// `git push URL ARGS...` from the work dir; returns (success, stderr).
    async fn push(&self, args: &[&str]) -> (bool, String) {
        self.push_from(&self.work, args).await
    }

    async fn push_from(&self, dir: &Path, args: &[&str]) -> (bool, String) {
        let mut a = vec!["push", "--porcelain"];
        let mut refs = vec![];
        let mut it = args.iter();
        while let Some(&arg) = it.next() {
            if arg == "-o" {
                a.push(arg);
                a.push(it.next().unwrap());
            } else if arg.starts_with('-') {
                a.push(arg);
            } else {
                refs.push(arg);
            }
        }
        a.push(&self.url);
        a.extend(refs);
        let out = self.git_in(dir, &a).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    async fn outcome(&self) -> ReceiveOutcome {
        let r = tokio::time::timeout(Duration::from_secs(30), self.outcomes.lock().await.recv())
            .await
            .expect("an outcome")
            .expect("server alive");
        r.expect("receive_pack returned Ok")
    }

    /// Pushes `args`, which must be refused with `says` in the output;
    /// the outcome.
    async fn push_refused(&self, args: &[&str], says: &str) -> ReceiveOutcome {
        let (ok, text) = self.push(args).await;
        assert!(!ok, "{text}");
        assert!(text.contains(says), "{text}");
        self.outcome().await
    }

    /// Pushes HEAD of `dir` to `main`, which must be accepted and end at
    /// `commit` with the repo still consistent; the outcome.
    async fn push_head_to_main(&self, dir: &Path, commit: Oid) -> ReceiveOutcome {
        let (ok, text) = self.push_from(dir, &["HEAD:main"]).await;
        assert!(ok, "{text}");
        let o = self.outcome().await;
        assert_eq!(self.server_ref("refs/heads/main"), Some(commit));
        self.fsck().await;
        o
    }

    /// A new `T` whose first commit (`a.txt`) is pushed to `main`.
    async fn pushed_once() -> (T, Oid) {
        let t = T::new().await;
        let c1 = t.commit(&t.work, "a.txt", b"one\n").await;
        assert!(t.push(&["main"]).await.0);
        t.outcome().await;
        (t, c1)
    }

    /// `git clone --depth 1 URL DIR`.
    async fn shallow_clone(&self, url: &str, dir: &Path) {
        self.git_ok(
            &self.root,
            &["clone", "-q", "--depth", "1", url, dir.to_str().unwrap()],
        )
        .await;
    }

    /// `git pack-objects --stdout ARGS` of `tip` in the work tree.
    async fn pack_objects(&self, args: &[&str], tip: Oid) -> Vec<u8> {
        let mut child = tokio::process::Command::new("git")
            .args(["pack-objects", "--stdout", "-q"])
            .args(args)
            .current_dir(&self.work)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{tip}\n").as_bytes())
            .await
            .unwrap();
        child.wait_with_output().await.unwrap().stdout
    }

    /// Serves a hand-made push that creates `main` at `new` with `pack`
    /// (client capabilities `caps`), storing only; the outcome and all
    /// that receive-pack wrote.
    async fn create_main_raw(
        &self,
        new: Oid,
        caps: &str,
        pack: &[u8],
        limits: ReceiveLimits,
    ) -> (ReceiveOutcome, String) {
        let mut input = pktline::encode(
            format!("{} {new} refs/heads/main\0{caps}\n", Oid::ZERO_SHA1).as_bytes(),
        );
        input.extend_from_slice(pktline::FLUSH);
        input.extend_from_slice(pack);
        let mut output = Vec::new();
        let req = ReceiveRequest {
            app: "myapp".into(),
            repo: self.repo.clone(),
            deploy_branch: None,
            limits,
        };
        let o = receive_pack(req, &input[..], &mut output, &receive::StoreOnly)
            .await
            .unwrap();
        (o, String::from_utf8_lossy(&output).into_owned())
    }

    fn server_ref(&self, name: &str) -> Option<Oid> {
        let repo = git2::Repository::open_bare(&self.repo).unwrap();
        let r = repo.find_reference(name).ok()?;
        r.target()
    }

    fn head(&self) -> String {
        let repo = git2::Repository::open_bare(&self.repo).unwrap();
        let head = repo.find_reference("HEAD").unwrap();
        head.symbolic_target().unwrap().unwrap().to_string()
    }

    fn packs(&self) -> usize {
        std::fs::read_dir(self.repo.join("objects/pack"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".pack")
            })
            .count()
    }

    fn has_object(&self, oid: Oid) -> bool {
        git2::Repository::open_bare(&self.repo)
            .unwrap()
            .odb()
            .unwrap()
            .exists(oid)
    }

    fn calls(&self) -> Vec<HookCall> {
        self.state.hook.calls.lock().unwrap().clone()
    }

    fn set_mode(&self, m: HookMode) {
        *self.state.hook.mode.lock().unwrap() = m;
    }

    /// `git fsck --strict` is clean and no quarantine is left behind.
    async fn fsck(&self) {
        let repo = self.repo.to_str().unwrap().to_string();
        self.git_ok(
            &self.root,
            &["--git-dir", &repo, "fsck", "--strict", "--no-progress"],
        )
        .await;
        let left: Vec<_> = std::fs::read_dir(self.repo.join("objects"))
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(receive::QUARANTINE_PREFIX)
            })
            .collect();
        assert!(left.is_empty(), "quarantine left: {left:?}");
    }
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_push_incremental_push_and_progress() {
    let t = T::new().await;
    *t.state.hook.delay.lock().unwrap() = Duration::from_millis(700);
    let c1 = t.commit(&t.work, "a.txt", b"hello\n").await;
    let (ok, text) = t.push(&["main"]).await;
    assert!(ok, "{text}");
    assert!(text.contains("remote: -----> Building myapp"), "{text}");
    assert!(
        text.contains("remote:        Step 1/1 : FROM scratch"),
        "{text}"
    );
    assert!(text.contains("remote: -----> Deployed myapp"), "{text}");
    let o = t.outcome().await;
    assert_eq!(o.new_deploy_branch.as_deref(), Some("main"));
    assert_eq!(o.refs.len(), 1);
    assert_eq!(o.refs[0].result, Ok(()));
    assert_eq!(t.server_ref("refs/heads/main"), Some(c1));
    assert_eq!(t.head(), "refs/heads/main");
    let calls = t.calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].old.is_zero());
    assert_eq!(calls[0].new, c1);
    // The hook slept 700 ms with a 200 ms keepalive: empty band-1 packets went out.
    let out = t.state.output.lock().unwrap().clone();
    assert!(
        out.windows(5).filter(|w| *w == pktline::KEEPALIVE).count() >= 2,
        "no keepalives"
    );
    t.fsck().await;

    // Incremental push: a thin pack against what the server has.
    *t.state.hook.delay.lock().unwrap() = Duration::ZERO;
    let big = random_bytes(50_000, 1);
    t.commit(&t.work, "big.bin", &big).await;
    let mut big2 = big.clone();
    big2[100] ^= 1;
    let c3 = t.commit(&t.work, "big.bin", &big2).await;
    let (ok, text) = t.push(&["main"]).await;
    assert!(ok, "{text}");
    let o = t.outcome().await;
    assert_eq!(o.new_deploy_branch, None, "already fixed");
    assert_eq!(t.server_ref("refs/heads/main"), Some(c3));
    assert_eq!(t.calls()[1].old, c1);
    t.fsck().await;

    // Nothing to push: no commands, no outcome refs.
    let (ok, text) = t.push(&["main"]).await;
    assert!(ok, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_tags_deletes() {
    let (t, c1) = T::pushed_once().await;
    let packs = t.packs();

    // A new branch at a commit the server has: an empty pack.
    let (ok, text) = t.push(&["main:feature"]).await;
    assert!(ok, "{text}");
    t.outcome().await;
    assert_eq!(t.server_ref("refs/heads/feature"), Some(c1));
    assert_eq!(t.packs(), packs, "an empty pack adds nothing");
    assert_eq!(t.calls().len(), 1, "other branches do not deploy");

    // Tags, lightweight and annotated, and several refs at once.
    let c2 = t.commit(&t.work, "b.txt", b"two\n").await;
    t.git_ok(&t.work, &["tag", "light"]).await;
    t.git_ok(&t.work, &["tag", "-a", "-m", "release 1", "v1"])
        .await;
    let tag_oid = Oid::from_str(&t.git_ok(&t.work, &["rev-parse", "v1"]).await).unwrap();
    let (ok, text) = t.push(&["main:b1", "main:b2", "light", "v1"]).await;
    assert!(ok, "{text}");
    let o = t.outcome().await;
    assert_eq!(o.refs.len(), 4);
    assert!(o.refs.iter().all(|r| r.result.is_ok()), "{o:?}");
    assert_eq!(t.server_ref("refs/heads/b1"), Some(c2));
    assert_eq!(t.server_ref("refs/tags/light"), Some(c2));
    assert_eq!(t.server_ref("refs/tags/v1"), Some(tag_oid));
    assert_eq!(t.server_ref("refs/heads/main"), Some(c1));
    t.fsck().await;

    // An annotated tag pushed to a branch is refused, as git does; its
    // commit is fine.
    t.push_refused(&["v1:refs/heads/main"], receive::NOT_A_COMMIT)
        .await;
    assert_eq!(t.server_ref("refs/heads/main"), Some(c1));
    let (ok, text) = t.push(&["v1^{commit}:refs/heads/main"]).await;
    assert!(ok, "{text}");
    t.outcome().await;
    let last = t.calls().last().unwrap().clone();
    assert_eq!(last.new, c2);
    assert_eq!(t.server_ref("refs/heads/main"), Some(c2));

    // Delete a branch.
    let (ok, text) = t.push(&[":feature"]).await;
    assert!(ok, "{text}");
    t.outcome().await;
    assert_eq!(t.server_ref("refs/heads/feature"), None);

    // Deleting the deploy branch is refused.
    let o = t
        .push_refused(&[":main"], "cannot delete the deploy branch")
        .await;
    assert_eq!(o.refs[0].result, Err(receive::DELETE_DEPLOY.to_string()));
    assert_eq!(t.server_ref("refs/heads/main"), Some(c2));
    t.fsck().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_push_and_master_first() {
    let t = T::new().await;
    t.git_ok(&t.work, &["checkout", "-q", "-b", "master"]).await;
    t.commit(&t.work, "a.txt", b"one\n").await;
    let c2 = t.commit(&t.work, "a.txt", b"two\n").await;
    assert!(t.push(&["master"]).await.0);
    let o = t.outcome().await;
    assert_eq!(o.new_deploy_branch.as_deref(), Some("master"));
    assert_eq!(t.head(), "refs/heads/master");

    // main pushed later is just a branch now.
    assert!(t.push(&["master:main"]).await.0);
    t.outcome().await;
    assert_eq!(t.calls().len(), 1);

    // Rewrite history and force push: non-fast-forward is accepted.
    t.git_ok(&t.work, &["reset", "-q", "--hard", "HEAD~1"])
        .await;
    let c3 = t.commit(&t.work, "c.txt", b"three\n").await;
    let (ok, text) = t.push(&["master"]).await;
    assert!(!ok, "the client refuses a non-ff push without -f: {text}");
    let (ok, text) = t.push(&["-f", "master"]).await;
    assert!(ok, "{text}");
    t.outcome().await;
    let last = t.calls().last().unwrap().clone();
    assert_eq!((last.old, last.new), (c2, c3));
    assert_eq!(t.server_ref("refs/heads/master"), Some(c3));
    t.fsck().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_deploy_branch_and_options() {
    let t = T::new().await;
    *t.state.deploy_branch.lock().unwrap() = Some("prod".into());
    let c1 = t.commit(&t.work, "a.txt", b"one\n").await;
    assert!(t.push(&["main"]).await.0);
    let o = t.outcome().await;
    assert_eq!(o.new_deploy_branch, None);
    assert!(t.calls().is_empty(), "main is not the deploy branch");

    let (ok, text) = t
        .push(&["-o", "KEY=VAL", "-o", "note=a b", "main:prod"])
        .await;
    assert!(ok, "{text}");
    let o = t.outcome().await;
    assert_eq!(
        o.push_options,
        vec!["KEY=VAL".to_string(), "note=a b".to_string()]
    );
    assert_eq!(t.calls()[0].options, o.push_options);
    assert_eq!(t.calls()[0].refname, "refs/heads/prod");
    assert_eq!(t.head(), "refs/heads/prod");

    // skip-deploy stores the ref without calling the hook.
    let c2 = t.commit(&t.work, "b.txt", b"two\n").await;
    let (ok, text) = t.push(&["-o", "skip-deploy", "main:prod"]).await;
    assert!(ok, "{text}");
    t.outcome().await;
    assert_eq!(t.calls().len(), 1);
    assert_eq!(t.server_ref("refs/heads/prod"), Some(c2));

    // A hook that returns Ok without applying: receive-pack applies.
    t.set_mode(HookMode::NoApply);
    let c3 = t.commit(&t.work, "c.txt", b"three\n").await;
    assert!(t.push(&["main:prod"]).await.0);
    t.outcome().await;
    assert_eq!(t.server_ref("refs/heads/prod"), Some(c3));
    assert_ne!(c1, c3);
    t.fsck().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_failure_and_race() {
    let (t, c1) = T::pushed_once().await;

    t.set_mode(HookMode::Fail("build failed".into()));
    let c2 = t.commit(&t.work, "a.txt", b"two\n").await;
    let out = t.git_in(&t.work, &["push", &t.url, "main"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("! [remote rejected] main -> main (build failed)"),
        "{stderr}"
    );
    assert_eq!(t.outcome().await.refs[0].result, Err("build failed".into()));
    assert_eq!(t.server_ref("refs/heads/main"), Some(c1));
    t.fsck().await;

    // The ref moves while the deploy waits: the push is rejected and the
    // other value kept.
    let c0 = server_commit(&t.repo, c1);
    t.set_mode(HookMode::Race(c0));
    let out = t.git_in(&t.work, &["push", &t.url, "main"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "! [remote rejected] main -> main ({MOVED_WHILE_WAITING})"
        )),
        "{stderr}"
    );
    t.outcome().await;
    assert_eq!(
        t.server_ref("refs/heads/main"),
        Some(c0),
        "the racing value stays"
    );
    assert_ne!(c0, c2);
    t.fsck().await;
}

fn result_of(o: &ReceiveOutcome, refname: &str) -> Result<(), String> {
    o.refs
        .iter()
        .find(|r| r.refname == refname)
        .expect("ref in outcome")
        .result
        .clone()
}

/// A commit made on the server with `base`'s tree and no parent.
fn server_commit(repo: &Path, base: Oid) -> Oid {
    let repo = git2::Repository::open_bare(repo).unwrap();
    let tree = repo.find_commit(base).unwrap().tree().unwrap();
    let sig = git2::Signature::now("x", "x@y").unwrap();
    repo.commit(None, &sig, &sig, "other", &tree, &[]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_push_with_stale_ref() {
    let t = T::new().await;
    let c1 = t.commit(&t.work, "a.txt", b"one\n").await;
    assert!(t.push(&["main", "main:b1"]).await.0);
    t.outcome().await;
    let c0 = server_commit(&t.repo, c1);
    let c2 = t.commit(&t.work, "b.txt", &random_bytes(10_000, 7)).await;
    let packs = t.packs();
    let repo = t.repo.clone();
    *t.state.before_commands.lock().unwrap() = Some(Box::new(move || {
        let r = git2::Repository::open_bare(&repo).unwrap();
        r.reference("refs/heads/b1", c0, true, "concurrent")
            .unwrap();
    }));
    let (ok, text) = t.push(&["--atomic", "main", "main:b1"]).await;
    assert!(!ok, "{text}");
    let o = t.outcome().await;
    assert_eq!(
        result_of(&o, "refs/heads/main"),
        Err(receive::ATOMIC_FAILED.into()),
        "{o:?}"
    );
    assert_eq!(
        result_of(&o, "refs/heads/b1"),
        Err(receive::STALE.into()),
        "{o:?}"
    );
    assert!(text.contains("stale info"), "{text}");
    assert_eq!(t.server_ref("refs/heads/main"), Some(c1));
    assert_eq!(t.server_ref("refs/heads/b1"), Some(c0));
    assert_eq!(t.calls().len(), 1, "no deploy for a refused atomic push");
    assert_eq!(t.packs(), packs, "nothing added");
    assert!(!t.has_object(c2));
    t.fsck().await;

    // Non-atomic, the same race: main goes through, b1 is stale.
    let repo = t.repo.clone();
    *t.state.before_commands.lock().unwrap() = Some(Box::new(move || {
        let r = git2::Repository::open_bare(&repo).unwrap();
        r.reference("refs/heads/b1", c1, true, "concurrent")
            .unwrap();
    }));
    t.git_ok(
        &t.work,
        &["fetch", "-q", &t.url, "+refs/heads/*:refs/remotes/rack/*"],
    )
    .await;
    let (ok, text) = t.push(&["-f", "main", "main:b1"]).await;
    assert!(!ok, "{text}");
    let o = t.outcome().await;
    assert_eq!(result_of(&o, "refs/heads/main"), Ok(()));
    assert_eq!(result_of(&o, "refs/heads/b1"), Err(receive::STALE.into()));
    assert_eq!(t.server_ref("refs/heads/main"), Some(c2));
    t.fsck().await;

    // Atomic and all good.
    let c3 = t.commit(&t.work, "c.txt", b"3").await;
    let (ok, text) = t.push(&["--atomic", "-f", "main", "main:b1"]).await;
    assert!(ok, "{text}");
    t.outcome().await;
    assert_eq!(t.server_ref("refs/heads/main"), Some(c3));
    assert_eq!(t.server_ref("refs/heads/b1"), Some(c3));
    t.fsck().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shallow_pushes() {
    let t = T::new().await;
    // A full history on a source repo, cloned at depth 1 (over file://).
    let src = t.root.join("src");
    std::fs::create_dir(&src).unwrap();
    t.git_ok(&src, &["init", "-q", "-b", "main"]).await;
    for i in 0..4 {
        t.commit(&src, "f.txt", format!("{i}\n").as_bytes()).await;
    }
    let src_url = format!("file://{}", src.display());
    let shallow = t.root.join("shallow");
    t.shallow_clone(&src_url, &shallow).await;
    let c = t.commit(&shallow, "g.txt", b"ci\n").await;
    // First push into an empty repo, HEAD:main, as CI does.
    let o = t.push_head_to_main(&shallow, c).await;
    assert_eq!(o.new_deploy_branch.as_deref(), Some("main"));
    let recorded = std::fs::read_to_string(t.repo.join("shallow")).unwrap();
    assert_eq!(recorded.lines().count(), 1, "{recorded}");

    // Another shallow push on top.
    let c2 = t.commit(&shallow, "g.txt", b"ci 2\n").await;
    t.push_head_to_main(&shallow, c2).await;

    // A depth-1 clone from the rack itself (upload-pack, protocol v2), and a
    // push from it.
    let clone = t.root.join("clone");
    t.shallow_clone(&t.url, &clone).await;
    let c3 = t.commit(&clone, "h.txt", b"x\n").await;
    t.push_head_to_main(&clone, c3).await;

    // A full push of the whole history completes the repo: fsck still fine.
    t.git_ok(
        &src,
        &[
            "pull",
            "-q",
            "--no-rebase",
            "--allow-unrelated-histories",
            &t.url,
            "main",
        ],
    )
    .await;
    let (ok, text) = t.push_from(&src, &["main:full"]).await;
    assert!(ok, "{text}");
    t.outcome().await;
    t.fsck().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_objects_add_nothing() {
    let (t, c1) = T::pushed_once().await;
    let packs = t.packs();

    // An object over the limit.
    t.state.limits.lock().unwrap().max_object_bytes = 64 * 1024;
    let c2 = t
        .commit(&t.work, "big.bin", &random_bytes(200_000, 3))
        .await;
    let o = t
        .push_refused(&["main"], "exceeds the limit of 64.0 KiB")
        .await;
    assert_eq!(o.refs[0].result, Err(receive::UNPACKER_ERROR.into()));
    assert_eq!(t.server_ref("refs/heads/main"), Some(c1));
    assert_eq!(t.packs(), packs);
    assert!(!t.has_object(c2));
    assert_eq!(t.calls().len(), 1);
    t.fsck().await;
    t.git_ok(&t.work, &["reset", "-q", "--hard", "HEAD~1"])
        .await;
    t.state.limits.lock().unwrap().max_object_bytes = 100 << 20;

    // A tree with a `.GIT` entry.
    let blob = t.git_ok(&t.work, &["hash-object", "-w", "a.txt"]).await;
    let tree = {
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf '100644 blob {blob}\\t.GIT\\n' | git mktree"
            ))
            .current_dir(&t.work)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let bad = t
        .git_ok(&t.work, &["commit-tree", &tree, "-p", "HEAD", "-m", "bad"])
        .await;
    t.push_refused(&[&format!("{bad}:refs/heads/main")], "entry named '.GIT'")
        .await;
    assert_eq!(t.server_ref("refs/heads/main"), Some(c1));
    assert!(!t.has_object(Oid::from_str(&bad).unwrap()));
    assert_eq!(t.packs(), packs);
    t.fsck().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_missing_objects_is_refused() {
    let t = T::new().await;
    let c1 = t.commit(&t.work, "a.txt", b"one\n").await;
    // A pack of the commit alone: its tree and blob are missing.
    let pack = t.pack_objects(&[], c1).await;
    let (o, text) = t
        .create_main_raw(
            c1,
            "report-status side-band-64k",
            &pack,
            ReceiveLimits::default(),
        )
        .await;
    assert_eq!(o.refs[0].result, Err(receive::UNPACKER_ERROR.into()));
    assert!(text.contains("missing necessary objects"), "{text}");
    assert_eq!(t.server_ref("refs/heads/main"), None);
    assert_eq!(t.packs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_corrupt_packs() {
    let t = T::new().await;
    let c1 = t.commit(&t.work, "a.txt", &random_bytes(20_000, 9)).await;
    let pack = t.pack_objects(&["--revs"], c1).await;
    let small = ReceiveLimits {
        max_pack_bytes: 1000,
        ..Default::default()
    };
    for (what, data, limits) in [
        ("over the pack limit", pack.clone(), small),
        (
            "truncated",
            pack[..pack.len() - 40].to_vec(),
            ReceiveLimits::default(),
        ),
        (
            "corrupt",
            {
                let mut p = pack.clone();
                let mid = p.len() / 2;
                p[mid] ^= 0xff;
                p
            },
            ReceiveLimits::default(),
        ),
        (
            "bad trailer",
            {
                let mut p = pack.clone();
                let n = p.len();
                p[n - 1] ^= 0xff;
                p
            },
            ReceiveLimits::default(),
        ),
    ] {
        let (o, text) = t
            .create_main_raw(c1, "report-status side-band-64k", &data, limits)
            .await;
        assert_eq!(
            o.refs[0].result,
            Err(receive::UNPACKER_ERROR.into()),
            "{what}"
        );
        assert!(text.contains("unpack "), "{what}: {text}");
        assert!(!text.contains("unpack ok"), "{what}: {text}");
        assert!(
            text.contains("ng refs/heads/main unpacker error"),
            "{what}: {text}"
        );
        if what == "over the pack limit" {
            assert!(
                text.contains("the pack exceeds the limit of 1000 bytes per push"),
                "{text}"
            );
        }
        assert_eq!(t.server_ref("refs/heads/main"), None);
        assert_eq!(t.packs(), 0, "{what}");
        t.fsck().await;
    }

    // The whole pack goes through.
    let (_, text) = t
        .create_main_raw(c1, "report-status", &pack, ReceiveLimits::default())
        .await;
    assert!(
        text.contains("000eunpack ok\n0017ok refs/heads/main\n0000"),
        "{text}"
    );
    assert_eq!(t.server_ref("refs/heads/main"), Some(c1));
    t.fsck().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_clone_ls_remote_and_errors() {
    let (t, c1) = T::pushed_once().await;

    for proto in ["2", "0"] {
        let dir = t.root.join(format!("clone-v{proto}"));
        let v = format!("protocol.version={proto}");
        t.git_ok(
            &t.root,
            &["-c", &v, "clone", "-q", &t.url, dir.to_str().unwrap()],
        )
        .await;
        assert_eq!(t.git_ok(&dir, &["rev-parse", "HEAD"]).await, c1.to_string());
        let ls = t.git_ok(&t.root, &["-c", &v, "ls-remote", &t.url]).await;
        assert!(ls.contains(&format!("{c1}\trefs/heads/main")), "{ls}");
        t.git_ok(&dir, &["-c", &v, "fetch", "-q", "origin"]).await;
    }

    // Unknown app and hostile paths: the client shows our message.
    let out = t
        .git_in(&t.work, &["push", "ssh://git@rack.test/nope.git", "main"])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("remote error: app 'nope' does not exist; create it with: ssh -p 2222 git@HOST apps:create nope"),
        "{stderr}"
    );
    let out = t
        .git_in(&t.work, &["ls-remote", "ssh://git@rack.test/../etc"])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("invalid repository path"), "{stderr}");
}

#[tokio::test]
async fn receive_pack_without_repo_sends_err() {
    let dir = tempfile::tempdir().unwrap();
    let req = ReceiveRequest {
        app: "ghost".into(),
        repo: dir.path().join("ghost.git"),
        deploy_branch: None,
        limits: ReceiveLimits::default(),
    };
    let mut out = Vec::new();
    let r = receive_pack(req, &b""[..], &mut out, &receive::StoreOnly).await;
    assert!(matches!(r, Err(GitError::NoRepo(_))));
    assert!(
        String::from_utf8_lossy(&out).starts_with("0026ERR app 'ghost' has no repository"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
}
