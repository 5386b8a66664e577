//! `GET /metrics`: Prometheus text format (0.0.4) through `prometheus-client`, built at scrape time from the
//! data plane's counters (relaxed loads, no lock the data plane takes), the FDB, membership and the probe
//! measurements. Every name starts with `overlayd_`; per-network series carry `network` and `vni` labels.
//! Must never be fed from the hot path: the data plane only bumps its own atomics.

use crate::admin::AdminState;
use dataplane::fdb::Origin;
use dataplane::stats::{Snapshot, BATCH_BOUNDS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// The Content-Type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(String, String)>;
/// Labels of a series besides `network` and `vni`.
type Extra = Vec<(&'static str, &'static str)>;

#[derive(Debug)]
enum Value {
    Counter(u64),
    Gauge(i64),
    Histogram {
        buckets: Vec<(f64, u64)>,
        sum: f64,
        count: u64,
    },
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

/// One scrape's values, encoded by `prometheus-client`.
#[derive(Debug, Default)]
struct Scrape {
    families: Vec<Family>,
    /// Histograms kept as `prometheus-client` metrics (the probe RTT), encoded as they are.
    owned: Vec<(&'static str, &'static str, Histogram)>,
}

impl Scrape {
    fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        samples: Vec<(Labels, Value)>,
    ) {
        self.families.push(Family {
            name,
            help,
            kind,
            samples,
        });
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let mut me = enc.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, v) in &f.samples {
                let mut fe = me.encode_family(labels)?;
                match v {
                    Value::Counter(c) => fe.encode_counter::<NoLabelSet, u64, u64>(c, None)?,
                    Value::Gauge(g) => fe.encode_gauge(g)?,
                    Value::Histogram { buckets, sum, count } => {
                        fe.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?
                    }
                }
            }
        }
        for (name, help, h) in &self.owned {
            let me = enc.encode_descriptor(name, help, None, h.metric_type())?;
            h.encode(me)?;
        }
        Ok(())
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Render the whole exposition.
pub fn render(st: &AdminState) -> Result<String, std::fmt::Error> {
    let now = Instant::now();
    let obs = &st.observe;
    let mut s = Scrape::default();
    // One set of series per network (`network`, `vni` labels), and one with empty labels for what belongs to
    // no network (a datagram too short to name one, an unknown VNI).
    let nets = st.table.snapshot();
    let counters = st.counters_of(&nets, true);
    let mut per: Vec<(String, String, Snapshot)> = nets
        .iter()
        .map(|n| {
            let c = st.counters_of(std::slice::from_ref(n), false);
            (
                n.name.clone(),
                n.vni.get().to_string(),
                Snapshot::sum(c.iter().map(|c| &**c)),
            )
        })
        .collect();
    per.push((
        String::new(),
        String::new(),
        Snapshot::sum(st.table.unattributed_all().iter().map(|c| &**c)),
    ));
    let net_labels = |net: &str, vni: &str, extra: &[(&str, &str)]| {
        let mut l = labels(&[("network", net), ("vni", vni)]);
        l.extend(labels(extra));
        l
    };
    let series = |pick: &dyn Fn(&Snapshot) -> Vec<(Extra, u64)>| {
        let mut v = Vec::new();
        for (net, vni, snap) in &per {
            for (extra, n) in pick(snap) {
                v.push((net_labels(net, vni, &extra), Value::Counter(n)));
            }
        }
        v
    };
    // Directions as in `overlayctl stats`: rx = read from the TAP / received from the underlay, tx = written to
    // the TAP / sent to the underlay.
    s.add(
        "overlayd_frames",
        "Inner Ethernet frames: rx read from the TAP (sent by local containers), tx written to the TAP.",
        MetricType::Counter,
        series(&|x| {
            vec![
                (vec![("direction", "rx")], x.rx_frames),
                (vec![("direction", "tx")], x.tx_frames),
            ]
        }),
    );
    s.add(
        "overlayd_bytes",
        "Inner frame bytes: rx read from the TAP, tx written to the TAP.",
        MetricType::Counter,
        series(&|x| {
            vec![
                (vec![("direction", "rx")], x.rx_bytes),
                (vec![("direction", "tx")], x.tx_bytes),
            ]
        }),
    );
    s.add(
        "overlayd_datagrams",
        "VXLAN datagrams: rx received from the underlay, tx sent to it.",
        MetricType::Counter,
        series(&|x| {
            vec![
                (vec![("direction", "rx")], x.rx_datagrams),
                (vec![("direction", "tx")], x.tx_datagrams),
            ]
        }),
    );
    s.add(
        "overlayd_drops",
        "Frames and datagrams dropped, by reason (the keys of `overlayctl stats` drops).",
        MetricType::Counter,
        series(&|x| x.drops.iter().map(|(r, n)| (vec![("reason", *r)], *n)).collect()),
    );
    s.add(
        "overlayd_fdb_learned",
        "Source MACs learned or moved to a new VTEP.",
        MetricType::Counter,
        series(&|x| vec![(vec![], x.learned)]),
    );
    s.add(
        "overlayd_fdb_moves",
        "Learned MACs that moved to another VTEP.",
        MetricType::Counter,
        series(&|x| vec![(vec![], x.moves)]),
    );
    s.add(
        "overlayd_arp",
        "ARP requests and IPv6 neighbour solicitations from the TAP: suppressed (answered here or kept on this \
         host) or flooded (`arp_suppressed`, `arp_flooded` in `overlayctl stats`).",
        MetricType::Counter,
        series(&|x| {
            vec![
                (vec![("result", "suppressed")], x.arp_suppressed),
                (vec![("result", "flooded")], x.arp_flooded),
            ]
        }),
    );
    let mut entries = Vec::new();
    for n in nets.iter() {
        let mut by_origin: BTreeMap<&str, i64> = ["local", "learned", "control", "static"]
            .into_iter()
            .map(|o| (o, 0))
            .collect();
        for r in n.fdb.rows(now) {
            let name = match r.origin {
                Origin::Local => "local",
                Origin::Learned => "learned",
                Origin::Control => "control",
                Origin::Static => "static",
            };
            *by_origin.entry(name).or_default() += 1;
        }
        let vni = n.vni.get().to_string();
        for (o, c) in by_origin {
            entries.push((net_labels(&n.name, &vni, &[("origin", o)]), Value::Gauge(c)));
        }
    }
    s.add(
        "overlayd_fdb_entries",
        "FDB entries by origin.",
        MetricType::Gauge,
        entries,
    );
    // Peers by state: cluster members (alive/suspect/dead/left), or static peers (reachable/silent).
    let mut peers: BTreeMap<(&str, String), i64> = BTreeMap::new();
    let members = st.members.read().ok().and_then(|m| m.clone());
    match members {
        Some(rows) => {
            for st in ["alive", "suspect", "dead", "left"] {
                peers.insert(("member", st.to_string()), 0);
            }
            for m in rows.iter().filter(|m| m.vtep != obs.local) {
                let state = format!("{:?}", m.state).to_lowercase();
                *peers.entry(("member", state)).or_default() += 1;
            }
        }
        None => {
            for st in ["reachable", "silent"] {
                peers.insert(("static", st.to_string()), 0);
            }
            for p in obs.activity.peers() {
                let (_, state) = obs.static_peer_state(p, now);
                *peers.entry(("static", state.to_string())).or_default() += 1;
            }
        }
    }
    s.add(
        "overlayd_peers",
        "Peer VTEPs by kind (member, static) and state.",
        MetricType::Gauge,
        peers
            .iter()
            .map(|((k, st), n)| (labels(&[("kind", k), ("state", st)]), Value::Gauge(*n)))
            .collect(),
    );
    s.add(
        "overlayd_membership_changes",
        "Cluster membership changes seen (a member joined or changed state).",
        MetricType::Counter,
        vec![(Vec::new(), Value::Counter(obs.membership_changes.load(Relaxed)))],
    );
    let hist = |pick: &dyn Fn(&dataplane::stats::Counters) -> ([u64; 8], u64)| {
        let mut b = [0u64; 8];
        let mut sum = 0;
        for c in &counters {
            let (cb, cs) = pick(c);
            for (x, y) in b.iter_mut().zip(cb) {
                *x += y;
            }
            sum += cs;
        }
        let mut buckets: Vec<(f64, u64)> = BATCH_BOUNDS.iter().zip(b).map(|(u, n)| (*u as f64, n)).collect();
        buckets.push((f64::INFINITY, b[BATCH_BOUNDS.len()]));
        Value::Histogram {
            count: b.iter().sum(),
            sum: sum as f64,
            buckets,
        }
    };
    s.add(
        "overlayd_gso_segments_per_send",
        "Datagrams per UDP send (UDP GSO batches several; 1 without GSO).",
        MetricType::Histogram,
        vec![(Vec::new(), hist(&|c| c.gso_segments.read()))],
    );
    s.add(
        "overlayd_gro_segments_per_receive",
        "Datagrams per received UDP message (UDP GRO coalesces several; 1 without GRO).",
        MetricType::Histogram,
        vec![(Vec::new(), hist(&|c| c.gro_segments.read()))],
    );
    s.owned.push((
        "overlayd_probe_rtt_seconds",
        "Round trip of the periodic overlayd probe to each peer's VXLAN port.",
        obs.probe_rtt.clone(),
    ));
    s.owned.push((
        "overlayd_gossip_rtt_seconds",
        "QUIC round-trip estimate of each open gossip connection, sampled every second (cluster mode).",
        obs.gossip_rtt.clone(),
    ));
    let mut reg = Registry::default();
    reg.register_collector(Box::new(s));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &reg)?;
    Ok(out)
}
