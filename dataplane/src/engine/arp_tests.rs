//! ARP/ND suppression on the engine's TX path (issue 10 §4): the engine consults the network's neighbour
//! table after the rate limit and before the FDB lookup, and frames from the bridge's own MAC never enter
//! the tunnel.

use super::*;
use crate::neigh::{Binding, NeighOrigin};
use crate::network::{Network, NetworkTable};
use crate::wire::arp::{ArpOp, ArpRepr};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;

const A: MacAddr = MacAddr([2, 0xaa, 0, 0, 0, 1]);
const B: MacAddr = MacAddr([2, 0xbb, 0, 0, 0, 2]);
const BRIDGE: MacAddr = MacAddr([2, 0x4f, 0, 0, 0, 0xbb]);

fn ip(n: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, n])
}
fn v4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, 0, n)
}

/// An ARP request from container A (10.20.0.5) for 10.20.0.`target`, broadcast.
fn request(target: u8) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    let n = ArpRepr {
        op: ArpOp::Request,
        sender_mac: A,
        sender_ip: v4(5),
        target_mac: MacAddr::ZERO,
        target_ip: v4(target),
    }
    .emit_frame(MacAddr::BROADCAST, A, &mut f)
    .unwrap();
    f.truncate(n);
    f
}

/// Host 1 serving one network (VNI 100, gateway 10.20.0.1, bridge MAC known) that floods to host 2.
fn setup() -> (Engine, Arc<Network>, Instant) {
    let now = Instant::now();
    let fdb = Arc::new(Fdb::new(64, Fdb::DEFAULT_AGEING, now));
    let mut n = Network::new("a", Vni::new(100).unwrap(), fdb, Arc::new(PeerSet::new([ip(2)])));
    n.gateway = Some(IpAddr::V4(v4(1)));
    n.bridge_mac.set(Some(BRIDGE));
    let n = Arc::new(n);
    let table = Arc::new(NetworkTable::new([n.clone()]).unwrap());
    // No broadcast rate limit here (tests.rs covers it): every request reaches the suppressor.
    let mut cfg = EngineConfig::new(Vni::new(1).unwrap(), ip(1));
    cfg.bum_pps = 0;
    let e = Engine::serving(cfg, Side::Tx, table, Arc::new(PeerSet::new([ip(2)])));
    (e, n, now)
}

#[test]
fn a_request_for_a_known_remote_binding_is_answered_into_the_tap_and_never_sent() {
    let (mut e, n, now) = setup();
    n.neigh.install(
        Binding {
            ip: IpAddr::V4(v4(6)),
            mac: B,
        },
        now,
    );
    let mut out = TxAction::default();
    let v = e.on_tap(now, 0, &request(6), &mut out).unwrap();
    let TxVerdict::Reply(len) = v else {
        panic!("expected a reply, got {v:?}")
    };
    assert!(out.dests.is_empty(), "nothing goes to the underlay");
    let reply = out.reply(len);
    let eth = EthernetFrame::new_checked(reply).unwrap();
    assert_eq!((eth.dst(), eth.src()), (A, B), "from the owner to the requester");
    let r = ArpRepr::parse(eth.payload()).unwrap();
    assert_eq!(
        (r.op, r.sender_mac, r.sender_ip, r.target_mac, r.target_ip),
        (ArpOp::Reply, B, v4(6), A, v4(5))
    );
    assert_eq!(n.tx.of(0).arp_suppressed.load(Relaxed), 1);
    assert_eq!(n.tx.of(0).arp_flooded.load(Relaxed), 0);
    // The requester was learned as a local binding, and its MAC as local in the FDB.
    assert_eq!(n.neigh.lookup(&IpAddr::V4(v4(5))), Some((A, NeighOrigin::Local)));
    assert_eq!(n.fdb.lookup(&A, now).unwrap().origin, Origin::Local);
}

#[test]
fn a_request_for_an_unknown_address_is_flooded_and_counted() {
    let (mut e, n, now) = setup();
    let mut out = TxAction::default();
    assert_eq!(e.on_tap(now, 0, &request(7), &mut out), Ok(TxVerdict::Send));
    assert_eq!(out.dests, vec![SocketAddr::new(ip(2), 4789)]);
    assert_eq!(n.tx.of(0).arp_flooded.load(Relaxed), 1);
    assert_eq!(n.tx.of(0).arp_suppressed.load(Relaxed), 0);
}

#[test]
fn requests_for_the_gateway_or_a_local_binding_never_leave() {
    let (mut e, n, now) = setup();
    let mut out = TxAction::default();
    assert_eq!(e.on_tap(now, 0, &request(1), &mut out), Ok(TxVerdict::Consumed));
    assert!(out.dests.is_empty());
    n.neigh.learn(
        Binding {
            ip: IpAddr::V4(v4(8)),
            mac: MacAddr([2, 0xcc, 0, 0, 0, 3]),
        },
        now,
    );
    assert_eq!(e.on_tap(now, 0, &request(8), &mut out), Ok(TxVerdict::Consumed));
    assert!(out.dests.is_empty());
    assert_eq!(n.tx.of(0).arp_suppressed.load(Relaxed), 2);
    assert_eq!(
        crate::stats::Snapshot::sum([&**n.tx.of(0)]).drops_total(),
        0,
        "suppressed requests are not drops"
    );
}

