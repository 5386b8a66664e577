use super::*;
use crate::wire::arp::tests::{LINUX_REPLY, LINUX_REQUEST};
use crate::wire::arp::ARP_FRAME_LEN;
use crate::wire::nd::tests::{LINUX_NA, LINUX_NS};
use crate::wire::nd::{solicited_node, ND_FRAME_LEN};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// The requester of the Linux captures (10.20.0.5, fd00:20::5) and the owner of the target (10.20.0.6,
/// fd00:20::6).
const A: MacAddr = MacAddr([0x02, 0xaa, 0, 0, 0, 1]);
const B: MacAddr = MacAddr([0x02, 0xbb, 0, 0, 0, 2]);
const BRIDGE: MacAddr = MacAddr([0x02, 0xbe, 0, 0, 0, 0xbb]);

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Net {
    neigh: NeighTable,
    gateway: Option<IpAddr>,
}

impl Net {
    fn new(gateway: Option<&str>) -> Net {
        Net {
            neigh: NeighTable::new(64, Instant::now()),
            gateway: gateway.map(v4),
        }
    }
    fn view(&self) -> NetView<'_> {
        NetView {
            neigh: &self.neigh,
            gateway: self.gateway,
            bridge_mac: Some(BRIDGE),
        }
    }
    fn install(&self, ip: &str, mac: MacAddr) {
        assert_eq!(
            self.neigh.install(Binding { ip: v4(ip), mac }, Instant::now()),
            crate::neigh::Insert::New
        );
    }
    fn learn(&self, ip: &str, mac: MacAddr) {
        self.neigh.learn(Binding { ip: v4(ip), mac }, Instant::now());
    }
    fn decide(&self, frame: &[u8]) -> (Decision, Vec<u8>) {
        let mut buf = [0u8; REPLY_BUF_LEN];
        let d = decide(frame, &self.view(), &mut buf);
        let n = match d.verdict {
            Verdict::Reply(n) => n,
            _ => 0,
        };
        (d, buf[..n].to_vec())
    }
}

fn binding(ip: &str, mac: MacAddr) -> Option<Binding> {
    Some(Binding { ip: v4(ip), mac })
}

