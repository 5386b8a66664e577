//! Attach and detach namespaces, list attachments, and hand out addresses from this host's IPAM blocks
//! (issue 10 §2, §3). One allocator serves `overlayctl attach` and Docker's IPAM driver: the addresses in use
//! on a network are those of its attachments plus the reservations made without a namespace
//! ([`Ops::allocate_address`]), which are persisted in `<state-dir>/ipam-reservations.json` so a restart does
//! not hand them out twice. The reservations lock serialises every allocation of this host.
//!
//! Static mode: attach needs an explicit address (`--ip`). Cluster mode without one: the next free address
//! of this host's blocks; when there is none, a block is requested from the control plane and its grant
//! awaited (≤ [`BLOCK_WAIT`]), else 503.

use super::{Ops, OpsError};
use crate::attach::{AttachError, AttachSpec, Attachment, DEFAULT_IFNAME};
use crate::host::NetnsRef;
use crate::ipam::{self, IpamError};
use crate::netspec::NetworkSpec;
use control::node::BlockOutcome;
use dataplane::neigh::Binding;
use dataplane::wire::MacAddr;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an allocation waits for a block the control plane was asked for.
pub const BLOCK_WAIT: Duration = Duration::from_secs(5);
/// File of the reservations in the state dir.
pub const RESERVATIONS_FILE: &str = "ipam-reservations.json";

/// Body of `POST /v1/attach`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    pub netns: String,
    pub network: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub ifname: Option<String>,
}

/// Body of `POST /v1/detach`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachRequest {
    pub netns: String,
    pub network: String,
    #[serde(default)]
    pub ifname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Reservation {
    network: String,
    ip: IpAddr,
}

/// Addresses reserved without an attachment, persisted.
#[derive(Debug, Default)]
pub struct Reservations {
    path: Option<PathBuf>,
    list: Vec<Reservation>,
}

impl Reservations {
    /// Load `<dir>/ipam-reservations.json` (missing: none; unreadable or corrupt: none, with an error log
    /// naming the file).
    pub fn open(dir: &Path) -> Reservations {
        let path = dir.join(RESERVATIONS_FILE);
        let list = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice::<Vec<Reservation>>(&b).unwrap_or_else(|e| {
                tracing::error!(path = %path.display(), error = %e,
                    "corrupt IPAM reservations; starting without them (repair or remove the file)");
                Vec::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read IPAM reservations");
                Vec::new()
            }
        };
        Reservations {
            path: Some(path),
            list,
        }
    }

    fn of(&self, network: &str) -> impl Iterator<Item = IpAddr> + '_ {
        let network = network.to_string();
        self.list
            .iter()
            .filter(move |r| r.network == network)
            .map(|r| r.ip)
    }

    fn contains(&self, network: &str, ip: IpAddr) -> bool {
        self.list.iter().any(|r| r.network == network && r.ip == ip)
    }

    fn save(&self) -> Result<(), OpsError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |e: std::io::Error| {
            OpsError::Internal(format!(
                "cannot write {}: {e} (check that --state-dir is writable)",
                path.display()
            ))
        };
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec(&self.list).map_err(|e| OpsError::Internal(e.to_string()))?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&body).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        Ok(())
    }
}

fn attach_err(e: AttachError) -> OpsError {
    let msg = e.to_string();
    match e.http_status() {
        400 => OpsError::BadRequest(msg),
        409 => OpsError::Conflict(msg),
        503 => OpsError::Unavailable(msg),
        _ => OpsError::Internal(msg),
    }
}

fn join_err(e: tokio::task::JoinError) -> OpsError {
    OpsError::Internal(format!("attach worker failed: {e}"))
}

