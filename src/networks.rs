//! The networks this daemon serves, and their devices (issue 10 §1). [`Networks::add`] builds a network's
//! bridge and TAP (devices.rs), its FDB and counters, starts its device watcher and puts it in the
//! [`NetworkTable`] the forwarding threads read; [`Networks::remove`] undoes that. Both work at runtime (the
//! cluster glue and the admin endpoints call them) and wake the forwarding threads, which take the new table
//! at once. Housekeeping ([`Networks::housekeeping`]) reconciles each network's local MACs with its bridge,
//! forgets the local neighbour bindings (ARP/ND suppression) of MACs that stopped being local, and keeps the
//! bridge's own MAC current (the data path drops frames from it, see `dataplane::engine::suppress`).
//!
//! Must never: let two networks share a name, VNI or device (checked before anything is created), or leave a
//! removed network's watcher running.

use crate::devices::{DeviceSpec, Devices, DevicesError};
use crate::netspec::{self, NetSpecError, NetworkSpec};
use crate::observe::{NetworkInfo, Observe};
use dataplane::engine::PeerSet;
use dataplane::fdb::Fdb;
use dataplane::io::Waker;
use dataplane::network::{Network, NetworkTable, TableError};
use dataplane::wire::MacAddr;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum NetworksError {
    #[error(transparent)]
    Spec(#[from] NetSpecError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("network {name}: {source}")]
    Devices {
        name: String,
        #[source]
        source: DevicesError,
    },
    #[error("no network named {0}: `overlayctl network ls` lists them")]
    NotFound(String),
    #[error("network {name}: cannot start its device watcher: {source}")]
    Thread { name: String, source: std::io::Error },
}

/// What every network is built with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our VTEP address (local FDB entries point at it).
    pub local: IpAddr,
    /// A network's MTU unless its spec names one.
    pub default_mtu: u32,
    pub offload: bool,
    pub state_dir: PathBuf,
    pub fdb_max: usize,
    pub ageing: Duration,
    pub max_local_macs: usize,
    pub epoch: Instant,
    /// Forwarding workers (`--workers`): every TAP gets one queue per worker, every network one counter set
    /// per worker and direction.
    pub workers: usize,
    /// The flood set of the networks declared on this host (`--network`, the legacy flags): the static
    /// `--peer`s, or the alive members in cluster mode (their endpoints may stay silent, so the control plane
    /// cannot know which members serve them). Cluster-defined networks get their own ([`Networks::add_own_flood`]).
    pub flood: Arc<PeerSet>,
}

/// A served network and what keeps it running.
#[derive(Debug)]
struct Entry {
    spec: NetworkSpec,
    mtu: u32,
    net: Arc<Network>,
    devices: Arc<Devices>,
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
    /// Whether the bridge's forwarding table could be read at the last sync (logs only changes).
    bridge_ok: AtomicBool,
    /// The FDB's local MACs at the last housekeeping.
    locals: Arc<Mutex<LocalMacs>>,
}

/// The local MACs of a network's FDB as housekeeping last saw them, to tell which ones the FDB forgot.
#[derive(Debug)]
struct LocalMacs {
    /// [`Fdb::local_version`] they were read at (`u64::MAX`: never).
    version: u64,
    macs: Vec<MacAddr>,
}

impl Default for LocalMacs {
    fn default() -> Self {
        LocalMacs {
            version: u64::MAX,
            macs: Vec::new(),
        }
    }
}

impl Entry {
    fn info(&self) -> NetworkInfo {
        NetworkInfo {
            name: self.spec.name.clone(),
            vni: self.spec.vni,
            bridge: self.spec.bridge.clone(),
            tap: self.spec.tap.clone(),
            mtu: self.mtu,
            subnet: self.spec.subnet,
            egress: self.spec.egress,
            gateway: self.net.gateway,
        }
    }

    fn stop_watcher(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.watcher.take() {
            let _ = h.join();
        }
    }
}

/// A lost device of network `name` that could not be restored: the daemon stops with it.
pub type Fatal = tokio::sync::mpsc::UnboundedSender<(String, DevicesError)>;

