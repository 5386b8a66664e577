//! Flow entropy (RFC 7348 §5): the outer UDP source port is chosen by a hash of the inner flow, so that ECMP
//! routers and RSS on the receiving NIC spread different inner flows over different paths and queues while one
//! flow stays on one (in order). Linux hashes the inner L3/L4 flow (`skb_get_hash`) into the ephemeral range.
//!
//! overlayd sends from a fixed set of sockets, each bound to its own port (see `io::udp::SenderSet`); this
//! module maps a frame to an index into that set. Pure and allocation-free; never panics on any input.

use crate::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::ETHERNET_HEADER_LEN;

/// Hash of the inner flow of an Ethernet frame (or of a TSO superframe: only its headers are read): IP
/// addresses, protocol and TCP/UDP ports for IPv4/IPv6 (addresses and protocol only for IPv4 fragments, whose
/// later pieces carry no ports, so all pieces of a packet hash alike), else the two MACs and the ethertype.
/// Stable for the life of the process and across processes (not keyed).
pub fn flow_hash(frame: &[u8]) -> u64 {
    let mut h = FlowHash::default();
    let ethertype = frame
        .get(12..14)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let l3 = frame.get(ETHERNET_HEADER_LEN..).unwrap_or(&[]);
    let l4 = match ethertype {
        ETHERTYPE_IPV4 if l3.len() >= 20 => {
            h.bytes(&l3[12..20]);
            h.word(u64::from(l3[9]));
            let frag = u16::from_be_bytes([l3[6], l3[7]]) & 0x3fff != 0;
            let ihl = usize::from(l3[0] & 0x0f) * 4;
            (!frag && matches!(l3[9], 6 | 17))
                .then(|| l3.get(ihl..ihl + 4))
                .flatten()
        }
        ETHERTYPE_IPV6 if l3.len() >= 40 => {
            h.bytes(&l3[8..40]);
            h.word(u64::from(l3[6]));
            matches!(l3[6], 6 | 17).then(|| l3.get(40..44)).flatten()
        }
        _ => {
            h.bytes(frame.get(..12).unwrap_or(frame));
            h.word(u64::from(ethertype));
            None
        }
    };
    if let Some(p) = l4 {
        h.bytes(p);
    }
    h.finish()
}

/// Which of `n` send sockets (source ports) carries the flow with hash `hash`; 0 when `n` is 0.
#[inline]
pub fn pick(hash: u64, n: usize) -> usize {
    match u64::try_from(n) {
        Ok(m) if m > 0 => usize::try_from(hash % m).unwrap_or(0),
        _ => 0,
    }
}

/// A tiny multiply-rotate hash; quality is enough for port spreading, it is not keyed.
#[derive(Default)]
struct FlowHash(u64);

impl FlowHash {
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    fn bytes(&mut self, b: &[u8]) {
        for c in b.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
    }
    fn finish(&self) -> u64 {
        let z = self.0 ^ (self.0 >> 31);
        z.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (z >> 29)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const MACS: [u8; 12] = [2, 0, 0, 0, 1, 2, 2, 0, 0, 0, 1, 1];

    /// TCP/IPv4 10.1.0.1:sport → 10.1.0.2:5001 with `payload` bytes and the given IP ID.
    fn tcp4(sport: u16, id: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = MACS.to_vec();
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 40]);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0x40, 0, 64, 6, 0, 0, 10, 1, 0, 1, 10, 1, 0, 2]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&5001u16.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        f.extend_from_slice(payload);
        f
    }

    fn udp6(sport: u16) -> Vec<u8> {
        let mut f = MACS.to_vec();
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 8, 17, 64]);
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&[0, 53, 0, 8, 0, 0]);
        f
    }

    #[test]
    fn same_flow_same_hash_whatever_the_payload() {
        let a = flow_hash(&tcp4(40000, 1, b""));
        assert_eq!(a, flow_hash(&tcp4(40000, 2, b"data")));
        assert_eq!(a, flow_hash(&tcp4(40000, 3, &[0xaa; 1400])));
        assert_ne!(a, flow_hash(&tcp4(40001, 1, b"")));
        assert_eq!(flow_hash(&udp6(1)), flow_hash(&udp6(1)));
        assert_ne!(flow_hash(&udp6(1)), flow_hash(&udp6(2)));
    }

    #[test]
    fn ipv4_fragments_hash_without_ports() {
        let mut first = tcp4(40000, 7, b"x");
        first[20] = 0x20; // MF
        let mut later = tcp4(41234, 7, b"y"); // bytes where ports would be are payload
        later[21] = 0x10; // fragment offset
        assert_eq!(flow_hash(&first), flow_hash(&later));
    }

    #[test]
    fn non_ip_hashes_the_macs() {
        let mut arp = vec![0u8; 42];
        arp[..12].copy_from_slice(&MACS);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut other = arp.clone();
        other[20..28].fill(0xee); // ARP body does not matter
        assert_eq!(flow_hash(&arp), flow_hash(&other));
        other[5] = 9; // another destination MAC does
        assert_ne!(flow_hash(&arp), flow_hash(&other));
    }

    #[test]
    fn sixteen_flows_land_on_at_least_eight_of_64_ports() {
        // Every window of 16 consecutive client ports (as a kernel hands them out) over the whole ephemeral
        // range: at least 8 distinct sockets each time, and the worst case printed.
        let mut worst = usize::MAX;
        for start in (32768u16..60999 - 16).step_by(7) {
            let socks: BTreeSet<usize> = (start..start + 16)
                .map(|p| pick(flow_hash(&tcp4(p, 0, b"")), 64))
                .collect();
            worst = worst.min(socks.len());
        }
        eprintln!("fewest distinct sockets for 16 consecutive flows: {worst} of 16");
        assert!(worst >= 8, "{worst}");
    }

    #[test]
    fn spread_is_even() {
        let mut buckets = [0u32; 64];
        for p in 0..64_000u16 {
            buckets[pick(flow_hash(&tcp4(p, 0, b"")), 64)] += 1;
        }
        // 1000 per bucket expected; ±15 % is > 4.7 standard deviations.
        assert!(buckets.iter().all(|&b| (850..=1150).contains(&b)), "{buckets:?}");
    }

    #[test]
    fn pick_bounds() {
        assert_eq!(pick(u64::MAX, 0), 0);
        assert_eq!(pick(u64::MAX, 1), 0);
        assert_eq!(pick(65, 64), 1);
        assert_eq!(pick(0, 0), 0);
    }

    proptest! {
        /// Any bytes: no panic, deterministic, and the index is in range.
        #[test]
        fn any_frame(f in proptest::collection::vec(any::<u8>(), 0..120), n in 0usize..300) {
            let h = flow_hash(&f);
            prop_assert_eq!(h, flow_hash(&f));
            let i = pick(h, n);
            prop_assert!(i < n.max(1));
        }

        /// The payload never changes the hash of a TCP/IPv4 frame.
        #[test]
        fn payload_independent(sport in any::<u16>(), a in proptest::collection::vec(any::<u8>(), 0..64),
                               b in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(flow_hash(&tcp4(sport, 1, &a)), flow_hash(&tcp4(sport, 2, &b)));
        }
    }
}