/// An explicit address: `ADDR/PREFIX`, or a bare address (given the subnet's prefix).
fn parse_ip(given: &str, subnet: Option<IpNet>) -> Result<IpNet, OpsError> {
    let bad = || {
        OpsError::BadRequest(format!(
            "invalid --ip {given:?}: give an address with the subnet's prefix, e.g. 10.20.0.5/16"
        ))
    };
    let net = match given.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => {
            let ip: IpAddr = given.parse().map_err(|_| bad())?;
            let len = match (subnet, ip) {
                (Some(s), _) => s.prefix_len(),
                (None, IpAddr::V4(_)) => 32,
                (None, IpAddr::V6(_)) => 128,
            };
            IpNet::new(ip, len).map_err(|_| bad())?
        }
    };
    if let Some(s) = subnet {
        if !s.contains(&net.addr()) {
            return Err(OpsError::BadRequest(format!(
                "--ip {net} is outside the network's subnet {s}: choose an address inside it"
            )));
        }
        if ipam::is_reserved(s, ipam::gateway(s), net.addr()) {
            return Err(OpsError::BadRequest(format!(
                "--ip {net} is the network address, the gateway or the broadcast address of {s}: choose another"
            )));
        }
    }
    Ok(net)
}

/// What one allocation attempt under the lock found.
enum Attempt<T> {
    Done(T),
    /// Every block is full (or there is none): ask for another.
    NeedBlock,
}

