use super::*;

#[test]
fn parses_and_forms() {
    let p = parse("# c\nweb: httpd -f -p $PORT\nworker:  sh -c 'while true; do sleep 1; done'\nrelease: ./migrate\n").unwrap();
    assert_eq!(p["web"], "httpd -f -p $PORT");
    assert_eq!(p.len(), 3);
    let mut counts = BTreeMap::new();
    counts.insert("worker".to_string(), 2);
    let f = formation(Some(&p), &counts);
    assert_eq!(f.get("web"), Some(&1));
    assert_eq!(f.get("worker"), Some(&2));
    assert!(!f.contains_key("release"));
    assert_eq!(formation(None, &BTreeMap::new()).get("web"), Some(&1));
    assert!(parse("web httpd").is_err());
    assert!(parse("Web: x").is_err());
    assert!(parse("web: a\nweb: b").is_err());
}

proptest::proptest! {
    #[test]
    fn prop_any_procfile_parses_or_errs(text in "\\PC{0,300}") {
        if let Ok(types) = parse(&text) {
            for (kind, command) in &types {
                proptest::prop_assert!(!kind.is_empty() && !command.contains('\n'));
            }
        }
    }
}
