//! RX: a kernel's UDP-tunnel GSO packet delivered whole.
//!
//! A Linux VXLAN sender with TSO and a veth/virtio underlay hands its TSO superframe down as one skb
//! (`SKB_GSO_TCPV4|SKB_GSO_UDP_TUNNEL`) that nothing segments on the way: the receiving kernel queues it to our
//! UDP socket as one datagram of up to ~64 KiB — VXLAN header, inner Ethernet + IP + TCP headers, then the whole
//! payload — with no `UDP_GRO` control message (that is only given for `SKB_GSO_UDP_L4`), so the sender's MSS
//! is not known. The inner checksum is partial over the whole TCP length, as for any TSO skb.
//!
//! Written to the TAP as a plain frame it would be dropped (longer than every MTU on the way). [`superframe_hdr`]
//! gives the virtio header that writes it as one TSO superframe instead (the cheapest receive path, as for our
//! own coalesced frames), with segments sized for the TAP's MTU should the kernel ever need to split it.

use super::checksum::{fold, sum};
use super::headers::{be16, parse, put, Ip, ETH_HLEN, IPPROTO_TCP};
use super::virtio::{
    VirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};

/// For an inner TCP frame whose IP packet is longer than `mtu`: return the virtio header for a TSO write
/// (`NEEDS_CSUM`, TCPV4/TCPV6, `gso_size` = `mtu` minus the IP and TCP headers), with the checksum field
/// holding the pseudo-header sum over the whole TCP length. A kernel's superframe holds exactly that already
/// (partial); a complete checksum is verified first and then replaced. `None` (frame untouched) for anything
/// else: frames that fit the MTU, non-TCP, IPv4 options, a checksum that is neither partial nor correct.
pub fn superframe_hdr(frame: &mut [u8], mtu: u16) -> Option<VirtioNetHdr> {
    let h = parse(frame).ok()?;
    if h.proto != IPPROTO_TCP || h.ip_end.saturating_sub(ETH_HLEN) <= usize::from(mtu) {
        return None;
    }
    if h.ip == Ip::V4 && h.ip_hlen() != 20 {
        return None; // IPv4 options: never produced by TSO, and the kernel's segmentation rejects them
    }
    let gso_size = usize::from(mtu).checked_sub(h.payload_off - ETH_HLEN)?;
    if gso_size == 0 || h.payload_len() <= gso_size {
        return None;
    }
    let pseudo_sum = h.pseudo(frame, h.l4_len());
    let pseudo = fold(pseudo_sum);
    if be16(frame, h.l4_off + 16) != pseudo {
        // A complete checksum: verify it before the kernel is told to trust the frame (fail closed).
        let ok = frame
            .get(h.l4_off..h.ip_end)
            .is_some_and(|l4| fold(sum(l4, pseudo_sum)) == 0xffff);
        if !ok {
            return None;
        }
        put(frame, h.l4_off + 16, &pseudo.to_be_bytes());
    }
    Some(VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: match h.ip {
            Ip::V4 => VIRTIO_NET_HDR_GSO_TCPV4,
            Ip::V6 => VIRTIO_NET_HDR_GSO_TCPV6,
        },
        hdr_len: u16::try_from(h.payload_off).ok()?,
        gso_size: u16::try_from(gso_size).ok()?,
        csum_start: u16::try_from(h.l4_off).ok()?,
        csum_offset: 16,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::gso::segment;
    use crate::offload::testutil::*;
    use proptest::prelude::*;

    const MSS: usize = 1398;

    /// A TSO superframe as a kernel sender leaves it: IP length over everything, TCP checksum partial.
    fn kernel_superframe(v6: bool, payload_len: usize) -> Vec<u8> {
        let data = payload(payload_len, 3);
        let mut f = if v6 {
            tcp6(&Tcp::default(), &data)
        } else {
            tcp4(&Tcp::default(), &data)
        };
        let h = parse(&f).unwrap();
        let p = fold(h.pseudo(&f, h.l4_len()));
        put(&mut f, h.l4_off + 16, &p.to_be_bytes());
        f
    }

    #[test]
    fn superframe_header_and_resegmentation() {
        for v6 in [false, true] {
            let mut f = kernel_superframe(v6, 10 * MSS + 7);
            let l4 = if v6 { 54 } else { 34 };
            // The MTU that makes the segments MSS long.
            let mtu = (MSS + l4 - 14 + 20) as u16;
            let hdr = superframe_hdr(&mut f, mtu).expect("superframe");
            assert_eq!(
                hdr,
                VirtioNetHdr {
                    flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                    gso_type: if v6 {
                        VIRTIO_NET_HDR_GSO_TCPV6
                    } else {
                        VIRTIO_NET_HDR_GSO_TCPV4
                    },
                    hdr_len: (l4 + 20) as u16,
                    gso_size: MSS as u16,
                    csum_start: l4 as u16,
                    csum_offset: 16,
                }
            );
            // What the kernel will do with it: 11 segments, each with a verifying checksum.
            let mut out = vec![0u8; 100_000];
            let s = segment(&hdr, &mut f.clone(), &[], &mut out).unwrap();
            assert_eq!(s.count, 11);
            assert!(out[..s.total_len].chunks(s.stride).all(checksums_ok));
        }
        // A full checksum in the field is replaced by the pseudo-header sum.
        let data = payload(3 * MSS, 9);
        let mut f = tcp4(&Tcp::default(), &data);
        let mut bad = f.clone();
        bad[100] ^= 1;
        assert_eq!(
            superframe_hdr(&mut bad, 1450),
            None,
            "a corrupted complete checksum"
        );
        let hdr = superframe_hdr(&mut f, 1450).unwrap();
        assert_eq!(hdr.gso_size, 1410);
        let mut out = vec![0u8; 10_000];
        let s = segment(&hdr, &mut f, &[], &mut out).unwrap();
        assert!(out[..s.total_len].chunks(s.stride).all(checksums_ok));
    }

    #[test]
    fn not_a_superframe_is_untouched() {
        let mut one = tcp4(&Tcp::default(), &payload(1410, 1));
        let before = one.clone();
        assert_eq!(superframe_hdr(&mut one, 1450), None, "fits the MTU");
        assert_eq!(superframe_hdr(&mut one, 0), None);
        assert_eq!(superframe_hdr(&mut one, 30), None, "MTU below the headers");
        let mut u = udp4(1, 2, &payload(5000, 1));
        assert_eq!(superframe_hdr(&mut u, 1450), None);
        assert_eq!(one, before);
        assert!(superframe_hdr(&mut tcp4(&Tcp::default(), &payload(1411, 1)), 1450).is_some());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes(mut b in proptest::collection::vec(any::<u8>(), 0..400), mtu in any::<u16>()) {
            if let Some(h) = superframe_hdr(&mut b, mtu) {
                prop_assert!(usize::from(h.csum_start) + 18 <= b.len());
            }
        }
    }
}
