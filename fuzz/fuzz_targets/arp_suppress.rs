//! ARP/ND suppression as the TAP path sees it (`dataplane::engine::suppress`): any frame a local container
//! can write, against a table holding local and control bindings and a gateway. Also the ARP and NS/NA
//! parsers alone, and the invariant that every reply re-parses as the answer with the bound MAC.
//!
//! Input: first byte `k`. `k < 0x80`: the rest is the frame. Otherwise the rest is XORed into one of four
//! Linux captures (ARP request/reply, NS/NA; `k & 3`), cut to `len(rest)` if `k & 4`, and for NS/NA the ICMPv6
//! checksum is fixed up when `k & 8`: so the fuzzer reaches deep paths without a seed corpus.
#![no_main]
use dataplane::engine::suppress::{decide, NetView, Verdict, REPLY_BUF_LEN};
use dataplane::neigh::{Binding, NeighOrigin, NeighTable};
use dataplane::offload::checksum::{checksum, pseudo_header_v6};
use dataplane::wire::arp::ArpRepr;
use dataplane::wire::nd::NdRepr;
use dataplane::wire::{EthernetFrame, MacAddr, ETHERNET_HEADER_LEN};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Instant;

fn table() -> &'static NeighTable {
    static T: OnceLock<NeighTable> = OnceLock::new();
    T.get_or_init(|| {
        let now = Instant::now();
        let t = NeighTable::new(64, now);
        let mac = |n: u8| MacAddr([2, 0xbb, 0, 0, 0, n]);
        for (ip, m) in [("10.20.0.6", 2), ("fd00:20::6", 2), ("fe80::6", 2), ("0.0.0.1", 3)] {
            t.install(Binding { ip: ip.parse().unwrap(), mac: mac(m) }, now);
        }
        t.learn(Binding { ip: "10.20.0.7".parse().unwrap(), mac: mac(7) }, now);
        t
    })
}

const ARP_REQUEST: &str = "ffffffffffff02aa000000010806000108000604000102aa000000010a1400050000000000000a140006";
const ARP_REPLY: &str = "02aa0000000102bb00000002080600010800060400020\
2bb000000020a14000602aa000000010a140005";
const NS: &str = "3333ff00000602aa0000000186dd6000000000203afffd000020000000000000000000000005ff020000000000000000\
0001ff0000068700 7ca100000000fd000020000000000000000000000006010102aa00000001";
const NA: &str = "02aa0000000102bb0000000286dd6000000000203afffd000020000000000000000000000006fd00002000000000000000\
00000000058800 1b7360000000fd000020000000000000000000000006020102bb00000002";

fn hex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    s.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn frame(data: &[u8]) -> Vec<u8> {
    let (&k, rest) = match data.split_first() {
        Some(x) => x,
        None => return Vec::new(),
    };
    if k < 0x80 {
        return rest.to_vec();
    }
    let mut f = hex([ARP_REQUEST, ARP_REPLY, NS, NA][usize::from(k & 3)]);
    for (b, x) in f.iter_mut().zip(rest) {
        *b ^= x;
    }
    if k & 4 != 0 {
        f.truncate(rest.len());
    }
    if k & 8 != 0 && f.len() >= 86 && k & 2 != 0 {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&f[22..38]);
        dst.copy_from_slice(&f[38..54]);
        let plen = f.len() - 54;
        f[56..58].fill(0);
        let c = checksum(&f[54..], pseudo_header_v6(src, dst, 58, plen as u32));
        f[56..58].copy_from_slice(&c.to_be_bytes());
    }
    f
}

fuzz_target!(|input: &[u8]| {
    let owned = frame(input);
    let data = &owned[..];
    let _ = ArpRepr::parse(data);
    let _ = NdRepr::parse(data);
    let net = NetView {
        neigh: table(),
        gateway: Some("10.20.0.1".parse().unwrap()),
        bridge_mac: Some(MacAddr([2, 0xbe, 0, 0, 0, 1])),
    };
    let mut reply = [0u8; REPLY_BUF_LEN];
    let d = decide(data, &net, &mut reply);
    if let Verdict::Reply(n) = d.verdict {
        let e = EthernetFrame::new_checked(&reply[..n]).expect("reply is a frame");
        let (ip, mac) = match ArpRepr::parse(e.payload()) {
            Ok(a) => (IpAddr::V4(a.sender_ip), a.sender_mac),
            Err(_) => {
                let na = NdRepr::parse(e.payload()).expect("reply is an ARP reply or a valid NA");
                (IpAddr::V6(na.target), na.lladdr.expect("NA carries the target's MAC"))
            }
        };
        assert_eq!(e.src(), mac);
        assert_eq!(table().lookup(&ip), Some((mac, NeighOrigin::Control)));
    }
    if let Some(b) = d.learn {
        assert!(b.is_valid());
        assert_eq!(&data[6..12], &b.mac.0);
        assert!(data.len() > ETHERNET_HEADER_LEN);
    }
});
