//! The FDB change feed behind `GET /v1/fdb/watch` (`overlayctl fdb --watch`): add/update/remove events with
//! the time of the change, for any number of readers, bounded in memory and never in the data path's way.
//!
//! How a change gets here: every network's FDB calls a hook after a row appears, goes, or changes VTEP or
//! origin (`Fdb::notify_changes`; never on a refresh, which is the per-packet case). While nobody watches,
//! the hook is one atomic load. While someone does, the first change after a read notes the wall-clock time
//! (one CAS) and wakes [`FdbWatch::run`]; later changes until the next read cost a load only. The run task
//! reads, off the async workers, the tables whose [`Fdb::version`] moved since the last read and diffs them
//! against that read: one event per changed row, stamped with the time of the first change noticed since the
//! previous read. Changes that cancel out before the read are not seen. Reads are at least [`MIN_GAP`] and 4
//! times the last read's duration apart, so a flood costs a bounded share of one core.
//! Events go to every reader through one bounded ring ([`RING`] events); a reader that falls behind by more
//! loses the oldest ones, is told how many (`lost`), and gets the table again as a fresh baseline (from the
//! feed's copy, not the FDBs).
//! Must never: block or allocate in the hook, hold a lock the data path takes, or keep more than [`RING`]
//! events (plus one copy of the table, and one per reader being baselined).

use dataplane::fdb::{Fdb, Origin};
use dataplane::network::NetworkTable;
use dataplane::wire::MacAddr;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, Notify};

/// Events kept for readers that have not taken them yet; a reader further behind loses events.
pub const RING: usize = 4096;
/// At most this many watchers at once on the TCP address (any local user may connect there)…
pub const MAX_TCP_WATCHERS: usize = 6;
/// …and on the admin socket (root or overlayd's uid), so TCP watchers can never lock the operator out.
pub const MAX_SOCKET_WATCHERS: usize = 2;
/// Between two reads of the tables at least this long, and at least 4 times as long as the last read took:
/// a flood of changes costs at most about a fifth of one core (events keep the time of their first change).
const MIN_GAP: Duration = Duration::from_millis(2);
/// Read the tables at least this often while watched: networks added since (tables that did not change
/// are skipped by their version).
const RESCAN: Duration = Duration::from_secs(1);

/// Which admin listener a watcher came in on: each has its own cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Tcp,
    Socket,
}

impl Listener {
    pub fn cap(self) -> usize {
        match self {
            Listener::Tcp => MAX_TCP_WATCHERS,
            Listener::Socket => MAX_SOCKET_WATCHERS,
        }
    }
}

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
    /// Position in the feed (increasing; the baseline's rows carry the feed's position when it was taken).
    pub seq: u64,
    /// Unix time in µs of the first change noticed since the previous read of the tables (a change read by
    /// a pass carries the time the first change of that pass was noticed, at most one pass earlier).
    pub ts_us: u64,
    #[serde(serialize_with = "as_str")]
    pub network: Arc<str>,
    pub vni: u32,
    pub mac: MacAddr,
    pub vtep: IpAddr,
    pub origin: Origin,
}

fn as_str<S: Serializer>(s: &Arc<str>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    mac: MacAddr,
    vtep: IpAddr,
    origin: Origin,
}

/// One network's table as last read.
#[derive(Debug)]
struct Net {
    name: Arc<str>,
    /// The FDB read (a network removed and created again has another one).
    fdb: Arc<Fdb>,
    /// Its [`Fdb::version`] loaded before the read: unchanged, the table is not read again.
    version: u64,
    /// Sorted by MAC.
    rows: Vec<Row>,
}

#[derive(Debug, Default)]
struct Feed {
    seq: u64,
    /// By VNI. Exact at `seq` while the hook is active (every later change is an event after `seq`); empty
    /// while nobody watches.
    nets: BTreeMap<u32, Net>,
    /// Rows read from FDBs so far (tests: a table that did not change is not read again).
    rows_read: u64,
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

/// One of a listener's places, given back on drop.
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
    tcp_watchers: Arc<AtomicUsize>,
    socket_watchers: Arc<AtomicUsize>,
}

