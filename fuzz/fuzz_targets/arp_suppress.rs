//! ARP/ND suppression as the TAP path sees it (`dataplane::engine::suppress`): any frame a local container
//! can write, against a table holding local and control bindings and a gateway. Also the ARP and NS/NA
//! parsers alone, and the invariant that every reply re-parses as the answer with the bound MAC.
#![no_main]
use dataplane::engine::suppress::{decide, NetView, Verdict, REPLY_BUF_LEN};
use dataplane::neigh::{Binding, NeighOrigin, NeighTable};
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

fuzz_target!(|data: &[u8]| {
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
