//! One engine serving several networks: demultiplexing by VNI, per-network FDB, flood set and counters.

use super::*;
use crate::network::{Network, NetworkTable};

fn ip(n: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, n])
}
fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 1, n])
}
fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(b"payload");
    f
}
fn dgram(vni: u32, f: &[u8]) -> Vec<u8> {
    let mut d = vxlan::header(Vni::new(vni).unwrap()).to_vec();
    d.extend_from_slice(f);
    d
}

fn net(name: &str, vni: u32, flood: &[IpAddr], now: Instant) -> Arc<Network> {
    let fdb = Arc::new(Fdb::new(64, Fdb::DEFAULT_AGEING, now));
    Arc::new(Network::new(
        name,
        Vni::new(vni).unwrap(),
        fdb,
        Arc::new(PeerSet::new(flood.iter().copied())),
    ))
}

/// Host 1 serving `a` (VNI 100, flooding to hosts 2 and 3) and `b` (VNI 200, flooding to host 3 only);
/// members are hosts 2, 3 and 4.
fn setup(side: Side) -> (Engine, Arc<NetworkTable>, Instant) {
    let now = Instant::now();
    let table = Arc::new(
        NetworkTable::new([net("b", 200, &[ip(3)], now), net("a", 100, &[ip(2), ip(3)], now)]).unwrap(),
    );
    let members = Arc::new(PeerSet::new([ip(2), ip(3), ip(4)]));
    let e = Engine::serving(
        EngineConfig::new(Vni::new(1).unwrap(), ip(1)),
        side,
        table.clone(),
        members,
    );
    (e, table, now)
}

#[test]
fn datagrams_go_to_the_network_of_their_vni_and_unknown_vnis_drop() {
    let (mut e, table, now) = setup(Side::Rx);
    let src = SocketAddr::new(ip(2), 4789);
    let (a, b) = (
        e.index_of(Vni::new(100).unwrap()).unwrap(),
        e.index_of(Vni::new(200).unwrap()).unwrap(),
    );
    assert_eq!(e.networks()[a].name, "a");
    let d = e
        .on_underlay(now, src, &dgram(100, &frame(mac(1), mac(7))))
        .unwrap();
    assert_eq!(d.net, a);
    let d = e
        .on_underlay(now, src, &dgram(200, &frame(mac(1), mac(8))))
        .unwrap();
    assert_eq!(d.net, b);
    let nets = table.snapshot();
    // Each network learned only its own MAC.
    assert!(nets[a].fdb.lookup(&mac(7), now).is_some() && nets[a].fdb.lookup(&mac(8), now).is_none());
    assert!(nets[b].fdb.lookup(&mac(8), now).is_some() && nets[b].fdb.lookup(&mac(7), now).is_none());
    assert_eq!(nets[a].rx.of(0).learned.load(Ordering::Relaxed), 1);
    assert_eq!(nets[b].rx.of(0).learned.load(Ordering::Relaxed), 1);
    assert_eq!(
        e.on_underlay(now, src, &dgram(300, &frame(mac(1), mac(9)))),
        Err(RxDrop {
            net: None,
            reason: DropReason::UnknownVni
        })
    );
    // A non-member is refused whatever the VNI, and the drop names the network.
    assert_eq!(
        e.on_underlay(
            now,
            SocketAddr::new(ip(66), 4789),
            &dgram(200, &frame(mac(1), mac(9)))
        ),
        Err(RxDrop {
            net: Some(b),
            reason: DropReason::NonMember
        })
    );
}

#[test]
fn a_mac_of_one_network_does_not_route_frames_of_another() {
    let (mut rx, table, now) = setup(Side::Rx);
    let mut tx = Engine::serving(
        EngineConfig::new(Vni::new(1).unwrap(), ip(1)),
        Side::Tx,
        table.clone(),
        Arc::new(PeerSet::new([ip(2), ip(3)])),
    );
    let a = rx.index_of(Vni::new(100).unwrap()).unwrap();
    let b = rx.index_of(Vni::new(200).unwrap()).unwrap();
    // mac(7) lives behind host 2 in network a.
    rx.on_underlay(
        now,
        SocketAddr::new(ip(2), 4789),
        &dgram(100, &frame(mac(1), mac(7))),
    )
    .unwrap();
    let mut out = TxAction::default();
    tx.on_tap(now, a, &frame(mac(7), mac(1)), &mut out).unwrap();
    assert_eq!(
        out.dests,
        vec![SocketAddr::new(ip(2), 4789)],
        "known unicast in a"
    );
    // The same destination MAC in network b is unknown there: flooded to b's set only.
    tx.on_tap(now, b, &frame(mac(7), mac(1)), &mut out).unwrap();
    assert_eq!(out.dests, vec![SocketAddr::new(ip(3), 4789)]);
    // The same source MAC is local in both networks independently.
    let nets = table.snapshot();
    assert_eq!(nets[a].fdb.local_macs(now), vec![mac(1)]);
    assert_eq!(nets[b].fdb.local_macs(now), vec![mac(1)]);
    assert_eq!(nets[a].tx.of(0).learned.load(Ordering::Relaxed), 1);
    assert_eq!(nets[b].tx.of(0).learned.load(Ordering::Relaxed), 1);
}

