use super::*;

/// A bare repo with two commits; their ids.
fn repo_with_commits() -> (tempfile::TempDir, git2::Repository, Oid, Oid) {
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init_bare(dir.path()).unwrap();
    let sig = git2::Signature::now("t", "t@localhost").unwrap();
    let tree = repo.treebuilder(None).unwrap().write().unwrap();
    let tree = repo.find_tree(tree).unwrap();
    let a = repo.commit(None, &sig, &sig, "a", &tree, &[]).unwrap();
    let parent = repo.find_commit(a).unwrap();
    let b = repo
        .commit(None, &sig, &sig, "b", &tree, &[&parent])
        .unwrap();
    drop(tree);
    drop(parent);
    (dir, repo, a, b)
}

#[test]
fn cas_creates_moves_and_deletes_only_from_the_expected_value() {
    let (dir, repo, a, b) = repo_with_commits();
    let zero = Oid::ZERO_SHA1;
    let name = "refs/heads/main";
    cas(&repo, name, zero, a, "t").unwrap();
    assert_eq!(ref_value(&repo, name).unwrap(), a);
    // Creating again, or moving from a value it no longer has: stale.
    assert!(matches!(
        cas(&repo, name, zero, b, "t"),
        Err(CasError::Stale)
    ));
    assert!(matches!(cas(&repo, name, b, a, "t"), Err(CasError::Stale)));
    cas_at(dir.path(), name, a, b, "t").unwrap();
    assert_eq!(ref_value(&repo, name).unwrap(), b);
    assert!(matches!(
        cas(&repo, name, a, zero, "t"),
        Err(CasError::Stale)
    ));
    cas(&repo, name, b, zero, "t").unwrap();
    assert_eq!(ref_value(&repo, name).unwrap(), zero);
    // Deleting what is not there, expecting nothing: done.
    cas(&repo, name, zero, zero, "t").unwrap();
}

#[test]
fn apply_atomic_moves_all_or_nothing() {
    let (dir, repo, a, b) = repo_with_commits();
    let zero = Oid::ZERO_SHA1;
    let update = |name: &str, old, new| RefUpdate {
        name: name.into(),
        old,
        new,
    };
    apply_atomic(
        dir.path(),
        &[
            update("refs/heads/x", zero, a),
            update("refs/heads/y", zero, a),
        ],
        "t",
    )
    .unwrap();
    // y is not at b: neither ref moves.
    let r = apply_atomic(
        dir.path(),
        &[update("refs/heads/x", a, b), update("refs/heads/y", b, a)],
        "t",
    );
    assert!(matches!(r, Err(CasError::Stale)), "{r:?}");
    assert_eq!(ref_value(&repo, "refs/heads/x").unwrap(), a);
    assert_eq!(ref_value(&repo, "refs/heads/y").unwrap(), a);
}
