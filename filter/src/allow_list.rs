//! Which `ip:port` the filter may send a request to. The indexer's answer becomes the
//! request's upstream address, so an indexer that is wrong, compromised or impersonated
//! could otherwise point Envoy at any host (a cloud metadata service, an admin port). Only
//! addresses inside the configured `allowed_endpoints` are used; any other answer is
//! ignored, counted and the request passes unrouted. Pure, so every form is unit-tested.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Without `allowed_endpoints`: private and loopback addresses only. Pods live there in
/// every cluster, while public addresses and link-local ones (the cloud metadata service
/// at 169.254.169.254) never are. Naming the pods' own ranges is tighter.
pub const DEFAULT_ALLOWED: [&str; 6] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "fc00::/7",
    "::1/128",
];

/// One allowed range, with or without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    net: IpNet,
    port: Option<u16>,
}

/// The parsed allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

impl AllowList {
    /// Entries are `ip`, `ip:port`, `[v6]:port`, `cidr` or `cidr:port` (e.g. `10.244.0.0/16`,
    /// `10.244.0.0/16:8000`, `127.0.0.11:8000`). An empty list allows nothing.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| parse_entry(e.as_ref().trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(|entries| Self { entries })
    }

    pub fn default_ranges() -> Self {
        Self::parse(&DEFAULT_ALLOWED).unwrap_or(Self {
            entries: Vec::new(),
        })
    }

    /// Whether the indexer's `endpoint` (an `ip:port` string) may be used.
    pub fn allows(&self, endpoint: &str) -> bool {
        let Ok(addr) = endpoint.parse::<SocketAddr>() else {
            return false;
        };
        let ip = canonical(addr.ip());
        self.entries
            .iter()
            .any(|e| e.net.contains(&ip) && e.port.is_none_or(|p| p == addr.port()))
    }
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.5`) is the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn parse_entry(s: &str) -> Result<Entry, String> {
    let bad = || {
        format!(
            "allowed_endpoints entry {s:?}: expected ip, ip:port, cidr or cidr:port (e.g. 10.244.0.0/16:8000)"
        )
    };
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(Entry {
            net: IpNet::from(canonical(addr.ip())),
            port: Some(addr.port()),
        });
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Entry {
            net: IpNet::from(canonical(ip)),
            port: None,
        });
    }
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(Entry {
            net: net.trunc(),
            port: None,
        });
    }
    // `cidr:port`: the port follows the prefix length, which contains no ':'.
    let (net, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let net = net.trim_start_matches('[').trim_end_matches(']');
    let net: IpNet = net.parse().map_err(|_| bad())?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok(Entry {
        net: net.trunc(),
        port: Some(port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_form_allows_what_it_names_and_nothing_else() {
        let list = AllowList::parse(&[
            "10.244.0.0/16",
            "192.168.1.0/24:8000",
            "127.0.0.11:8000",
            "172.20.0.7",
            "[fd00::1]:8000",
        ])
        .expect("list");
        for ok in [
            "10.244.3.9:8000",
            "10.244.3.9:1",
            "192.168.1.200:8000",
            "127.0.0.11:8000",
            "172.20.0.7:9",
            "[fd00::1]:8000",
            "[::ffff:10.244.0.1]:8000",
        ] {
            assert!(list.allows(ok), "{ok}");
        }
        for refused in [
            "10.245.0.1:8000",
            "192.168.1.200:8001",
            "127.0.0.11:8001",
            "127.0.0.12:8000",
            "169.254.169.254:80",
            "[fd00::1]:8001",
            "pod-a:8000",
            "",
        ] {
            assert!(!list.allows(refused), "{refused}");
        }
    }

    #[test]
    fn the_default_is_private_and_loopback_only() {
        let list = AllowList::default_ranges();
        assert!(list.allows("10.1.2.3:8000"));
        assert!(list.allows("127.0.0.1:8000"));
        assert!(list.allows("[::1]:8000"));
        assert!(!list.allows("169.254.169.254:80"), "cloud metadata");
        assert!(!list.allows("8.8.8.8:443"));
        assert!(!list.allows("[2001:db8::1]:8000"));
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry() {
        for bad in ["10.0.0.0/33", "pods", "10.0.0.1:99999", "10.0.0.0/8:x"] {
            let e = AllowList::parse(&[bad]).expect_err(bad);
            assert!(e.contains(bad), "{e}");
        }
        assert!(!AllowList::parse::<&str>(&[])
            .expect("empty")
            .allows("10.0.0.1:1"));
    }
}