/// What the FDBs' hooks share with the feed.
#[derive(Debug, Default)]
struct Hook {
    /// Someone watches: without that the hook does nothing but this load.
    active: AtomicBool,
    /// Unix µs of the first change noticed since the last read; 0: none.
    pending_us: AtomicU64,
    wake: Notify,
}

impl Hook {
    /// Called by an FDB after a change (after bumping its version), possibly from a forwarding thread under a
    /// shard lock: atomics, and a wake-up only for the first change after a read (no allocation; the clock
    /// is read only for that change).
    ///
    /// Why no change is missed although only the CAS winner wakes the task: the FDB bumps its version
    /// (SeqCst RMW) before calling this, and the pass swaps `pending_us` to 0 (SeqCst) before it loads the
    /// versions (SeqCst). Say this change's load of `pending_us` saw a value other than 0, or its CAS lost to
    /// one: the change that wrote that value won its CAS and woke the task, so a pass whose swap resets that
    /// value will run; this load did not see that swap, so in the single order of SeqCst operations the load
    /// comes before the swap, hence the version bump too, and that pass's version load (after its swap) sees
    /// the bump and reads this table again. If this change's CAS wins, it wakes the task itself (`Notify`
    /// keeps the permit if the task is busy), and the pass that swaps this value out sees the bump the same
    /// way. Likewise for `active`: a change that saw it false came before `resubscribe` stored true, and the
    /// full read that follows that store sees the change.
    fn changed(&self) {
        if !self.active.load(SeqCst) {
            return;
        }
        if self.pending_us.load(SeqCst) == 0
            && self
                .pending_us
                .compare_exchange(0, unix_us().max(1), SeqCst, SeqCst)
                .is_ok()
        {
            self.wake.notify_one();
        }
    }
}

pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The wait after a read that took `took`: the tables are read at most a fifth of the time.
fn gap_after(took: Duration) -> Duration {
    MIN_GAP.max(took.saturating_mul(4))
}

