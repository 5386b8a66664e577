//! Per-host address allocation (issue 10 §2, CONTRACT "IPAM"): pure, no I/O.
//!
//! A network's subnet is split into blocks granted to hosts by the control plane; this module only picks an
//! address inside the blocks this host holds. Container addresses carry the subnet's prefix length (all
//! containers of a network are on-link). Never handed out: the subnet's network address, the gateway
//! (the subnet's first host address, see [`gateway`]), the IPv4 broadcast address, and anything in `used`.
//! When every block is full the caller asks the control plane for another block ([`IpamError::BlockFull`]).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error(
        "no free address in this host's blocks of {subnet} (request another block from the control plane)"
    )]
    BlockFull { subnet: IpNet },
    #[error("block {block} is not inside subnet {subnet} (a grant for another network? it is ignored)")]
    BlockOutsideSubnet { block: IpNet, subnet: IpNet },
}

/// The gateway of `subnet`: its first host address (10.20.0.1 in 10.20.0.0/16), the same on every host.
/// `None` when the subnet is too small to have one besides its network address (IPv4 /31, /32; IPv6 /127, /128).
pub fn gateway(subnet: IpNet) -> Option<IpAddr> {
    let subnet = subnet.trunc();
    match subnet {
        IpNet::V4(n) if n.prefix_len() <= 30 => Some(IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1))),
        IpNet::V6(n) if n.prefix_len() <= 126 => {
            Some(IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + 1)))
        }
        _ => None,
    }
}

/// Whether `ip` may never be given to a container of `subnet` (with the given gateway).
pub fn is_reserved(subnet: IpNet, gateway: Option<IpAddr>, ip: IpAddr) -> bool {
    let subnet = subnet.trunc();
    if ip == subnet.network() || Some(ip) == gateway {
        return true;
    }
    matches!(subnet, IpNet::V4(n) if n.prefix_len() <= 30 && IpAddr::V4(n.broadcast()) == ip)
}

