//! The host devices overlayd depends on, and keeping them in place while it runs.
//!
//! Owns: the TAP (always ours: created, or a free persistent one taken over) and the bridge *if we created
//! it*. At start it builds them (bridge up, TAP with offloads and MTU, on the bridge, up). While running, a
//! watcher woken by rtnetlink link events (and a 1 s re-check in case events were lost) notices within
//! well under a second when either disappears, goes down or the TAP leaves the bridge, logs it once, and
//! puts it back — the TAP behind the same fds, so the forwarding threads never restart. If it cannot within
//! [`GIVE_UP`], the daemon exits non-zero with the reason instead of running without a data path.
//! On exit it removes only what it created, and never a bridge that still has other ports (a container's
//! veth): that bridge is left in place with its ports. What it created is recorded in the state dir
//! (ownership.rs), so the next run — after such an exit or a crash — still knows the bridge is its own.
//!
//! Must never: touch links other than its TAP and bridge, or spin when a device is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::host::netlink::{self, NetlinkError};
use dataplane::io::{self, Tap, TapConfig, TapError};
use tracing::{error, info, warn};

use crate::links::{self, LinkEvents, LinksError};
use crate::ownership::{BridgeId, Record};

/// TAP offloads we declare when the virtio-net header is on (TSO superframes and partial checksums).
const TAP_OFFLOADS: u32 = io::TUN_F_CSUM | io::TUN_F_TSO4 | io::TUN_F_TSO6 | io::TUN_F_TSO_ECN;
/// Wait for link events at most this long between looks at the stop flag.
const WAIT_MS: i32 = 250;
/// Re-check the devices at least this often even without events (a lost event, ENOBUFS).
const RECHECK: Duration = Duration::from_secs(1);
/// While a repair fails, retry this often…
const RETRY_MS: i32 = 200;
/// …for this long, then give up and stop the daemon.
pub const GIVE_UP: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Links(#[from] LinksError),
    #[error(
        "{what} and overlayd could not restore it within {} s: {source} (fix that, then start overlayd again)",
        GIVE_UP.as_secs()
    )]
    Unrecoverable {
        what: String,
        #[source]
        source: Box<DevicesError>,
    },
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub tap: String,
    pub bridge: String,
    pub mtu: u32,
    /// virtio-net header and TSO offloads on the TAP.
    pub offload: bool,
    /// TAP queues: one per worker (`--workers`); more than one makes a multiqueue TAP.
    pub queues: usize,
    /// Where the record of a bridge we created lives (see ownership.rs).
    pub state_dir: std::path::PathBuf,
    /// The legacy network's bridge keeps the record file of single-network releases (`created-bridge`);
    /// any other network's is named after its bridge.
    pub legacy_record: bool,
    /// The fixed address a bridge we create (or created in an earlier run) gets
    /// ([`crate::host::bridge::derived_mac`]); a bridge someone else made keeps its own.
    pub bridge_mac: Option<dataplane::wire::MacAddr>,
}

/// The bridge and whether it is ours to remove. Removal happens on drop (also on an early error return).
#[derive(Debug)]
struct Bridge {
    name: String,
    /// Our TAP's name, which does not count as "another port".
    tap: String,
    /// Ours: created by this run, or by an earlier one as `record` proves.
    created: AtomicBool,
    record: Record,
}

impl Bridge {
    /// We just created it: ours, also for the runs after us.
    fn created_now(&self) {
        self.created.store(true, Ordering::Relaxed);
        let id = links::link_index(&self.name)
            .ok()
            .flatten()
            .and_then(|i| BridgeId::here(&self.name, i));
        let stored = match id {
            Some(id) => self.record.store(&id).map_err(|e| e.to_string()),
            None => Err("cannot read its ifindex, the boot id or the network namespace".to_owned()),
        };
        if let Err(e) = stored {
            warn!(bridge = %self.name, "a later overlayd will not know that we created this bridge: {e}");
        }
    }

    /// Whether the existing bridge is the one an earlier run created (exact match of the record).
    fn recorded_as_ours(&self) -> bool {
        let Some(recorded) = self.record.load() else {
            return false;
        };
        let here = links::link_index(&self.name)
            .ok()
            .flatten()
            .and_then(|i| BridgeId::here(&self.name, i));
        here.is_some_and(|h| h == recorded)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if !self.created.load(Ordering::Relaxed) {
            return;
        }
        let b = &self.name;
        match links::bridge_ports(b) {
            Ok(ports) => {
                let others: Vec<&String> = ports.iter().filter(|p| **p != self.tap).collect();
                if !others.is_empty() {
                    info!(bridge = %b, ports = ?others, "leaving bridge we created in place: other ports are still attached");
                    return;
                }
                match netlink::delete_link(b) {
                    Ok(()) => {
                        info!(bridge = %b, "removed bridge we created");
                        self.record.clear();
                    }
                    Err(NetlinkError::NoSuchDevice { .. }) => self.record.clear(),
                    Err(e) => warn!("could not remove bridge {b} we created: {e}"),
                }
            }
            Err(e) => warn!("not removing bridge {b} we created: cannot list its ports: {e}"),
        }
    }
}