#[derive(Debug)]
pub struct Networks {
    settings: Settings,
    table: Arc<NetworkTable>,
    entries: Mutex<Vec<Entry>>,
    /// The forwarding threads' wakers: woken after every change of the table (and after a TAP came back).
    wakers: Vec<Arc<Waker>>,
    observe: Arc<Observe>,
    fatal: Fatal,
}

impl Networks {
    pub fn new(
        settings: Settings,
        table: Arc<NetworkTable>,
        wakers: Vec<Arc<Waker>>,
        observe: Arc<Observe>,
        fatal: Fatal,
    ) -> Networks {
        Networks {
            settings,
            table,
            entries: Mutex::new(Vec::new()),
            wakers,
            observe,
            fatal,
        }
    }

    pub fn table(&self) -> &Arc<NetworkTable> {
        &self.table
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self) {
        for w in &self.wakers {
            w.wake();
        }
    }

    fn publish(&self, entries: &[Entry]) {
        self.observe
            .set_networks(entries.iter().map(Entry::info).collect());
    }

    /// Serve a new network: check it against the served ones, build its bridge and TAP, start its device
    /// watcher and hand it to the forwarding threads. Blocks for the netlink calls (a few ms). On error
    /// nothing is left behind.
    pub fn add(&self, spec: NetworkSpec) -> Result<Arc<Network>, NetworksError> {
        self.add_with(spec, self.settings.flood.clone())
    }

    /// [`Networks::add`] with a flood set of its own (empty at first): a cluster-defined network, whose flood
    /// set the control plane maintains (members advertising a MAC on it).
    pub fn add_own_flood(&self, spec: NetworkSpec) -> Result<Arc<Network>, NetworksError> {
        self.add_with(spec, Arc::default())
    }