/// Call `f` for each difference between two MAC-sorted row lists: `remove`, `update` or `add`, by MAC.
fn diff(old: &[Row], new: &[Row], mut f: impl FnMut(Change, &Row)) {
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) if o.mac == n.mac => {
                if o != n {
                    f(Change::Update, n);
                }
                i += 1;
                j += 1;
            }
            (Some(o), Some(n)) if o.mac < n.mac => {
                f(Change::Remove, o);
                i += 1;
            }
            (Some(o), None) => {
                f(Change::Remove, o);
                i += 1;
            }
            (_, Some(n)) => {
                f(Change::Add, n);
                j += 1;
            }
            (None, None) => return,
        }
    }
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
            feed: Mutex::default(),
            tx,
            tcp_watchers: Arc::default(),
            socket_watchers: Arc::default(),
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

    /// Read the tables until the task is dropped: at every change while watched, and every [`RESCAN`]. Each
    /// read runs on a blocking thread (never on the async workers), and the next waits at least [`MIN_GAP`]
    /// and 4 times as long as this one took.
    pub async fn run(self: Arc<Self>) {
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.hook.wake.notified() => {}
                _ = rescan.tick() => {}
            }
            if !self.hook.active.load(SeqCst) {
                continue;
            }
            let w = self.clone();
            let took = tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                w.pass();
                t.elapsed()
            })
            .await
            .unwrap_or(MIN_GAP);
            tokio::time::sleep(gap_after(took)).await;
        }
    }

    /// One read of the tables: broadcast what changed since the last one. Stops the hooks (and forgets the
    /// table) when nobody watches any more. Blocking: call it off the async workers.
    pub fn pass(&self) {
        let mut feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        if self.tx.receiver_count() == 0 {
            self.hook.active.store(false, SeqCst);
            feed.nets.clear();
            return;
        }
        self.read(&mut feed, true);
    }

    /// Read the tables whose version moved since the last read and diff them against it; `send`: broadcast
    /// the differences (else only take the table, for a feed that just started).
    fn read(&self, feed: &mut Feed, send: bool) {
        self.hook_networks();
        // Before any version is loaded (see `Hook::changed`).
        let stamp = match self.hook.pending_us.swap(0, SeqCst) {
            0 => unix_us(),
            t => t,
        };
        let now = Instant::now();
        let mut old = std::mem::take(&mut feed.nets);
        let mut seq = feed.seq;
        let mut emit = |event: Change, vni: u32, name: &Arc<str>, r: &Row| {
            if !send {
                return;
            }
            seq += 1;
            // An error means no receiver: nothing to deliver.
            let _ = self.tx.send(FdbEvent {
                event,
                seq,
                ts_us: stamp,
                network: name.clone(),
                vni,
                mac: r.mac,
                vtep: r.vtep,
                origin: r.origin,
            });
        };
        let snapshot = self.table.snapshot();
        let mut networks: Vec<_> = snapshot.iter().collect();
        networks.sort_by_key(|n| n.vni.get());
        for n in networks {
            let vni = n.vni.get();
            let version = n.fdb.version();
            let prev = match old.remove(&vni) {
                Some(p) if Arc::ptr_eq(&p.fdb, &n.fdb) && p.version == version => {
                    feed.nets.insert(vni, p);
                    continue;
                }
                Some(p) if *p.name == *n.name => Some(p),
                Some(p) => {
                    // Another network under this VNI: every row of the old one went.
                    for r in &p.rows {
                        emit(Change::Remove, vni, &p.name, r);
                    }
                    None
                }
                None => None,
            };
            let rows: Vec<Row> = n
                .fdb
                .rows(now)
                .into_iter()
                .map(|r| Row {
                    mac: r.mac,
                    vtep: r.vtep,
                    origin: r.origin,
                })
                .collect();
            feed.rows_read += rows.len() as u64;
            let name = match prev {
                Some(p) => {
                    diff(&p.rows, &rows, |c, r| emit(c, vni, &p.name, r));
                    p.name
                }
                None => {
                    let name: Arc<str> = Arc::from(n.name.as_str());
                    diff(&[], &rows, |c, r| emit(c, vni, &name, r));
                    name
                }
            };
            feed.nets.insert(
                vni,
                Net {
                    name,
                    fdb: n.fdb.clone(),
                    version,
                    rows,
                },
            );
        }
        // Networks removed since: their rows went.
        for (vni, p) in old {
            for r in &p.rows {
                emit(Change::Remove, vni, &p.name, r);
            }
        }
        feed.seq = seq;
    }

    /// A new reader on `on`: the table now and the events after it. `None` when `on`'s cap of readers is
    /// connected.
    pub fn subscribe(&self, on: Listener) -> Option<Subscription> {
        let count = match on {
            Listener::Tcp => &self.tcp_watchers,
            Listener::Socket => &self.socket_watchers,
        };
        let slot = count
            .fetch_update(Relaxed, Relaxed, |n| (n < on.cap()).then_some(n + 1))
            .ok()
            .map(|_| WatcherSlot(count.clone()))?;
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
        // While the feed is active its copy is exact at `feed.seq` under this lock: the baseline, with no
        // event between it and the receiver. Only a feed that was idle reads the tables.
        if !self.hook.active.load(SeqCst) {
            self.hook.active.store(true, SeqCst);
            feed.nets.clear();
            self.read(&mut feed, false);
        }
        let ts_us = unix_us();
        let seq = feed.seq;
        let baseline = feed
            .nets
            .iter()
            .flat_map(|(vni, n)| {
                n.rows.iter().map(move |r| FdbEvent {
                    event: Change::Present,
                    seq,
                    ts_us,
                    network: n.name.clone(),
                    vni: *vni,
                    mac: r.mac,
                    vtep: r.vtep,
                    origin: r.origin,
                })
            })
            .collect();
        Subscription {
            baseline,
            seq,
            ts_us,
            rx: self.tx.subscribe(),
            _slot: slot,
        }
    }
}

#[cfg(test)]
mod tests;
