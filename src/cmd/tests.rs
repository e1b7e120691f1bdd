use super::*;

fn words(s: &str) -> Vec<String> {
    shell_words::split(s).unwrap()
}

#[test]
fn parses_and_gates() {
    let deploy = Identity {
        key_name: "ci".into(),
        admin: false,
        apps: vec!["a".into()],
    };
    let (c, json) = Command::parse(words("apps:info a --json")).unwrap();
    assert!(json);
    assert!(deploy.may(&c.access()));
    for line in [
        "apps:info b",
        "config:set a K=V",
        "keys",
        "apps:create a",
        "apps:set a port=1",
    ] {
        let (c, _) = Command::parse(words(line)).unwrap();
        assert!(!deploy.may(&c.access()), "{line}");
    }
    assert!(Command::parse(words("frobnicate")).is_err());
    assert!(Command::parse(words("apps:create ../x")).is_err());
}

#[test]
fn config_set_keeps_values_literal() {
    let (c, _) = Command::parse(words("config:set a 'K=$(touch /tmp/x)' 'Q=a=b c'")).unwrap();
    assert_eq!(
        c,
        Command::Config(config::ConfigCmd::Set {
            app: "a".into(),
            pairs: vec![
                ("K".into(), "$(touch /tmp/x)".into()),
                ("Q".into(), "a=b c".into())
            ],
            stdin_key: None,
            no_restart: false
        })
    );
    assert!(!c.audit_line().unwrap().contains("touch"));
}
