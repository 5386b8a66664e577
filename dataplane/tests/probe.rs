//! The engine's side of the overlayd probe: checked like any datagram (VNI, membership), recorded as peer
//! activity, never learned from; ordinary datagrams are recorded as activity too.
#![allow(clippy::unwrap_used)]

use dataplane::activity::PeerActivity;
use dataplane::engine::{Engine, EngineConfig, PeerSet};
use dataplane::fdb::Fdb;
use dataplane::stats::Counters;
use dataplane::wire::probe::{ProbeKind, ProbeRepr};
use dataplane::wire::{vxlan, Vni};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn probe_dgram(vni: u32, nonce: u64) -> Vec<u8> {
    let mut d = vxlan::header(Vni::new(vni).unwrap()).to_vec();
    let mut f = [0u8; 64];
    let n = ProbeRepr {
        kind: ProbeKind::Request,
        nonce,
        clock_ns: 0,
    }
    .emit(&mut f, 0)
    .unwrap();
    d.extend_from_slice(&f[..n]);
    d
}

fn engine(require_member: bool, peers: &[IpAddr], t0: Instant) -> (Engine, Arc<Fdb>, Arc<PeerActivity>) {
    let mut cfg = EngineConfig::new(Vni::new(7).unwrap(), IpAddr::from([10, 0, 0, 1]));
    cfg.require_member = require_member;
    let fdb = Arc::new(Fdb::new(16, Fdb::DEFAULT_AGEING, t0));
    let act = Arc::new(PeerActivity::new(t0, peers.iter().copied()));
    let e = Engine::new(
        cfg,
        fdb.clone(),
        Arc::new(PeerSet::new(peers.iter().copied())),
        Arc::new(Counters::default()),
    )
    .with_activity(act.clone());
    (e, fdb, act)
}

#[test]
fn probes_are_checked_recorded_and_never_learned() {
    let t0 = Instant::now();
    let peer = IpAddr::from([10, 0, 0, 2]);
    let stranger = IpAddr::from([10, 0, 0, 9]);
    let (mut e, fdb, act) = engine(true, &[peer], t0);
    let now = t0 + Duration::from_secs(1);
    let p = e
        .on_probe(now, SocketAddr::new(peer, 40000), &probe_dgram(7, 5))
        .unwrap();
    assert_eq!((p.kind, p.nonce), (ProbeKind::Request, 5));
    assert_eq!(act.since_last(peer, now), Some(Duration::ZERO));
    assert!(fdb.is_empty(), "a probe is never learned");
    // Wrong VNI, a non-member in cluster mode, and a truncated probe are refused.
    assert!(e
        .on_probe(now, SocketAddr::new(peer, 1), &probe_dgram(8, 5))
        .is_none());
    assert!(e
        .on_probe(now, SocketAddr::new(stranger, 1), &probe_dgram(7, 5))
        .is_none());
    assert!(e
        .on_probe(now, SocketAddr::new(peer, 1), &probe_dgram(7, 5)[..40])
        .is_none());
}

#[test]
fn ordinary_datagrams_count_as_activity() {
    let t0 = Instant::now();
    let peer = IpAddr::from([10, 0, 0, 2]);
    let (mut e, _, act) = engine(false, &[peer], t0);
    let mut d = vxlan::header(Vni::new(7).unwrap()).to_vec();
    d.extend_from_slice(&[0xff; 6]);
    d.extend_from_slice(&[2, 0, 0, 0, 0, 2]);
    d.extend_from_slice(&[0x08, 0x06]);
    d.extend_from_slice(&[0; 28]);
    let later = t0 + Duration::from_secs(2);
    assert!(e
        .on_underlay_datagram(later, SocketAddr::new(peer, 4789), &d)
        .is_ok());
    assert_eq!(
        act.since_last(peer, later + Duration::from_secs(1)),
        Some(Duration::from_secs(1))
    );
}
