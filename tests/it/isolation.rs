//! Containers and the host: app, one-off and build containers reach
//! neither the host's own addresses nor the cloud metadata address, while
//! the router still serves the app; the firewall rules are tagged with the
//! rack's namespace, replaced (not doubled) by a restart and removed by a
//! clean shutdown.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::builds::{docker, require_docker};
use crate::git::work;
use crate::harness::{firewall_rules, Rack};
use crate::http;

const METADATA: &str = "169.254.169.254";

fn require_iptables() {
    let ok = Command::new("iptables")
        .args(["-w", "-S", "DOCKER-USER"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "this test needs iptables and Docker's DOCKER-USER chain; run scripts/test \
         (it installs the iptables package)"
    );
}

/// 169.254.169.254 on the host's loopback for the test's length (as a
/// metadata service on the host would be).
struct MetadataOnLoopback {
    added: bool,
}

impl MetadataOnLoopback {
    fn add() -> MetadataOnLoopback {
        let o = Command::new("ip")
            .args(["addr", "add", &format!("{METADATA}/32"), "dev", "lo"])
            .output()
            .expect("ip (iproute2) runs");
        let exists = String::from_utf8_lossy(&o.stderr).contains("File exists");
        assert!(o.status.success() || exists, "ip addr add: {o:?}");
        MetadataOnLoopback {
            added: o.status.success(),
        }
    }
}

impl Drop for MetadataOnLoopback {
    fn drop(&mut self) {
        if self.added {
            let _ = Command::new("ip")
                .args(["addr", "del", &format!("{METADATA}/32"), "dev", "lo"])
                .output();
        }
    }
}

/// A listener on every host address; counts the connections it gets and
/// answers each with a secret.
fn host_listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhost-secret\n");
        }
    });
    (port, hits)
}

/// A global IPv4 address of the host (not a bridge of a container network).
fn host_address() -> String {
    let o = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| {
            !l.contains(" lo ")
                && !l.contains("docker")
                && !l.contains(" br-")
                && !l.contains(" rk")
        })
        .find_map(|l| {
            let mut w = l.split_whitespace();
            w.position(|x| x == "inet")?;
            Some(w.next()?.split('/').next()?.to_string())
        })
        .expect("the host has a global IPv4 address")
}

/// Shell that tries each address on `port` and prints `through a` or
/// `refused a` (spelled apart in the script, so a build's echo of its
/// step never matches); the gateway of the container's network first.
fn probe_script(targets: &[&str], port: u16) -> String {
    format!(
        "gw=$(ip route | grep ^default | cut -d\" \" -f3); \
         for a in $gw {}; do \
           if echo GET | nc -w 5 $a {port} 2>/dev/null | grep -q host-secret; \
           then echo thro\"\"ugh $a; else echo refu\"\"sed $a; fi; \
         done",
        targets.join(" ")
    )
}

#[test]
fn containers_reach_neither_host_nor_metadata_but_the_router_serves_them() {
    require_docker();
    require_iptables();
    let _meta = MetadataOnLoopback::add();
    let (port, hits) = host_listener();
    let host_ip = host_address();
    // From the host itself the listener answers on every address.
    let mut s = std::net::TcpStream::connect((METADATA, port)).expect("host reaches its listener");
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.contains("host-secret"), "{body}");
    hits.store(0, Ordering::SeqCst);

    let mut rack = Rack::start();
    let rules = firewall_rules(&rack.ns);
    assert!(rules.len() >= 3, "rules tagged rack:{}: {rules:?}", rack.ns);
    let a = &rack.admin;
    let app = "fenced";
    rack.ssh(a, &format!("apps:create {app}")).ok();
    let w = work(&rack, a, "w");
    let probe = probe_script(&[METADATA, &host_ip], port);
    std::fs::write(
        w.dir.join("Dockerfile"),
        format!(
            "FROM rack-test/busybox:latest\n\
             RUN echo build-probe; {probe}\n\
             CMD [\"sh\", \"-c\", \"mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p $PORT -h /www\"]\n"
        ),
    )
    .unwrap();
    w.git(&["add", "-A"]).ok();
    w.git(&["commit", "-q", "-m", "probe"]).ok();
    let push = w.git(&["push", &rack.git_url(app), "main"]);
    push.ok();
    assert!(
        !push.stderr.contains("through "),
        "a build container reached the host: {}",
        push.stderr
    );
    assert_eq!(
        push.stderr.matches("refused ").count(),
        3,
        "{}",
        push.stderr
    );

    // The router serves the app.
    let r = http::get(rack.http_port, &format!("{app}.localhost"), "/").expect("router answers");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("ok"), "{}", r.body);

    // The app's own container: no host, no metadata, no raw sockets.
    let ids = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=rack.ns={}", rack.ns),
        "--filter",
        &format!("label=rack.app={app}"),
    ]);
    let id = ids
        .stdout
        .split_whitespace()
        .next()
        .expect("a web container")
        .to_string();
    let out = docker(&["exec", &id, "sh", "-c", &probe]);
    assert!(
        !out.stdout.contains("through "),
        "app container: {}",
        out.stdout
    );
    assert_eq!(
        out.stdout.matches("refused ").count(),
        3,
        "{} {}",
        out.stdout,
        out.stderr
    );
    let status = docker(&["exec", &id, "cat", "/proc/self/status"]);
    let capeff = status
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .expect("CapEff");
    assert_eq!(capeff & (1 << 13), 0, "NET_RAW kept: {capeff:x}");

    // A one-off: the same.
    let out = rack.ssh(a, &format!("run {app} -- sh -c '{probe}'"));
    assert!(!out.stdout.contains("through "), "one-off: {}", out.stdout);
    assert_eq!(out.stdout.matches("refused ").count(), 3, "{}", out.stdout);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the host listener was reached"
    );

    // A restart replaces the rules (no duplicates); a clean stop removes them.
    rack.restart();
    let mut again = firewall_rules(&rack.ns);
    let mut before = rules.clone();
    again.sort();
    before.sort();
    assert_eq!(again, before);
    let r = http::get(rack.http_port, &format!("{app}.localhost"), "/").expect("router answers");
    assert_eq!(r.status, 200, "{}", r.body);
    rack.stop();
    assert_eq!(firewall_rules(&rack.ns), Vec::<String>::new());
}
