//! Checks on the underlay addresses (`--local`, `--peer`) before any socket exists: one address family for the
//! whole underlay, and no address that needs a scope (link-local IPv6).
//!
//! Must never: touch the network. Pure functions of the configured addresses.

use std::net::IpAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnderlayError {
    /// The UDP socket is bound to `local`, so it cannot reach a peer of the other family (an IPv6 socket
    /// bound to a global address cannot send to an IPv4-mapped one, and the reverse has no socket at all).
    #[error(
        "--peer {peer} is {peer_family} but the local underlay address {local} is {local_family}: use one \
         address family for the whole underlay (all IPv4 or all IPv6)"
    )]
    MixedFamily {
        local: IpAddr,
        peer: IpAddr,
        local_family: &'static str,
        peer_family: &'static str,
    },
    /// fe80::/10 needs an interface scope that neither the flags nor the gossip carry.
    #[error(
        "{0} is a link-local IPv6 address (fe80::/10), which needs an interface scope: use a global or \
         unique-local (fd00::/8) address for the underlay"
    )]
    LinkLocal(IpAddr),
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn is_link_local_v6(a: IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// Whether `local` and every peer can share one UDP socket bound to `local`.
pub fn check(local: IpAddr, peers: &[IpAddr]) -> Result<(), UnderlayError> {
    if is_link_local_v6(local) {
        return Err(UnderlayError::LinkLocal(local));
    }
    for &peer in peers {
        if is_link_local_v6(peer) {
            return Err(UnderlayError::LinkLocal(peer));
        }
        if peer.is_ipv4() != local.is_ipv4() {
            return Err(UnderlayError::MixedFamily {
                local,
                peer,
                local_family: family(local),
                peer_family: family(peer),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_family_passes() {
        assert_eq!(check(ip("10.0.0.1"), &[ip("10.0.0.2"), ip("10.0.0.3")]), Ok(()));
        assert_eq!(check(ip("fd00::1"), &[ip("fd00::2"), ip("2001:db8::3")]), Ok(()));
        assert_eq!(check(ip("fd00::1"), &[]), Ok(()));
    }

    #[test]
    fn mixed_families_are_refused_naming_both() {
        let e = check(ip("fd00::1"), &[ip("fd00::2"), ip("10.0.0.2")]).unwrap_err();
        assert!(matches!(e, UnderlayError::MixedFamily { .. }));
        let msg = e.to_string();
        assert!(msg.contains("10.0.0.2") && msg.contains("fd00::1"), "{msg}");
        assert!(check(ip("10.0.0.1"), &[ip("fd00::2")]).is_err());
        // An IPv4-mapped IPv6 peer is IPv6 to the socket layer: refused beside an IPv4 local address too.
        assert!(check(ip("10.0.0.1"), &[ip("::ffff:10.0.0.2")]).is_err());
    }

    #[test]
    fn link_local_is_refused() {
        assert_eq!(
            check(ip("fe80::1"), &[ip("fd00::2")]),
            Err(UnderlayError::LinkLocal(ip("fe80::1")))
        );
        assert_eq!(
            check(ip("fd00::1"), &[ip("febf::2")]),
            Err(UnderlayError::LinkLocal(ip("febf::2")))
        );
        assert_eq!(check(ip("fec0::1"), &[]), Ok(()));
    }
}
