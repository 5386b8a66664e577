//! Control plane → data plane in one hop: every [`Output`] the gossip endpoint hands us is applied here to
//! the network of its VNI (FDB entries and ARP/ND bindings, flood sets of cluster-defined networks), to the set of networks (create or
//! remove their bridge and TAP) and to this host's IPAM blocks ([`Ops::blocks`]).
//!
//! Must never: block the async runtime (netlink runs in `spawn_blocking`), apply an entry to a network of
//! another VNI, or remove a network declared on this host by `--network` / the legacy flags (only networks
//! this glue created from a cluster definition are torn down by `NetworkRemoved`).

use super::Members;
use crate::netspec::NetworkOpt;
use crate::ops::Ops;
use control::transport::GossipClient;
use control::{MemberState, NetworkDef, Output, Vni};
use dataplane::engine::PeerSet;
use dataplane::neigh::Binding;
use dataplane::network::NetworkTable;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tracing::{info, warn};

/// What the glue writes to.
#[derive(Debug)]
pub struct Glue {
    /// Our VTEP: our own adverts coming back are not installed as remote.
    pub local: IpAddr,
    pub table: Arc<NetworkTable>,
    /// Alive/suspect members: the membership check of every datagram (one set for all networks).
    pub members_set: Arc<PeerSet>,
    pub members: Members,
    pub membership_changes: Arc<AtomicU64>,
    /// Networks, attachments, blocks. `None` only in unit tests of the FDB/flood part.
    pub ops: Option<Arc<Ops>>,
    /// The last flood set per VNI, replayed into a network that appears after it.
    flood: HashMap<Vni, Vec<IpAddr>>,
    /// Networks created here from a cluster definition (removed again by `NetworkRemoved`).
    managed: BTreeSet<String>,
}

impl Glue {
    pub fn new(
        local: IpAddr,
        table: Arc<NetworkTable>,
        members_set: Arc<PeerSet>,
        members: Members,
        membership_changes: Arc<AtomicU64>,
        ops: Option<Arc<Ops>>,
    ) -> Glue {
        Glue {
            local,
            table,
            members_set,
            members,
            membership_changes,
            ops,
            flood: HashMap::new(),
            managed: BTreeSet::new(),
        }
    }

    /// Apply one output. Network creation and removal wait for netlink (off the runtime's threads).
    pub async fn apply(&mut self, client: Option<&GossipClient>, ev: Output) {
        match ev {
            Output::NetworkUpsert(def) => self.upsert(client, def).await,
            Output::NetworkRemoved { name, vni } => self.removed(&name, vni).await,
            ev => self.apply_state(ev),
        }
    }

    /// The outputs that only touch shared memory (FDB, bindings, flood sets, members, blocks).
    pub fn apply_state(&mut self, ev: Output) {
        let now = Instant::now();
        match ev {
            Output::FdbInstall { vni, mac, vtep, ips } => {
                let Some(net) = self.table.by_vni(vni) else {
                    return; // replayed from `installed(vni)` when the network appears
                };
                if vtep == self.local {
                    // Our own advertisement coming back: the local entry is authoritative here.
                    net.fdb.remove_control(&mac);
                    return;
                }
                net.fdb.install_control(mac, vtep, now);
                // The advert's list replaces any earlier one.
                net.neigh.remove_control_mac(&mac);
                for ip in ips {
                    net.neigh.install(Binding { ip, mac }, now);
                }
            }
            Output::FdbRemove { vni, mac } => {
                if let Some(net) = self.table.by_vni(vni) {
                    net.fdb.remove_control(&mac);
                    net.neigh.remove_control_mac(&mac);
                }
            }
            Output::FloodSet { vni, vteps } => {
                // Networks declared on this host flood to every member (the shared member set); only
                // cluster-defined networks have a flood set of their own.
                if let Some(net) = self
                    .table
                    .by_vni(vni)
                    .filter(|n| !Arc::ptr_eq(&n.peers, &self.members_set))
                {
                    net.peers.set(vteps.iter().copied().filter(|v| *v != self.local));
                }
                if vteps.is_empty() {
                    self.flood.remove(&vni);
                } else {
                    self.flood.insert(vni, vteps);
                }
            }
            Output::MembersChanged(rows) => {
                let vteps = rows
                    .iter()
                    .filter(|m| {
                        matches!(m.state, MemberState::Alive | MemberState::Suspect) && m.vtep != self.local
                    })
                    .map(|m| m.vtep);
                self.members_set.set(vteps);
                if let Ok(mut m) = self.members.write() {
                    let n = crate::observe::membership_changes(m.as_deref(), &rows);
                    self.membership_changes.fetch_add(n, Ordering::Relaxed);
                    *m = Some(rows);
                }
            }
            Output::BlockGranted { network, block } => {
                if let Some(ops) = &self.ops {
                    let mut b = ops.blocks.lock().unwrap_or_else(|p| p.into_inner());
                    let v = b.entry(network.clone()).or_default();
                    if !v.contains(&block) {
                        v.push(block);
                        v.sort();
                    }
                    info!(%network, %block, "address block granted to this host");
                }
            }
            Output::BlockReleased { network, block } => {
                if let Some(ops) = &self.ops {
                    let mut b = ops.blocks.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(v) = b.get_mut(&network) {
                        v.retain(|x| *x != block);
                        if v.is_empty() {
                            b.remove(&network);
                        }
                    }
                    info!(%network, %block, "address block released by this host");
                }
            }
            // Enforced by the transport already.
            Output::Revoked { node } => info!(%node, "member revoked"),
            // Handled by `apply` (async) or by the transport (Send, ScheduleTimer).
            Output::NetworkUpsert(_)
            | Output::NetworkRemoved { .. }
            | Output::Send { .. }
            | Output::ScheduleTimer { .. } => {}
        }
    }