/// The lowest free address in `blocks` (in order), as `address/subnet-prefix`.
pub fn next_free(
    subnet: IpNet,
    blocks: &[IpNet],
    gateway: Option<IpAddr>,
    used: &HashSet<IpAddr>,
) -> Result<IpNet, IpamError> {
    let subnet = subnet.trunc();
    for &block in blocks {
        let block = block.trunc();
        if !subnet.contains(&block) {
            return Err(IpamError::BlockOutsideSubnet { block, subnet });
        }
        let (start, last) = match block {
            IpNet::V4(b) => (
                u128::from(u32::from(b.network())),
                u128::from(u32::from(b.broadcast())),
            ),
            IpNet::V6(b) => (u128::from(b.network()), u128::from(b.broadcast())),
        };
        // At most used.len() + 3 candidates are skipped before a free one is found, so this loop is short
        // even for a huge IPv6 block.
        let mut n = start;
        loop {
            let ip = match block {
                IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
                IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
            };
            if !is_reserved(subnet, gateway, ip) && !used.contains(&ip) {
                return IpNet::new(ip, subnet.prefix_len()).map_err(|_| IpamError::BlockFull { subnet });
            }
            if n == last {
                break;
            }
            n += 1;
        }
    }
    Err(IpamError::BlockFull { subnet })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn gateway_is_first_host() {
        assert_eq!(gateway(net("10.20.0.0/16")), Some(ip("10.20.0.1")));
        assert_eq!(gateway(net("10.20.7.9/16")), Some(ip("10.20.0.1")));
        assert_eq!(gateway(net("fd00:20::/64")), Some(ip("fd00:20::1")));
        assert_eq!(gateway(net("10.0.0.0/31")), None);
        assert_eq!(gateway(net("fd00::/127")), None);
    }

    #[test]
    fn first_block_skips_network_and_gateway() {
        let s = net("10.20.0.0/16");
        let gw = gateway(s);
        let blocks = [net("10.20.0.0/26")];
        let mut used = HashSet::new();
        assert_eq!(next_free(s, &blocks, gw, &used), Ok(net("10.20.0.2/16")));
        used.insert(ip("10.20.0.2"));
        assert_eq!(next_free(s, &blocks, gw, &used), Ok(net("10.20.0.3/16")));
    }

    #[test]
    fn block_full_then_next_block() {
        let s = net("10.20.0.0/24");
        let gw = gateway(s);
        // The last block holds the broadcast address.
        let last = net("10.20.0.252/30");
        let used: HashSet<IpAddr> = ["10.20.0.252", "10.20.0.253"].iter().map(|a| ip(a)).collect();
        assert_eq!(next_free(s, &[last], gw, &used), Ok(net("10.20.0.254/24")));
        let mut used = used;
        used.insert(ip("10.20.0.254"));
        assert_eq!(
            next_free(s, &[last], gw, &used),
            Err(IpamError::BlockFull { subnet: s }),
            "10.20.0.255 is the broadcast"
        );
        assert_eq!(
            next_free(s, &[last, net("10.20.0.64/26")], gw, &used),
            Ok(net("10.20.0.64/24"))
        );
        assert_eq!(
            next_free(s, &[], gw, &used),
            Err(IpamError::BlockFull { subnet: s })
        );
        let e = next_free(s, &[net("10.30.0.0/26")], gw, &used).unwrap_err();
        assert!(matches!(e, IpamError::BlockOutsideSubnet { .. }), "{e:?}");
        assert!(IpamError::BlockFull { subnet: s }
            .to_string()
            .contains("request another block"));
    }

    #[test]
    fn ipv6_block() {
        let s = net("fd00:20::/64");
        let gw = gateway(s);
        let used = HashSet::new();
        assert_eq!(
            next_free(s, &[net("fd00:20::/122")], gw, &used),
            Ok(net("fd00:20::2/64"))
        );
        // No broadcast in IPv6: the block's last address is usable.
        let used: HashSet<IpAddr> = (0..63u128)
            .map(|i| IpAddr::V6(Ipv6Addr::from(0xfd00_0020_u128 << 96 | i)))
            .collect();
        assert_eq!(
            next_free(s, &[net("fd00:20::/122")], gw, &used),
            Ok(net("fd00:20::3f/64"))
        );
    }

    proptest! {
        /// Allocating until full never hands out an address twice, never a reserved one, never one outside
        /// the blocks, and fills every free address of the blocks.
        #[test]
        fn never_twice_never_reserved(prefix in 20u8..=28, block_len in 28u8..=32, picks in proptest::collection::vec(0u32..1024, 1..4)) {
            let s = IpNet::new(ip("10.20.0.0"), prefix).unwrap().trunc();
            let gw = gateway(s);
            let nblocks = 1u32 << (block_len - prefix);
            let mut blocks: Vec<IpNet> = picks.iter().map(|p| {
                let base = u32::from(Ipv4Addr::new(10, 20, 0, 0)) + (p % nblocks) * (1 << (32 - block_len));
                IpNet::new(IpAddr::V4(Ipv4Addr::from(base)), block_len).unwrap()
            }).collect();
            blocks.dedup();
            let capacity: usize = {
                let mut all: HashSet<IpAddr> = HashSet::new();
                for b in &blocks { all.extend(b.hosts().chain([b.network(), b.broadcast()])); }
                all.into_iter().filter(|a| !is_reserved(s, gw, *a)).count()
            };
            let mut used = HashSet::new();
            loop {
                match next_free(s, &blocks, gw, &used) {
                    Ok(a) => {
                        prop_assert_eq!(a.prefix_len(), prefix);
                        prop_assert!(!is_reserved(s, gw, a.addr()));
                        prop_assert!(blocks.iter().any(|b| b.contains(&a.addr())));
                        prop_assert!(used.insert(a.addr()), "handed out twice: {}", a);
                    }
                    Err(e) => { prop_assert_eq!(e, IpamError::BlockFull { subnet: s }); break; }
                }
            }
            prop_assert_eq!(used.len(), capacity);
            prop_assert!(!used.contains(&s.network()));
            prop_assert!(!used.contains(&s.broadcast()));
        }
    }
}
