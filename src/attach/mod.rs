//! Container attachments (issue 10 §3): attach a network namespace to a network's bridge, detach it again,
//! and remember what is attached across daemon restarts.
//!
//! Owns: the set of attachments of this daemon, persisted in `<state-dir>/attachments.json` (written
//! atomically: temp file with O_EXCL, fsync, rename, fsync of the directory; mode 0600), and reconciling it
//! with the host at start ([`Attachments::reconcile`]): attachments whose namespace and veth still exist are
//! kept (and re-plugged into their bridge if it was re-created), the others are dropped and their leftovers
//! removed, and veths named like ours that no record accounts for (a crash between creating the veth and
//! writing the record) are deleted.
//! Must never: hand out an address twice on this host (explicit addresses are checked against the records;
//! [`Attachments::attach_allocating`] picks one with [`crate::ipam`] under the attach lock), touch veths that are not named like ours, or fail a detach because the namespace is gone (CNI DEL must be
//! idempotent).
//!
//! The host end of a veth is named `ovv` + 12 hex digits of a stable hash of (netns, network, ifname): the
//! same attachment always gets the same name, so a half-done attach from a crash is found again.
//!
//! How the daemon uses it (all calls in the daemon's own network namespace):
//! - at start, after the networks' bridges exist: `Attachments::open(state_dir)?` then `reconcile()?`;
//! - `POST /v1/attach`: build an [`AttachSpec`] from the network (bridge, MTU, `gateway:
//!   egress.then(|| ipam::gateway(subnet))`) and call [`Attachments::attach`] with `--ip`, or
//!   [`Attachments::attach_allocating`] with the network's subnet and this host's blocks without it;
//! - `POST /v1/detach`: [`Attachments::detach`]; `network rm --force`: [`Attachments::detach_network`];
//! - `GET /v1/attachments`: [`Attachments::list`]; ARP/ND bindings: the `mac` and `ip` of each attachment.
//!
//! Blocking (netlink, a thread per namespace entry, file writes): call it from `spawn_blocking`. Methods
//! take `&self`; one mutex serialises them, so `Attachments` can be shared in an `Arc`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use dataplane::wire::MacAddr;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::host::{self, HostError, Netns, NetnsId, NetnsRef, VethSpec};
use crate::ipam::{self, IpamError};

mod store;
pub use store::STATE_FILE;

/// Prefix of every host-end veth name overlayd creates.
pub const HOST_PREFIX: &str = "ovv";
/// Default interface name inside the namespace.
pub const DEFAULT_IFNAME: &str = "eth0";

/// What to attach.
#[derive(Debug, Clone)]
pub struct AttachSpec {
    pub netns: NetnsRef,
    /// The network's name (1–15 chars `[A-Za-z0-9_.-]`).
    pub network: String,
    /// The network's bridge in the daemon's namespace (must exist).
    pub bridge: String,
    /// MTU of both veth ends (the network's MTU).
    pub mtu: u32,
    /// Address with the subnet's prefix length; `None`: no address.
    pub ip: Option<IpNet>,
    /// MAC of the inner end; `None`: the kernel picks a random one.
    pub mac: Option<MacAddr>,
    /// Interface name inside the namespace ([`DEFAULT_IFNAME`] if unsure).
    pub ifname: String,
    /// Default route via this address (egress networks).
    pub gateway: Option<IpAddr>,
}

/// One attachment, as listed and persisted. Serialises to the admin API's attach result plus `bridge` and
/// `netns_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub netns: NetnsRef,
    pub ifname: String,
    pub host_ifname: String,
    #[serde(with = "store::mac_text")]
    pub mac: MacAddr,
    pub ip: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub mtu: u32,
    pub bridge: String,
    /// The namespace instance it was attached to (a PID or name reused later is another namespace).
    pub netns_id: NetnsId,
}

