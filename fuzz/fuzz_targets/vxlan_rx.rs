//! Any datagram on the VXLAN port: header view, engine validation and learning never panic, and an accepted
//! datagram's inner frame lies inside it.
#![no_main]
use dataplane::engine::{Engine, EngineConfig, PeerSet, TxAction};
use dataplane::fdb::Fdb;
use dataplane::wire::{Vni, VxlanPacket};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let _ = VxlanPacket::new_checked(data).map(|p| (p.vni(), p.payload().len()));
    let now = Instant::now();
    let local = IpAddr::from([10, 0, 0, 1]);
    let fdb = Arc::new(Fdb::new(64, Fdb::DEFAULT_AGEING, now));
    let peers = Arc::new(PeerSet::new([IpAddr::from([10, 0, 0, 2])]));
    let Ok(vni) = Vni::new(42) else { return };
    let mut e = Engine::new(EngineConfig::new(vni, local), fdb, peers, Arc::default());
    if let Ok(r) = e.on_underlay_datagram(now, SocketAddr::from(([10, 0, 0, 2], 4789)), data) {
        assert!(r.end <= data.len());
    }
    let mut out = TxAction::default();
    let _ = e.on_tap_frame(now, data, &mut out);
});
