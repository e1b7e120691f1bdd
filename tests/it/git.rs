//! `git push`, clone and fetch over the real SSH server with the real git.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Key, Out, Rack};

pub struct Work {
    pub dir: PathBuf,
    ssh: String,
}

/// A client checkout that talks to `rack` with `key`.
pub fn work(rack: &Rack, key: &Key, name: &str) -> Work {
    let dir = rack.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let w = Work {
        dir,
        ssh: rack.git_ssh_command(key),
    };
    w.git(&["init", "-q", "-b", "main"]).ok();
    w.git(&["config", "user.email", "t@example.org"]).ok();
    w.git(&["config", "user.name", "t"]).ok();
    w
}

/// A checkout whose pushes only store refs (`-o skip-deploy` by default):
/// these tests are about the git transport, not deploys.
fn transport_work(rack: &Rack, key: &Key, name: &str) -> Work {
    let w = work(rack, key, name);
    w.git(&["config", "push.pushOption", "skip-deploy"]).ok();
    w
}

impl Work {
    pub fn git(&self, args: &[&str]) -> Out {
        Command::new("git")
            .args(args)
            .current_dir(&self.dir)
            .env("GIT_SSH_COMMAND", &self.ssh)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .unwrap()
            .into()
    }
    pub fn commit(&self, file: &str, content: &str) -> String {
        let p = self.dir.join(file);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, content).unwrap();
        self.git(&["add", "-A"]).ok();
        self.git(&["commit", "-q", "-m", &format!("change {file}")])
            .ok();
        self.head()
    }
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
            .ok()
            .stdout
            .trim()
            .to_string()
    }
}

pub fn server_ref(rack: &Rack, app: &str, refname: &str) -> Option<String> {
    let repo =
        git2::Repository::open_bare(rack.data_dir().join(format!("repos/{app}.git"))).unwrap();
    repo.refname_to_id(refname).ok().map(|o| o.to_string())
}

pub fn fsck(rack: &Rack, app: &str) {
    let repo: PathBuf = rack.data_dir().join(format!("repos/{app}.git"));
    let out: Out = Command::new("git")
        .args(["fsck", "--strict"])
        .current_dir(&repo)
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "git fsck failed: {}", out.stderr);
}

fn count_objects(path: &Path) -> usize {
    walk(&path.join("objects"))
}

fn walk(p: &Path) -> usize {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p)
                } else {
                    1
                }
            })
            .sum()
        })
        .unwrap_or(0)
}

#[test]
fn push_clone_fetch_and_deploy_branch() {
    let rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create web").ok();
    let w = transport_work(&rack, a, "w1");
    w.commit("README", "one\n");
    let url = rack.git_url("web");
    w.git(&["remote", "add", "rack", &url]).ok();
    let out = w.git(&[
        "push",
        "rack",
        "main",
        "-o",
        "note=first",
        "-o",
        "skip-deploy",
    ]);
    out.ok();
    assert!(
        !out.stderr.contains("Building"),
        "skip-deploy stores only: {}",
        out.stderr
    );
    assert_eq!(server_ref(&rack, "web", "refs/heads/main"), Some(w.head()));
    let info = rack.ssh(a, "apps:info web --json").ok().json();
    assert_eq!(
        info["deploy_branch"], "main",
        "the first push of main fixes the deploy branch"
    );
    fsck(&rack, "web");

    // Incremental push, a second branch, tags.
    let second = w.commit("src/app.sh", "echo hi\n");
    w.git(&["push", "rack", "main"]).ok();
    w.git(&["push", "rack", "main:feature"]).ok();
    w.git(&["tag", "-a", "v1", "-m", "v1"]).ok();
    w.git(&["push", "rack", "v1"]).ok();
    assert_eq!(
        server_ref(&rack, "web", "refs/heads/feature"),
        Some(second.clone())
    );
    let up = w.git(&["push", "rack", "main"]);
    assert!(
        up.stderr.contains("Everything up-to-date"),
        "exit {}: {}\nserver log:\n{}",
        up.code,
        up.stderr,
        rack.logs()
    );
    // Deleting the deploy branch is refused; other branches delete fine.
    let del = w.git(&["push", "rack", ":main"]);
    assert_ne!(del.code, 0);
    assert!(
        del.stderr.contains("cannot delete the deploy branch"),
        "{}",
        del.stderr
    );
    w.git(&["push", "rack", ":feature"]).ok();
    assert_eq!(server_ref(&rack, "web", "refs/heads/feature"), None);
    fsck(&rack, "web");

    // Clone and fetch back what was pushed.
    let clone_dir = rack.dir.path().join("clone");
    let out: Out = Command::new("git")
        .args(["clone", "-q", &url])
        .arg(&clone_dir)
        .env("GIT_SSH_COMMAND", rack.git_ssh_command(a))
        .output()
        .unwrap()
        .into();
    out.ok();
    assert_eq!(
        std::fs::read_to_string(clone_dir.join("src/app.sh")).unwrap(),
        "echo hi\n"
    );
    let ls = w.git(&["ls-remote", "rack"]).ok().stdout.clone();
    assert!(ls.contains(&format!("{second}\trefs/heads/main")), "{ls}");
    assert!(ls.contains("refs/tags/v1"), "{ls}");

    // The push's audit event carries its refs and options.
    let events = rack.ssh(a, "events web --json").ok().json();
    assert!(
        events.as_array().unwrap().iter().any(|e| e["action"]
            .as_str()
            .unwrap()
            .contains("-o note=first -o skip-deploy")),
        "{events}"
    );
}

