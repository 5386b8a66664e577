use super::*;
use crate::offload::checksum::{checksum, fold, pseudo_header_v6, sum};
use proptest::prelude::*;

const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// An Ethernet + IPv4 + ICMP echo frame from 10.0.0.1 to 10.0.0.2 with `payload` bytes of echo data.
fn v4_frame(payload: usize, df: bool, icmp_type: u8) -> Vec<u8> {
    let ip_len = 20 + 8 + payload;
    let mut f = Vec::new();
    f.extend_from_slice(&B);
    f.extend_from_slice(&A);
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let l = (ip_len as u16).to_be_bytes();
    f.extend_from_slice(&[
        0x45,
        0,
        l[0],
        l[1],
        0x12,
        0x34,
        if df { 0x40 } else { 0 },
        0,
        64,
        1,
        0,
        0,
    ]);
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[icmp_type, 0, 0, 0, 0, 1, 0, 1]);
    f.extend((0..payload).map(|i| i as u8));
    f
}

fn v6_frame(payload: usize, next: u8, first: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&B);
    f.extend_from_slice(&A);
    f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let l = ((8 + payload) as u16).to_be_bytes();
    f.extend_from_slice(&[0x60, 0, 0, 0, l[0], l[1], next, 63]);
    let mut src = [0u8; 16];
    src[0] = 0xfd;
    src[15] = 1;
    let mut dst = src;
    dst[15] = 2;
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[first, 0, 0, 0, 0, 1, 0, 1]);
    f.extend((0..payload).map(|i| i as u8));
    f
}