fn arp_request(sender: (&str, MacAddr), target: &str, eth_src: MacAddr) -> Vec<u8> {
    let IpAddr::V4(sip) = v4(sender.0) else { panic!() };
    let IpAddr::V4(tip) = v4(target) else { panic!() };
    let r = ArpRepr {
        op: ArpOp::Request,
        sender_mac: sender.1,
        sender_ip: sip,
        target_mac: MacAddr::ZERO,
        target_ip: tip,
    };
    let mut buf = [0u8; 64];
    let n = r.emit_frame(MacAddr::BROADCAST, eth_src, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn ns(src: &str, target: &str, dst: Option<&str>, slla: Option<MacAddr>, eth_src: MacAddr) -> Vec<u8> {
    let target: Ipv6Addr = target.parse().unwrap();
    let r = NdRepr {
        kind: NdKind::Solicit,
        src: src.parse().unwrap(),
        dst: dst.map_or(solicited_node(&target), |d| d.parse().unwrap()),
        target,
        lladdr: slla,
    };
    let mut buf = [0u8; 128];
    let n = r
        .emit_frame(MacAddr([0x33, 0x33, 0xff, 0, 0, 6]), eth_src, &mut buf)
        .unwrap();
    buf[..n].to_vec()
}

#[test]
fn arp_request_for_a_remote_binding_is_answered_exactly_as_linux_answers() {
    let net = Net::new(None);
    net.install("10.20.0.6", B);
    let counters = Counters::default();
    let mut buf = [0u8; REPLY_BUF_LEN];
    let d = suppress(&LINUX_REQUEST, &net.view(), &counters, &mut buf);
    assert_eq!(d.verdict, Verdict::Reply(ARP_FRAME_LEN));
    assert_eq!(buf[..ARP_FRAME_LEN], LINUX_REPLY);
    assert_eq!(d.learn, binding("10.20.0.5", A));
    assert_eq!(d.tally, Some(Tally::Suppressed));
    assert_eq!(counters.arp_suppressed.load(Relaxed), 1);
    assert_eq!(counters.arp_flooded.load(Relaxed), 0);
}

#[test]
fn neighbour_solicitation_for_a_remote_binding_is_answered_exactly_as_linux_answers() {
    let net = Net::new(None);
    net.install("fd00:20::6", B);
    let (d, reply) = net.decide(&LINUX_NS);
    assert_eq!(d.verdict, Verdict::Reply(ND_FRAME_LEN));
    assert_eq!(reply, LINUX_NA, "our NA differs from the kernel's");
    assert_eq!(d.learn, binding("fd00:20::5", A));
    assert_eq!(d.tally, Some(Tally::Suppressed));
    // A unicast NS (Linux's reachability probe), with or without a source link-layer option, is answered
    // too; without one, to the frame's source.
    for slla in [Some(A), None] {
        let f = ns("fd00:20::5", "fd00:20::6", Some("fd00:20::6"), slla, A);
        let (d, reply) = net.decide(&f);
        assert_eq!(d.verdict, Verdict::Reply(ND_FRAME_LEN), "{slla:?}");
        assert_eq!(reply, LINUX_NA);
        assert_eq!(d.learn, slla.and(binding("fd00:20::5", A)));
    }
}

#[test]
fn unknown_targets_are_flooded_and_the_sender_learned() {
    let net = Net::new(Some("10.20.0.1"));
    let counters = Counters::default();
    let mut buf = [0u8; REPLY_BUF_LEN];
    for f in [&LINUX_REQUEST[..], &LINUX_NS[..]] {
        let d = suppress(f, &net.view(), &counters, &mut buf);
        assert_eq!(d.verdict, Verdict::Forward);
        assert_eq!(d.tally, Some(Tally::Flooded));
        assert!(d.learn.is_some());
    }
    assert_eq!(counters.arp_flooded.load(Relaxed), 2);
    assert_eq!(counters.arp_suppressed.load(Relaxed), 0);
}

#[test]
fn requests_for_local_bindings_and_the_gateway_never_enter_the_tunnel() {
    let net = Net::new(Some("10.20.0.6"));
    let (d, _) = net.decide(&LINUX_REQUEST);
    assert_eq!(d.verdict, Verdict::Drop(Dropped::Gateway));
    assert_eq!(
        (d.tally, d.verdict),
        (Some(Tally::Suppressed), Verdict::Drop(Dropped::Gateway))
    );
    assert_eq!(Dropped::Gateway.reason(), None);
    // Gratuitous ARP and probes for the gateway address, too; a container claiming it is not learned.
    let g = arp_request(("10.20.0.6", A), "10.20.0.6", A);
    assert_eq!(
        net.decide(&g).0,
        Decision {
            verdict: Verdict::Drop(Dropped::Gateway),
            learn: None,
            tally: Some(Tally::Suppressed)
        }
    );
    let probe = arp_request(("0.0.0.0", A), "10.20.0.6", A);
    assert_eq!(net.decide(&probe).0.verdict, Verdict::Drop(Dropped::Gateway));
    let net6 = Net::new(Some("fd00:20::6"));
    assert_eq!(net6.decide(&LINUX_NS).0.verdict, Verdict::Drop(Dropped::Gateway));
    let dad = ns("::", "fd00:20::6", None, None, A);
    assert_eq!(net6.decide(&dad).0.verdict, Verdict::Drop(Dropped::Gateway));

    let net = Net::new(Some("10.20.0.1"));
    net.learn("10.20.0.6", B);
    net.learn("fd00:20::6", B);
    for f in [&LINUX_REQUEST[..], &LINUX_NS[..]] {
        let (d, reply) = net.decide(f);
        assert_eq!(d.verdict, Verdict::Drop(Dropped::LocalBinding));
        assert_eq!(d.tally, Some(Tally::Suppressed));
        assert!(reply.is_empty());
        assert_eq!(Dropped::LocalBinding.reason(), None);
    }
}

#[test]
fn frames_from_the_bridge_mac_are_dropped_whatever_they_are() {
    let net = Net::new(Some("10.20.0.1"));
    net.install("10.20.0.6", B);
    let mut f = arp_request(("10.20.0.1", BRIDGE), "10.20.0.6", BRIDGE);
    assert!(from_bridge(&f, Some(BRIDGE)));
    assert!(
        !from_bridge(&f, None)
            && !from_bridge(&f[..11], Some(BRIDGE))
            && !from_bridge(&LINUX_REQUEST, Some(BRIDGE))
    );
    let d = net.decide(&f).0;
    assert_eq!(
        d,
        Decision {
            verdict: Verdict::Drop(Dropped::BridgeMac),
            learn: None,
            tally: None
        }
    );
    assert_eq!(Dropped::BridgeMac.reason(), Some(DropReason::BridgeMac));
    f[12] = 0x08;
    f[13] = 0x00; // any EtherType
    assert_eq!(net.decide(&f).0.verdict, Verdict::Drop(Dropped::BridgeMac));
}

#[test]
fn gratuitous_arp_probes_and_dad_are_never_answered() {
    let net = Net::new(None);
    net.install("10.20.0.6", B);
    net.install("fd00:20::6", B);
    // Gratuitous ARP from the owner's new home: flooded (others update their caches) and learned.
    let garp = arp_request(("10.20.0.6", A), "10.20.0.6", A);
    let (d, _) = net.decide(&garp);
    assert_eq!(
        (d.verdict, d.tally, d.learn),
        (Verdict::Forward, Some(Tally::Flooded), binding("10.20.0.6", A))
    );
    // RFC 5227 probe: flooded (conflict detection must reach the owner), not learned.
    let probe = arp_request(("0.0.0.0", A), "10.20.0.6", A);
    assert_eq!(
        net.decide(&probe).0,
        Decision {
            verdict: Verdict::Forward,
            learn: None,
            tally: Some(Tally::Flooded)
        }
    );
    // Duplicate address detection (NS from ::).
    let dad = ns("::", "fd00:20::6", None, None, A);
    assert_eq!(
        net.decide(&dad).0,
        Decision {
            verdict: Verdict::Forward,
            learn: None,
            tally: Some(Tally::Flooded)
        }
    );
    // A requester asking for an address bound to its own MAC gets no answer from us.
    let own = arp_request(("10.20.0.5", B), "10.20.0.6", B);
    assert_eq!(net.decide(&own).0.verdict, Verdict::Forward);
}

#[test]
fn replies_and_advertisements_are_forwarded_and_learned() {
    let net = Net::new(Some("10.20.0.1"));
    net.install("10.20.0.5", A);
    let (d, _) = net.decide(&LINUX_REPLY);
    assert_eq!(
        d,
        Decision {
            verdict: Verdict::Forward,
            learn: binding("10.20.0.6", B),
            tally: None
        }
    );
    let (d, _) = net.decide(&LINUX_NA);
    assert_eq!(
        d,
        Decision {
            verdict: Verdict::Forward,
            learn: binding("fd00:20::6", B),
            tally: None
        }
    );
}

#[test]
fn claims_that_do_not_match_the_frame_source_are_not_learned() {
    let net = Net::new(None);
    net.install("10.20.0.6", B);
    // ARP sender MAC 02:cc:… in a frame from A: answered (to the sender MAC, as RFC 826 says), not learned.
    let c = MacAddr([2, 0xcc, 0, 0, 0, 3]);
    let (d, reply) = net.decide(&arp_request(("10.20.0.5", c), "10.20.0.6", A));
    assert_eq!((d.verdict, d.learn), (Verdict::Reply(ARP_FRAME_LEN), None));
    assert_eq!(reply[..6], c.0);
    // NS whose source link-layer option is not the frame's source: the NA goes to the option, nothing learned.
    let net6 = Net::new(None);
    net6.install("fd00:20::6", B);
    let (d, reply) = net6.decide(&ns("fd00:20::5", "fd00:20::6", None, Some(c), A));
    assert_eq!((d.verdict, d.learn), (Verdict::Reply(ND_FRAME_LEN), None));
    assert_eq!(reply[..6], c.0);
    // Multicast sender MACs are neither learned nor answered.
    let m = MacAddr([1, 0, 0x5e, 0, 0, 1]);
    let (d, _) = net.decide(&arp_request(("10.20.0.5", m), "10.20.0.6", m));
    assert_eq!((d.verdict, d.learn), (Verdict::Forward, None));
}

#[test]
fn everything_else_is_forwarded_untouched_and_uncounted() {
    let net = Net::new(Some("10.20.0.6"));
    net.install("fd00:20::6", B);
    let mut bad = vec![
        LINUX_REQUEST[..20].to_vec(), // truncated ARP
        vec![0u8; 10],                // not even Ethernet
    ];
    let mut htype = LINUX_REQUEST;
    htype[15] = 6;
    bad.push(htype.to_vec());
    let mut hop = LINUX_NS;
    hop[21] = 64; // crossed a router: RFC 4861 says ignore
    bad.push(hop.to_vec());
    let mut sum = LINUX_NS;
    sum[57] ^= 0x10;
    bad.push(sum.to_vec());
    let mut echo = LINUX_NS;
    echo[54] = 128; // ICMPv6 echo request
    bad.push(echo.to_vec());
    let mut ipv4 = LINUX_REQUEST;
    ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
    bad.push(ipv4.to_vec());
    let mut vlan = LINUX_REQUEST.to_vec();
    vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    bad.push(vlan);
    for f in &bad {
        assert_eq!(net.decide(f).0, Decision::FORWARD, "{f:02x?}");
    }
}

#[test]
fn a_short_reply_buffer_floods_instead() {
    let net = Net::new(None);
    net.install("10.20.0.6", B);
    let mut buf = [0u8; ARP_FRAME_LEN - 1];
    let d = decide(&LINUX_REQUEST, &net.view(), &mut buf);
    assert_eq!((d.verdict, d.tally), (Verdict::Forward, Some(Tally::Flooded)));
}

#[test]
fn learned_bindings_answer_other_hosts_requests_only_once_installed_there() {
    // Host 1 learns 10.20.0.6 from its container's reply; host 2 installs it from the advert and answers.
    let host1 = Net::new(None);
    let b = host1.decide(&LINUX_REPLY).0.learn.unwrap();
    host1.neigh.learn(b, Instant::now());
    let host2 = Net::new(None);
    for l in host1.neigh.local_bindings() {
        host2.neigh.install(l, Instant::now());
    }
    let (d, reply) = host2.decide(&LINUX_REQUEST);
    assert_eq!(d.verdict, Verdict::Reply(ARP_FRAME_LEN));
    assert_eq!(reply, LINUX_REPLY);
    // On host 1 the same request stays on the bridge.
    assert_eq!(
        host1.decide(&LINUX_REQUEST).0.verdict,
        Verdict::Drop(Dropped::LocalBinding)
    );
}

fn populated() -> Net {
    let net = Net::new(Some("10.20.0.1"));
    net.install("10.20.0.6", B);
    net.install("fd00:20::6", B);
    net.learn("10.20.0.7", MacAddr([2, 0, 0, 0, 0, 7]));
    net
}

/// If the verdict is a reply, it parses back as the answer to `frame`'s question with the bound MAC.
fn check_reply(net: &Net, frame: &[u8], d: &Decision, reply: &[u8]) -> Result<(), TestCaseError> {
    if let Verdict::Reply(n) = d.verdict {
        prop_assert_eq!(reply.len(), n);
        let q = EthernetFrame::new_checked(frame).unwrap();
        let e = EthernetFrame::new_checked(reply).unwrap();
        prop_assert_eq!(d.tally, Some(Tally::Suppressed));
        match e.ethertype() {
            ETHERTYPE_ARP => {
                let r = ArpRepr::parse(e.payload()).unwrap();
                let a = ArpRepr::parse(q.payload()).unwrap();
                prop_assert_eq!(r.op, ArpOp::Reply);
                prop_assert_eq!(
                    net.neigh.lookup(&IpAddr::V4(r.sender_ip)),
                    Some((r.sender_mac, NeighOrigin::Control))
                );
                prop_assert_eq!(
                    (r.sender_ip, r.target_ip, r.target_mac),
                    (a.target_ip, a.sender_ip, a.sender_mac)
                );
                prop_assert_eq!((e.src(), e.dst()), (r.sender_mac, a.sender_mac));
            }
            _ => {
                // Parsing checks hop limit 255 and the ICMPv6 checksum.
                let na = NdRepr::parse(e.payload()).unwrap();
                let s = NdRepr::parse(q.payload()).unwrap();
                let solicited = matches!(na.kind, NdKind::Advert { solicited: true, .. });
                prop_assert!(solicited);
                prop_assert_eq!((na.target, na.src, na.dst), (s.target, s.target, s.src));
                let mac = na.lladdr.unwrap();
                prop_assert_eq!(e.src(), mac);
                prop_assert_eq!(
                    net.neigh.lookup(&IpAddr::V6(na.target)),
                    Some((mac, NeighOrigin::Control))
                );
            }
        }
    }
    if let Some(b) = d.learn {
        prop_assert!(b.is_valid());
        prop_assert_eq!(
            Some(b.mac),
            EthernetFrame::new_checked(frame).ok().map(|e| e.src())
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn never_panics_on_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..128)) {
        let net = populated();
        let (d, reply) = net.decide(&b);
        check_reply(&net, &b, &d, &reply)?;
    }

    #[test]
    fn flipped_and_truncated_requests_never_panic_and_replies_stay_right(
        which in 0usize..4, i in 0usize..86, x in any::<u8>(), cut in 0usize..=86,
    ) {
        let net = populated();
        let mut f = [&LINUX_REQUEST[..], &LINUX_NS[..], &LINUX_REPLY[..], &LINUX_NA[..]][which].to_vec();
        if let Some(byte) = f.get_mut(i) {
            *byte ^= x;
        }
        f.truncate(cut);
        let (d, reply) = net.decide(&f);
        check_reply(&net, &f, &d, &reply)?;
    }

    #[test]
    fn any_binding_answers_any_requester(
        sip in any::<[u8; 4]>(), tip in any::<[u8; 4]>(), smac in any::<[u8; 6]>(), owner in any::<[u8; 6]>(),
        six in any::<bool>(), t6 in any::<[u8; 16]>(), s6 in any::<[u8; 16]>(),
    ) {
        let (smac, owner) = (MacAddr(smac), MacAddr(owner));
        let net = Net::new(None);
        let (frame, target) = if six {
            let (mut t6, mut s6) = (t6, s6);
            t6[0] &= 0xfe;
            s6[0] &= 0xfe;
            let target = Ipv6Addr::from(t6);
            let r = NdRepr { kind: NdKind::Solicit, src: Ipv6Addr::from(s6), dst: solicited_node(&target), target, lladdr: Some(smac) };
            let mut buf = [0u8; 128];
            let n = r.emit_frame(MacAddr([0x33, 0x33, 0xff, 0, 0, 1]), smac, &mut buf).unwrap();
            (buf[..n].to_vec(), IpAddr::V6(target))
        } else {
            let r = ArpRepr { op: ArpOp::Request, sender_mac: smac, sender_ip: Ipv4Addr::from(sip), target_mac: MacAddr::ZERO, target_ip: Ipv4Addr::from(tip) };
            let mut buf = [0u8; 64];
            let n = r.emit_frame(MacAddr::BROADCAST, smac, &mut buf).unwrap();
            (buf[..n].to_vec(), IpAddr::V4(Ipv4Addr::from(tip)))
        };
        let installed = net.neigh.install(Binding { ip: target, mac: owner }, Instant::now()) == crate::neigh::Insert::New;
        let (d, reply) = net.decide(&frame);
        check_reply(&net, &frame, &d, &reply)?;
        let answerable = installed && owner != smac && smac.is_learnable() && !(
            !six && (sip == [0; 4] || sip == tip)) && !(six && Ipv6Addr::from(s6).is_unspecified());
        prop_assert_eq!(matches!(d.verdict, Verdict::Reply(_)), answerable, "{:?}", d);
    }
}