impl Ops {
    /// The spec and MTU of a served network, or 404 naming the served ones.
    fn network(&self, name: &str) -> Result<(NetworkSpec, u32), OpsError> {
        self.networks.get(name).ok_or_else(|| {
            let names: Vec<String> = self.networks.specs().into_iter().map(|s| s.name).collect();
            OpsError::NotFound(format!(
                "no network named {name:?}: this overlayd serves {} (see `overlayctl network ls`)",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })
    }

    fn subnet_for_allocation(&self, spec: &NetworkSpec) -> Result<IpNet, OpsError> {
        if !self.cluster_mode {
            return Err(OpsError::BadRequest(format!(
                "this overlayd runs in static mode: give the container's address with --ip CIDR (e.g. --ip {}) ; addresses are only allocated in cluster mode",
                spec.subnet
                    .and_then(|s| ipam::gateway(s).map(|g| format!("{}/{}", g, s.prefix_len())))
                    .unwrap_or_else(|| "10.20.0.5/16".into())
            )));
        }
        spec.subnet.ok_or_else(|| {
            OpsError::BadRequest(format!(
                "network {} has no subnet, so nothing can be allocated: give the address with --ip CIDR",
                spec.name
            ))
        })
    }

    /// Ask the control plane for a block of `network` and wait until this host holds more blocks than
    /// `before` (at most [`BLOCK_WAIT`]).
    async fn grow_blocks(&self, network: &str, before: usize) -> Result<(), OpsError> {
        let control = self.control()?;
        let outcome = control
            .request_block(network)
            .await
            .map_err(|e| OpsError::Unavailable(format!("cannot ask the control plane for a block: {e}")))?;
        if let BlockOutcome::Granted(block) = outcome {
            let mut b = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
            let v = b.entry(network.to_string()).or_default();
            if !v.contains(&block) {
                v.push(block);
            }
        }
        let deadline = Instant::now() + BLOCK_WAIT;
        while self.blocks_of(network).len() <= before {
            if Instant::now() >= deadline {
                return Err(OpsError::Unavailable(format!(
                    "no admitter reachable to grant an address block of network {network} (this host's blocks are full or it has none): retry when an admitter is up, or give the address with --ip"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Run `f` (blocking, under the allocation lock) with the network's blocks; when it needs a block,
    /// get one and retry.
    async fn with_blocks<T, F>(self: &Arc<Self>, network: &str, f: F) -> Result<T, OpsError>
    where
        T: Send + 'static,
        F: Fn(&Ops, Vec<IpNet>) -> Result<Attempt<T>, OpsError> + Send + Sync + Clone + 'static,
    {
        loop {
            let blocks = self.blocks_of(network);
            let n = blocks.len();
            let (me, f2) = (self.clone(), f.clone());
            match tokio::task::spawn_blocking(move || f2(&me, blocks))
                .await
                .map_err(join_err)??
            {
                Attempt::Done(t) => return Ok(t),
                Attempt::NeedBlock => self.grow_blocks(network, n).await?,
            }
        }
    }

    /// `POST /v1/attach`.
    pub async fn attach(self: &Arc<Self>, req: AttachRequest) -> Result<Attachment, OpsError> {
        let netns: NetnsRef = req
            .netns
            .parse()
            .map_err(|e: crate::host::HostError| OpsError::BadRequest(e.to_string()))?;
        let (spec, mtu) = self.network(&req.network)?;
        let mac = match &req.mac {
            None => None,
            Some(m) => {
                let mac: MacAddr = m.parse().map_err(|_| {
                    OpsError::BadRequest(format!(
                        "invalid --mac {m:?}: give six hex octets, e.g. 02:00:00:00:00:01"
                    ))
                })?;
                if !mac.is_learnable() {
                    return Err(OpsError::BadRequest(format!(
                        "--mac {m} is not a unicast address: the first octet must be even"
                    )));
                }
                Some(mac)
            }
        };
        let gateway = if spec.egress {
            spec.subnet.and_then(ipam::gateway)
        } else {
            None
        };
        let aspec = AttachSpec {
            netns,
            network: spec.name.clone(),
            bridge: spec.bridge.clone(),
            mtu,
            ip: None,
            mac,
            ifname: req.ifname.clone().unwrap_or_else(|| DEFAULT_IFNAME.to_string()),
            gateway,
        };
        let a = match &req.ip {
            Some(given) => {
                let ip = parse_ip(given, spec.subnet)?;
                let me = self.clone();
                let mut aspec = aspec;
                aspec.ip = Some(ip);
                tokio::task::spawn_blocking(move || {
                    let r = me.reservations.lock().unwrap_or_else(|p| p.into_inner());
                    if r.contains(&aspec.network, ip.addr()) {
                        return Err(OpsError::Conflict(format!(
                            "address {} of network {} is reserved by Docker's IPAM driver on this host: choose another --ip",
                            ip.addr(),
                            aspec.network
                        )));
                    }
                    me.attachments.attach(aspec).map_err(attach_err)
                })
                .await
                .map_err(join_err)??
            }
            None => {
                let subnet = self.subnet_for_allocation(&spec)?;
                self.with_blocks(&spec.name, move |ops, blocks| {
                    let r = ops.reservations.lock().unwrap_or_else(|p| p.into_inner());
                    let mut used = ops.attachments.used_addresses(&aspec.network);
                    used.extend(r.of(&aspec.network));
                    let ip = match ipam::next_free(subnet, &blocks, ipam::gateway(subnet), &used) {
                        Ok(ip) => ip,
                        Err(IpamError::BlockFull { .. }) => return Ok(Attempt::NeedBlock),
                        Err(e) => return Err(OpsError::Internal(e.to_string())),
                    };
                    let mut s = aspec.clone();
                    s.ip = Some(ip);
                    ops.attachments.attach(s).map(Attempt::Done).map_err(attach_err)
                })
                .await?
            }
        };
        if let (Some(net), Some(ip)) = (self.networks.table().by_name(&a.network), a.ip) {
            net.neigh.learn(
                Binding {
                    ip: ip.addr(),
                    mac: a.mac,
                },
                Instant::now(),
            );
        }
        tracing::info!(network = %a.network, netns = %a.netns, ifname = %a.ifname, ip = ?a.ip, mac = %a.mac, "attached");
        Ok(a)
    }

    /// `POST /v1/detach`: `Ok(false)` when nothing was attached or the namespace is gone.
    pub async fn detach(self: &Arc<Self>, req: DetachRequest) -> Result<bool, OpsError> {
        let netns: NetnsRef = req
            .netns
            .parse()
            .map_err(|e: crate::host::HostError| OpsError::BadRequest(e.to_string()))?;
        let ifname = req.ifname.unwrap_or_else(|| DEFAULT_IFNAME.to_string());
        let record = self
            .attachments
            .list()
            .into_iter()
            .find(|a| a.netns == netns && a.network == req.network && a.ifname == ifname);
        let me = self.clone();
        let network = req.network.clone();
        let detached = tokio::task::spawn_blocking(move || {
            me.attachments
                .detach(&netns, &network, &ifname)
                .map_err(attach_err)
        })
        .await
        .map_err(join_err)??;
        if let Some(a) = record {
            if let (Some(net), Some(ip)) = (self.networks.table().by_name(&a.network), a.ip) {
                if net.neigh.lookup(&ip.addr()).map(|(m, _)| m) == Some(a.mac) {
                    net.neigh.remove(&ip.addr());
                }
            }
            tracing::info!(network = %a.network, netns = %a.netns, ifname = %a.ifname, "detached");
        }
        Ok(detached)
    }

    /// Blocking. Bring the attachments in line with the networks served now: each attachment of a served
    /// network is plugged into its bridge (a network that came back, e.g. from the control plane after a
    /// restart, has a new bridge) and its IP→MAC binding is known as local (advertised, ARP-suppressed).
    /// Called at start and whenever the set of networks changes. Returns how many were re-plugged.
    pub fn resync_attachments(&self) -> usize {
        let mut replugged = 0;
        for a in self.attachments.list() {
            let Some(net) = self.networks.table().by_name(&a.network) else {
                continue;
            };
            if let Some(ip) = a.ip {
                if net.neigh.lookup(&ip.addr()).map(|(m, _)| m) != Some(a.mac) {
                    net.neigh.learn(
                        Binding {
                            ip: ip.addr(),
                            mac: a.mac,
                        },
                        Instant::now(),
                    );
                }
            }
            match crate::host::veth::master_of(&a.host_ifname) {
                Ok(Some(m)) if m == a.bridge => {}
                Ok(_) => match crate::host::veth::plug(&a.host_ifname, &a.bridge) {
                    Ok(()) => replugged += 1,
                    Err(e) => tracing::warn!(host_ifname = %a.host_ifname, bridge = %a.bridge, error = %e,
                        "cannot plug an attachment into its bridge"),
                },
                Err(e) => {
                    tracing::warn!(host_ifname = %a.host_ifname, error = %e, "cannot read an attachment's veth")
                }
            }
        }
        replugged
    }

    /// `GET /v1/attachments`.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.attachments.list()
    }

    /// Reserve an address of `network` without a namespace (Docker's IPAM driver): `want` if given (inside
    /// the subnet, not reserved, not in use), else the next free one of this host's blocks (cluster mode).
    pub async fn allocate_address(
        self: &Arc<Self>,
        network: &str,
        want: Option<IpAddr>,
    ) -> Result<IpNet, OpsError> {
        let (spec, _) = self.network(network)?;
        let name = spec.name.clone();
        if let Some(w) = want {
            let ip = parse_ip(&w.to_string(), spec.subnet)?;
            let me = self.clone();
            return tokio::task::spawn_blocking(move || {
                let mut r = me.reservations.lock().unwrap_or_else(|p| p.into_inner());
                if r.contains(&name, w) || me.attachments.used_addresses(&name).contains(&w) {
                    return Err(OpsError::Conflict(format!(
                        "address {w} of network {name} is already in use on this host: choose another"
                    )));
                }
                r.list.push(Reservation { network: name, ip: w });
                if let Err(e) = r.save() {
                    r.list.pop();
                    return Err(e);
                }
                Ok(ip)
            })
            .await
            .map_err(join_err)?;
        }
        let subnet = self.subnet_for_allocation(&spec)?;
        self.with_blocks(network, move |ops, blocks| {
            let mut r = ops.reservations.lock().unwrap_or_else(|p| p.into_inner());
            let mut used: HashSet<IpAddr> = ops.attachments.used_addresses(&name);
            used.extend(r.of(&name));
            let ip = match ipam::next_free(subnet, &blocks, ipam::gateway(subnet), &used) {
                Ok(ip) => ip,
                Err(IpamError::BlockFull { .. }) => return Ok(Attempt::NeedBlock),
                Err(e) => return Err(OpsError::Internal(e.to_string())),
            };
            r.list.push(Reservation {
                network: name.clone(),
                ip: ip.addr(),
            });
            if let Err(e) = r.save() {
                r.list.pop();
                return Err(e);
            }
            Ok(Attempt::Done(ip))
        })
        .await
    }

    /// Give back a reserved address (unknown addresses: `Ok`).
    pub async fn release_address(self: &Arc<Self>, network: &str, ip: IpAddr) -> Result<(), OpsError> {
        let me = self.clone();
        let network = network.to_string();
        tokio::task::spawn_blocking(move || {
            let mut r = me.reservations.lock().unwrap_or_else(|p| p.into_inner());
            let before = r.list.clone();
            r.list.retain(|x| !(x.network == network && x.ip == ip));
            if r.list.len() == before.len() {
                return Ok(());
            }
            if let Err(e) = r.save() {
                r.list = before;
                return Err(e);
            }
            Ok(())
        })
        .await
        .map_err(join_err)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_addresses_are_checked_against_the_subnet() {
        let s: IpNet = "10.40.0.0/16".parse().unwrap();
        assert_eq!(
            parse_ip("10.40.0.10/16", Some(s)).unwrap().to_string(),
            "10.40.0.10/16"
        );
        assert_eq!(
            parse_ip("10.40.0.10", Some(s)).unwrap().to_string(),
            "10.40.0.10/16"
        );
        assert!(matches!(
            parse_ip("10.41.0.10/16", Some(s)),
            Err(OpsError::BadRequest(_))
        ));
        assert!(matches!(
            parse_ip("10.40.0.1/16", Some(s)),
            Err(OpsError::BadRequest(_))
        ));
        assert!(matches!(
            parse_ip("10.40.0.0/16", Some(s)),
            Err(OpsError::BadRequest(_))
        ));
        assert!(matches!(
            parse_ip("10.40.255.255/16", Some(s)),
            Err(OpsError::BadRequest(_))
        ));
        assert!(matches!(
            parse_ip("nonsense", Some(s)),
            Err(OpsError::BadRequest(_))
        ));
        assert_eq!(parse_ip("fd00::5", None).unwrap().to_string(), "fd00::5/128");
    }

    /// What `POST /v1/attach` answers is what `overlayd-cni` parses (CONTRACT "Admin API").
    #[test]
    fn the_attach_answer_is_what_the_cni_plugin_reads() {
        let a = crate::attach::tests::sample();
        let body = serde_json::to_string(&a).unwrap();
        let c = crate::cni::parse_attachment(&body).unwrap();
        assert_eq!(c.network, "blue");
        assert_eq!(c.netns, "c1");
        assert_eq!(c.ip, "10.20.0.2/16");
        assert_eq!(c.mac, "02:00:00:00:00:01");
        assert_eq!(c.gateway.as_deref(), Some("10.20.0.1"));
        assert_eq!(c.mtu, Some(1450));
        assert_eq!(c.host_ifname, a.host_ifname);
        let list: Vec<crate::cni::Attachment> = serde_json::from_str(&format!("[{body}]")).unwrap();
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn reservations_persist() {
        let dir = std::env::temp_dir().join(format!("ovl-resv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Reservations::open(&dir);
        assert!(r.list.is_empty());
        r.list.push(Reservation {
            network: "app".into(),
            ip: "10.40.0.2".parse().unwrap(),
        });
        r.save().unwrap();
        let r2 = Reservations::open(&dir);
        assert!(r2.contains("app", "10.40.0.2".parse().unwrap()));
        assert!(!r2.contains("other", "10.40.0.2".parse().unwrap()));
        std::fs::write(dir.join(RESERVATIONS_FILE), b"{corrupt").unwrap();
        assert!(Reservations::open(&dir).list.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
