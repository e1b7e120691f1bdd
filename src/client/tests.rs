use super::line::{build, AppArg};
use super::remote::{from_remotes, RackUrl};
use super::Target;
use crate::cmd::apps::AppsCmd;
use crate::cmd::config::ConfigCmd;
use crate::cmd::keys::KeysCmd;
use crate::cmd::ps::PsCmd;
use crate::cmd::run::{split_line, RunCmd};
use crate::cmd::Command;

fn url(app: &str) -> RackUrl {
    RackUrl {
        user: None,
        host: "rack.example".into(),
        port: Some(2222),
        app: Some(app.into()),
    }
}

fn words(ws: &[&str]) -> Vec<String> {
    ws.iter().map(|s| s.to_string()).collect()
}

/// The line the client sends, parsed the way the server parses it.
fn server_sees(target: &Target, ws: &[&str]) -> Command {
    let req = build(target, words(ws)).unwrap();
    let u = super::remote::locate_with(&req.target, url("app"));
    let line = req.line(&u);
    Command::parse(split_line(&line).unwrap()).unwrap().0
}

#[test]
fn rack_urls() {
    let u = RackUrl::parse("ssh://git@localhost:2222/sample").unwrap();
    assert_eq!(
        (u.user.as_deref(), u.host.as_str(), u.port, u.app.as_deref()),
        (Some("git"), "localhost", Some(2222), Some("sample"))
    );
    assert_eq!(u.to_url(), "ssh://git@localhost:2222/sample");
    assert_eq!(u.known_hosts_name(), "[localhost]:2222");
    let u = RackUrl::parse("git@rack.example:shop.git").unwrap();
    assert_eq!((u.port, u.app.as_deref()), (None, Some("shop")));
    assert_eq!(u.known_hosts_name(), "rack.example");
    let u = RackUrl::parse("ssh://deploy@[::1]:2200/a").unwrap();
    assert_eq!((u.host.as_str(), u.port), ("::1", Some(2200)));
    assert_eq!(u.to_url(), "ssh://deploy@[::1]:2200/a");
    for not_a_rack in [
        "git@github.com:owner/repo.git",
        "https://example.org/app",
        "/srv/git/app",
        "ssh://host/a/b",
        "ssh://host/../x",
        "ssh://-oProxyCommand=x/app",
    ] {
        assert!(RackUrl::parse(not_a_rack).is_none(), "{not_a_rack}");
    }
}

#[test]
fn the_rack_remote_is_found() {
    let r = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let gh = ("origin", "git@github.com:o/r.git");
    let one = r(&[gh, ("prod", "ssh://git@h:2222/a")]);
    assert_eq!(from_remotes(None, &one).unwrap().unwrap().app.unwrap(), "a");
    let two = r(&[("prod", "ssh://git@h/a"), ("rack", "ssh://git@h/b")]);
    assert_eq!(from_remotes(None, &two).unwrap().unwrap().app.unwrap(), "b");
    assert_eq!(
        from_remotes(Some("prod"), &two)
            .unwrap()
            .unwrap()
            .app
            .unwrap(),
        "a"
    );
    let many = r(&[("prod", "ssh://git@h/a"), ("staging", "ssh://git@h/b")]);
    let e = from_remotes(None, &many).unwrap_err().to_string();
    assert!(
        e.contains("-r REMOTE") && e.contains("prod, staging"),
        "{e}"
    );
    assert!(from_remotes(None, &r(&[gh])).unwrap().is_none());
    assert!(from_remotes(Some("origin"), &r(&[gh])).is_err());
    assert!(from_remotes(Some("nope"), &r(&[gh])).is_err());
}

#[test]
fn values_reach_the_server_byte_for_byte() {
    let value = "a b 'q' \"dq\" $HOME ; rm -rf / \\ `x` \n second line\ttab ünï";
    let pair = format!("K={value}");
    match server_sees(&Target::default(), &["config:set", &pair, "--no-restart"]) {
        Command::Config(ConfigCmd::Set {
            app,
            pairs,
            no_restart,
            ..
        }) => {
            assert_eq!(app, "app");
            assert_eq!(pairs, vec![("K".to_string(), value.to_string())]);
            assert!(no_restart);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn app_comes_from_the_remote_or_a_flag() {
    assert_eq!(
        server_sees(&Target::default(), &["ps:scale", "web=2"]),
        Command::Ps(PsCmd::Scale {
            app: "app".into(),
            pairs: vec!["web=2".into()]
        })
    );
    assert_eq!(
        server_sees(&Target::default(), &["ps", "-a", "other"]),
        Command::Ps(PsCmd::List {
            app: "other".into()
        })
    );
    let t = Target {
        app: Some("x".into()),
        remote: None,
    };
    assert_eq!(
        server_sees(&t, &["config:get", "K"]),
        Command::Config(ConfigCmd::Get {
            app: "x".into(),
            key: "K".into()
        })
    );
    // keys:add's own --app is the server's, not the client's.
    assert_eq!(
        server_sees(&Target::default(), &["keys:add", "ci", "--app", "a"]),
        Command::Keys(KeysCmd::Add {
            name: "ci".into(),
            admin: false,
            apps: vec!["a".into()]
        })
    );
    assert_eq!(
        server_sees(&Target::default(), &["apps"]),
        Command::Apps(AppsCmd::List {})
    );
    assert_eq!(
        server_sees(&Target::default(), &["apps:create", "fresh"]),
        Command::Apps(AppsCmd::Create {
            app: "fresh".into()
        })
    );
    assert_eq!(super::line::app_arg("events"), AppArg::Optional);
    assert_eq!(super::line::app_arg("logs"), AppArg::Required);
}

#[test]
fn run_sends_one_command_line() {
    let sh = |l: &str| {
        Command::Run(RunCmd::Run {
            app: "app".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), l.into()],
        })
    };
    let t = Target::default();
    assert_eq!(server_sees(&t, &["run", "--", "echo $G"]), sh("echo $G"));
    assert_eq!(server_sees(&t, &["run", "echo", "$G"]), sh("echo $G"));
    assert_eq!(server_sees(&t, &["run", "--", "exit 7"]), sh("exit 7"));
    assert_eq!(
        server_sees(&t, &["run", "-a", "b", "--", "ls", "-a"]),
        Command::Run(RunCmd::Run {
            app: "b".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), "ls -a".into()],
        })
    );
    assert_eq!(
        server_sees(&t, &["run", "--exec", "--", "printf", "%s\n", "a 'b'"]),
        Command::Run(RunCmd::Run {
            app: "app".into(),
            argv: vec!["printf".into(), "%s\n".into(), "a 'b'".into()],
        })
    );
    assert!(build(&t, words(&["run"])).is_err());
}

#[test]
fn help_lists_server_commands_without_app() {
    let h = super::server_help();
    assert!(h.contains("rack config:set KEY=VAL"), "{h}");
    assert!(h.contains("rack logs [-f]"), "{h}");
    assert!(h.contains("rack keys:add NAME"), "{h}");
}