/// The TAP and bridge of one running daemon.
#[derive(Debug)]
pub struct Devices {
    spec: DeviceSpec,
    // Field order is drop order: the TAP (closing its fds removes it) goes before the bridge is considered.
    tap: Arc<Tap>,
    tso: bool,
    bridge: Bridge,
}

impl Devices {
    /// Bridge (created if missing, brought up), then the TAP with offloads and MTU, on the bridge, up.
    pub fn setup(spec: DeviceSpec) -> Result<Devices, DevicesError> {
        let bridge = Bridge {
            name: spec.bridge.clone(),
            tap: spec.tap.clone(),
            created: AtomicBool::new(false),
            record: if spec.legacy_record {
                Record::new(&spec.state_dir)
            } else {
                Record::for_bridge(&spec.state_dir, &spec.bridge)
            },
        };
        if netlink::ensure_bridge(&spec.bridge)? {
            info!(bridge = %spec.bridge, "created bridge");
            bridge.created_now();
            fix_bridge_mac(&spec);
        } else if bridge.recorded_as_ours() {
            info!(bridge = %spec.bridge, "found the bridge an earlier overlayd created; removing it on exit if nothing else is on it");
            bridge.created.store(true, Ordering::Relaxed);
            fix_bridge_mac(&spec);
        }
        let tap = Tap::create(&TapConfig {
            name: spec.tap.clone(),
            vnet_hdr: spec.offload,
            queues: spec.queues.max(1),
        })?;
        let tso = spec.offload
            && tap
                .set_offload(TAP_OFFLOADS)
                .map_err(|e| warn!("TAP offloads unavailable, continuing without TSO: {e}"))
                .is_ok();
        let d = Devices {
            spec,
            tap: Arc::new(tap),
            tso,
            bridge,
        };
        d.configure_tap()?;
        Ok(d)
    }

    pub fn tap(&self) -> &Arc<Tap> {
        &self.tap
    }

    pub fn spec(&self) -> &DeviceSpec {
        &self.spec
    }

    /// Whether the TAP hands us TSO superframes.
    pub fn tso(&self) -> bool {
        self.tso
    }

    /// Subscribe to link events; run the returned watcher on its own thread.
    pub fn watcher(self: &Arc<Self>) -> Result<Watcher, DevicesError> {
        Ok(Watcher {
            devices: self.clone(),
            events: LinkEvents::subscribe()?,
        })
    }

    fn configure_tap(&self) -> Result<(), NetlinkError> {
        let t = self.tap.name();
        netlink::set_mtu(t, self.spec.mtu)?;
        netlink::set_master(t, &self.spec.bridge)?;
        netlink::set_up(t)
    }

    /// One look at both devices; repairs what is wrong. Logs each problem once per occurrence.
    /// Returns whether the TAP was recreated (its readers should look at it again now).
    fn check(&self, seen: &mut Seen) -> Result<bool, DevicesError> {
        let (b, t) = (self.spec.bridge.as_str(), self.tap.name());
        let mut healthy = true;
        // The bridge first: the TAP goes on it.
        match link_up(b)? {
            Some(true) => {}
            state => {
                healthy = false;
                if state.is_none() {
                    if seen.first(Seen::BRIDGE_GONE) {
                        warn!(bridge = %b, "bridge disappeared; recreating it");
                    }
                } else if seen.first(Seen::BRIDGE_DOWN) {
                    warn!(bridge = %b, "bridge went down; bringing it up");
                }
                if netlink::ensure_bridge(b)? {
                    // We made this one, so it is ours to remove on exit (if it has no other ports then).
                    self.bridge.created_now();
                    fix_bridge_mac(&self.spec);
                }
                info!(bridge = %b, "bridge restored");
            }
        }
        // Ours is gone if its fd lost the device, even when something else has taken the name since.
        let tap_state = if self.tap.attached() { link_up(t)? } else { None };
        let mut reopened = false;
        match tap_state {
            None => {
                healthy = false;
                if seen.first(Seen::TAP_GONE) {
                    warn!(tap = %t, "TAP disappeared; recreating it");
                }
                self.tap.reopen()?;
                if self.tso {
                    self.tap.set_offload(TAP_OFFLOADS)?;
                }
                self.configure_tap()?;
                reopened = true;
                info!(tap = %t, bridge = %b, mtu = self.spec.mtu, "TAP recreated and attached");
            }
            Some(up) => {
                if netlink::link_master(t)?.as_deref() != Some(b) {
                    healthy = false;
                    if seen.first(Seen::TAP_DETACHED) {
                        warn!(tap = %t, bridge = %b, "TAP is no longer on the bridge; re-attaching it");
                    }
                    netlink::set_master(t, b)?;
                }
                if !up {
                    healthy = false;
                    if seen.first(Seen::TAP_DOWN) {
                        warn!(tap = %t, "TAP went down; bringing it up");
                    }
                    netlink::set_up(t)?;
                }
            }
        }
        if healthy {
            seen.clear();
        }
        Ok(reopened)
    }
}

