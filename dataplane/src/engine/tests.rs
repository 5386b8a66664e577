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
    // The workload migrates to host 3 and announces itself (gratuitous ARP). Its veth on host 2 is gone, so
    // host 2's bridge no longer has it: the local entry gives way.
    net.now += Duration::from_secs(5);
    net.hosts[1].fdb.sync_bridge(&[], ip(2), net.now, net.now);
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

/// A datagram claiming a MAC that lives behind the receiver's own bridge: dropped before the TAP, counted
/// `spoofed_src`, the local entry intact — from a member (static peer) as well as with `learn_any_source`.
#[test]
fn spoofed_local_source_is_dropped_and_counted() {
    for any_source in [false, true] {
        let mut net = Net::new(3);
        net.hosts[0].engine.cfg.require_member = !any_source;
        net.send(0, &frame(MacAddr::BROADCAST, mac(1), b"c1 is here"))
            .unwrap();
        assert!(net.deliver().iter().all(Result::is_ok));
        // Host 2 (a peer) sends a frame with container 1's MAC as source to host 1.
        let mut d = vxlan::header(Vni::new(VNI).unwrap()).to_vec();
        d.extend_from_slice(&frame(MacAddr::BROADCAST, mac(1), b"spoof"));
        net.wire.push((ip(2), SocketAddr::new(ip(1), 4789), d.clone()));
        if any_source {
            net.wire.push((ip(66), SocketAddr::new(ip(1), 4789), d));
        }
        let verdicts = net.deliver();
        assert!(
            verdicts.iter().all(|v| *v == Err(DropReason::SpoofedSrc)),
            "{verdicts:?}"
        );
        assert!(net.hosts[0].tap_out.is_empty(), "never reaches the bridge");
        assert_eq!(
            net.hosts[0].fdb.lookup(&mac(1), net.now),
            Some(Dest {
                vtep: ip(1),
                origin: Origin::Local
            })
        );
        // Traffic for container 1 from elsewhere is unaffected.
        net.send(1, &frame(mac(1), mac(2), b"to c1")).unwrap();
        assert_eq!(net.deliver(), vec![Ok(())]);
        assert_eq!(net.hosts[0].tap_out.len(), 1);
    }
}

/// Static mode: only the configured peers may send; `learn_any_source` restores flood-and-learn from anyone.
#[test]
fn static_mode_accepts_only_peers_unless_learn_any_source() {
    let now = Instant::now();
    let mut d = vxlan::header(Vni::new(VNI).unwrap()).to_vec();
    d.extend_from_slice(&frame(mac(1), mac(9), b"x"));
    let stranger = SocketAddr::new(ip(9), 4789);
    for any_source in [false, true] {
        let fdb = Arc::new(Fdb::new(16, Fdb::DEFAULT_AGEING, now));
        let mut cfg = EngineConfig::new(Vni::new(VNI).unwrap(), ip(1));
        assert!(cfg.require_member, "membership is checked by default");
        cfg.require_member = !any_source;
        let mut e = Engine::new(cfg, fdb.clone(), Arc::new(PeerSet::new([ip(2)])), Arc::default());
        let v = e.on_underlay_datagram(now, stranger, &d);
        if any_source {
            assert!(v.is_ok(), "{v:?}");
            assert_eq!(fdb.lookup(&mac(9), now).map(|x| x.vtep), Some(ip(9)));
        } else {
            assert_eq!(v, Err(DropReason::NonMember));
            assert!(fdb.is_empty(), "a non-peer learns nothing");
        }
    }
}

/// A MAC flapping between hosts 2 and 3 (the same MAC behind both bridges), seen from host 1: it follows the
/// first 5 moves, then stays put; refused moves count as `mac_flaps` until the 180 s window closes.
#[test]
fn flapping_mac_is_frozen_at_the_threshold() {
    let mut net = Net::new(3);
    let t0 = net.now;
    let dup = mac(7);
    let mut owners = Vec::new();
    for i in 0..12u64 {
        net.now = t0 + Duration::from_secs(i);
        let from = 1 + (i % 2) as usize; // host 2, host 3, host 2, …
        net.send(from, &frame(MacAddr::BROADCAST, dup, b"garp")).unwrap();
        let v = net.deliver();
        // Once both have seen it on their bridges, hosts 2 and 3 each keep the MAC local and refuse the
        // other's copy.
        assert_eq!(
            v.contains(&Err(DropReason::SpoofedSrc)),
            i > 0,
            "sighting {i}: {v:?}"
        );
        owners.push(net.hosts[0].fdb.lookup(&dup, net.now).map(|d| d.vtep));
    }
    // Sightings 0..=5: learned then five moves; from the sixth move on it is frozen at host 3 (sighting 5).
    let want: Vec<_> = (0..12)
        .map(|i| Some(if i < 6 && i % 2 == 0 { ip(2) } else { ip(3) }))
        .collect();
    assert_eq!(owners, want);
    let fdb = &net.hosts[0].fdb;
    assert_eq!(
        fdb.counters().mac_flaps.load(Ordering::Relaxed),
        3,
        "sightings 6, 8, 10 from host 2"
    );
    assert_eq!(net.hosts[0].engine.counters().moves.load(Ordering::Relaxed), 5);
    // After the window (opened by the first move at t0+1 s) host 2's claim is accepted again.
    net.now = t0 + Duration::from_secs(181);
    net.send(1, &frame(MacAddr::BROADCAST, dup, b"garp")).unwrap();
    net.deliver();
    assert_eq!(
        net.hosts[0].fdb.lookup(&dup, net.now).map(|d| d.vtep),
        Some(ip(2))
    );
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

#[test]
fn flow_port_is_stable_per_flow_and_spreads() {
    let range = 32768..=60999;
    let tcp = |sport: u16| {
        let mut ipv4 = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, 1, 10, 1, 0, 2,
        ];
        ipv4.extend_from_slice(&sport.to_be_bytes());
        ipv4.extend_from_slice(&80u16.to_be_bytes());
        ipv4.extend_from_slice(&[0; 16]);
        frame(mac(2), mac(1), &ipv4)
    };
    let a = flow_port(&tcp(1000), &range);
    assert_eq!(a, flow_port(&tcp(1000), &range));
    let ports: std::collections::BTreeSet<u16> = (1000..1064).map(|p| flow_port(&tcp(p), &range)).collect();
    assert!(
        ports.len() > 50,
        "64 flows should map to mostly distinct ports, got {}",
        ports.len()
    );
    assert!(ports.iter().all(|p| range.contains(p)));
    assert!(range.contains(&flow_port(&[], &range)));
    assert_eq!(flow_port(&[1, 2, 3], &(7..=7)), 7);
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
