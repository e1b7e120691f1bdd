//! The command interface with an admin key and with a deploy key.

use crate::harness::{keygen, rack_cli, Rack};

#[test]
fn admin_runs_every_command_with_text_and_json() {
    let rack = Rack::start();
    let a = &rack.admin;
    assert!(rack.ssh(a, "version").ok().stdout.starts_with("rack "));
    assert!(rack.ssh(a, "help").ok().stdout.contains("config:set"));
    assert!(rack.ssh(a, "apps").ok().stdout.contains("(none)"));

    assert!(rack
        .ssh(a, "apps:create web")
        .ok()
        .stdout
        .contains("Created web"));
    rack.ssh(a, "apps:create web").err("already exists");
    let apps = rack.ssh(a, "apps --json").ok().json();
    assert_eq!(apps.as_array().unwrap().len(), 1);
    assert_eq!(apps[0]["name"], "web");
    assert!(apps[0]["created_at"].as_str().unwrap().ends_with('Z'));

    rack.ssh(
        a,
        "apps:set web port=8081 healthcheck.path=/up resources.web.memory=256m",
    )
    .ok();
    let info = rack.ssh(a, "apps:info web --json").ok().json();
    assert_eq!(info["name"], "web");
    assert_eq!(info["settings"]["port"], "8081");
    assert_eq!(info["settings"]["healthcheck.path"], "/up");
    assert!(rack.ssh(a, "apps:info web").ok().stdout.contains("8081"));
    rack.ssh(a, "apps:unset web port").ok();
    let info = rack.ssh(a, "apps:info web --json").ok().json();
    assert!(info["settings"].get("port").is_none());

    // Config values round-trip exactly, including shell-looking text.
    rack.ssh(
        a,
        r#"config:set web 'A=hello world' 'B=x=y' 'C="q" \back' 'D=ünï ✓'"#,
    )
    .ok();
    let value = "line1\nline2 with 'quotes'\n";
    rack.ssh_in(a, "config:set web PEM --stdin", value.as_bytes())
        .ok();
    assert_eq!(rack.ssh(a, "config:get web A").ok().stdout, "hello world\n");
    assert_eq!(rack.ssh(a, "config:get web B").ok().stdout, "x=y\n");
    assert_eq!(
        rack.ssh(a, "config:get web C").ok().stdout,
        "\"q\" \\back\n"
    );
    assert_eq!(rack.ssh(a, "config:get web D").ok().stdout, "ünï ✓\n");
    let cfg = rack.ssh(a, "config web --json").ok().json();
    assert_eq!(cfg["PEM"], value);
    assert_eq!(cfg["D"], "ünï ✓");
    let set = rack.ssh(a, "config:set web E=1 --json").ok().json();
    assert_eq!(set["config_version"], 3);
    assert!(rack
        .ssh(a, "config:set web F=1")
        .ok()
        .stdout
        .contains("no build yet"));
    rack.ssh(a, "config:unset web E F").ok();
    rack.ssh(a, "config:get web E").err("not set");

    // Keys: add, list, remove, never the last admin.
    let ci = rack.add_key("ci", "--app web");
    let keys = rack.ssh(a, "keys --json").ok().json();
    let ci_json = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .unwrap();
    assert_eq!(ci_json["admin"], false);
    assert_eq!(ci_json["apps"][0], "web");
    assert!(ci_json["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));
    rack.ssh(a, "keys:remove admin").err("last admin key");
    rack.ssh(a, "keys:remove ci").ok();
    rack.ssh(&ci, "apps")
        .code
        .eq(&255)
        .then_some(())
        .expect("removed key must be refused");

    // The audit trail has every change, with no config values.
    let events = rack.ssh(a, "events web --json").ok().json();
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"apps:create web"), "{actions:?}");
    assert!(actions.contains(&"config:set web A B C D"), "{actions:?}");
    assert!(actions.contains(&"config:set web PEM"), "{actions:?}");
    assert!(events
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == "admin"));
    assert!(!events.to_string().contains("hello world"));
    let failed = rack.ssh(a, "events --json").ok().json();
    assert!(failed
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "keys:remove admin"
            && e["outcome"].as_str().unwrap().starts_with("error:")));
    assert_eq!(
        rack.ssh(a, "events -n 1 --json")
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    rack.ssh(a, "apps:destroy web").err("--confirm web");
    rack.ssh(a, "apps:destroy web --confirm web").ok();
    assert!(!rack.data_dir().join("repos/web.git").exists());
    rack.ssh(a, "apps:info web").err("does not exist");
    rack.ssh(a, "nope")
        .err("unknown command 'nope'; see 'help'");
}

