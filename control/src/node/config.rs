//! What a [`ControlNode`](super::ControlNode) is given at start: its timings and budgets
//! ([`ControlConfig`], and how they map onto foca's configuration) and its keys ([`Trust`]).

use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use crate::attest::Signer;
use crate::revocation::RevocationList;

/// Timings. The defaults withdraw a SIGKILLed node everywhere within 3 s on a LAN and survive 20 %
/// message loss without false deaths. Detection ≈ wait until some member probes the victim (each of
/// N members probes one per period, so usually ≤ 2 periods) + one probe period + suspicion (or the
/// suspect's silence towards the prober, whichever ends later) + one direct message: the member that
/// declares it down tells every member at once (`node/direct.rs`) ≈ 0.5 + 0.25 + 0.7 + 0.01 s.
/// Chosen by `tests/sim.rs::survey_timings` over 40 seeds × 32 nodes (worst withdrawal 2.5 s
/// virtual with 1.2 s suspicion and gossiped deaths, 0 false deaths under 20 % loss); suspicion cut to
/// 1.0 s once deaths were announced directly (`control/tests/sim_direct.rs::survey_withdrawal`:
/// no false death at 20 % loss; the silence window still guards small clusters, where the suspect
/// talks to the prober often); cut to 0.7 s when real 32-node runs showed the wait for the first probe
/// of the victim taking up to 1.6 s (members probe it ~4 times a second, unevenly): 1.0 s then left
/// no margin under the 2 s bound (the survey at N = 32: p50 1.50 → 1.20 s, max 1.80 s both; false
/// deaths at 20 % loss 0 → 0, at 36 % 19 → 19 in 20 seeds; N = 8: max 2.25 → 1.95 s, 0 → 0 false
/// deaths at 20 % and 36 %). Under loss the
/// levers that matter are many indirect probes (a probe fails only if the direct and all 8 indirect
/// paths fail) and many piggyback transmissions (so a refutation reaches everyone who heard a
/// suspicion before their own suspicion timer fires); with 3 probes / 8 transmissions false deaths
/// were common.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub probe_period: Duration,
    /// Must be < probe_period; the direct-ack wait before indirect probes (a LAN p99 RTT, generously).
    pub probe_rtt: Duration,
    pub num_indirect_probes: usize,
    pub suspect_to_down_after: Duration,
    /// A suspect is declared down only once it has also been silent towards this node (no valid SWIM
    /// packet from its address) for this long, times the local health multiplier (1 + health, health
    /// in 0..=`max_local_health`). A crashed node is silent from the moment it died, so without loss
    /// this bounds detection (≈ death + this + dissemination), independently of probe timing.
    pub suspect_silence: Duration,
    /// Lifeguard-style local health: each suspicion this node raised that was refuted (its probe
    /// failed although the member was alive) raises it by one, up to this; it decays by one per
    /// `health_decay`. Under loss or overload this node's own probes fail, so it waits longer before
    /// believing them. 1 keeps crash detection under loss within ≈ 2 × `suspect_silence`.
    pub max_local_health: u32,
    pub health_decay: Duration,
    /// How often and to how many members foca gossips (membership updates, suspicions, leaves,
    /// revocations; FDB adverts are pushed directly). foca gossips only while it has updates to
    /// spread, so an idle cluster pays nothing for it. 100 ms × 4 was tried: in the simulator
    /// (`examples/converge`, N = 32, all starting at once) per-MAC formation p99 went from 420 to
    /// 270 ms, but on a 2-vCPU machine running all 32 daemons (`examples/cluster --nodes 32`) it was
    /// slower (more 16 KiB gossip messages to encrypt while 31 joins are under way), so 200 ms × 3 stays.
    pub gossip_interval: Duration,
    pub gossip_fanout: usize,
    /// How many times an update/advert is piggybacked before it is dropped from the backlog.
    pub max_transmissions: u8,
    /// Push-pull digest exchange with one random member.
    pub anti_entropy_interval: Duration,
    /// Periodic Announce to one member: learn members we have not heard of.
    pub announce_interval: Duration,
    /// Periodic Announce to members believed down: how a healed partition finds its other half.
    pub announce_down_interval: Duration,
    /// foca's packet budget. Each gossip message travels on its own QUIC stream, so this is not bound
    /// by the path MTU. Signed identities are 220 bytes on the wire (25 before attestations), and foca
    /// fills a packet with membership updates before custom broadcasts (FDB adverts, leaves,
    /// revocations): at 1200 bytes the header (src + dst) left room for two updates and, while a
    /// bootstrap's update backlog lasted, none for broadcasts (`sigterm_under_loss_withdraws` then
    /// failed: leave notices never left). 16 KiB carries ~70 updates plus broadcasts.
    pub max_packet_size: usize,
    /// Present MACs accepted from any one owner (beyond: refused, counted in `over_cap`); the data
    /// plane's default `--max-local-macs`.
    pub max_entries_per_owner: usize,
    /// An IPAM block whose holder left (signed leave) or was revoked this long ago is released by an
    /// admitter. A holder that is merely silent (crashed, or behind a partition) keeps its blocks, and a
    /// restarted holder (same node id) too.
    pub block_grace: Duration,
    /// Bytes per second this node may spend on FDB sync traffic: advert batches, anti-entropy table
    /// pieces and digests, network catalog and IPAM grant repair (issue 9 §4, default 256 kB/s).
    /// Membership (SWIM probes, acks, indirect probes, foca's gossip) and leave notices are not
    /// counted against it and never wait for it. 0: no limit. See `node/outbox.rs`.
    pub gossip_budget: u64,
    /// Local MAC changes within this window after the first leave as one batch (one message per
    /// member per ~16 KiB of entries) instead of one advert per MAC. Zero: at once.
    pub advert_batch_window: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            probe_period: Duration::from_millis(250),
            probe_rtt: Duration::from_millis(100),
            num_indirect_probes: 8,
            suspect_to_down_after: Duration::from_millis(700),
            suspect_silence: Duration::from_millis(1800),
            max_local_health: 1,
            health_decay: Duration::from_secs(10),
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            max_transmissions: 15,
            anti_entropy_interval: Duration::from_secs(1),
            announce_interval: Duration::from_secs(5),
            announce_down_interval: Duration::from_secs(3),
            max_packet_size: 16 * 1024,
            max_entries_per_owner: crate::sync::DEFAULT_MAX_PER_OWNER,
            block_grace: Duration::from_secs(60),
            gossip_budget: DEFAULT_GOSSIP_BUDGET,
            advert_batch_window: Duration::from_millis(50),
        }
    }
}

