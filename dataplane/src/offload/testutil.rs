//! Test helpers: build frames with etherparse, verify checksums with an independent naive RFC 1071 sum.

use etherparse::{PacketBuilder, TcpOptionElement};

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
pub const SRC4: [u8; 4] = [10, 0, 0, 1];
pub const DST4: [u8; 4] = [10, 0, 0, 2];
pub const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// TCP segment description for the builders.
#[derive(Debug, Clone, Copy)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub psh: bool,
    pub fin: bool,
    pub timestamps: Option<(u32, u32)>,
    pub ip_id: u16,
}

impl Default for Tcp {
    fn default() -> Self {
        Tcp {
            sport: 40000,
            dport: 5201,
            seq: 1000,
            ack: 77,
            window: 512,
            psh: false,
            fin: false,
            timestamps: None,
            ip_id: 100,
        }
    }
}

pub fn payload(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

fn tcp_step(
    b: etherparse::PacketBuilderStep<etherparse::IpHeaders>,
    t: &Tcp,
) -> etherparse::PacketBuilderStep<etherparse::TcpHeader> {
    let mut s = b.tcp(t.sport, t.dport, t.seq, t.window).ack(t.ack);
    if t.psh {
        s = s.psh();
    }
    if t.fin {
        s = s.fin();
    }
    if let Some((a, b)) = t.timestamps {
        s = s
            .options(&[
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::Timestamp(a, b),
            ])
            .unwrap();
    }
    s
}

pub fn tcp4(t: &Tcp, data: &[u8]) -> Vec<u8> {
    let mut ip = etherparse::Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, SRC4, DST4).unwrap();
    ip.identification = t.ip_id;
    ip.dont_fragment = true;
    let b =
        PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ip(etherparse::IpHeaders::Ipv4(ip, Default::default()));
    let s = tcp_step(b, t);
    let mut v = Vec::new();
    s.write(&mut v, data).unwrap();
    v
}

pub fn tcp6(t: &Tcp, data: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv6(SRC6, DST6, 64);
    let s = tcp_step(b, t);
    let mut v = Vec::new();
    s.write(&mut v, data).unwrap();
    v
}

/// A TCP superframe (IPv6 if `v6`) of `len` payload bytes with up to a few bytes flipped and then cut at any
/// point: the hostile input of the segmentation property tests.
pub fn mangled_tcp(
    v6: bool,
    len: usize,
    flips: &[(proptest::sample::Index, u8)],
    cut: proptest::sample::Index,
) -> Vec<u8> {
    let data = payload(len, 0);
    let mut f = if v6 {
        tcp6(&Tcp::default(), &data)
    } else {
        tcp4(&Tcp::default(), &data)
    };
    for (i, b) in flips {
        let i = i.index(f.len());
        f[i] ^= *b;
    }
    f.truncate(cut.index(f.len() + 1));
    f
}

pub fn udp4(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(SRC4, DST4, 64)
        .udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, data).unwrap();
    v
}

pub fn udp6(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv6(SRC6, DST6, 64)
        .udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, data).unwrap();
    v
}

/// Naive RFC 1071 folded sum (not complemented), independent of `checksum.rs`.
pub fn naive_sum(chunks: &[&[u8]]) -> u16 {
    let mut s: u64 = 0;
    for c in chunks {
        for w in c.chunks(2) {
            let hi = u64::from(w[0]) << 8;
            let lo = w.get(1).map_or(0, |b| u64::from(*b));
            s += hi | lo;
        }
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// True when the IPv4 header checksum (if any) and the TCP/UDP checksum of `frame` verify.
pub fn checksums_ok(frame: &[u8]) -> bool {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[14..];
    let (src, dst, proto, l4): (&[u8], &[u8], u8, &[u8]) = if ethertype == 0x0800 {
        let ihl = usize::from(ip[0] & 0xf) * 4;
        if naive_sum(&[&ip[..ihl]]) != 0xffff {
            return false;
        }
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        (&ip[12..16], &ip[16..20], ip[9], &ip[ihl..total])
    } else {
        let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        (&ip[8..24], &ip[24..40], ip[6], &ip[40..40 + plen])
    };
    let len = (l4.len() as u32).to_be_bytes();
    naive_sum(&[src, dst, &[0, proto], &len[..], l4]) == 0xffff
}