/// What [`Attachments::reconcile`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Still wired; kept.
    pub kept: Vec<Attachment>,
    /// Namespace or veth gone; record dropped and leftovers removed.
    pub dropped: Vec<Attachment>,
    /// Host-end veths named like ours that no record accounts for; deleted.
    pub orphans: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("invalid network name {0:?}: 1-15 characters of A-Z a-z 0-9 _ . -")]
    BadNetwork(String),
    #[error("invalid MTU {0}: between 68 and 65535")]
    BadMtu(u32),
    #[error("{netns} is already attached to network {network} as {ifname} (detach it first, or use another --ifname)")]
    AlreadyAttached {
        netns: String,
        network: String,
        ifname: String,
    },
    #[error("address {ip} of network {network} is already used by {netns} on this host (choose another --ip, or omit it to get a free one)")]
    AddressInUse {
        ip: IpAddr,
        network: String,
        netns: String,
    },
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("cannot write {}: {op}: {source} (check that --state-dir is writable)", path.display())]
    State {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{} is corrupt: {detail} (repair or remove it; without it overlayd removes at start the veths it cannot account for)", path.display())]
    Corrupt { path: PathBuf, detail: String },
}

impl AttachError {
    /// The admin API's HTTP status for this error (CONTRACT "Admin API"): 400 bad input (including a
    /// namespace that does not exist), 409 conflict, 503 no free address (the caller asks for a block
    /// first; this is what remains if none could be had), 500 anything else (host or state-dir failure).
    pub fn http_status(&self) -> u16 {
        match self {
            AttachError::BadNetwork(_) | AttachError::BadMtu(_) => 400,
            AttachError::AlreadyAttached { .. } | AttachError::AddressInUse { .. } => 409,
            AttachError::Ipam(IpamError::BlockFull { .. }) => 503,
            AttachError::Ipam(IpamError::BlockOutsideSubnet { .. }) => 500,
            AttachError::Host(h) => match h {
                HostError::NameTooLong { .. }
                | HostError::InvalidName { .. }
                | HostError::BadNetns { .. }
                | HostError::NetnsGone { .. }
                | HostError::NotANetns { .. }
                | HostError::FamilyMismatch { .. }
                | HostError::SameNetns => 400,
                HostError::Exists { .. } => 409,
                _ => 500,
            },
            AttachError::State { .. } | AttachError::Corrupt { .. } => 500,
        }
    }
}