    fn add_with(&self, spec: NetworkSpec, flood: Arc<PeerSet>) -> Result<Arc<Network>, NetworksError> {
        let mut entries = self.entries();
        netspec::check_collisions(&spec, entries.iter().map(|e| &e.spec))?;
        let s = &self.settings;
        let mtu = spec.mtu.unwrap_or(s.default_mtu);
        let dev_err = |source| NetworksError::Devices {
            name: spec.name.clone(),
            source,
        };
        let devices = Arc::new(
            Devices::setup(DeviceSpec {
                tap: spec.tap.clone(),
                bridge: spec.bridge.clone(),
                mtu,
                offload: s.offload,
                queues: s.workers,
                state_dir: s.state_dir.clone(),
                legacy_record: spec.name == netspec::DEFAULT_NETWORK,
                bridge_mac: Some(crate::host::bridge::derived_mac(spec.vni.get(), s.local)),
            })
            .map_err(dev_err)?,
        );
        let watcher = devices.watcher().map_err(dev_err)?;
        let fdb = Arc::new(Fdb::new(s.fdb_max, s.ageing, s.epoch).with_max_local(s.max_local_macs));
        let mut net = Network::new(spec.name.clone(), spec.vni, fdb, flood)
            .with_tap(devices.tap().clone(), u16::try_from(mtu).unwrap_or(u16::MAX))
            .with_workers(s.workers);
        net.gateway = spec.gateway();
        refresh_bridge_mac(&net, &spec.bridge);
        let net = Arc::new(net);
        self.table.insert(net.clone())?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, fatal, name) = (stop.clone(), self.fatal.clone(), spec.name.clone());
            let wakers = self.wakers.clone();
            std::thread::Builder::new()
                .name(format!("ovl-dev-{}", spec.name))
                .spawn(move || {
                    watcher.run(
                        &stop,
                        |e| {
                            let _ = fatal.send((name, e));
                        },
                        || wakers.iter().for_each(|w| w.wake()),
                    )
                })
        };
        let watcher = match thread {
            Ok(t) => t,
            Err(source) => {
                self.table.remove(&spec.name);
                return Err(NetworksError::Thread {
                    name: spec.name.clone(),
                    source,
                });
            }
        };
        info!(
            network = %spec.name,
            vni = spec.vni.get(),
            bridge = %spec.bridge,
            tap = %spec.tap,
            mtu,
            tso = devices.tso(),
            "network up"
        );
        entries.push(Entry {
            spec,
            mtu,
            net: net.clone(),
            devices,
            stop,
            watcher: Some(watcher),
            bridge_ok: AtomicBool::new(true),
            locals: Arc::default(),
        });
        self.publish(&entries);
        drop(entries);
        self.wake();
        Ok(net)
    }

    /// Stop serving network `name`: out of the table (the forwarding threads drop it at their next wakeup,
    /// which this causes), its watcher stopped (up to a quarter second), its TAP removed and its bridge too if
    /// we created it and nothing else is plugged in. Blocks; call it off the async runtime's threads.
    pub fn remove(&self, name: &str) -> Result<(), NetworksError> {
        let mut entries = self.entries();
        let i = entries
            .iter()
            .position(|e| e.spec.name == name)
            .ok_or_else(|| NetworksError::NotFound(name.to_string()))?;
        let mut e = entries.remove(i);
        self.table.remove(name);
        self.publish(&entries);
        drop(entries);
        self.wake();
        e.stop_watcher();
        info!(network = %name, "network removed");
        // The TAP goes when the forwarding threads have dropped their snapshots; the bridge now.
        drop(e);
        Ok(())
    }

    /// Every served network as `network ls` shows it.
    pub fn infos(&self) -> Vec<NetworkInfo> {
        self.entries().iter().map(Entry::info).collect()
    }

    /// The spec of network `name`, if served.
    pub fn spec(&self, name: &str) -> Option<NetworkSpec> {
        self.entries()
            .iter()
            .find(|e| e.spec.name == name)
            .map(|e| e.spec.clone())
    }

    /// The specs of the networks served, in the order they were added.
    pub fn specs(&self) -> Vec<NetworkSpec> {
        self.entries().iter().map(|e| e.spec.clone()).collect()
    }

    /// The spec and effective MTU of network `name`.
    pub fn get(&self, name: &str) -> Option<(NetworkSpec, u32)> {
        self.entries()
            .iter()
            .find(|e| e.spec.name == name)
            .map(|e| (e.spec.clone(), e.mtu))
    }

    /// Stop every watcher and forget every network (shutdown). Devices are removed as in [`Networks::remove`].
    pub fn shutdown(&self) {
        let mut entries = std::mem::take(&mut *self.entries());
        for e in &entries {
            self.table.remove(&e.spec.name);
        }
        self.wake();
        for e in &mut entries {
            e.stop_watcher();
        }
    }

    /// Every second or so: each network's local MACs follow its bridge's table, aged entries expire.
    pub fn housekeeping(&self) {
        let local = self.settings.local;
        // Snapshot what to look at, then read the bridges without holding the lock.
        type Work = (Arc<Network>, String, String, bool, Arc<Mutex<LocalMacs>>);
        let work: Vec<Work> = self
            .entries()
            .iter()
            .map(|e| {
                (
                    e.net.clone(),
                    e.spec.bridge.clone(),
                    e.spec.tap.clone(),
                    e.bridge_ok.load(Ordering::Relaxed),
                    e.locals.clone(),
                )
            })
            .collect();
        for (net, bridge, tap, was_ok, locals) in work {
            refresh_bridge_mac(&net, &bridge);
            let ok = sync_local_macs(&net.fdb, &bridge, &tap, local, was_ok);
            net.fdb.expire(Instant::now());
            forget_gone_locals(&net, &mut locals.lock().unwrap_or_else(|p| p.into_inner()));
            if let Some(e) = self.entries().iter().find(|e| Arc::ptr_eq(&e.net, &net)) {
                e.bridge_ok.store(ok, Ordering::Relaxed);
            }
        }
    }

    /// Whether any device of `name`'s network reports TSO (the TAP hands us superframes).
    pub fn tso(&self, name: &str) -> Option<bool> {
        self.entries()
            .iter()
            .find(|e| e.spec.name == name)
            .map(|e| e.devices.tso())
    }
}

impl Drop for Networks {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Read the bridge's address into the network (a bridge without a fixed address follows its ports'). A
/// bridge that cannot be read keeps the last known address.
fn refresh_bridge_mac(net: &Network, bridge: &str) {
    match crate::host::bridge::mac(bridge) {
        Ok(Some(mac)) => {
            if net.bridge_mac.set(Some(mac)) {
                info!(network = %net.name, %bridge, %mac, "bridge address");
                // Frames the bridge sent from its new address before now may have been learned as local.
                net.fdb.forget_local(&mac, Instant::now());
            }
        }
        Ok(None) => {}
        Err(e) => warn!(network = %net.name, %bridge, "cannot read the bridge's address: {e}"),
    }
}

