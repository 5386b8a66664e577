//! Networks (issue 10 §1): one daemon serves any number of overlay networks from one UDP socket set,
//! demultiplexed by VNI. A [`Network`] owns what is per network: name, VNI, FDB, flood set, counters (one set
//! per worker and direction), its TAP queues (one per worker, `--workers`), the broadcast rate limiter, the
//! bridge's MAC and the gateway. The [`NetworkTable`] is the set of networks, swapped as a whole
//! with a version counter (the [`crate::engine::PeerSet`] pattern): engines and workers notice a change with
//! one relaxed load per wakeup and take a new snapshot; nothing on the hot path locks.
//!
//! Must never: let two networks share a name or a VNI (the table refuses), or let a frame of one network
//! reach another (the engine looks the network up by VNI and uses only that network's state).

use crate::engine::bum::BumLimiter;
use crate::engine::PeerSet;
use crate::fdb::Fdb;
use crate::io::{Tap, TapQueue};
use crate::neigh::NeighTable;
use crate::stats::Counters;
use crate::wire::{MacAddr, Vni};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// One overlay network as the data path sees it.
#[derive(Debug)]
pub struct Network {
    pub name: String,
    pub vni: Vni,
    pub fdb: Arc<Fdb>,
    /// Where broadcast, multicast and unknown unicast of this network go.
    pub peers: Arc<PeerSet>,
    /// Counted by the TX loops (TAP → underlay) and the RX loops (underlay → TAP): one set per worker.
    pub tx: WorkerCounters,
    pub rx: WorkerCounters,
    /// The TAP device, one queue per worker; `None` for engines without I/O (tests, simulator).
    pub tap: Option<Arc<Tap>>,
    /// The TAP's MTU: the inner IP packet size the segments of a received superframe must fit.
    pub tap_mtu: u16,
    /// The MAC of the network's bridge: frames from it never enter the tunnel ([`crate::engine::suppress`]).
    /// Set by the daemon when the network is added and kept current (a bridge may change its address).
    pub bridge_mac: AtomicMac,
    /// The anycast gateway address (egress networks only).
    pub gateway: Option<IpAddr>,
    /// IP → MAC bindings for ARP/ND suppression ([`crate::engine::suppress`]): local ones learned from the
    /// TAP and from attach, remote ones installed from control adverts.
    pub neigh: Arc<NeighTable>,
    /// The `--bum-pps` budget per source MAC, shared by every worker's engine (a source's frames may be read
    /// from any TAP queue); made by the first engine that serves the network with a non-zero rate. Locked only
    /// for a broadcast or multicast frame, never across I/O.
    pub bum: OnceLock<Mutex<BumLimiter>>,
}

impl Network {
    /// A network without a TAP, fresh counters, MTU 1500, no bridge MAC or gateway.
    pub fn new(name: impl Into<String>, vni: Vni, fdb: Arc<Fdb>, peers: Arc<PeerSet>) -> Network {
        Network {
            name: name.into(),
            vni,
            fdb,
            peers,
            tx: WorkerCounters::new(1),
            rx: WorkerCounters::new(1),
            tap: None,
            tap_mtu: 1500,
            bridge_mac: AtomicMac::default(),
            gateway: None,
            neigh: Arc::new(NeighTable::new(
                NeighTable::DEFAULT_CAPACITY,
                std::time::Instant::now(),
            )),
            bum: OnceLock::new(),
        }
    }

    /// Counters for `workers` workers per direction (at least one).
    pub fn with_workers(mut self, workers: usize) -> Network {
        self.tx = WorkerCounters::new(workers);
        self.rx = WorkerCounters::new(workers);
        self
    }

    pub fn with_tap(mut self, tap: Arc<Tap>, mtu: u16) -> Network {
        self.tap = Some(tap);
        self.tap_mtu = mtu;
        self
    }

    /// The first TAP queue (worker 0's).
    pub fn queue(&self) -> Option<&TapQueue> {
        self.queue_of(0)
    }

    /// The TAP queue worker `worker` reads and writes. Every TAP is opened with one queue per worker; a TAP
    /// with fewer (tests) is shared round-robin, which is safe (each read or write is one syscall).
    pub fn queue_of(&self, worker: usize) -> Option<&TapQueue> {
        let q = self.tap.as_ref()?.queues();
        q.get(worker % q.len().max(1))
    }
}

