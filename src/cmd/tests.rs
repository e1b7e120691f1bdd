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

#[test]
fn run_takes_one_command_line_for_the_shell() {
    use super::run::{parse_argv, split_line};
    let argv = |line: &str| match Command::parse(split_line(line).unwrap()).unwrap().0 {
        Command::Run(run::RunCmd::Run { argv, .. }) => argv,
        other => panic!("{other:?}"),
    };
    let sh = |l: &str| vec!["/bin/sh".to_string(), "-c".into(), l.into()];
    // What `ssh HOST run a -- 'echo $G'` and `... -- echo '$G'` both send.
    assert_eq!(argv("run a -- echo $G"), sh("echo $G"));
    assert_eq!(argv("run a -- sh -c 'echo $G'"), sh("sh -c 'echo $G'"));
    assert_eq!(argv("run a echo  it's  "), sh("echo  it's  "));
    assert_eq!(argv("run a -- echo a -- b"), sh("echo a -- b"));
    assert_eq!(argv("run a -- exit 7"), sh("exit 7"));
    // The exec form keeps an argv, split with shell-word rules.
    assert_eq!(
        argv("run a --exec -- printf '%s\\n' 'a b'"),
        vec!["printf", "%s\\n", "a b"]
    );
    // Words from another caller are quoted back into one line.
    assert_eq!(
        parse_argv(words("-- printf %s 'a b'")).unwrap(),
        sh("printf '%s' 'a b'")
    );
    for bad in ["run a", "run a --", "run a --   ", "run a --exec --"] {
        assert!(Command::parse(split_line(bad).unwrap()).is_err(), "{bad}");
    }
    // Only `run` lines keep a raw tail; others are shell words as before.
    assert_eq!(
        split_line("config:set a 'K=a b'").unwrap(),
        vec!["config:set", "a", "K=a b"]
    );
    let (c, _) = Command::parse(split_line("run a -- env; cat /secret").unwrap()).unwrap();
    assert_eq!(c.audit_line().unwrap(), "run a env;");
}

proptest::proptest! {
    /// Any exec line: split, then parsed into a command or a usage error,
    /// never a panic.
    #[test]
    fn prop_any_command_line_parses_or_errs(line in "\\PC{0,120}") {
        if let Ok(words) = crate::cmd::run::split_line(&line) {
            if !words.is_empty() {
                let _ = crate::cmd::Command::parse(words);
            }
        }
    }
}
