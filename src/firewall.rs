//! The host firewall of a local rack: iptables rules that keep every
//! container on the rack's Docker networks (apps, releases, one-offs and
//! builds) away from the cloud metadata addresses (169.254.0.0/16) and from
//! the host's own addresses, except the router's port.
//!
//! The rack's networks are Linux bridges named `rk` + a hash of the
//! namespace + a hash of the network ([`bridge_name`]), so one wildcard
//! interface match (`rkHHHHHH+`) covers every network of one rack and none
//! of another's. Traffic from a container to a host address goes through
//! the `INPUT` chain (a rack-owned chain `RACK-IN-HHHHHH` jumped to from
//! there); traffic routed on (metadata served elsewhere, other hosts' ports
//! published through DNAT) through Docker's `DOCKER-USER` chain. Every rule
//! rack adds carries the comment `rack:NS`: [`Firewall::install`] first
//! deletes any left by an earlier run (a crash included), so it is
//! idempotent, and [`Firewall::remove`] deletes them at shutdown.
//!
//! What this module does NOT know: Docker (it names bridges; the runtime
//! and the builder create the networks), apps, the store.

use std::process::Command;

/// 32-bit FNV-1a: stable across builds and platforms (bridge names and
/// chains must survive an upgrade).
fn fnv(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `rk` + 6 hex digits of the namespace: the prefix of every bridge of the
/// rack's networks.
pub fn iface_prefix(ns: &str) -> String {
    format!("rk{:06x}", fnv(ns) & 0xff_ffff)
}

/// The Linux bridge of Docker network `network` of namespace `ns` (15
/// characters, the kernel's limit).
pub fn bridge_name(ns: &str, network: &str) -> String {
    format!("{}{:07x}", iface_prefix(ns), fnv(network) & 0xfff_ffff)
}

/// The Docker network option that names the bridge.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

fn chain(ns: &str) -> String {
    format!("RACK-IN-{:06x}", fnv(ns) & 0xff_ffff)
}

fn tag(ns: &str) -> String {
    format!("rack:{ns}")
}

#[derive(Debug, thiserror::Error)]
#[error("host firewall: {0}")]
pub struct FirewallError(String);

fn iptables(args: &[&str]) -> Result<String, FirewallError> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| {
            FirewallError(format!(
                "running iptables: {e} (install the iptables package, or set \
                 [local] firewall = false)"
            ))
        })?;
    if !out.status.success() {
        return Err(FirewallError(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rack's rules installed on the host; dropped without [`remove`] they
/// stay (a restart replaces them).
///
/// [`remove`]: Firewall::remove
#[derive(Debug)]
pub struct Firewall {
    ns: String,
}

impl Firewall {
    /// Replaces the namespace's rules by fresh ones letting containers
    /// reach the host only on `router_port`.
    pub fn install(ns: &str, router_port: u16) -> Result<Firewall, FirewallError> {
        iptables(&["-S", "DOCKER-USER"]).map_err(|e| {
            FirewallError(format!(
                "Docker's DOCKER-USER chain is missing (does dockerd manage iptables?): {}",
                e.0
            ))
        })?;
        let fw = Firewall { ns: ns.to_string() };
        fw.delete_rules()?;
        let (chain, tag, iface) = (chain(ns), tag(ns), format!("{}+", iface_prefix(ns)));
        let port = router_port.to_string();
        let c = ["-m", "comment", "--comment", tag.as_str()];
        iptables(&["-N", &chain])?;
        let rules: [&[&str]; 4] = [
            &[
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "RETURN",
            ],
            &["-p", "tcp", "--dport", &port, "-j", "RETURN"],
            &["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
            &["-j", "REJECT"],
        ];
        for r in rules {
            iptables(&[&["-A", chain.as_str()], r, &c].concat())?;
        }
        iptables(&[&["-I", "INPUT", "1", "-i", &iface], &c[..], &["-j", &chain]].concat())?;
        // Routed on: the metadata range, and other hosts' or containers'
        // ports reached through a DNAT (published ports on host addresses).
        let forward: [&[&str]; 2] = [
            &["-d", "169.254.0.0/16", "-j", "REJECT"],
            &["-m", "conntrack", "--ctstate", "DNAT", "-j", "REJECT"],
        ];
        for r in forward {
            iptables(&[&["-I", "DOCKER-USER", "1", "-i", &iface], &c[..], r].concat())?;
        }
        Ok(fw)
    }

    /// Deletes the namespace's rules and chain.
    pub fn remove(&self) -> Result<(), FirewallError> {
        self.delete_rules()
    }

    fn delete_rules(&self) -> Result<(), FirewallError> {
        let tag = tag(&self.ns);
        for table_chain in ["INPUT", "DOCKER-USER"] {
            let listing = iptables(&["-S", table_chain])?;
            for line in listing.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                let tagged = words
                    .windows(2)
                    .any(|w| w[0] == "--comment" && w[1].trim_matches('"') == tag);
                if tagged && words.first() == Some(&"-A") {
                    let mut args: Vec<&str> = vec!["-D"];
                    args.extend(words[1..].iter().map(|w| w.trim_matches('"')));
                    iptables(&args)?;
                }
            }
        }
        let chain = chain(&self.ns);
        if iptables(&["-S", &chain]).is_ok() {
            iptables(&["-F", &chain])?;
            iptables(&["-X", &chain])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