/// `Some(up)` for an existing link, `None` if there is none (also if it vanishes while we look).
/// Give a bridge we created its fixed address, so it does not follow the lowest port MAC (the data path drops
/// frames from the bridge's MAC, and containers cache the gateway's). A failure only costs that stability.
fn fix_bridge_mac(spec: &DeviceSpec) {
    if let Some(mac) = spec.bridge_mac {
        if let Err(e) = crate::host::bridge::set_mac(&spec.bridge, mac) {
            warn!(bridge = %spec.bridge, %mac, "cannot set the bridge's address; it follows its ports' addresses: {e}");
        }
    }
}

fn link_up(name: &str) -> Result<Option<bool>, NetlinkError> {
    match netlink::link_is_up(name) {
        Ok(up) => Ok(Some(up)),
        Err(NetlinkError::NoSuchDevice { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Problems already logged since the devices were last healthy.
#[derive(Debug, Default)]
struct Seen(u8);

impl Seen {
    const BRIDGE_GONE: u8 = 1;
    const BRIDGE_DOWN: u8 = 2;
    const TAP_GONE: u8 = 4;
    const TAP_DOWN: u8 = 8;
    const TAP_DETACHED: u8 = 16;

    /// True the first time `p` is reported.
    fn first(&mut self, p: u8) -> bool {
        let new = self.0 & p == 0;
        self.0 |= p;
        new
    }
    fn clear(&mut self) {
        self.0 = 0;
    }
    fn describe(&self) -> String {
        let mut what = Vec::new();
        for (bit, text) in [
            (Self::BRIDGE_GONE, "the bridge disappeared"),
            (Self::BRIDGE_DOWN, "the bridge went down"),
            (Self::TAP_GONE, "the TAP disappeared"),
            (Self::TAP_DOWN, "the TAP went down"),
            (Self::TAP_DETACHED, "the TAP left the bridge"),
        ] {
            if self.0 & bit != 0 {
                what.push(text);
            }
        }
        if what.is_empty() {
            "a device check failed".to_owned()
        } else {
            what.join(", ")
        }
    }
}

/// Keeps the devices in place; see the module comment.
#[derive(Debug)]
pub struct Watcher {
    devices: Arc<Devices>,
    events: LinkEvents,
}

impl Watcher {
    /// Runs until `stop` is set, or until a repair has failed for [`GIVE_UP`]: then the reason goes to
    /// `fatal` (the daemon exits non-zero with it) and the watcher returns. `tap_back` runs after the TAP
    /// was recreated (the daemon wakes the TAP reader, which backs off while the TAP is gone).
    pub fn run(self, stop: &AtomicBool, fatal: impl FnOnce(DevicesError), tap_back: impl Fn()) {
        let mut seen = Seen::default();
        let mut failing_since: Option<Instant> = None;
        let mut last_check = Instant::now();
        let mut events_broken = false;
        let mut due = true;
        while !stop.load(Ordering::Relaxed) {
            if due || last_check.elapsed() >= RECHECK {
                last_check = Instant::now();
                match self.devices.check(&mut seen) {
                    Ok(reopened) => {
                        if reopened {
                            tap_back();
                        }
                        if failing_since.take().is_some() {
                            info!("devices restored after earlier failures");
                        }
                    }
                    Err(e) => {
                        let first = failing_since.is_none();
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= GIVE_UP {
                            let what = seen.describe();
                            error!("{what}; giving up: {e}");
                            fatal(DevicesError::Unrecoverable {
                                what,
                                source: Box::new(e),
                            });
                            return;
                        }
                        if first {
                            warn!(
                                "cannot restore devices yet ({e}); retrying for {} s",
                                GIVE_UP.as_secs()
                            );
                        }
                    }
                }
            }
            let wait = if failing_since.is_some() {
                RETRY_MS
            } else {
                WAIT_MS
            };
            due = failing_since.is_some();
            match self.events.wait(wait) {
                Ok(any) => due |= any,
                Err(e) => {
                    if !events_broken {
                        warn!("link events unavailable ({e}); checking devices every second instead");
                        events_broken = true;
                    }
                    std::thread::sleep(Duration::from_millis(wait as u64));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_reports_each_problem_once_until_healthy() {
        let mut s = Seen::default();
        assert!(s.first(Seen::TAP_GONE));
        assert!(!s.first(Seen::TAP_GONE));
        assert!(s.first(Seen::BRIDGE_DOWN));
        assert_eq!(s.describe(), "the bridge went down, the TAP disappeared");
        s.clear();
        assert!(s.first(Seen::TAP_GONE));
        assert_eq!(Seen::default().describe(), "a device check failed");
    }
}
