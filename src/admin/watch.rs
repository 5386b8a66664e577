//! The FDB change feed behind `GET /v1/fdb/watch` (`overlayctl fdb --watch`): add/update/remove events with
//! the time of the change, for any number of readers, bounded in memory and never in the data path's way.
//!
//! How a change gets here: every network's FDB calls a hook after a row appears, goes, or changes VTEP or
//! origin (`Fdb::notify_changes`; never on a refresh, which is the per-packet case). While nobody watches,
//! the hook is one atomic load. While someone does, it notes the wall-clock time of the first unreported
//! change (one CAS) and wakes [`FdbWatch::run`], which reads the tables and diffs them against the last read:
//! one event per changed row, stamped with that time. Changes that cancel out before the read are not seen.
//! Events go to every reader through one bounded ring ([`RING`] events); a reader that falls behind by more
//! loses the oldest ones, is told how many (`lost`), and gets the table again as a fresh baseline.
//! Must never: block or allocate in the hook, hold a lock the data path takes, or keep more than [`RING`]
//! events (plus one copy of the table per reader being baselined).

use dataplane::fdb::Origin;
use dataplane::network::NetworkTable;
use dataplane::wire::MacAddr;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, Notify};

/// Events kept for readers that have not taken them yet; a reader further behind loses events.
pub const RING: usize = 4096;
/// At most this many watchers at once (each holds one of the admin listener's connection slots).
pub const MAX_WATCHERS: usize = 8;
/// Between two reads of the tables at least this long: a flood of changes costs at most 1/gap reads per
/// second (events keep the time of their first change, so the stamps do not move).
const MIN_GAP: Duration = Duration::from_millis(2);
/// Read the tables at least this often while watched: entries that aged out, networks added since.
const RESCAN: Duration = Duration::from_secs(1);

/// What happened to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// In the table when the reader (re)subscribed: the baseline, closed by a `synced` line.
    Present,
    Add,
    /// Another VTEP or origin.
    Update,
    /// Gone (withdrawn, aged, evicted); `vtep`/`origin` are its last ones.
    Remove,
}

/// One line of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FdbEvent {
    pub event: Change,
    /// Position in the feed (1, 2, …; the baseline's rows carry the feed's position when it was taken).
    pub seq: u64,
    /// Unix time of the change in µs (the first change read by the same pass of the tables).
    pub ts_us: u64,
    pub network: String,
    pub vni: u32,
    pub mac: MacAddr,
    pub vtep: IpAddr,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    network: String,
    vtep: IpAddr,
    origin: Origin,
}

type Rows = BTreeMap<(u32, MacAddr), Row>;

#[derive(Debug)]
struct Feed {
    seq: u64,
    rows: Rows,
}

/// A reader's start: the table at `seq` (`present` rows), then every later event from `rx`.
#[derive(Debug)]
pub struct Subscription {
    pub baseline: Vec<FdbEvent>,
    pub seq: u64,
    pub ts_us: u64,
    pub rx: broadcast::Receiver<FdbEvent>,
    _slot: WatcherSlot,
}

/// One of the [`MAX_WATCHERS`] places, given back on drop.
#[derive(Debug)]
struct WatcherSlot(Arc<AtomicUsize>);

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// The feed of one daemon (all its networks).
#[derive(Debug)]
pub struct FdbWatch {
    table: Arc<NetworkTable>,
    hook: Arc<Hook>,
    feed: Mutex<Feed>,
    tx: broadcast::Sender<FdbEvent>,
    watchers: Arc<AtomicUsize>,
}

/// What the FDBs' hooks share with the feed.
#[derive(Debug, Default)]
struct Hook {
    /// Someone watches: without that the hook does nothing but this load.
    active: AtomicBool,
    /// Unix µs of the first change not read yet; 0: none.
    pending_us: AtomicU64,
    wake: Notify,
}

impl Hook {
    /// Called by an FDB after a change, possibly from a forwarding thread under a shard lock: atomics and a
    /// wake-up only (no allocation; the clock is read only for the first change of a pass).
    fn changed(&self) {
        if !self.active.load(Relaxed) {
            return;
        }
        if self.pending_us.load(Relaxed) == 0 {
            let _ = self.pending_us.compare_exchange(0, unix_us(), Relaxed, Relaxed);
        }
        self.wake.notify_one();
    }
}

pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl FdbWatch {
    pub fn new(table: Arc<NetworkTable>) -> Arc<FdbWatch> {
        FdbWatch::with_ring(table, RING)
    }

    /// A feed with a ring of `ring` events (tests use a small one).
    pub fn with_ring(table: Arc<NetworkTable>, ring: usize) -> Arc<FdbWatch> {
        let (tx, _) = broadcast::channel(ring.max(1));
        let w = Arc::new(FdbWatch {
            table,
            hook: Arc::default(),
            feed: Mutex::new(Feed {
                seq: 0,
                rows: Rows::new(),
            }),
            tx,
            watchers: Arc::default(),
        });
        w.hook_networks();
        w
    }

    /// Install the hook on every network's FDB (a no-op for those that have it). Networks come and go.
    fn hook_networks(&self) {
        for n in self.table.snapshot().iter() {
            let h = self.hook.clone();
            n.fdb.notify_changes(move || h.changed());
        }
    }

    /// Read the tables until the task is dropped: at every change while watched, and every [`RESCAN`].
    pub async fn run(self: Arc<Self>) {
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.hook.wake.notified() => {}
                _ = rescan.tick() => {}
            }
            if !self.hook.active.load(Relaxed) {
                continue;
            }
            self.pass();
            tokio::time::sleep(MIN_GAP).await;
        }
    }

    /// One read of the tables: broadcast what changed since the last one. Stops the hooks when nobody
    /// watches any more.
    pub fn pass(&self) {
        let mut feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        if self.tx.receiver_count() == 0 {
            self.hook.active.store(false, Relaxed);
            return;
        }
        self.read(&mut feed);
    }

    fn read(&self, feed: &mut Feed) {
        self.hook_networks();
        let stamp = match self.hook.pending_us.swap(0, Relaxed) {
            0 => unix_us(),
            t => t,
        };
        let now = Instant::now();
        let mut rows = Rows::new();
        for n in self.table.snapshot().iter() {
            for r in n.fdb.rows(now) {
                rows.insert(
                    (n.vni.get(), r.mac),
                    Row {
                        network: n.name.clone(),
                        vtep: r.vtep,
                        origin: r.origin,
                    },
                );
            }
        }
        let old = std::mem::take(&mut feed.rows);
        let mut send = |event: Change, (vni, mac): (u32, MacAddr), r: &Row| {
            feed.seq += 1;
            // An error means no receiver: nothing to deliver.
            let _ = self.tx.send(FdbEvent {
                event,
                seq: feed.seq,
                ts_us: stamp,
                network: r.network.clone(),
                vni,
                mac,
                vtep: r.vtep,
                origin: r.origin,
            });
        };
        for (k, r) in &old {
            match rows.get(k) {
                None => send(Change::Remove, *k, r),
                Some(n) if n != r => send(Change::Update, *k, n),
                Some(_) => {}
            }
        }
        for (k, r) in &rows {
            if !old.contains_key(k) {
                send(Change::Add, *k, r);
            }
        }
        feed.rows = rows;
    }

    /// A new reader: the table now (read afresh, so its baseline is exact) and the events after it. `None`
    /// when [`MAX_WATCHERS`] readers are connected.
    pub fn subscribe(&self) -> Option<Subscription> {
        let slot = self
            .watchers
            .fetch_update(Relaxed, Relaxed, |n| (n < MAX_WATCHERS).then_some(n + 1))
            .ok()
            .map(|_| WatcherSlot(self.watchers.clone()))?;
        Some(self.resubscribe(slot))
    }

    /// After `lost` events: the same reader's new start.
    pub fn resync(&self, old: Subscription) -> Subscription {
        let Subscription { rx, _slot, .. } = old;
        drop(rx);
        self.resubscribe(_slot)
    }

    fn resubscribe(&self, slot: WatcherSlot) -> Subscription {
        let mut feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        self.hook.active.store(true, Relaxed);
        // Under the feed's lock: no event falls between the baseline and the receiver.
        self.read(&mut feed);
        let ts_us = unix_us();
        let baseline = feed
            .rows
            .iter()
            .map(|((vni, mac), r)| FdbEvent {
                event: Change::Present,
                seq: feed.seq,
                ts_us,
                network: r.network.clone(),
                vni: *vni,
                mac: *mac,
                vtep: r.vtep,
                origin: r.origin,
            })
            .collect();
        Subscription {
            baseline,
            seq: feed.seq,
            ts_us,
            rx: self.tx.subscribe(),
            _slot: slot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::fdb::Fdb;
    use dataplane::network::Network;
    use dataplane::wire::Vni;

    fn table() -> (Arc<NetworkTable>, Arc<Fdb>) {
        let fdb = Arc::new(Fdb::new(64, Fdb::DEFAULT_AGEING, Instant::now()));
        let net = Arc::new(Network::new(
            "default",
            Vni::new(42).unwrap(),
            fdb.clone(),
            Arc::default(),
        ));
        (Arc::new(NetworkTable::new([net]).unwrap()), fdb)
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn baseline_then_add_update_remove_in_order_with_the_change_time() {
        let (t, fdb) = table();
        let vtep = IpAddr::from([10, 0, 0, 2]);
        fdb.install_control(mac(1), vtep, Instant::now());
        let w = FdbWatch::new(t);
        let mut s = w.subscribe().unwrap();
        assert_eq!(s.baseline.len(), 1);
        assert_eq!(
            (s.baseline[0].event, s.baseline[0].mac),
            (Change::Present, mac(1))
        );
        let before = unix_us();
        fdb.install_control(mac(2), vtep, Instant::now());
        fdb.install_control(mac(1), IpAddr::from([10, 0, 0, 3]), Instant::now());
        w.pass();
        fdb.remove_control(&mac(2));
        w.pass();
        let ev: Vec<FdbEvent> = std::iter::from_fn(|| s.rx.try_recv().ok()).collect();
        let got: Vec<(Change, MacAddr, u64)> = ev.iter().map(|e| (e.event, e.mac, e.seq)).collect();
        assert_eq!(
            got,
            [
                (Change::Update, mac(1), s.seq + 1),
                (Change::Add, mac(2), s.seq + 2),
                (Change::Remove, mac(2), s.seq + 3)
            ]
        );
        assert_eq!(ev[0].vtep, IpAddr::from([10, 0, 0, 3]));
        assert!(ev.iter().all(|e| e.ts_us >= before && e.ts_us <= unix_us()));
        assert_eq!((ev[0].network.as_str(), ev[0].vni), ("default", 42));
    }

    #[test]
    fn nobody_watching_stops_the_hook_and_the_watcher_cap_holds() {
        let (t, fdb) = table();
        let w = FdbWatch::new(t);
        assert!(!w.hook.active.load(Relaxed));
        fdb.install_control(mac(1), IpAddr::from([10, 0, 0, 2]), Instant::now());
        assert_eq!(
            w.hook.pending_us.load(Relaxed),
            0,
            "inactive: the hook did nothing"
        );
        let subs: Vec<Subscription> = (0..MAX_WATCHERS).map(|_| w.subscribe().unwrap()).collect();
        assert!(w.subscribe().is_none(), "one more than the cap is refused");
        fdb.install_control(mac(2), IpAddr::from([10, 0, 0, 2]), Instant::now());
        assert_ne!(w.hook.pending_us.load(Relaxed), 0, "active: the change is noted");
        drop(subs);
        w.pass();
        assert!(
            !w.hook.active.load(Relaxed),
            "the last reader gone: the hook idles"
        );
        assert!(w.subscribe().is_some(), "slots are given back");
    }

    #[test]
    fn a_reader_behind_by_more_than_the_ring_is_told_and_gets_a_fresh_baseline() {
        let (t, fdb) = table();
        let w = FdbWatch::with_ring(t, 4);
        let mut s = w.subscribe().unwrap();
        for m in 1..=10 {
            fdb.install_control(mac(m), IpAddr::from([10, 0, 0, 2]), Instant::now());
            w.pass();
        }
        match s.rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 6),
            other => panic!("expected lost events, got {other:?}"),
        }
        let s = w.resync(s);
        assert_eq!(s.baseline.len(), 10, "the new baseline holds every row");
        assert_eq!(s.seq, 10);
    }
}
