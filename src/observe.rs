//! What the operator-facing endpoints (`/metrics`, `trace`, `diag`, static peers' liveness) need beyond the
//! FDB and counters: the network's names and addresses, static peers' last datagrams, and measurements kept
//! off the data plane (probe round trips, membership changes). Also the periodic prober.
//! Must never be touched by the forwarding loops except through [`PeerActivity`]'s relaxed stores.

use crate::probe::{self, PROBE_INTERVAL, SILENT_AFTER};
use dataplane::activity::PeerActivity;
use dataplane::engine::PeerSet;
use dataplane::wire::{Vni, ETHERNET_HEADER_LEN};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The network the legacy flags define (DECISIONS).
pub use crate::netspec::DEFAULT_NETWORK;

/// One overlay network as the operator endpoints see it.
#[derive(Debug, Clone)]
pub struct NetworkInfo {
    pub name: String,
    pub vni: Vni,
    pub bridge: String,
    pub tap: String,
    /// Overlay (inner) MTU set on the TAP.
    pub mtu: u32,
    pub subnet: Option<ipnet::IpNet>,
    pub egress: bool,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug)]
pub struct Observe {
    /// The networks served now, kept up to date by [`crate::networks::Networks`].
    networks: RwLock<Vec<NetworkInfo>>,
    /// Our VTEP address and the VXLAN / gossip ports.
    pub local: IpAddr,
    pub port: u16,
    pub gossip_port: u16,
    /// The underlay interface carrying `local`, and its MTU.
    pub underlay: String,
    pub underlay_mtu: u32,
    pub cluster: bool,
    /// Last datagram of each static peer.
    pub activity: Arc<PeerActivity>,
    /// Membership rows that changed (new member or new state), counted by the control-plane glue.
    pub membership_changes: Arc<AtomicU64>,
    /// Round trips of the periodic probes to every peer, seconds.
    pub probe_rtt: Histogram,
    /// QUIC round-trip estimates of the gossip connections, sampled every second (cluster mode), seconds.
    pub gossip_rtt: Histogram,
    pub epoch: Instant,
}

impl Observe {
    pub fn new(
        networks: Vec<NetworkInfo>,
        local: IpAddr,
        cluster: bool,
        activity: Arc<PeerActivity>,
    ) -> Self {
        Observe {
            networks: RwLock::new(networks),
            local,
            port: dataplane::wire::vxlan::VXLAN_PORT,
            gossip_port: control::DEFAULT_GOSSIP_PORT,
            underlay: String::new(),
            underlay_mtu: 1500,
            cluster,
            activity,
            membership_changes: Arc::default(),
            // 100 µs … ~3.3 s.
            probe_rtt: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            gossip_rtt: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            epoch: Instant::now(),
        }
    }

    /// Bytes of VXLAN overhead on the underlay (outer IP + UDP + VXLAN + inner Ethernet).
    pub fn overhead(&self) -> u32 {
        dataplane::wire::vxlan::vxlan_overhead(self.local)
    }

    /// A static peer's liveness: seconds since its last datagram, and `reachable`/`silent`.
    pub fn static_peer_state(&self, peer: IpAddr, now: Instant) -> (Option<f64>, &'static str) {
        match self.activity.since_last(peer, now) {
            Some(d) if d <= SILENT_AFTER => (Some(d.as_secs_f64()), "reachable"),
            Some(d) => (Some(d.as_secs_f64()), "silent"),
            None => (None, "silent"),
        }
    }

    /// The networks served now, sorted by VNI.
    pub fn networks(&self) -> Vec<NetworkInfo> {
        let mut v = self.networks.read().map(|n| n.clone()).unwrap_or_default();
        v.sort_by_key(|n| n.vni.get());
        v
    }

    pub fn set_networks(&self, networks: Vec<NetworkInfo>) {
        if let Ok(mut n) = self.networks.write() {
            *n = networks;
        }
    }

    /// The network named `name` (or whose VNI is `name`); the first one for `None`.
    pub fn network(&self, name: Option<&str>) -> Option<NetworkInfo> {
        let nets = self.networks();
        match name {
            None => nets.into_iter().next(),
            Some(n) => nets
                .into_iter()
                .find(|x| x.name == n || x.vni.get().to_string() == n),
        }
    }
}

/// Membership rows in `new` that are new or changed state/generation since `old` (for
/// `overlayd_membership_changes_total`).
pub fn membership_changes(old: Option<&[control::MemberInfo]>, new: &[control::MemberInfo]) -> u64 {
    let old = old.unwrap_or(&[]);
    new.iter()
        .filter(|m| {
            !old.iter()
                .any(|o| o.id == m.id && o.state == m.state && o.generation == m.generation)
        })
        .count() as u64
}

/// Probe every peer every [`PROBE_INTERVAL`] (small frames, one try): the peer's RX loop records us as active,
/// replies feed the RTT histogram. Runs until the task is dropped.
pub async fn run_prober(obs: Arc<Observe>, peers: Arc<PeerSet>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tick.tick().await;
        let targets: Vec<IpAddr> = peers
            .snapshot()
            .iter()
            .copied()
            .filter(|p| *p != obs.local)
            .collect();
        let Some(vni) = obs.network(None).map(|n| n.vni) else {
            continue;
        };
        let o = obs.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for peer in targets {
                let to = SocketAddr::new(peer, o.port);
                // A reply proves our datagrams reach the peer; its liveness here (`activity`) is recorded only
                // by the RX loop, for datagrams arriving on our VXLAN port (its own probes included), so a
                // firewall dropping that port on this host makes the peer `silent`.
                if let Ok(r) = probe::probe(o.local, to, vni, ETHERNET_HEADER_LEN, 1, Duration::from_secs(1))
                {
                    o.probe_rtt.observe(r.rtt.as_secs_f64());
                }
            }
        })
        .await;
    }
}