/// Default [`ControlConfig::gossip_budget`]: 256 kB/s.
pub const DEFAULT_GOSSIP_BUDGET: u64 = 256_000;

impl ControlConfig {
    pub(super) fn to_foca(&self) -> foca::Config {
        let nz = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        let mut c = foca::Config::simple();
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt.min(self.probe_period / 2);
        c.num_indirect_probes = nz(self.num_indirect_probes);
        c.max_transmissions = NonZeroU8::new(self.max_transmissions).unwrap_or(NonZeroU8::MIN);
        c.suspect_to_down_after = self.suspect_to_down_after;
        c.max_packet_size = nz(self.max_packet_size.max(512));
        c.notify_down_members = true;
        c.remove_down_after = Some(Duration::from_secs(24 * 3600));
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_interval,
            num_members: nz(self.gossip_fanout),
        });
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: self.announce_interval,
            num_members: nz(1),
        });
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.announce_down_interval,
            num_members: nz(2),
        });
        c
    }
}

/// What a node needs to sign its own claims and check everyone else's.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The cluster CA's public key (uncompressed P-256), see [`crate::attest::certificate_public_key`].
    pub ca_key: Vec<u8>,
    /// This node's own key (the key of its certificate and attestation).
    pub signer: Arc<Signer>,
    /// The CA key, on admitters only: signs revocations.
    pub ca_signer: Option<Arc<Signer>>,
    /// Revocations known at start (persisted in the state dir).
    pub revoked: RevocationList,
}