/// One [`Counters`] per worker for one direction of a network (never empty): each worker adds to its own cache
/// lines; the admin endpoint sums them ([`crate::stats::Snapshot::sum`]) or shows them per worker.
#[derive(Debug, Clone)]
pub struct WorkerCounters(Box<[Arc<Counters>]>);

impl WorkerCounters {
    /// Fresh counters for `workers` workers (at least one).
    pub fn new(workers: usize) -> WorkerCounters {
        WorkerCounters((0..workers.max(1)).map(|_| Arc::default()).collect())
    }

    /// One set of counters for every worker (single-worker engines, tests).
    pub fn shared(c: Arc<Counters>) -> WorkerCounters {
        WorkerCounters(Box::new([c]))
    }

    /// Worker `worker`'s counters (round-robin when there are fewer sets than workers).
    #[inline]
    pub fn of(&self, worker: usize) -> &Arc<Counters> {
        &self.0[worker % self.0.len()]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Counters>> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Default for WorkerCounters {
    fn default() -> Self {
        WorkerCounters::new(1)
    }
}

/// An `Option<MacAddr>` readable and replaceable without a lock (one relaxed load on the hot path).
#[derive(Debug, Default)]
pub struct AtomicMac(AtomicU64);

/// Marks a set value in [`AtomicMac`] (a MAC is 48 bits, so 0 is free to mean "none").
const MAC_SET: u64 = 1 << 48;

impl AtomicMac {
    pub fn new(mac: Option<MacAddr>) -> AtomicMac {
        let a = AtomicMac::default();
        a.set(mac);
        a
    }

    #[inline]
    pub fn get(&self) -> Option<MacAddr> {
        let v = self.0.load(Ordering::Relaxed);
        if v & MAC_SET == 0 {
            return None;
        }
        let b = v.to_be_bytes();
        Some(MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    /// Replace the value; returns whether it changed.
    pub fn set(&self, mac: Option<MacAddr>) -> bool {
        let v = mac.map_or(0, |m| {
            let [a, b, c, d, e, f] = m.0;
            u64::from_be_bytes([0, 0, a, b, c, d, e, f]) | MAC_SET
        });
        self.0.swap(v, Ordering::Relaxed) != v
    }
}

/// `Some(mac) == net.bridge_mac` reads the current value (the field was a plain `Option<MacAddr>` once).
impl PartialEq<AtomicMac> for Option<MacAddr> {
    fn eq(&self, other: &AtomicMac) -> bool {
        *self == other.get()
    }
}

/// Why a network cannot join the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("a network named {0} already exists: choose another name")]
    NameTaken(String),
    #[error("VNI {vni} is already used by network {by}: choose another VNI")]
    VniTaken { vni: u32, by: String },
}

/// The networks served, sorted by VNI. Swapped as a whole; readers keep their snapshot until
/// [`NetworkTable::version`] changes.
#[derive(Debug, Default)]
pub struct NetworkTable {
    list: RwLock<Arc<[Arc<Network>]>>,
    version: AtomicU64,
    /// Drops that belong to no network (a datagram too short to name one, an unknown VNI) and the batch
    /// histograms counted before a network is known: one set per worker.
    unattributed: WorkerCounters,
}

impl NetworkTable {
    pub fn new(nets: impl IntoIterator<Item = Arc<Network>>) -> Result<NetworkTable, TableError> {
        let t = NetworkTable::default();
        for n in nets {
            t.insert(n)?;
        }
        Ok(t)
    }

    pub fn snapshot(&self) -> Arc<[Arc<Network>]> {
        match self.list.read() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// An empty table whose unattributed counters have one set per worker (`--workers`).
    pub fn with_workers(workers: usize) -> NetworkTable {
        NetworkTable {
            unattributed: WorkerCounters::new(workers),
            ..NetworkTable::default()
        }
    }

    /// Worker 0's unattributed counters (single-worker engines, tests).
    pub fn unattributed(&self) -> &Arc<Counters> {
        self.unattributed.of(0)
    }

    /// Every worker's unattributed counters (sum them for totals).
    pub fn unattributed_all(&self) -> &WorkerCounters {
        &self.unattributed
    }

    /// Add a network; refused if its name or VNI is taken.
    pub fn insert(&self, net: Arc<Network>) -> Result<(), TableError> {
        let mut l = self.list.write().unwrap_or_else(|p| p.into_inner());
        if l.iter().any(|n| n.name == net.name) {
            return Err(TableError::NameTaken(net.name.clone()));
        }
        if let Some(n) = l.iter().find(|n| n.vni == net.vni) {
            return Err(TableError::VniTaken {
                vni: net.vni.get(),
                by: n.name.clone(),
            });
        }
        let mut v: Vec<Arc<Network>> = l.iter().cloned().collect();
        v.push(net);
        v.sort_by_key(|n| n.vni.get());
        *l = v.into();
        self.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Remove a network by name; returns it if it was there.
    pub fn remove(&self, name: &str) -> Option<Arc<Network>> {
        let mut l = self.list.write().unwrap_or_else(|p| p.into_inner());
        let gone = l.iter().find(|n| n.name == name).cloned()?;
        let v: Vec<Arc<Network>> = l.iter().filter(|n| n.name != name).cloned().collect();
        *l = v.into();
        self.version.fetch_add(1, Ordering::Release);
        Some(gone)
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<Network>> {
        self.snapshot().iter().find(|n| n.name == name).cloned()
    }

    pub fn by_vni(&self, vni: Vni) -> Option<Arc<Network>> {
        self.snapshot().iter().find(|n| n.vni == vni).cloned()
    }

    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn net(name: &str, vni: u32) -> Arc<Network> {
        let fdb = Arc::new(Fdb::new(16, Fdb::DEFAULT_AGEING, Instant::now()));
        Arc::new(Network::new(name, Vni::new(vni).unwrap(), fdb, Arc::default()))
    }

    #[test]
    fn atomic_mac_round_trips_and_reports_changes() {
        let a = AtomicMac::default();
        assert_eq!(a.get(), None);
        for m in [
            MacAddr([0, 0, 0, 0, 0, 0]),
            MacAddr([0xff; 6]),
            MacAddr([2, 0x4f, 0, 0, 1, 0xaa]),
        ] {
            assert!(a.set(Some(m)));
            assert_eq!(a.get(), Some(m));
            assert!(!a.set(Some(m)), "same value: no change");
        }
        assert!(a.set(None));
        assert_eq!(a.get(), None);
        assert!(None == a && Some(MacAddr([1; 6])) != a);
        assert_eq!(AtomicMac::new(Some(MacAddr([1; 6]))).get(), Some(MacAddr([1; 6])));
    }

    #[test]
    fn table_refuses_duplicate_names_and_vnis_and_bumps_its_version() {
        let t = NetworkTable::new([net("b", 200), net("a", 100)]).unwrap();
        let names: Vec<_> = t.snapshot().iter().map(|n| n.name.clone()).collect();
        assert_eq!(names, ["a", "b"], "sorted by VNI");
        let v = t.version();
        assert_eq!(t.insert(net("a", 300)), Err(TableError::NameTaken("a".into())));
        assert_eq!(
            t.insert(net("c", 200)),
            Err(TableError::VniTaken {
                vni: 200,
                by: "b".into()
            })
        );
        assert_eq!(t.version(), v, "a refused insert changes nothing");
        t.insert(net("c", 150)).unwrap();
        assert!(t.version() > v);
        assert_eq!(t.by_vni(Vni::new(150).unwrap()).unwrap().name, "c");
        assert_eq!(t.remove("a").unwrap().vni.get(), 100);
        assert!(t.remove("a").is_none());
        assert_eq!(t.len(), 2);
        assert!(t.by_name("a").is_none());
    }

    #[test]
    fn every_worker_counts_on_its_own_counters() {
        let n = Arc::try_unwrap(net("a", 1)).unwrap().with_workers(3);
        assert_eq!((n.tx.len(), n.rx.len()), (3, 3));
        Counters::add(&n.rx.of(1).rx_datagrams, 5);
        Counters::add(&n.rx.of(4).rx_datagrams, 1); // round-robin: worker 4 of 3 is worker 1's set
        let per: Vec<u64> =
            n.rx.iter()
                .map(|c| c.rx_datagrams.load(Ordering::Relaxed))
                .collect();
        assert_eq!(per, [0, 6, 0]);
        assert!(!Arc::ptr_eq(n.tx.of(0), n.tx.of(1)));
        assert_eq!(WorkerCounters::new(0).len(), 1, "never empty");
        assert!(n.queue_of(2).is_none(), "no TAP");
    }
}