#[test]
fn flood_sets_are_per_network_and_follow_changes() {
    let (mut e, table, now) = setup(Side::Tx);
    let a = e.index_of(Vni::new(100).unwrap()).unwrap();
    let b = e.index_of(Vni::new(200).unwrap()).unwrap();
    let mut out = TxAction::default();
    e.on_tap(now, a, &frame(MacAddr::BROADCAST, mac(1)), &mut out)
        .unwrap();
    assert_eq!(
        out.dests,
        vec![SocketAddr::new(ip(2), 4789), SocketAddr::new(ip(3), 4789)]
    );
    e.on_tap(now, b, &frame(MacAddr::BROADCAST, mac(2)), &mut out)
        .unwrap();
    assert_eq!(out.dests, vec![SocketAddr::new(ip(3), 4789)]);
    table.snapshot()[b].peers.set([ip(4)]);
    e.on_tap(now, b, &frame(MacAddr::BROADCAST, mac(2)), &mut out)
        .unwrap();
    assert_eq!(out.dests, vec![SocketAddr::new(ip(4), 4789)]);
    table.snapshot()[b].peers.set([]);
    assert_eq!(
        e.on_tap(now, b, &frame(MacAddr::BROADCAST, mac(2)), &mut out),
        Err(DropReason::NoPeers)
    );
}

#[test]
fn networks_added_and_removed_at_runtime() {
    let (mut e, table, now) = setup(Side::Rx);
    let src = SocketAddr::new(ip(2), 4789);
    assert!(!e.sync(), "nothing changed");
    table.insert(net("c", 300, &[ip(2)], now)).unwrap();
    // Until the engine syncs, its indices stay valid and VNI 300 is unknown.
    assert_eq!(
        e.on_underlay(now, src, &dgram(300, &frame(mac(1), mac(9))))
            .map_err(|d| d.reason),
        Err(DropReason::UnknownVni)
    );
    assert!(e.sync());
    let c = e.index_of(Vni::new(300).unwrap()).unwrap();
    assert_eq!(
        e.on_underlay(now, src, &dgram(300, &frame(mac(1), mac(9))))
            .unwrap()
            .net,
        c
    );
    table.remove("a").unwrap();
    assert!(e.sync());
    assert_eq!(e.networks().len(), 2);
    assert_eq!(
        e.on_underlay(now, src, &dgram(100, &frame(mac(1), mac(9))))
            .map_err(|d| d.reason),
        Err(DropReason::UnknownVni)
    );
    assert!(e.index_of(Vni::new(100).unwrap()).is_none());
}

/// `--workers`: each worker's engine counts into its own counters of a network, and a source MAC's
/// `--bum-pps` budget is one per network, whichever worker's TAP queue its frames arrive on.
#[test]
fn workers_count_apart_and_share_the_broadcast_budget() {
    let now = Instant::now();
    let a = Arc::try_unwrap(net("a", 100, &[ip(2)], now))
        .unwrap()
        .with_workers(2);
    let table = Arc::new(NetworkTable::new([Arc::new(a)]).unwrap());
    let members = Arc::new(PeerSet::new([ip(2)]));
    let cfg = EngineConfig::new(Vni::new(1).unwrap(), ip(1));
    let mut w =
        [0, 1].map(|i| Engine::serving(cfg.clone(), Side::Tx, table.clone(), members.clone()).for_worker(i));
    assert_eq!(w[1].worker(), 1);
    let burst = bum::burst(cfg.bum_pps) as usize;
    let bcast = frame(MacAddr::BROADCAST, mac(1));
    let mut out = TxAction::default();
    let mut sent = [0usize; 2];
    for i in 0..4 * burst {
        out.dests.clear();
        match w[i % 2].on_tap(now, 0, &bcast, &mut out) {
            Ok(_) => sent[i % 2] += 1,
            // As the TX loop does: the drop goes to the worker's own counters of the network.
            Err(r) => w[i % 2].counters_of(0).count_drop(r, 1),
        }
    }
    assert_eq!(
        sent[0] + sent[1],
        burst,
        "one burst in total, not one per worker: {sent:?}"
    );
    let n = &table.snapshot()[0];
    let learned: Vec<u64> = n.tx.iter().map(|c| c.learned.load(Ordering::Relaxed)).collect();
    assert_eq!(learned.iter().sum::<u64>(), 1, "{learned:?}");
    let limited: Vec<u64> = n.tx.iter().map(|c| c.drops(DropReason::BumRateLimited)).collect();
    assert!(
        limited.iter().all(|&d| d > 0),
        "each worker counted its own drops: {limited:?}"
    );
    assert_eq!(limited.iter().sum::<u64>() as usize, 3 * burst);
}