#[test]
fn pushes_are_gated_by_key_and_app() {
    let rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create one").ok();
    rack.ssh(a, "apps:create two").ok();
    let ci = rack.add_key("ci", "--app one");
    let w = transport_work(&rack, &ci, "w");
    w.commit("f", "x");
    w.git(&["push", &rack.git_url("one"), "main"]).ok();
    let out = w.git(&["push", &rack.git_url("two"), "main"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("permission denied"), "{}", out.stderr);
    assert_eq!(server_ref(&rack, "two", "refs/heads/main"), None);
    let out = w.git(&["fetch", &rack.git_url("two")]);
    assert!(out.stderr.contains("permission denied"), "{}", out.stderr);

    let wa = transport_work(&rack, a, "wa");
    wa.commit("f", "y");
    let out = wa.git(&["push", &rack.git_url("ghost"), "main"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("app 'ghost' does not exist; create it with: ssh -p"),
        "{}",
        out.stderr
    );
    for path in ["../x", "-x", "a/b", "UP"] {
        let url = format!("ssh://git@127.0.0.1:{}/{path}", rack.port);
        let out = wa.git(&["push", &url, "main"]);
        assert_ne!(out.code, 0, "{path}");
    }
    // A path that tries to smuggle an option to upload-pack runs nothing.
    let marker = std::env::temp_dir().join(format!("rack-y-{}", std::process::id()));
    let out = rack.ssh(
        a,
        &format!("git-upload-pack '--upload-pack=touch {}'", marker.display()),
    );
    assert_ne!(out.code, 0);
    assert!(!marker.exists());
}

#[test]
fn client_environment_never_reaches_upload_pack() {
    let rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create one").ok();
    let w = transport_work(&rack, a, "w");
    w.commit("f", "x");
    w.git(&["push", &rack.git_url("one"), "main"]).ok();
    let marker = std::env::temp_dir().join(format!("rack-x-{}", std::process::id()));
    let ssh = format!(
        "{} -o SetEnv=\"GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=uploadpack.packObjectsHook GIT_CONFIG_VALUE_0='touch {}'\"",
        rack.git_ssh_command(a),
        marker.display()
    );
    let dest = rack.dir.path().join("c");
    let out: Out = Command::new("git")
        .args(["clone", "-q", &rack.git_url("one")])
        .arg(&dest)
        .env("GIT_SSH_COMMAND", ssh)
        .output()
        .unwrap()
        .into();
    out.ok();
    assert!(dest.join("f").exists());
    assert!(
        !marker.exists(),
        "a client env request reached git upload-pack"
    );
}

#[test]
fn shallow_clone_pushes_and_refused_content() {
    let rack = Rack::start_with("[limits]\nmax_object_bytes = 100000\n");
    let a = &rack.admin;
    rack.ssh(a, "apps:create one").ok();
    rack.ssh(a, "apps:create two").ok();
    let w = transport_work(&rack, a, "w");
    for i in 0..3 {
        w.commit("f", &format!("v{i}\n"));
    }
    // A depth-1 clone of a repo (as CI checkouts are) pushes to another app.
    let src = w.dir.display().to_string();
    let shallow = rack.dir.path().join("shallow");
    let out: Out = Command::new("git")
        .args(["clone", "-q", "--depth", "1", &format!("file://{src}")])
        .arg(&shallow)
        .output()
        .unwrap()
        .into();
    out.ok();
    let s = Work {
        dir: shallow,
        ssh: rack.git_ssh_command(a),
    };
    s.git(&["config", "user.email", "t@example.org"]).ok();
    s.git(&["config", "user.name", "t"]).ok();
    s.git(&["config", "push.pushOption", "skip-deploy"]).ok();
    s.git(&["push", &rack.git_url("two"), "HEAD:main"]).ok();
    s.commit("g", "later\n");
    s.git(&["push", &rack.git_url("two"), "HEAD:main"]).ok();
    assert_eq!(server_ref(&rack, "two", "refs/heads/main"), Some(s.head()));

    // An object over the limit is refused and adds nothing.
    let repo = rack.data_dir().join("repos/one.git");
    let before = count_objects(&repo);
    let big: String = (0..200_000)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    w.commit("big.txt", &big);
    let out = w.git(&["push", &rack.git_url("one"), "main"]);
    assert_ne!(out.code, 0);
    assert_eq!(server_ref(&rack, "one", "refs/heads/main"), None);
    assert_eq!(
        count_objects(&repo),
        before,
        "a refused push must add no objects"
    );
    fsck(&rack, "one");
}
