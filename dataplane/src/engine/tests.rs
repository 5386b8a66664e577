//! Engine tests without I/O: a few engines wired together in memory with an explicit clock.

use super::*;
use crate::fdb::Dest;
use crate::wire::MacAddr;
use std::time::Duration;

const VNI: u32 = 42;

fn ip(n: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, n])
}
fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 1, n])
}
fn frame(dst: MacAddr, src: MacAddr, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One simulated host: an engine plus what reached its TAP.
struct Host {
    addr: IpAddr,
    engine: Engine,
    fdb: Arc<Fdb>,
    tap_out: Vec<Vec<u8>>,
}

struct Net {
    hosts: Vec<Host>,
    now: Instant,
    /// Datagrams put on the wire: (from, to, bytes).
    wire: Vec<(IpAddr, SocketAddr, Vec<u8>)>,
}

impl Net {
    fn new(n: u8) -> Net {
        let now = Instant::now();
        let addrs: Vec<IpAddr> = (1..=n).map(ip).collect();
        let hosts = addrs
            .iter()
            .map(|&a| {
                let fdb = Arc::new(Fdb::new(1024, Fdb::DEFAULT_AGEING, now));
                let peers = Arc::new(PeerSet::new(addrs.iter().copied().filter(|p| *p != a)));
                let cfg = EngineConfig::new(Vni::new(VNI).unwrap(), a);
                let engine = Engine::new(cfg, fdb.clone(), peers, Arc::default());
                Host {
                    addr: a,
                    engine,
                    fdb,
                    tap_out: Vec::new(),
                }
            })
            .collect();
        Net {
            hosts,
            now,
            wire: Vec::new(),
        }
    }

    /// A container behind host `h` sends `f`; returns the VTEPs it was sent to.
    fn send(&mut self, h: usize, f: &[u8]) -> Result<Vec<SocketAddr>, DropReason> {
        let mut out = TxAction::default();
        let host = &mut self.hosts[h];
        host.engine.on_tap_frame(self.now, f, &mut out)?;
        let mut d = host.engine.header().to_vec();
        d.extend_from_slice(f);
        for dst in &out.dests {
            self.wire.push((host.addr, *dst, d.clone()));
        }
        Ok(out.dests.clone())
    }

    /// Deliver everything on the wire; returns per-datagram verdicts.
    fn deliver(&mut self) -> Vec<Result<(), DropReason>> {
        let wire = std::mem::take(&mut self.wire);
        let mut verdicts = Vec::new();
        for (from, to, d) in wire {
            let host = self
                .hosts
                .iter_mut()
                .find(|h| h.addr == to.ip())
                .expect("destination host exists");
            let v = host
                .engine
                .on_underlay_datagram(self.now, SocketAddr::new(from, 4789), &d);
            verdicts.push(v.clone().map(|r| host.tap_out.push(d[r].to_vec())));
        }
        verdicts
    }
}

#[test]
fn broadcast_floods_to_every_peer_and_is_learned() {
    let mut net = Net::new(3);
    let arp = frame(MacAddr::BROADCAST, mac(1), b"who-has");
    let mut dests = net.send(0, &arp).unwrap();
    dests.sort();
    assert_eq!(
        dests,
        vec![SocketAddr::new(ip(2), 4789), SocketAddr::new(ip(3), 4789)]
    );
    assert!(net.deliver().iter().all(Result::is_ok));
    for h in &net.hosts[1..] {
        assert_eq!(h.tap_out, vec![arp.clone()], "frame reaches the TAP unchanged");
        assert_eq!(
            h.fdb.lookup(&mac(1), net.now),
            Some(Dest {
                vtep: ip(1),
                origin: Origin::Learned
            })
        );
    }
    assert!(
        net.hosts[0].tap_out.is_empty(),
        "split horizon: never back to the sender"
    );
    assert_eq!(
        net.hosts[0].fdb.lookup(&mac(1), net.now).map(|d| d.origin),
        Some(Origin::Local)
    );
}

#[test]
fn known_unicast_goes_to_one_vtep_unknown_floods() {
    let mut net = Net::new(3);
    net.send(0, &frame(MacAddr::BROADCAST, mac(1), b"hello")).unwrap();
    net.deliver();
    // Host 3's container answers host 1's: learned, so unicast to host 1 only.
    let reply = frame(mac(1), mac(3), b"reply");
    assert_eq!(net.send(2, &reply).unwrap(), vec![SocketAddr::new(ip(1), 4789)]);
    net.deliver();
    assert_eq!(net.hosts[0].tap_out, vec![reply]);
    assert!(net.hosts[1].tap_out.len() == 1, "host 2 got only the broadcast");
    // Unknown unicast floods.
    assert_eq!(net.send(0, &frame(mac(9), mac(1), b"?")).unwrap().len(), 2);
    // Multicast floods even when a unicast MAC with the same low bits is known.
    assert_eq!(
        net.send(0, &frame(MacAddr([0x01, 0, 0x5e, 0, 0, 1]), mac(1), b"m"))
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn learned_entries_age_out_then_flood_again() {
    let mut net = Net::new(3);
    net.send(1, &frame(MacAddr::BROADCAST, mac(2), b"x")).unwrap();
    net.deliver();
    assert_eq!(
        net.send(0, &frame(mac(2), mac(1), b"y")).unwrap(),
        vec![SocketAddr::new(ip(2), 4789)]
    );
    net.now += Fdb::DEFAULT_AGEING + Duration::from_secs(1);
    assert_eq!(net.hosts[0].fdb.lookup(&mac(2), net.now), None);
    // Both the learned remote MAC and host 1's own (local) MAC aged out.
    assert_eq!(net.hosts[0].fdb.expire(net.now), 2);
    assert_eq!(
        net.send(0, &frame(mac(2), mac(1), b"z")).unwrap().len(),
        2,
        "unknown again: flooded"
    );
}

#[test]
fn mac_move_follows_the_newest_vtep() {
    let mut net = Net::new(3);
    net.send(1, &frame(MacAddr::BROADCAST, mac(7), b"at host 2"))
        .unwrap();
    net.deliver();
    assert_eq!(net.hosts[0].fdb.lookup(&mac(7), net.now).unwrap().vtep, ip(2));
    // The workload migrates to host 3 and announces itself (gratuitous ARP).
    net.now += Duration::from_secs(5);
    net.send(2, &frame(MacAddr::BROADCAST, mac(7), b"at host 3"))
        .unwrap();
    net.deliver();
    assert_eq!(net.hosts[0].fdb.lookup(&mac(7), net.now).unwrap().vtep, ip(3));
    assert_eq!(net.hosts[0].engine.counters().moves.load(Ordering::Relaxed), 1);
    // Host 2 saw it move away from its own bridge.
    assert_eq!(
        net.hosts[1].fdb.lookup(&mac(7), net.now).unwrap(),
        Dest {
            vtep: ip(3),
            origin: Origin::Learned
        }
    );
    assert_eq!(
        net.send(0, &frame(mac(7), mac(1), b"u")).unwrap(),
        vec![SocketAddr::new(ip(3), 4789)]
    );
}

#[test]
fn frames_for_local_macs_are_not_sent_back_out() {
    let mut net = Net::new(2);
    net.send(0, &frame(MacAddr::BROADCAST, mac(1), b"a")).unwrap();
    // A frame from the TAP addressed to a MAC behind our own bridge (the bridge should have switched it).
    assert_eq!(
        net.send(0, &frame(mac(1), mac(5), b"b")),
        Err(DropReason::LocalDst)
    );
}

#[test]
fn rx_validation_drops_by_reason() {
    let mut net = Net::new(2);
    let good = {
        let mut d = vxlan::header(Vni::new(VNI).unwrap()).to_vec();
        d.extend_from_slice(&frame(mac(2), mac(1), b"payload"));
        d
    };
    let src = SocketAddr::new(ip(1), 40000);
    let e = &mut net.hosts[1].engine;
    let now = net.now;
    assert_eq!(e.on_underlay_datagram(now, src, &good), Ok(8..good.len()));
    assert_eq!(
        e.on_underlay_datagram(now, src, &good[..21]),
        Err(DropReason::Short)
    );
    let mut bad = good.clone();
    bad[0] = 0;
    assert_eq!(e.on_underlay_datagram(now, src, &bad), Err(DropReason::BadFlags));
    let mut bad = good.clone();
    bad[6] = 43;
    assert_eq!(
        e.on_underlay_datagram(now, src, &bad),
        Err(DropReason::UnknownVni)
    );
    let mut bad = good.clone();
    bad[8 + 6] |= 1; // multicast source MAC
    assert_eq!(e.on_underlay_datagram(now, src, &bad), Err(DropReason::BadSrcMac));
    let mut bad = good.clone();
    bad[8 + 6..8 + 12].fill(0);
    assert_eq!(e.on_underlay_datagram(now, src, &bad), Err(DropReason::BadSrcMac));
    let mut bad = good.clone();
    bad[8 + 12..8 + 14].copy_from_slice(&0x8100u16.to_be_bytes());
    assert_eq!(
        e.on_underlay_datagram(now, src, &bad),
        Err(DropReason::VlanTagged)
    );
    assert_eq!(net.hosts[1].fdb.len(), 1, "only the good datagram was learned");
}

#[test]
fn cluster_mode_drops_non_members() {
    let now = Instant::now();
    let fdb = Arc::new(Fdb::new(16, Fdb::DEFAULT_AGEING, now));
    let peers = Arc::new(PeerSet::new([ip(2)]));
    let mut cfg = EngineConfig::new(Vni::new(VNI).unwrap(), ip(1));
    cfg.require_member = true;
    let mut e = Engine::new(cfg, fdb.clone(), peers.clone(), Arc::default());
    let mut d = vxlan::header(Vni::new(VNI).unwrap()).to_vec();
    d.extend_from_slice(&frame(mac(1), mac(9), b"x"));
    assert_eq!(
        e.on_underlay_datagram(now, SocketAddr::new(ip(66), 4789), &d),
        Err(DropReason::NonMember)
    );
    assert!(fdb.is_empty(), "a non-member injects nothing");
    assert!(e
        .on_underlay_datagram(now, SocketAddr::new(ip(2), 4789), &d)
        .is_ok());
    // Membership changes are picked up without rebuilding the engine.
    peers.set([ip(2), ip(66)]);
    assert!(e
        .on_underlay_datagram(now, SocketAddr::new(ip(66), 4789), &d)
        .is_ok());
    let mut out = TxAction::default();
    e.on_tap_frame(now, &frame(MacAddr::BROADCAST, mac(3), b"b"), &mut out)
        .unwrap();
    assert_eq!(out.dests.len(), 2);
}

#[test]
fn tx_drops() {
    let now = Instant::now();
    let fdb = Arc::new(Fdb::new(16, Fdb::DEFAULT_AGEING, now));
    let mut e = Engine::new(
        EngineConfig::new(Vni::new(1).unwrap(), ip(1)),
        fdb,
        Arc::new(PeerSet::default()),
        Arc::default(),
    );
    let mut out = TxAction::default();
    assert_eq!(
        e.on_tap_frame(now, &[0u8; 13], &mut out),
        Err(DropReason::BadFrame)
    );
    assert_eq!(
        e.on_tap_frame(now, &frame(mac(2), MacAddr::BROADCAST, b""), &mut out),
        Err(DropReason::BadSrcMac)
    );
    assert_eq!(
        e.on_tap_frame(now, &frame(mac(2), mac(1), b""), &mut out),
        Err(DropReason::NoPeers)
    );
}

proptest::proptest! {
    /// Any truncation or corruption of a valid datagram yields a verdict, never a panic; and a surviving
    /// datagram's payload range is in bounds.
    #[test]
    fn corrupted_datagrams_never_panic(
        cut in 0usize..80,
        flips in proptest::collection::vec((0usize..80, proptest::prelude::any::<u8>()), 0..6),
    ) {
        let now = Instant::now();
        let fdb = Arc::new(Fdb::new(16, Fdb::DEFAULT_AGEING, now));
        let mut e = Engine::new(EngineConfig::new(Vni::new(VNI).unwrap(), ip(1)), fdb, Arc::new(PeerSet::new([ip(2)])), Arc::default());
        let mut d = vxlan::header(Vni::new(VNI).unwrap()).to_vec();
        d.extend_from_slice(&frame(mac(2), mac(1), &[0xaa; 58]));
        for (i, b) in flips {
            if let Some(x) = d.get_mut(i) { *x ^= b; }
        }
        d.truncate(cut);
        if let Ok(r) = e.on_underlay_datagram(now, SocketAddr::new(ip(2), 4789), &d) {
            proptest::prop_assert!(r.end <= d.len() && r.len() >= 14);
        } else {
            proptest::prop_assert!(true);
        }
        let mut out = TxAction::default();
        let _ = e.on_tap_frame(now, &d, &mut out);
    }
}
