//! Hostile and malformed input: clear errors, nothing changed, nothing run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::Rack;

#[test]
fn bad_names_keys_and_settings_change_nothing() {
    let rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create ok").ok();
    let long = "a".repeat(31);
    for name in ["../x", "a/b", "A", "'a;id'", "'$(id)'", "-x", &long, "''"] {
        rack.ssh(a, &format!("apps:create {name}"))
            .err("invalid app name");
    }
    rack.ssh(a, "apps:create").err("missing APP");
    for key in ["1A", "A-B", "'A B'"] {
        rack.ssh(a, &format!("config:set ok {key}=v"))
            .err("invalid config key");
    }
    rack.ssh(a, "apps:set ok colour=blue")
        .err("unknown setting");
    rack.ssh(a, "apps:set ok port=http").err("invalid value");
    rack.ssh(a, "apps:set ok healthcheck.type=udp")
        .err("invalid value");
    rack.ssh(a, "apps:set ok resources.web.memory=lots")
        .err("invalid value");
    // One bad pair spoils the whole command: the good one is not applied.
    rack.ssh(a, "apps:set ok port=5000 healthcheck.timeout=never")
        .err("invalid value");
    rack.ssh(a, "config:set ok GOOD=1 1BAD=2")
        .err("invalid config key");
    rack.ssh(a, "config:set ok 'unterminated")
        .err("unbalanced quotes");

    let apps = rack.ssh(a, "apps --json").ok().json();
    assert_eq!(apps.as_array().unwrap().len(), 1);
    let info = rack.ssh(a, "apps:info ok --json").ok().json();
    assert_eq!(info["settings"], serde_json::json!({}));
    assert_eq!(
        rack.ssh(a, "config ok --json").ok().json(),
        serde_json::json!({})
    );
}

#[test]
fn shell_metacharacters_are_stored_literally() {
    let rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create ok").ok();
    let marker = std::env::temp_dir().join(format!("rack-pwned-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let value = format!("$(touch {})", marker.display());
    rack.ssh(
        a,
        &format!(
            "config:set ok 'K={value}' 'L=`touch {m}`;touch {m}'",
            m = marker.display()
        ),
    )
    .ok();
    assert_eq!(
        rack.ssh(a, "config:get ok K").ok().stdout,
        format!("{value}\n")
    );
    assert!(!marker.exists(), "a config value was run by a shell");
}

#[test]
fn oversized_command_lines_and_stdin_are_refused() {
    let rack = Rack::start_with("[limits]\nmax_command_bytes = 2048\nmax_stdin_bytes = 1024\n");
    let a = &rack.admin;
    rack.ssh(a, "apps:create ok").ok();
    let big = "x".repeat(3000);
    rack.ssh(a, &format!("config:set ok K={big}"))
        .err("over the limit of 2048");
    rack.ssh_in(a, "config:set ok K --stdin", &vec![b'y'; 5000])
        .err("larger than the limit of 1024");
    rack.ssh_in(a, "config:set ok K --stdin", b"small").ok();
    assert_eq!(rack.ssh(a, "config:get ok K").ok().stdout, "small\n");
}

#[test]
fn shell_pty_and_subsystems_are_refused_helpfully() {
    let rack = Rack::start();
    let a = &rack.admin;
    let out = rack.ssh_opts(a, &["-T"], "", b"");
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("rack offers no shell; try: ssh -p"),
        "{}",
        out.stderr
    );
    let out = rack.ssh_opts(a, &["-s"], "sftp", b"");
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("no 'sftp' subsystem"), "{}", out.stderr);
    // A terminal is refused for plain commands; the command itself still runs.
    let out = rack.ssh_opts(a, &["-tt", "-o", "LogLevel=INFO"], "version", b"");
    assert!(
        out.stderr.contains("PTY allocation request failed"),
        "{}",
        out.stderr
    );
    // Port forwarding is refused.
    let out = rack.ssh_opts(
        a,
        &[
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "LogLevel=INFO",
            "-L",
            "127.0.0.1:0:127.0.0.1:22",
        ],
        "version",
        b"",
    );
    assert!(out.code != 0 || !out.stderr.is_empty(), "{}", out.stderr);
}

/// Connections that never authenticate are closed after the pre-auth
/// timeout, and connections over the limit are refused at once.
#[test]
fn preauth_timeout_and_connection_limit() {
    let rack = Rack::start_with("[limits]\npreauth_timeout_secs = 2\nmax_connections = 2\n");
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", rack.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    let mut first = connect();
    let mut second = connect();
    let mut banner = [0u8; 8];
    first.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    second.read_exact(&mut banner).unwrap();
    // A third is turned away while two are open.
    let mut third = connect();
    let mut msg = String::new();
    third.read_to_string(&mut msg).unwrap();
    assert!(msg.contains("too many connections"), "{msg:?}");
    // The first two never authenticate: the server closes them (EOF).
    first.write_all(b"SSH-2.0-idle\r\n").unwrap();
    let mut rest = Vec::new();
    let r = first.read_to_end(&mut rest);
    assert!(r.is_ok(), "expected EOF from the server, got {r:?}");
    drop(second);
    // With the slots free again, a real client gets in.
    let mut ok = false;
    for _ in 0..50 {
        if rack.ssh(&rack.admin, "version").code == 0 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "the server should accept again once slots are free");
}

#[test]
fn sigterm_exits_cleanly() {
    let mut rack = Rack::start();
    rack.ssh(&rack.admin, "version").ok();
    assert_eq!(rack.stop(), Some(0));
}