#[test]
fn deploy_key_reads_its_app_and_nothing_else() {
    let rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create one").ok();
    rack.ssh(a, "apps:create two").ok();
    rack.ssh(a, "config:set one K=v").ok();
    let ci = rack.add_key("ci", "--app one");

    let info = rack.ssh(&ci, "apps:info one --json").ok().json();
    assert_eq!(info["name"], "one");
    let apps = rack.ssh(&ci, "apps --json").ok().json();
    assert_eq!(
        apps.as_array().unwrap().len(),
        1,
        "deploy keys see only their apps"
    );
    rack.ssh(&ci, "events one").ok();
    let all_events = rack.ssh(&ci, "events --json").ok().json();
    assert!(all_events
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["app"] == "one"));

    let before_config = rack.ssh(a, "config one --json").ok().stdout.clone();
    let before_keys = rack.ssh(a, "keys --json").ok().stdout.clone();
    for cmd in [
        "config one",
        "config:get one K",
        "config:set one K=changed",
        "config:unset one K",
        "apps:info two",
        "config two",
        "events two",
        "keys",
        "keys:remove admin",
        "apps:create three",
        "apps:set one port=1",
        "apps:destroy one --confirm one",
    ] {
        rack.ssh(&ci, cmd).err("permission denied");
    }
    let other = keygen(rack.dir.path(), "other");
    rack.ssh_in(&ci, "keys:add other --admin", other.public().as_bytes())
        .err("permission denied");
    assert_eq!(rack.ssh(a, "config one --json").ok().stdout, before_config);
    assert_eq!(rack.ssh(a, "keys --json").ok().stdout, before_keys);
    assert_eq!(
        rack.ssh(a, "apps --json")
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn unknown_keys_and_other_methods_are_refused_at_authentication() {
    let rack = Rack::start();
    let stranger = keygen(rack.dir.path(), "stranger");
    let out = rack.ssh(&stranger, "apps");
    assert_eq!(out.code, 255);
    assert!(
        out.stderr.contains("Permission denied (publickey)"),
        "{}",
        out.stderr
    );
    // Password and keyboard-interactive are not offered at all: the
    // server's list of methods is publickey only.
    let out = rack.ssh_opts(
        &stranger,
        &[
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "LogLevel=INFO",
        ],
        "apps",
        b"",
    );
    assert_eq!(out.code, 255);
    assert!(
        out.stderr.contains("Permission denied (publickey)."),
        "{}",
        out.stderr
    );
}

/// Regression: offering the admin's public key (without its private key)
/// and then signing with a deploy key must yield the deploy key's rights.
#[test]
fn offered_but_unsigned_admin_key_grants_nothing() {
    let rack = Rack::start();
    rack.ssh(&rack.admin, "apps:create one").ok();
    let ci = rack.add_key("ci", "--app one");
    // A public key file with no private key beside it: ssh offers it (the
    // server answers PK_OK since the key is known) but cannot sign.
    let offer_only = rack.dir.path().join("offer-only");
    std::fs::write(offer_only.with_extension("pub"), rack.admin.public()).unwrap();
    let mut args = rack.ssh_args(&ci);
    // Put the unsignable admin key first, the deploy key second.
    let pos = args.iter().position(|a| a == "-i").unwrap();
    args.insert(pos, offer_only.display().to_string());
    args.insert(pos, "-i".into());
    let out: crate::harness::Out = std::process::Command::new("ssh")
        .args(&args)
        .args(["-o", "LogLevel=DEBUG1", "git@127.0.0.1", "keys"])
        .output()
        .unwrap()
        .into();
    assert!(
        out.stderr.contains("Server accepts key") || out.stderr.contains("offer-only"),
        "the admin key should have been offered first: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("error: permission denied"),
        "{}",
        out.stderr
    );
    assert_ne!(out.code, 0);
}

#[test]
fn state_keys_and_host_key_survive_a_restart() {
    let mut rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create keep").ok();
    rack.ssh(a, "config:set keep SECRET=s3cr3t").ok();
    let ci = rack.add_key("ci", "--app keep");
    let known = std::fs::read_to_string(rack.known_hosts()).unwrap();
    rack.restart();
    let known_after = std::fs::read_to_string(rack.known_hosts()).unwrap();
    // Same key material (the port may differ, the key must not).
    assert_eq!(
        known.split_once(' ').unwrap().1,
        known_after.split_once(' ').unwrap().1
    );
    let a = &rack.admin;
    assert_eq!(
        rack.ssh(a, "config:get keep SECRET").ok().stdout,
        "s3cr3t\n"
    );
    rack.ssh(&ci, "apps:info keep").ok();
    assert!(rack.logs().contains("host key"));
}

#[test]
fn offline_key_administration() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let k1 = keygen(dir.path(), "one");
    let k2 = keygen(dir.path(), "two");
    rack_cli(
        &data,
        &["keys", "add", "one", "--admin"],
        k1.public().as_bytes(),
    )
    .ok();
    // A deploy key names an app that exists.
    let early = rack_cli(
        &data,
        &["keys", "add", "two", "--app", "web"],
        k2.public().as_bytes(),
    );
    assert_ne!(early.code, 0);
    assert!(
        early.stderr.contains("no app named 'web'"),
        "{}",
        early.stderr
    );
    rack_cli(
        &data,
        &["keys", "add", "two", "--admin"],
        k2.public().as_bytes(),
    )
    .ok();
    rack_cli(
        &data,
        &["keys", "add", "dup", "--admin"],
        k1.public().as_bytes(),
    );
    let dup = rack_cli(
        &data,
        &["keys", "add", "dup", "--admin"],
        k1.public().as_bytes(),
    );
    assert_ne!(dup.code, 0);
    assert!(dup.stderr.contains("already registered"), "{}", dup.stderr);
    let bad = rack_cli(&data, &["keys", "add", "x", "--admin"], b"not a key");
    assert!(bad.stderr.starts_with("error: "), "{}", bad.stderr);
    let list = rack_cli(&data, &["keys", "list", "--json"], b"");
    let list = list.ok().json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    rack_cli(&data, &["keys", "remove", "two"], b"").ok();
    let last = rack_cli(&data, &["keys", "remove", "one"], b"");
    assert!(last.stderr.contains("last admin key"), "{}", last.stderr);
    assert!(rack_cli(&data, &["version"], b"")
        .ok()
        .stdout
        .starts_with("rack "));
}
