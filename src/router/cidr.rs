//! `--trusted-proxy`: which peers may hand us their `X-Forwarded-*`.

use std::net::IpAddr;

/// One or more comma-separated CIDR blocks (`10.0.0.0/8,::1/128`); a bare
/// address means just that address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cidrs(Vec<(IpAddr, u8)>);

impl Cidrs {
    pub(crate) fn parse(s: &str) -> anyhow::Result<Cidrs> {
        let mut blocks = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (ip, len) = match part.split_once('/') {
                Some((ip, len)) => (ip, Some(len)),
                None => (part, None),
            };
            let ip: IpAddr = ip.parse().map_err(|_| {
                anyhow::anyhow!("trusted proxy {part:?}: not an IP address or CIDR block")
            })?;
            let ip = ip.to_canonical();
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(|| {
                    anyhow::anyhow!("trusted proxy {part:?}: prefix length must be 0..={max}")
                })?,
                None => max,
            };
            blocks.push((ip, len));
        }
        anyhow::ensure!(!blocks.is_empty(), "trusted proxy: empty CIDR list");
        Ok(Cidrs(blocks))
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|&(net, len)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                prefix_eq(u32::from(n) as u128, u32::from(a) as u128, len, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(u128::from(n), u128::from(a), len, 128),
            _ => false,
        })
    }
}

fn prefix_eq(net: u128, addr: u128, len: u8, bits: u8) -> bool {
    if len == 0 {
        return true;
    }
    let shift = bits - len;
    (net >> shift) == (addr >> shift)
}

#[cfg(test)]
mod tests;