#[test]
fn frames_from_the_bridge_mac_are_dropped_and_not_learned() {
    let (mut e, n, now) = setup();
    let mut out = TxAction::default();
    // The bridge asking for a container's address (the gateway's ARP) and any other frame of the bridge.
    let mut f = request(6);
    f[6..12].copy_from_slice(&BRIDGE.0);
    assert_eq!(e.on_tap(now, 0, &f, &mut out), Err(DropReason::BridgeMac));
    let mut g = vec![0u8; 60];
    g[0..6].copy_from_slice(&B.0);
    g[6..12].copy_from_slice(&BRIDGE.0);
    g[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    assert_eq!(e.on_tap(now, 0, &g, &mut out), Err(DropReason::BridgeMac));
    assert!(out.dests.is_empty());
    assert!(n.fdb.lookup(&BRIDGE, now).is_none(), "never learned as local");
    assert!(n.neigh.is_empty());
    // The bridge's address changes: the new one is dropped, the old one is an ordinary source.
    let other = MacAddr([2, 0x4f, 0, 0, 0, 0xcc]);
    n.bridge_mac.set(Some(other));
    assert_eq!(e.on_tap(now, 0, &g, &mut out), Ok(TxVerdict::Send));
    g[6..12].copy_from_slice(&other.0);
    assert_eq!(e.on_tap(now, 0, &g, &mut out), Err(DropReason::BridgeMac));
}

/// Without an anycast gateway (no egress) the bridge is an ordinary local endpoint: the host may talk over it.
#[test]
fn without_a_gateway_the_bridge_may_talk_over_the_overlay() {
    let now = Instant::now();
    let fdb = Arc::new(Fdb::new(64, Fdb::DEFAULT_AGEING, now));
    let n = Network::new(
        "a",
        Vni::new(100).unwrap(),
        fdb.clone(),
        Arc::new(PeerSet::new([ip(2)])),
    );
    n.bridge_mac.set(Some(BRIDGE));
    let table = Arc::new(NetworkTable::new([Arc::new(n)]).unwrap());
    let mut cfg = EngineConfig::new(Vni::new(1).unwrap(), ip(1));
    cfg.bum_pps = 0;
    let mut e = Engine::serving(cfg, Side::Tx, table, Arc::new(PeerSet::new([ip(2)])));
    let mut out = TxAction::default();
    let mut g = vec![0u8; 60];
    g[0..6].copy_from_slice(&B.0);
    g[6..12].copy_from_slice(&BRIDGE.0);
    g[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    assert_eq!(e.on_tap(now, 0, &g, &mut out), Ok(TxVerdict::Send));
    assert!(!out.dests.is_empty());
    assert!(
        fdb.lookup(&BRIDGE, now).is_none(),
        "the bridge MAC is not learned as local"
    );
}

/// Answering a known binding (the requester's binding and FDB entry already there) allocates nothing.
#[test]
fn the_reply_path_does_not_allocate() {
    use crate::io::testns::alloc_count::allocations;
    let (mut e, n, now) = setup();
    n.neigh.install(
        Binding {
            ip: IpAddr::V4(v4(6)),
            mac: B,
        },
        now,
    );
    let (known, unknown, gateway) = (request(6), request(7), request(1));
    let mut out = TxAction::default();
    out.dests.reserve(8);
    for f in [&known, &unknown, &gateway] {
        let _ = e.on_tap(now, 0, f, &mut out);
    }
    let before = allocations();
    for _ in 0..100 {
        assert!(matches!(
            e.on_tap(now, 0, &known, &mut out),
            Ok(TxVerdict::Reply(_))
        ));
        assert_eq!(e.on_tap(now, 0, &unknown, &mut out), Ok(TxVerdict::Send));
        assert_eq!(e.on_tap(now, 0, &gateway, &mut out), Ok(TxVerdict::Consumed));
    }
    assert_eq!(allocations() - before, 0, "the suppression path allocated");
}

/// IPv6: a neighbour solicitation for a known remote binding is answered with the advertisement Linux itself
/// sends (the captures in `wire::nd`), and nothing goes to the underlay.
#[test]
fn a_solicitation_for_a_known_remote_binding_is_answered_into_the_tap() {
    use crate::wire::nd::tests::{LINUX_NA, LINUX_NS};
    let (mut e, n, now) = setup();
    let owner: IpAddr = "fd00:20::6".parse().unwrap();
    n.neigh.install(Binding { ip: owner, mac: B }, now);
    let mut out = TxAction::default();
    assert_eq!(
        e.on_tap(now, 0, &LINUX_NS, &mut out),
        Ok(TxVerdict::Reply(LINUX_NA.len()))
    );
    assert!(out.dests.is_empty());
    assert_eq!(out.reply(LINUX_NA.len()), &LINUX_NA[..]);
    assert_eq!(n.tx.of(0).arp_suppressed.load(Relaxed), 1);
    let requester: IpAddr = "fd00:20::5".parse().unwrap();
    assert_eq!(n.neigh.lookup(&requester), Some((A, NeighOrigin::Local)));
    // Unknown target: flooded, counted.
    n.neigh.remove_control(&owner);
    assert_eq!(e.on_tap(now, 0, &LINUX_NS, &mut out), Ok(TxVerdict::Send));
    assert_eq!(out.dests, vec![SocketAddr::new(ip(2), 4789)]);
    assert_eq!(n.tx.of(0).arp_flooded.load(Relaxed), 1);
}
