use super::*;

fn ign(text: &str) -> DockerIgnore {
    DockerIgnore::parse(text).expect("valid patterns")
}

#[test]
fn pattern_table() {
    // (pattern, path, matches?) — cases from moby's patternmatcher tests.
    let cases: &[(&str, &str, bool)] = &[
        ("**", "file", true),
        ("**", "file/", true),
        ("**/", "file", true),
        ("**/", "file/", true),
        ("**/**", "file", true),
        ("dir/**", "dir/file", true),
        ("dir/**", "dir/file/", true),
        ("dir/**", "dir/dir2/file", true),
        ("dir/**/", "dir/dir2/file", true),
        ("**/dir", "dir", true),
        ("**/dir", "dir/file", true),
        ("**/dir2/*", "dir/dir2/file", true),
        ("**/dir2/*", "dir/dir2/file/", true),
        ("**/dir2/**", "dir/dir2/dir3/file", true),
        ("**file", "file", true),
        ("**file", "dir/file", true),
        ("**/file", "dir/file", true),
        ("**file", "dir/dir/file", true),
        ("**/file", "dir/dir/file", true),
        ("**/file*", "dir/dir/file", true),
        ("**/file*", "dir/dir/file.txt", true),
        ("**/file*txt", "dir/dir/file.txt", true),
        ("**/file*.txt", "dir/dir/file.txt", true),
        ("**/**/*.txt", "dir/dir/file.txt", true),
        ("**/**/*.txt2", "dir/dir/file.txt", false),
        ("**/*.txt", "file.txt", true),
        ("**/**/*.txt", "file.txt", true),
        ("a**/*.txt", "a/file.txt", true),
        ("a**/*.txt", "a/dir/file.txt", true),
        ("a**/*.txt", "a/dir/dir/file.txt", true),
        ("a/*.txt", "a/dir/file.txt", false),
        ("a/*.txt", "a/file.txt", true),
        ("a/*.txt**", "a/file.txt", true),
        ("a[b-d]e", "ae", false),
        ("a[b-d]e", "ace", true),
        ("a[b-d]e", "aae", false),
        ("a[^b-d]e", "aze", true),
        (".*", ".foo", true),
        (".*", "foo", false),
        ("abc.def", "abcdef", false),
        ("abc.def", "abc.def", true),
        ("abc.def", "abcZdef", false),
        ("abc?def", "abcZdef", true),
        ("abc?def", "abcdef", false),
        ("a\\\\", "a\\", true),
        ("**/foo/bar", "foo/bar", true),
        ("**/foo/bar", "dir/foo/bar", true),
        ("**/foo/bar", "dir/dir2/foo/bar", true),
        ("abc/**", "abc", false),
        ("abc/**", "abc/def", true),
        ("abc/**", "abc/def/ghi", true),
        ("**/.foo", ".foo", true),
        ("**/.foo", "bar.foo", false),
        ("a(b)c/def", "a(b)c/def", true),
        ("a(b)c/def", "a(b)c/xyz", false),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        (
            "dist/*.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        ("*", "a", true),
        ("*", "a/b", true), // via its parent directory `a`
        ("*.go", "main.go", true),
        ("*.go", "pkg/main.go", false),
        ("/node_modules", "node_modules", true),
        ("./a/../b", "b", true),
    ];
    for &(pat, path, want) in cases {
        let m = DockerIgnore::from_patterns(&[pat]).expect(pat);
        // A single pattern: `is_excluded` is moby's MatchesOrParentMatches.
        assert_eq!(
            m.is_excluded(path),
            want,
            "pattern {pat:?} against {path:?}"
        );
    }
}

#[test]
fn parent_directories_and_exceptions() {
    let m = ign("# a comment\n\n  *.log  \nsecrets/\ndocs/**\n!docs/keep.md\ncache\n!cache/keep.txt\n/build\n");
    let table: &[(&str, bool)] = &[
        ("app.log", true),
        ("sub/app.log", false), // `*` does not cross `/`
        ("secrets", true),
        ("secrets/key.txt", true),
        ("secrets/deep/key.txt", true),
        ("docs", false),
        ("docs/internal.md", true),
        ("docs/keep.md", false),
        ("cache", true),
        ("cache/blob", true),
        ("cache/keep.txt", false),
        ("build", true),
        ("build/out.o", true),
        ("src/build", false),
        ("index.html", false),
    ];
    for &(path, want) in table {
        assert_eq!(m.is_excluded(path), want, "{path}");
    }
    assert!(!m.must_descend("secrets"));
    assert!(m.must_descend("cache"));
    assert!(m.must_descend("docs"));
    assert!(!m.must_descend("build"));
}

#[test]
fn last_match_wins() {
    let m = ign("*.md\n!README.md\nREADME.md\n");
    assert!(m.is_excluded("README.md"));
    let m = ign("*.md\nREADME.md\n!README.md\n");
    assert!(!m.is_excluded("README.md"));
    assert!(m.is_excluded("CHANGES.md"));
    // Exclude everything, re-include one tree.
    let m = ign("*\n!src\n");
    assert!(m.is_excluded("Makefile"));
    assert!(!m.is_excluded("src"));
    assert!(!m.is_excluded("src/main.rs"));
    assert!(m.must_descend("src"));
}

#[test]
fn keep_dockerfile() {
    let mut m = ign("*\n");
    assert!(m.is_excluded("Dockerfile"));
    m.keep("Dockerfile");
    m.keep(".dockerignore");
    assert!(!m.is_excluded("Dockerfile"));
    assert!(!m.is_excluded(".dockerignore"));
    assert!(m.is_excluded("other"));
}

#[test]
fn syntax_errors() {
    assert!(DockerIgnore::parse("!\n").is_err());
    assert!(DockerIgnore::parse("a[bc\n").is_err());
    assert!(DockerIgnore::parse("a[z-a]\n").is_err());
}

#[test]
fn clean_paths() {
    assert_eq!(clean("a//b/./c/"), "a/b/c");
    assert_eq!(clean("/a/../b"), "/b");
    assert_eq!(clean("./"), ".");
    assert_eq!(clean("../x"), "../x");
}

#[test]
fn many_wildcards_match_in_linear_time() {
    // A backtracking matcher takes exponential time here (it never ends).
    let pattern = format!("{}b", "*a".repeat(30));
    let ig = ign(&pattern);
    let name = "a".repeat(20_000);
    assert!(!ig.is_excluded(&name));
    assert!(ig.is_excluded(&format!("{name}b")));
    let deep = format!("{}/x", [name.as_str(); 4].join("/"));
    assert!(!ig.is_excluded(&deep));
    // `**/` and `*` together, across segments.
    let ig = ign(&format!("**/{}c", "*a".repeat(30)));
    assert!(ig.is_excluded(&format!("d/e/{}c", "a".repeat(5000))));
    assert!(!ig.is_excluded(&format!("d/e/{}", "a".repeat(5000))));
}

/// The backtracking matcher this module used before: exponential in the
/// number of wildcards, but obviously right; the oracle for the automaton.
fn backtrack(toks: &[Tok], s: &[char]) -> bool {
    let Some((t, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match t {
        Tok::Lit(c) => s.first() == Some(c) && backtrack(rest, &s[1..]),
        Tok::One => s.first().is_some_and(|&c| c != '/') && backtrack(rest, &s[1..]),
        Tok::Class { negated, items } => {
            s.first()
                .is_some_and(|&c| items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated)
                && backtrack(rest, &s[1..])
        }
        Tok::Star => {
            for n in 0..=s.len() {
                if backtrack(rest, &s[n..]) {
                    return true;
                }
                if n < s.len() && s[n] == '/' {
                    break;
                }
            }
            false
        }
        Tok::AnyAll => (0..=s.len()).any(|n| backtrack(rest, &s[n..])),
        Tok::AnyDirs => {
            backtrack(rest, s) || (0..s.len()).any(|n| s[n] == '/' && backtrack(rest, &s[n + 1..]))
        }
    }
}

proptest::proptest! {
    /// The automaton answers as the backtracking matcher did, on short
    /// patterns and paths over a small alphabet (where backtracking is
    /// cheap), and parsing never panics.
    #[test]
    fn prop_automaton_matches_like_backtracking(
        pattern in "(a|b|/|\\*|\\*\\*|\\?|\\[ab\\]|\\[!a\\]){1,8}",
        path in "[ab/]{0,12}",
    ) {
        if let Ok(p) = Pattern::compile(clean(&pattern), false, &pattern) {
            let chars: Vec<char> = path.chars().collect();
            proptest::prop_assert_eq!(
                match_toks(&p.toks, &chars),
                backtrack(&p.toks, &chars),
                "pattern {:?} path {:?}", pattern, path
            );
        }
    }

    #[test]
    fn prop_any_dockerignore_parses_or_errs(text in "\\PC{0,200}", path in "\\PC{0,40}") {
        if let Ok(ig) = DockerIgnore::parse(&text) {
            let _ = ig.is_excluded(&path);
        }
    }
}
