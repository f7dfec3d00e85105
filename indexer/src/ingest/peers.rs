//! Who may publish on the bound socket: the address a message arrived from must be an
//! address of the engine its topic names.
//!
//! When engines connect to the indexer (`--zmq-bind`), the topic is a claim anyone who can
//! reach the port could make. The TCP connection's remote address cannot be claimed that
//! way (the handshake needs replies at that address), so a message is believed only when
//! that address is one the named engine has: the engine's host as configured or discovered
//! (an IP) or, for a host name, what it resolves to. Names are resolved off the receive path
//! ([`PeerAddresses::refresh`]); the check itself is a lookup.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::net::IpAddr;

/// The addresses each engine host may publish from.
#[derive(Default)]
pub struct PeerAddresses {
    resolved: RwLock<HashMap<String, Vec<IpAddr>>>,
}

/// An IP literal as written in an engine spec (`10.0.0.5`, `[fd00::5]`, `fd00::5`).
fn literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

impl PeerAddresses {
    /// Whether a message from `peer` may speak for the engine on `host`. No address (a
    /// transport without one, or a peer gone before the lookup) is never enough.
    pub fn admits(&self, host: &str, peer: Option<IpAddr>) -> bool {
        let Some(peer) = peer.map(|ip| ip.to_canonical()) else {
            return false;
        };
        if let Some(ip) = literal(host) {
            return ip == peer;
        }
        self.resolved
            .read()
            .get(host)
            .is_some_and(|ips| ips.contains(&peer))
    }

    /// Resolve the engines' host names (IP literals need nothing); a name that fails to
    /// resolve keeps its last addresses, so a DNS hiccup does not silence an engine.
    pub async fn refresh<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) {
        for host in hosts {
            if literal(host).is_some() {
                continue;
            }
            match tokio::net::lookup_host((host, 0)).await {
                Ok(addrs) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip().to_canonical()).collect();
                    ips.sort();
                    ips.dedup();
                    self.resolved.write().insert(host.to_owned(), ips);
                }
                Err(e) => tracing::warn!(%host, "cannot resolve an engine's address: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_host_admits_only_itself() {
        let peers = PeerAddresses::default();
        let engine: IpAddr = "10.0.0.5".parse().unwrap();
        assert!(peers.admits("10.0.0.5", Some(engine)));
        assert!(!peers.admits("10.0.0.5", Some("10.0.0.6".parse().unwrap())));
        assert!(!peers.admits("10.0.0.5", None));
        // An IPv4 peer on a dual-stack socket.
        assert!(peers.admits("10.0.0.5", Some("::ffff:10.0.0.5".parse().unwrap())));
        assert!(peers.admits("[fd00::5]", Some("fd00::5".parse().unwrap())));
    }

    #[tokio::test]
    async fn a_name_admits_what_it_resolves_to_once_refreshed() {
        let peers = PeerAddresses::default();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(!peers.admits("localhost", Some(lo)));
        peers.refresh(["localhost"]).await;
        assert!(peers.admits("localhost", Some(lo)));
        assert!(!peers.admits("localhost", Some("10.0.0.6".parse().unwrap())));
    }
}