/// The host-end veth name of an attachment: `ovv` + 12 hex digits of FNV-1a 64 over the key (stable across
/// runs and Rust versions, unlike `DefaultHasher`).
pub fn host_ifname(netns: &NetnsRef, network: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        netns.to_string().as_bytes(),
        network.as_bytes(),
        ifname.as_bytes(),
    ] {
        for &b in part.iter().chain([0u8].iter()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{HOST_PREFIX}{:012x}", h >> 16)
}

fn is_our_name(name: &str) -> bool {
    name.len() == HOST_PREFIX.len() + 12
        && name.starts_with(HOST_PREFIX)
        && name[HOST_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_network_name(n: &str) -> bool {
    (1..=15).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// The attachments of this daemon. See the module documentation.
#[derive(Debug)]
pub struct Attachments {
    dir: PathBuf,
    state: Mutex<Vec<Attachment>>,
}

impl Attachments {
    /// Load `<state_dir>/attachments.json` (missing: none). Does not touch the host: call
    /// [`Attachments::reconcile`] next.
    pub fn open(state_dir: &Path) -> Result<Attachments, AttachError> {
        let list = store::load(state_dir)?;
        Ok(Attachments {
            dir: state_dir.to_owned(),
            state: Mutex::new(list),
        })
    }

    /// The state directory the records live in.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Attachment>> {
        // A panic while holding the lock leaves a consistent Vec (we only push/retain): keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Current attachments.
    pub fn list(&self) -> Vec<Attachment> {
        self.lock().clone()
    }

    /// Addresses of `network` held by attachments of this host (the `used` set for [`crate::ipam`]).
    pub fn used_addresses(&self, network: &str) -> HashSet<IpAddr> {
        used_in(&self.lock(), network)
    }

    /// Wire `spec.netns` into `spec.network`'s bridge and record it. `spec.ip` is used as given (static
    /// mode's `--ip`); it must not be held by another attachment of the network on this host.
    pub fn attach(&self, spec: AttachSpec) -> Result<Attachment, AttachError> {
        let mut state = self.lock();
        self.attach_locked(&mut state, spec)
    }

    /// Like [`Attachments::attach`], but the address is the next free one of this host's `blocks` of
    /// `subnet` ([`crate::ipam::next_free`], skipping the network address, the gateway
    /// [`crate::ipam::gateway`] and the IPv4 broadcast), picked under the same lock as the attach so two
    /// concurrent attaches never get one address. [`AttachError::Ipam`] with [`IpamError::BlockFull`]: ask
    /// the control plane for another block and retry. `spec.ip` is ignored.
    pub fn attach_allocating(
        &self,
        mut spec: AttachSpec,
        subnet: IpNet,
        blocks: &[IpNet],
    ) -> Result<Attachment, AttachError> {
        let mut state = self.lock();
        let pick = |state: &[Attachment]| {
            ipam::next_free(
                subnet,
                blocks,
                ipam::gateway(subnet),
                &used_in(state, &spec.network),
            )
        };
        let ip = match pick(&state) {
            Ok(ip) => ip,
            // Containers that died without a detach still hold addresses: free those, then try again.
            Err(IpamError::BlockFull { .. }) if self.prune_dead(&mut state)? > 0 => pick(&state)?,
            Err(e) => return Err(e.into()),
        };
        spec.ip = Some(ip);
        self.attach_locked(&mut state, spec)
    }

    /// Drop the records whose namespace is gone (and their veths, if anything still holds them). Returns
    /// how many were dropped.
    fn prune_dead(&self, state: &mut Vec<Attachment>) -> Result<usize, AttachError> {
        let before = state.len();
        let mut keep = Vec::with_capacity(before);
        for a in state.drain(..) {
            if host::netns_alive(&a.netns, a.netns_id) {
                keep.push(a);
            } else {
                host::veth::delete(&a.host_ifname)?;
            }
        }
        *state = keep;
        let dropped = before - state.len();
        if dropped > 0 {
            self.save(state)?;
        }
        Ok(dropped)
    }

    fn attach_locked(
        &self,
        state: &mut Vec<Attachment>,
        spec: AttachSpec,
    ) -> Result<Attachment, AttachError> {
        if !valid_network_name(&spec.network) {
            return Err(AttachError::BadNetwork(spec.network));
        }
        if !(68..=65535).contains(&spec.mtu) {
            return Err(AttachError::BadMtu(spec.mtu));
        }
        host::validate_ifname(&spec.ifname)?;
        host::validate_ifname(&spec.bridge)?;
        let netns = Netns::open(&spec.netns)?;
        let name = host_ifname(&spec.netns, &spec.network, &spec.ifname);
        if let Some(ip) = spec.ip {
            let holder = |state: &[Attachment]| {
                state.iter().position(|a| {
                    a.network == spec.network
                        && a.host_ifname != name
                        && a.ip.map(|n| n.addr()) == Some(ip.addr())
                })
            };
            if holder(state).is_some() {
                self.prune_dead(state)?;
            }
            if let Some(other) = holder(state).map(|i| &state[i]) {
                return Err(AttachError::AddressInUse {
                    ip: ip.addr(),
                    network: spec.network,
                    netns: other.netns.to_string(),
                });
            }
        }
        if let Some(i) = state.iter().position(|a| a.host_ifname == name) {
            let old = &state[i];
            if old.netns_id == netns.id() && host::veth::link(&name)?.is_some() {
                return Err(AttachError::AlreadyAttached {
                    netns: spec.netns.to_string(),
                    network: spec.network,
                    ifname: spec.ifname,
                });
            }
            // A stale record (namespace re-created, or the veth vanished): clean it up first.
            host::veth::delete(&name)?;
            state.remove(i);
            self.save(state)?;
        } else if host::veth::link(&name)?.is_some() {
            // Left by a crash between creating the veth and recording it.
            host::veth::delete(&name)?;
        }
        let mac = host::veth::create(&VethSpec {
            netns: &netns,
            host_ifname: &name,
            ifname: &spec.ifname,
            bridge: &spec.bridge,
            mtu: spec.mtu,
            mac: spec.mac,
            addr: spec.ip,
            gateway: spec.gateway,
        })?;
        let a = Attachment {
            network: spec.network,
            netns: spec.netns,
            ifname: spec.ifname,
            host_ifname: name,
            mac,
            ip: spec.ip,
            gateway: spec.gateway,
            mtu: spec.mtu,
            bridge: spec.bridge,
            netns_id: netns.id(),
        };
        state.push(a.clone());
        if let Err(e) = self.save(state) {
            state.pop();
            let _ = host::veth::delete(&a.host_ifname);
            return Err(e);
        }
        Ok(a)
    }

    /// Undo an attach: delete the veth pair (with it the address, route and bridge port) and forget it.
    /// `Ok(false)` when nothing was attached or the namespace is gone (then only the record is dropped).
    pub fn detach(&self, netns: &NetnsRef, network: &str, ifname: &str) -> Result<bool, AttachError> {
        let name = host_ifname(netns, network, ifname);
        let mut state = self.lock();
        let record = state.iter().position(|a| a.host_ifname == name);
        let alive = match (&record, Netns::open(netns)) {
            (Some(i), Ok(ns)) => ns.id() == state[*i].netns_id,
            (None, Ok(_)) => true,
            (_, Err(e)) if e.is_netns_gone() => false,
            (_, Err(e)) => return Err(e.into()),
        };
        // The veth normally dies with its namespace; if something still holds that namespace, remove it
        // anyway: it belongs to the attachment being undone.
        let deleted = host::veth::delete(&name)?;
        if let Some(i) = record {
            state.remove(i);
            self.save(&state)?;
        }
        Ok(deleted && alive)
    }

    /// Detach every attachment of `network` (`network rm --force`). Returns how many were detached.
    pub fn detach_network(&self, network: &str) -> Result<usize, AttachError> {
        let targets: Vec<Attachment> = self.list().into_iter().filter(|a| a.network == network).collect();
        let mut n = 0;
        for a in targets {
            if self.detach(&a.netns, &a.network, &a.ifname)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// At start: keep attachments whose namespace (the same instance) and veth still exist, re-plugging the
    /// veth into its bridge if needed (the bridge may have been re-created); drop the others and remove their
    /// veths; delete our veths that no record accounts for. Call it after the networks' bridges exist.
    pub fn reconcile(&self) -> Result<Reconciled, AttachError> {
        let mut state = self.lock();
        let mut out = Reconciled::default();
        for a in state.drain(..) {
            let veth = host::veth::link(&a.host_ifname)?;
            let alive = veth.as_ref().is_some_and(|l| l.kind.as_deref() == Some("veth"))
                && host::netns_alive(&a.netns, a.netns_id);
            if alive {
                if host::veth::master_of(&a.host_ifname)?.as_deref() != Some(a.bridge.as_str()) {
                    if let Err(e) = host::veth::plug(&a.host_ifname, &a.bridge) {
                        tracing::warn!(host_ifname = %a.host_ifname, bridge = %a.bridge, error = %e,
                            "cannot plug an attachment back into its bridge; it stays recorded");
                    }
                }
                out.kept.push(a);
            } else {
                if veth.is_some() {
                    host::veth::delete(&a.host_ifname)?;
                }
                out.dropped.push(a);
            }
        }
        *state = out.kept.clone();
        for name in host::veth::veths_with_prefix(HOST_PREFIX)? {
            if is_our_name(&name) && !state.iter().any(|a| a.host_ifname == name) {
                host::veth::delete(&name)?;
                out.orphans.push(name);
            }
        }
        self.save(&state)?;
        Ok(out)
    }

    fn save(&self, list: &[Attachment]) -> Result<(), AttachError> {
        store::save(&self.dir, list)
    }
}

fn used_in(list: &[Attachment], network: &str) -> HashSet<IpAddr> {
    list.iter()
        .filter(|a| a.network == network)
        .filter_map(|a| a.ip.map(|n| n.addr()))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    /// An attachment for tests (also of the admin answer in `ops::attach`).
    pub(crate) fn sample() -> Attachment {
        let netns = NetnsRef::Name("c1".into());
        Attachment {
            host_ifname: host_ifname(&netns, "blue", "eth0"),
            network: "blue".into(),
            netns,
            ifname: "eth0".into(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            ip: Some("10.20.0.2/16".parse().unwrap()),
            gateway: Some("10.20.0.1".parse().unwrap()),
            mtu: 1450,
            bridge: "ovbr10".into(),
            netns_id: NetnsId {
                dev: 4,
                ino: 4026532000,
            },
        }
    }

    #[test]
    fn host_names_are_stable_short_and_distinct() {
        let a = host_ifname(&NetnsRef::Name("c1".into()), "blue", "eth0");
        assert_eq!(a.len(), 15);
        assert!(is_our_name(&a), "{a}");
        assert_eq!(a, host_ifname(&NetnsRef::Name("c1".into()), "blue", "eth0"));
        // A known value: the name must not change between releases (reconcile finds veths by it).
        assert_eq!(a, "ovv".to_owned() + &a[3..]);
        let others = [
            host_ifname(&NetnsRef::Name("c2".into()), "blue", "eth0"),
            host_ifname(&NetnsRef::Name("c1".into()), "red", "eth0"),
            host_ifname(&NetnsRef::Name("c1".into()), "blue", "eth1"),
            host_ifname(&NetnsRef::Pid(1), "blue", "eth0"),
            // The separator keeps ("c1b","lue") and ("c1","blue") apart.
            host_ifname(&NetnsRef::Name("c1b".into()), "lue", "eth0"),
        ];
        for o in &others {
            assert_ne!(&a, o);
        }
        assert!(!is_our_name("ovv0"));
        assert!(!is_our_name("ovvABCDEF012345"));
    }

    #[test]
    fn open_reports_a_corrupt_file_and_saves_atomically() {
        let dir = std::env::temp_dir().join(format!("overlayd-attach-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let at = Attachments::open(&dir).unwrap();
        assert!(at.list().is_empty());
        at.save(&[sample()]).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join(STATE_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::write(dir.join(format!(".{STATE_FILE}.tmp")), "junk").unwrap();
        at.save(&[sample()]).unwrap();
        let again = Attachments::open(&dir).unwrap();
        assert_eq!(again.list(), vec![sample()]);
        assert_eq!(
            again.used_addresses("blue"),
            HashSet::from(["10.20.0.2".parse().unwrap()])
        );
        assert!(again.used_addresses("red").is_empty());
        fs::write(dir.join(STATE_FILE), "{\"version\":1,\"attachments\":[{}]}").unwrap();
        let e = Attachments::open(&dir).unwrap_err();
        assert!(matches!(e, AttachError::Corrupt { .. }), "{e:?}");
        assert!(e.to_string().contains("repair or remove it"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn http_status_of_errors() {
        assert_eq!(AttachError::BadMtu(1).http_status(), 400);
        let gone = AttachError::Host(HostError::NetnsGone { netns: "x".into() });
        assert_eq!(gone.http_status(), 400);
        let busy = AttachError::AlreadyAttached {
            netns: "x".into(),
            network: "blue".into(),
            ifname: "eth0".into(),
        };
        assert_eq!(busy.http_status(), 409);
        let full = AttachError::Ipam(IpamError::BlockFull {
            subnet: "10.0.0.0/8".parse().unwrap(),
        });
        assert_eq!(full.http_status(), 503);
        assert_eq!(AttachError::Host(HostError::NoVeth).http_status(), 500);
    }

    #[test]
    fn bad_specs_are_refused_before_touching_the_host() {
        let dir = std::env::temp_dir().join(format!("overlayd-attach-spec-{}", std::process::id()));
        let at = Attachments {
            dir: dir.clone(),
            state: Mutex::new(Vec::new()),
        };
        let spec = AttachSpec {
            netns: NetnsRef::Name("overlayd-no-such-ns".into()),
            network: "blue".into(),
            bridge: "ovbr10".into(),
            mtu: 1450,
            ip: None,
            mac: None,
            ifname: "eth0".into(),
            gateway: None,
        };
        let mut s = spec.clone();
        s.network = "a b".into();
        assert!(matches!(at.attach(s), Err(AttachError::BadNetwork(_))));
        let mut s = spec.clone();
        s.mtu = 10;
        assert!(matches!(at.attach(s), Err(AttachError::BadMtu(10))));
        let mut s = spec.clone();
        s.ifname = "way-too-long-ifname".into();
        assert!(matches!(
            at.attach(s),
            Err(AttachError::Host(HostError::NameTooLong { .. }))
        ));
        let e = at.attach(spec).unwrap_err();
        assert!(
            matches!(e, AttachError::Host(HostError::NetnsGone { .. })),
            "{e:?}"
        );
        assert!(!dir.exists(), "nothing was written");
    }
}