/// A MAC the FDB no longer holds as local (it left the bridge, aged out, was claimed elsewhere) takes its local
/// neighbour bindings with it (a control claim kept aside takes over, see `dataplane::neigh`). Only MACs that
/// were local at the previous call count: an address bound at attach before its container spoke is kept.
fn forget_gone_locals(net: &Network, seen: &mut LocalMacs) {
    let v = net.fdb.local_version();
    if v == seen.version {
        return;
    }
    let now = net.fdb.local_macs(Instant::now());
    for gone in seen.macs.iter().filter(|m| now.binary_search(m).is_err()) {
        net.neigh.remove_mac(gone);
    }
    *seen = LocalMacs {
        version: v,
        macs: now,
    };
}

/// Which MACs are `local` follows our bridge's own table (issue 8, DECISIONS: "local" = on a non-TAP port of
/// our bridge): a MAC that left it may be claimed from elsewhere, one that is there may not. One netlink dump
/// of the bridge table per call, off the forwarding threads. Returns whether the bridge could be read; logs
/// only changes.
fn sync_local_macs(fdb: &Fdb, bridge: &str, tap: &str, local: IpAddr, was_ok: bool) -> bool {
    let read_at = Instant::now();
    match crate::host::bridge_macs(bridge, tap) {
        Ok(macs) => {
            // The bridge's and the ports' own addresses count as present but are not announced as containers.
            let on_bridge: Vec<_> = macs.iter().map(|b| (b.mac, !b.permanent)).collect();
            fdb.sync_bridge(&on_bridge, local, read_at, Instant::now());
            if !was_ok {
                info!(%bridge, "reading the bridge's forwarding table works again");
            }
            true
        }
        Err(e) => {
            if was_ok {
                warn!(%bridge, "cannot read the bridge's forwarding table ({e}); local MACs now only follow TAP traffic and ageing");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::fdb::Origin;
    use dataplane::neigh::{Binding, NeighOrigin};
    use dataplane::wire::Vni;

    #[test]
    fn a_mac_the_fdb_forgets_as_local_takes_its_neighbour_bindings_along() {
        let t0 = Instant::now();
        let local: IpAddr = "192.0.2.1".parse().unwrap();
        let fdb = Arc::new(Fdb::new(64, Duration::from_secs(300), t0));
        let net = Network::new("n", Vni::new(7).unwrap(), fdb, Arc::default());
        let (a, b) = (MacAddr([2, 0, 0, 0, 0, 0xa]), MacAddr([2, 0, 0, 0, 0, 0xb]));
        let ip = |n: u8| IpAddr::from([10, 20, 0, n]);
        // An attached address whose container has not spoken yet (its MAC is not local in the FDB).
        let attached = MacAddr([2, 0, 0, 0, 0, 0xc]);
        for (n, mac) in [(5, a), (6, b), (7, attached)] {
            net.neigh.learn(Binding { ip: ip(n), mac }, t0);
        }
        net.fdb.learn(a, local, Origin::Local, t0);
        net.fdb.learn(b, local, Origin::Local, t0);
        let mut seen = LocalMacs::default();
        forget_gone_locals(&net, &mut seen);
        assert_eq!(net.neigh.len(), 3, "nothing forgotten yet");
        // A leaves the bridge: the next bridge sync gives it up.
        let later = t0 + Duration::from_secs(1);
        net.fdb.sync_bridge(&[(b, true)], local, later, later);
        forget_gone_locals(&net, &mut seen);
        assert_eq!(net.neigh.lookup(&ip(5)), None, "A's binding went with A");
        assert_eq!(net.neigh.lookup(&ip(6)), Some((b, NeighOrigin::Local)));
        assert_eq!(net.neigh.lookup(&ip(7)), Some((attached, NeighOrigin::Local)));
        // B ages out.
        net.fdb.expire(t0 + Duration::from_secs(400));
        forget_gone_locals(&net, &mut seen);
        assert_eq!(net.neigh.lookup(&ip(6)), None, "B's binding went when B aged out");
        assert_eq!(net.neigh.lookup(&ip(7)), Some((attached, NeighOrigin::Local)));
    }
}