#[test]
fn ipv4_frag_needed_matches_linux() {
    // ping -M do -s 1422: a 1450-byte IP packet, path allows 1350.
    let f = v4_frame(1422, true, 8);
    assert!(exceeds(&f, 1350));
    assert!(!exceeds(&f, 1450));
    let mut out = [0u8; MAX_REPLY_LEN];
    let n = reply(&f, 1350, &mut out).expect("a reply");
    let r = &out[..n];
    // 576-byte IP packet: 20 + 8 + 548 quoted bytes.
    assert_eq!(n, 14 + 576);
    assert_eq!(&r[0..6], &A, "to the sender's MAC");
    assert_eq!(&r[6..12], &B, "from the MAC it sent to");
    assert_eq!(&r[12..14], &[0x08, 0x00]);
    let ip = &r[14..];
    assert_eq!(
        &ip[..12],
        &[0x45, 0, 0x02, 0x40, 0, 0, 0x40, 0, 64, 1, ip[10], ip[11]]
    );
    assert_eq!(
        &ip[12..20],
        &[10, 0, 0, 2, 10, 0, 0, 1],
        "from the inner destination to the sender"
    );
    assert_eq!(checksum(&ip[..20], 0), 0, "IPv4 header checksum");
    let icmp = &ip[20..];
    assert_eq!(
        &icmp[..2],
        &[3, 4],
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(&icmp[4..8], &[0, 0, 0x05, 0x46], "next-hop MTU 1350");
    assert_eq!(checksum(icmp, 0), 0, "ICMP checksum");
    assert_eq!(&icmp[8..], &f[14..14 + 548], "quotes the original packet");
}

#[test]
fn ipv4_small_packet_is_quoted_whole() {
    let f = v4_frame(100, true, 8);
    let mut out = [0u8; MAX_REPLY_LEN];
    let n = reply(&f, 600, &mut out).expect("a reply");
    assert_eq!(n, 14 + 20 + 8 + 128);
    assert_eq!(&out[14 + 28..n], &f[14..]);
}

#[test]
fn ipv4_no_reply_cases() {
    let mut out = [0u8; MAX_REPLY_LEN];
    assert_eq!(
        reply(&v4_frame(1422, false, 8), 1350, &mut out),
        None,
        "no DF: no ICMP"
    );
    assert_eq!(
        reply(&v4_frame(1422, true, 3), 1350, &mut out),
        None,
        "ICMP error: no ICMP"
    );
    assert_eq!(
        reply(&v4_frame(1422, true, 8), 500, &mut out),
        None,
        "MTU below 576"
    );
    assert_eq!(
        reply(&v4_frame(1422, true, 8), 1350, &mut out[..100]),
        None,
        "out too small"
    );
    let mut arp = v4_frame(10, true, 8);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(reply(&arp, 1350, &mut out), None, "not IP");
    let mut mc = v4_frame(10, true, 8);
    mc[26..30].copy_from_slice(&[224, 0, 0, 1]);
    assert_eq!(reply(&mc, 1350, &mut out), None, "multicast source");
    let mut bc = v4_frame(1422, true, 8);
    bc[0..6].copy_from_slice(&[0xff; 6]);
    assert_eq!(reply(&bc, 1350, &mut out), None, "to a group MAC");
}

#[test]
fn ipv6_packet_too_big_matches_linux() {
    let f = v6_frame(1400, 58, 128);
    let mut out = [0u8; MAX_REPLY_LEN];
    let n = reply(&f, 1330, &mut out).expect("a reply");
    assert_eq!(n, 14 + 1280, "an ICMPv6 error fills at most the minimum MTU");
    let r = &out[..n];
    assert_eq!(&r[0..6], &A);
    assert_eq!(&r[6..12], &B);
    assert_eq!(&r[12..14], &[0x86, 0xdd]);
    let ip = &r[14..];
    assert_eq!(
        &ip[..8],
        &[0x60, 0, 0, 0, 0x04, 0xd8, 58, 63],
        "payload 1240, ICMPv6, hop limit kept"
    );
    assert_eq!(&ip[8..24], &f[14 + 24..14 + 40], "from the inner destination");
    assert_eq!(&ip[24..40], &f[14 + 8..14 + 24], "to the sender");
    let icmp = &ip[40..];
    assert_eq!(&icmp[..2], &[2, 0], "packet too big");
    assert_eq!(&icmp[4..8], &1330u32.to_be_bytes());
    let src: [u8; 16] = ip[8..24].try_into().unwrap();
    let dst: [u8; 16] = ip[24..40].try_into().unwrap();
    let ps = pseudo_header_v6(src, dst, 58, icmp.len() as u32);
    assert_eq!(fold(sum(icmp, ps)), 0xffff, "ICMPv6 checksum");
    assert_eq!(&icmp[8..], &f[14..14 + 1232]);
}

#[test]
fn ipv6_no_reply_cases() {
    let mut out = [0u8; MAX_REPLY_LEN];
    assert_eq!(
        reply(&v6_frame(1400, 58, 1), 1330, &mut out),
        None,
        "ICMPv6 error"
    );
    assert_eq!(
        reply(&v6_frame(1400, 6, 1), 1200, &mut out),
        None,
        "MTU below 1280"
    );
    let mut mc = v6_frame(1400, 6, 0);
    mc[14 + 8] = 0xff;
    assert_eq!(reply(&mc, 1330, &mut out), None, "multicast source");
    assert!(
        reply(&v6_frame(1400, 6, 0), 1330, &mut out).is_some(),
        "TCP is answered"
    );
}

proptest! {
    #[test]
    fn never_panics_and_replies_stay_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..1600),
                                               mtu in 0u32..70_000) {
        let mut out = [0u8; MAX_REPLY_LEN];
        if let Some(n) = reply(&bytes, mtu, &mut out) {
            prop_assert!((14 + 28..=MAX_REPLY_LEN).contains(&n));
            prop_assert_eq!(&out[0..6], &bytes[6..12]);
        }
    }

    #[test]
    fn truncated_or_flipped_frames_never_panic(cut in 0usize..1500, at in 0usize..1500, bit in 0u8..8) {
        let mut f = v4_frame(1422, true, 8);
        if let Some(b) = f.get_mut(at) { *b ^= 1 << bit; }
        f.truncate(cut.max(1));
        let mut out = [0u8; MAX_REPLY_LEN];
        let _ = reply(&f, 1350, &mut out);
        let mut g = v6_frame(1400, 6, 0);
        if let Some(b) = g.get_mut(at) { *b ^= 1 << bit; }
        g.truncate(cut.max(1));
        let _ = reply(&g, 1330, &mut out);
    }
}
