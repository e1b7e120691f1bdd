use super::*;

fn rp(app: &str) -> Option<GitService> {
    Some(GitService::ReceivePack { app: app.into() })
}

#[test]
fn exec_strings_accepted() {
    let table: &[(&str, Option<GitService>)] = &[
        ("git-receive-pack '/myapp.git'", rp("myapp")),
        ("git-receive-pack 'myapp.git'", rp("myapp")),
        ("git-receive-pack '/myapp'", rp("myapp")),
        ("git-receive-pack 'myapp'", rp("myapp")),
        ("git-receive-pack myapp", rp("myapp")),
        ("git-receive-pack /myapp.git", rp("myapp")),
        ("git receive-pack 'my-app2'", rp("my-app2")),
        ("git-receive-pack  'a' ", rp("a")),
        (
            "git-upload-pack '/myapp.git'",
            Some(GitService::UploadPack {
                app: "myapp".into(),
            }),
        ),
        (
            "git upload-pack myapp",
            Some(GitService::UploadPack {
                app: "myapp".into(),
            }),
        ),
        ("apps:create x", None),
        ("help", None),
        ("git-receive-packx 'a'", None),
        ("gitx", None),
        ("", None),
        ("config:set app GIT=1", None),
    ];
    for (cmd, want) in table {
        assert_eq!(&parse_exec(cmd).unwrap(), want, "{cmd}");
    }
}

#[test]
fn exec_strings_refused() {
    for cmd in [
        "git-receive-pack",
        "git-receive-pack ''",
        "git-receive-pack '/'",
        "git-receive-pack '.git'",
        "git-receive-pack '../x'",
        "git-receive-pack '/../x.git'",
        "git-receive-pack 'a/b'",
        "git-receive-pack '/srv/a.git'",
        "git-receive-pack '-x'",
        "git-receive-pack '--upload-pack=touch /tmp/y'",
        "git-upload-pack '--upload-pack=touch /tmp/y'",
        "git-receive-pack 'MyApp'",
        "git-receive-pack '//app'",
        "git-receive-pack 'app.git.git'",
        "git-receive-pack 'app' 'other'",
        "git-receive-pack 'app' ; touch /tmp/y",
        "git-receive-pack 'app;id'",
        "git-receive-pack $(id)",
        "git-receive-pack app;id",
        "git-receive-pack 'app",
        "git-receive-pack 'a'\\''b'",
        "git-receive-pack '~/app'",
        "git-receive-pack 'app\n'",
        "git-receive-pack 'app\0'",
        "git-upload-pack --strict 'app'",
        "git-upload-archive 'app'",
        "git upload-archive 'app'",
        "git-receive-pack 'ａpp'",
    ] {
        match parse_exec(cmd) {
            Err(GitError::BadRequest(msg)) => assert!(!msg.is_empty()),
            other => panic!("{cmd:?} gave {other:?}"),
        }
    }
}

#[test]
fn error_messages_are_clear() {
    let Err(e) = parse_exec("git-receive-pack '../x'") else {
        panic!()
    };
    assert!(
        e.to_string().contains("invalid repository path '../x'"),
        "{e}"
    );
    assert!(e.to_string().contains("/APP.git"), "{e}");
}

#[test]
fn sq_dequote() {
    assert_eq!(parse_one_arg("'abc'").unwrap(), "abc");
    assert_eq!(parse_one_arg("'a'\\''b'").unwrap(), "a'b");
    assert_eq!(parse_one_arg("'a'\\!'b'").unwrap(), "a!b");
    assert_eq!(parse_one_arg("'a b'").unwrap(), "a b");
    assert!(parse_one_arg("'a' 'b'").is_err());
    assert!(parse_one_arg("'a'b").is_err());
}

#[test]
fn repo_helpers() {
    let dir = tempfile::tempdir().unwrap();
    let path = repo_path(dir.path(), "myapp");
    assert_eq!(path, dir.path().join("myapp.git"));
    init_bare(&path).unwrap();
    init_bare(&path).unwrap(); // idempotent
    let repo = open(&path).unwrap();
    assert!(repo.is_bare());
    assert_eq!(
        repo.find_reference("HEAD")
            .unwrap()
            .symbolic_target()
            .unwrap(),
        Some("refs/heads/main")
    );
    set_head(&path, "master").unwrap();
    let repo = open(&path).unwrap();
    assert_eq!(
        repo.find_reference("HEAD")
            .unwrap()
            .symbolic_target()
            .unwrap(),
        Some("refs/heads/master")
    );
    assert!(set_head(&path, "a..b").is_err());

    std::fs::create_dir(path.join("objects/incoming-xyz")).unwrap();
    std::fs::write(path.join("refs/heads/main.lock"), "").unwrap();
    let removed = recover_repo(&path).unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");

    // resolve_commit: branches, tags (peeled), ids.
    let repo = open(&path).unwrap();
    let sig = git2::Signature::now("t", "t@t").unwrap();
    let tree = repo.treebuilder(None).unwrap().write().unwrap();
    let tree = repo.find_tree(tree).unwrap();
    let c = repo
        .commit(Some("refs/heads/master"), &sig, &sig, "m", &tree, &[])
        .unwrap();
    let obj = repo.find_object(c, None).unwrap();
    repo.tag("v1", &obj, &sig, "tag", false).unwrap();
    for rev in ["master", "refs/heads/master", "v1", "HEAD", &c.to_string()] {
        assert_eq!(resolve_commit(&path, rev).unwrap(), c, "{rev}");
    }
    for rev in ["", "nope", "-x", "HEAD@{1}", "HEAD:file"] {
        assert!(resolve_commit(&path, rev).is_err(), "{rev}");
    }

    remove_repo(&path).unwrap();
    assert!(!path.exists());
    remove_repo(&path).unwrap();
    assert!(matches!(open(&path), Err(GitError::NoRepo(_))));
    assert!(remove_repo(dir.path()).is_err());
}