    /// A cluster definition: serve it (bridge `ovbr<VNI>`, TAP `ovl<VNI>`) unless already served as is, then
    /// replay the control entries and the flood set that arrived before the network existed here.
    async fn upsert(&mut self, client: Option<&GossipClient>, def: NetworkDef) {
        let Some(ops) = self.ops.clone() else { return };
        let Ok(vni) = Vni::new(def.vni) else { return };
        let spec = match spec_of(&def) {
            Ok(s) => s,
            Err(e) => {
                warn!(network = %def.name, "cannot serve the cluster's network: {e}");
                return;
            }
        };
        let networks = ops.networks.clone();
        match networks.spec(&def.name) {
            Some(cur) if cur == spec => {}
            Some(_) if self.managed.contains(&def.name) => {
                // Redefined (removed and created again with other parameters): rebuild it.
                info!(network = %def.name, "network redefined by the cluster; rebuilding it");
                let n = networks.clone();
                let name = def.name.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || n.remove(&name)).await {
                    warn!(network = %def.name, "cannot remove the old definition: {e}");
                }
                self.managed.remove(&def.name);
                if !self.add(&ops, spec).await {
                    return;
                }
            }
            Some(_) => {
                warn!(network = %def.name, "network {} is declared on this host (--network or the legacy flags) with other parameters than the cluster's definition ({}); keeping the local one", def.name, vni.get());
                return;
            }
            None => {
                if !self.add(&ops, spec).await {
                    return;
                }
            }
        }
        // Entries and the flood set that arrived before the network existed here.
        if let Some(c) = client {
            if let Ok(rows) = c.installed(vni).await {
                for (mac, vtep, ips) in rows {
                    self.apply_state(Output::FdbInstall { vni, mac, vtep, ips });
                }
            }
        }
        if let (Some(vteps), Some(net)) = (self.flood.get(&vni), self.table.by_vni(vni)) {
            if !Arc::ptr_eq(&net.peers, &self.members_set) {
                net.peers.set(vteps.iter().copied().filter(|v| *v != self.local));
            }
        }
    }

    async fn add(&mut self, ops: &Arc<Ops>, spec: crate::netspec::NetworkSpec) -> bool {
        let name = spec.name.clone();
        let networks = ops.networks.clone();
        match tokio::task::spawn_blocking(move || networks.add_own_flood(spec)).await {
            Ok(Ok(_)) => {
                self.managed.insert(name);
                true
            }
            Ok(Err(e)) => {
                warn!(network = %name, "cannot serve the cluster's network: {e}");
                false
            }
            Err(e) => {
                warn!(network = %name, "cannot serve the cluster's network: {e}");
                false
            }
        }
    }

    /// A cluster network went: detach its namespaces, then remove its TAP and bridge.
    async fn removed(&mut self, name: &str, vni: Vni) {
        let Some(ops) = self.ops.clone() else { return };
        if !self.managed.remove(name) {
            if ops.networks.spec(name).is_some() {
                info!(network = %name, "the cluster removed network {name}, which this host declares itself; keeping it");
            }
            return;
        }
        self.flood.remove(&vni);
        let (o, n) = (ops.clone(), name.to_string());
        let r = tokio::task::spawn_blocking(move || {
            let detached = o.attachments.detach_network(&n);
            (detached, o.networks.remove(&n))
        })
        .await;
        match r {
            Ok((detached, removed)) => {
                match detached {
                    Ok(0) => {}
                    Ok(k) => info!(network = %name, "{k} attachment(s) detached (network removed)"),
                    Err(e) => warn!(network = %name, "cannot detach every attachment: {e}"),
                }
                if let Err(e) = removed {
                    warn!(network = %name, "cannot remove the network: {e}");
                }
            }
            Err(e) => warn!(network = %name, "cannot remove the network: {e}"),
        }
        ops.blocks.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }
}

/// The devices and settings a cluster definition is served with (bridge `ovbr<VNI>`, TAP `ovl<VNI>`).
pub fn spec_of(def: &NetworkDef) -> Result<crate::netspec::NetworkSpec, crate::netspec::NetSpecError> {
    NetworkOpt {
        name: def.name.clone(),
        vni: def.vni,
        subnet: Some(def.subnet),
        mtu: def.mtu,
        egress: def.egress,
    }
    .check()
}
