//! Who may connect to a listener, by source address: `listen.cache_allow_from` and
//! `listen.admin_allow_from`. They exist for the daemon on the host network (the node-local
//! address), where Kubernetes NetworkPolicies do not apply and the Gradle and admin ports are
//! on the node's own address, reachable from anywhere the node is.

use std::net::IpAddr;

use ipnet::IpNet;

/// The networks a listener admits connections from; none listed admits everyone.
#[derive(Debug, Clone, Default)]
pub struct AllowedSources {
    networks: Vec<IpNet>,
}

impl AllowedSources {
    /// Admits connections from `networks`, or from anywhere when it is empty.
    pub fn new(networks: Vec<IpNet>) -> Self {
        AllowedSources { networks }
    }

    /// Whether a check is needed at all (it costs a `getsockname` per connection).
    pub fn is_open(&self) -> bool {
        self.networks.is_empty()
    }

    /// Whether a connection from `peer` to `local` (the listener's socket's own address) is
    /// admitted: from a listed network, or from the node itself, which is how the kubelet's
    /// probes arrive (a connection to one of the node's addresses from the node comes from
    /// that same address).
    pub fn admits(&self, peer: IpAddr, local: IpAddr) -> bool {
        // A dual-stack socket sees IPv4 clients as ::ffff:a.b.c.d.
        let (peer, local) = (peer.to_canonical(), local.to_canonical());
        self.is_open() || peer == local || self.networks.iter().any(|net| net.contains(&peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_empty_list_admits_everyone() {
        assert!(AllowedSources::default().admits(ip("203.0.113.9"), ip("10.0.0.1")));
    }

    #[test]
    fn listed_networks_and_the_node_itself_are_admitted() {
        let nets = ["10.1.0.0/16", "10.9.9.9/32", "fd00::/8"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        let allowed = AllowedSources::new(nets);
        let node = ip("10.0.0.5");
        assert!(allowed.admits(ip("10.1.200.3"), node));
        assert!(allowed.admits(ip("10.9.9.9"), node));
        assert!(!allowed.admits(ip("10.9.9.10"), node));
        assert!(allowed.admits(ip("fd12::1"), ip("fd00::5")));
        assert!(!allowed.admits(ip("10.2.0.1"), node));
        // The node's own address (the kubelet's probes), loopback to loopback too, but not
        // another loopback address (nothing but the node has one).
        assert!(allowed.admits(node, node));
        assert!(allowed.admits(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(!allowed.admits(ip("127.0.0.2"), ip("127.0.0.1")));
        // An IPv4 client of a dual-stack socket.
        assert!(allowed.admits(ip("::ffff:10.1.0.7"), ip("::ffff:10.0.0.5")));
        assert!(!allowed.admits(ip("::ffff:10.2.0.7"), ip("::ffff:10.0.0.5")));
    }
}
