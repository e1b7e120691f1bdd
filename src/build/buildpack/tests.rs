use super::*;

fn tree(names: &[&str]) -> TreeInfo {
    TreeInfo {
        root: names.iter().map(|s| s.to_string()).collect(),
        ..TreeInfo::default()
    }
}

#[test]
fn manifests_and_templates_are_sane() {
    assert_eq!(all().len(), BUILDPACKS.len());
    for b in all() {
        assert!(!b.detect.is_empty(), "{}", b.name);
        dockerfile::check_classic(b.dockerfile).unwrap_or_else(|e| panic!("{}: {e}", b.name));
        let images = b.image_args();
        assert_eq!(
            images.first().map(|(a, _)| a.as_str()),
            Some("BASE_IMAGE"),
            "{}",
            b.name
        );
        assert!(
            images.iter().all(|(_, d)| !d.is_empty()),
            "{}: image args need public defaults",
            b.name
        );
        let ins = dockerfile::instructions(b.dockerfile);
        let first_from = ins.iter().find(|i| i.keyword == "FROM").expect("FROM");
        assert!(first_from.args.starts_with("${BASE_IMAGE}"), "{}", b.name);
        assert!(
            ins.iter().any(|i| i.keyword == "CMD"),
            "{}: needs a CMD",
            b.name
        );
    }
}

#[test]
fn dependencies_install_before_the_source_is_copied() {
    for name in ["node", "python", "go", "rust"] {
        let b = by_name(name).expect(name);
        let ins = dockerfile::instructions(b.dockerfile);
        let copy_all = ins
            .iter()
            .position(|i| i.keyword == "COPY" && i.args.starts_with(". "))
            .expect("COPY . ");
        let first_run = ins.iter().position(|i| i.keyword == "RUN").expect("RUN");
        assert!(
            first_run < copy_all,
            "{name}: dependency RUN must come before COPY . ."
        );
    }
}

#[test]
fn detection_order() {
    let cases: &[(&[&str], &str)] = &[
        (&["package.json", "index.html", "Procfile"], "node"),
        (&["requirements.txt"], "python"),
        (&["pyproject.toml", "public/"], "python"),
        (&["go.mod", "go.sum"], "go"),
        (&["Cargo.toml", "src/"], "rust"),
        (&["index.html"], "static"),
        (&["public/", "Procfile"], "static"),
        (&["Procfile", "run.sh"], "procfile"),
    ];
    for (names, want) in cases {
        assert_eq!(
            detect(&tree(names)).expect("match").name,
            *want,
            "{names:?}"
        );
    }
    // `public` as a file is not a directory.
    let e = detect(&tree(&["public", "README.md"])).expect_err("no match");
    for what in [
        "Dockerfile",
        "package.json",
        "requirements.txt",
        "pyproject.toml",
        "go.mod",
        "Cargo.toml",
        "index.html",
        "public/",
        "Procfile",
    ] {
        assert!(e.0.contains(what), "{e} lacks {what}");
    }
}

#[test]
fn image_overrides() {
    let go = by_name("go").expect("go");
    let defaults: Vec<String> = go.image_args().into_iter().map(|(a, _)| a).collect();
    assert_eq!(defaults, vec!["BASE_IMAGE", "RUN_IMAGE"]);
    let mut o = HashMap::new();
    assert!(go.image_build_args(&o).is_empty());
    o.insert("go".to_string(), "stub-go".to_string());
    o.insert("go.RUN_IMAGE".to_string(), "stub-run".to_string());
    o.insert("node".to_string(), "stub-node".to_string());
    let args = go.image_build_args(&o);
    assert_eq!(args.len(), 2);
    assert_eq!(args["BASE_IMAGE"], "stub-go");
    assert_eq!(args["RUN_IMAGE"], "stub-run");
    o.insert("go.BASE_IMAGE".to_string(), "explicit".to_string());
    assert_eq!(go.image_build_args(&o)["BASE_IMAGE"], "explicit");
}
