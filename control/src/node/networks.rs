//! The network catalog and IPAM side of [`ControlNode`]: creating and removing networks, requesting,
//! granting and releasing address blocks, and their dissemination (custom broadcasts, a direct copy
//! to the holder, anti-entropy). See [`crate::catalog`] and [`crate::ipam`] for the ordering rules.
//! Must never: grant without the CA key, grant a block its grant table shows as held, or apply a
//! record or grant whose signature does not verify.

use std::net::SocketAddr;
use std::time::Instant;

use ipnet::IpNet;

use super::ControlNode;
use crate::catalog::{NetworkDef, NetworkError, NetworkRecord};
use crate::ipam::{BlockGrant, MAX_BLOCKS_PER_HOLDER};
use crate::messages::{self, Broadcast, SyncMessage};
use crate::{ControlError, NodeId, Output, Vni};

/// Records / grants per anti-entropy message (keeps each well under `transport::MAX_MESSAGE`).
const RECORDS_PER_MESSAGE: usize = 128;
const GRANTS_PER_MESSAGE: usize = 512;

/// What [`ControlNode::request_block`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOutcome {
    /// This node is an admitter and granted itself `block` (also reported as [`Output::BlockGranted`]).
    Granted(IpNet),
    /// Asked the admitter with this id; [`Output::BlockGranted`] follows when it answers. The request
    /// is repeated on every anti-entropy tick until granted.
    Requested(NodeId),
    /// No admitter is reachable: the request waits and is sent when one is (existing blocks keep working).
    Pending,
}

/// One network as `overlayctl network ls` shows it: the definition and this node's blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub def: NetworkDef,
    pub blocks: Vec<IpNet>,
}

impl ControlNode {
    /// `overlayctl network create`: sign a definition and disseminate it. Identical to the current
    /// definition of that name: a no-op. Another definition of the name, or the VNI used by another
    /// network: [`NetworkError::NameExists`] / [`NetworkError::VniInUse`].
    pub fn create_network(&mut self, now: Instant, def: NetworkDef) -> Result<NetworkDef, ControlError> {
        self.check_not_left()?;
        if !self.catalog.check_create(&def)? {
            return Ok(def);
        }
        let stamp = self.catalog.next_stamp(&def.name);
        let r = self.sign_record(&def.name.clone(), def.vni, stamp, Some(def.clone()))?;
        self.catalog.insert(r.clone());
        self.disseminate(now, &Broadcast::Network(r))?;
        self.report_networks();
        Ok(def)
    }

    /// `overlayctl network rm`: a signed tombstone that wins over the definition everywhere.
    pub fn remove_network(&mut self, now: Instant, name: &str) -> Result<(), ControlError> {
        self.check_not_left()?;
        let Some(def) = self.catalog.get(name) else {
            return Err(NetworkError::NoSuchNetwork(name.to_string()).into());
        };
        let stamp = self.catalog.next_stamp(name);
        let r = self.sign_record(name, def.vni, stamp, None)?;
        self.catalog.insert(r.clone());
        self.disseminate(now, &Broadcast::Network(r))?;
        self.report_networks();
        Ok(())
    }

    /// Ask for one more IPAM block of `network` than this node holds. An admitter grants it at once;
    /// any other node asks the lowest-id active admitter (and keeps asking until granted).
    pub fn request_block(&mut self, now: Instant, network: &str) -> Result<BlockOutcome, ControlError> {
        self.check_not_left()?;
        let Some(def) = self.catalog.get(network) else {
            return Err(NetworkError::NoSuchNetwork(network.to_string()).into());
        };
        let held = self.grants.held(&def, self.identity.id).len() as u32;
        let want = held + 1;
        if want > MAX_BLOCKS_PER_HOLDER {
            return Err(ControlError::TooManyBlocks(held));
        }
        if self.trust.ca_signer.is_some() {
            if !self.ipam_ready() {
                // Restarted admitter: wait until its grant table has been synced (ipam_tick grants).
                let w = self.pending_blocks.entry(network.to_string()).or_insert(want);
                *w = (*w).max(want);
                return Ok(BlockOutcome::Pending);
            }
            let me = self.identity.id;
            let new = self.grant_to(now, &def, me, want)?;
            self.report_blocks();
            return match new.first() {
                Some(b) => Ok(BlockOutcome::Granted(*b)),
                None => Err(NetworkError::SubnetFull(network.to_string()).into()),
            };
        }
        let w = self.pending_blocks.entry(network.to_string()).or_insert(want);
        *w = (*w).max(want);
        let sent = self.send_block_request(network, want)?;
        self.release(now);
        match sent {
            Some(a) => Ok(BlockOutcome::Requested(a)),
            None => Ok(BlockOutcome::Pending),
        }
    }

    /// Current networks (as served: one per VNI) with this node's blocks of each.
    pub fn networks(&self) -> Vec<NetworkInfo> {
        self.catalog
            .effective()
            .into_values()
            .map(|def| NetworkInfo {
                blocks: self.grants.held(&def, self.identity.id),
                def,
            })
            .collect()
    }

    /// Digest of the catalog (equal on nodes holding the same records).
    pub fn catalog_digest(&self) -> u64 {
        self.catalog.digest()
    }

    /// Every current grant: (network, block, holder). For tests and diagnostics.
    pub fn grants(&self) -> Vec<(String, IpNet, NodeId)> {
        self.grants
            .iter()
            .filter(|g| !g.released)
            .map(|g| (g.network.clone(), g.block, g.holder))
            .collect()
    }

    fn sign_record(
        &self,
        name: &str,
        vni: u32,
        stamp: u64,
        def: Option<NetworkDef>,
    ) -> Result<NetworkRecord, ControlError> {
        let author = self
            .identity
            .attestation()
            .cloned()
            .ok_or_else(|| ControlError::Encode("this node has no CA attestation".into()))?;
        NetworkRecord::sign(&self.trust.signer, author, name, vni, stamp, def)
            .map_err(|e| ControlError::Encode(e.to_string()))
    }

    /// Piggyback `b` on gossip and push it out now.
    fn disseminate(&mut self, now: Instant, b: &Broadcast) -> Result<(), ControlError> {
        let data = messages::encode_broadcast(b).map_err(|e| ControlError::Encode(e.to_string()))?;
        self.foca
            .add_broadcast(&data)
            .map_err(|e| ControlError::Swim(e.to_string()))?;
        // Our own item came back through the handler: applying it again is a no-op.
        self.drain_inbox();
        self.swim(now, |foca, rt| foca.broadcast(rt))
    }

    /// A record from gossip or anti-entropy. `verified`: the broadcast handler checked it.
    pub(super) fn apply_network_record(&mut self, r: NetworkRecord, verified: bool) {
        if !self.catalog.admit(&r) {
            return;
        }
        if !verified {
            if !r.well_formed() {
                self.stats.malformed += 1;
                return;
            }
            if !r.verify(&self.trust.ca_key) {
                self.stats.bad_signatures += 1;
                return;
            }
        }
        self.catalog.insert(r);
    }

    /// A grant from gossip or anti-entropy. `verified`: the broadcast handler checked it.
    pub(super) fn apply_grant(&mut self, g: BlockGrant, verified: bool) {
        if !self.grants.admit(&g) {
            return;
        }
        if !verified && !g.verify(&self.trust.ca_key) {
            self.stats.bad_signatures += 1;
            return;
        }
        self.grants.insert(g);
    }

    /// Report catalog changes ([`Output::NetworkUpsert`] / [`Output::NetworkRemoved`]), then blocks.
    pub(super) fn report_networks(&mut self) {
        let (upserts, removed) = self.catalog.changes();
        for (name, vni) in removed {
            if let Ok(vni) = Vni::new(vni) {
                self.out.push_back(Output::NetworkRemoved { name, vni });
            }
        }
        for d in upserts {
            self.out.push_back(Output::NetworkUpsert(d));
        }
        self.report_blocks();
    }

    /// Report changes of the blocks this node holds; drop satisfied requests.
    pub(super) fn report_blocks(&mut self) {
        let me = self.identity.id;
        let mut now = std::collections::BTreeSet::new();
        let mut held_per_network = std::collections::BTreeMap::new();
        for def in self.catalog.effective().into_values() {
            let held = self.grants.held(&def, me);
            held_per_network.insert(def.name.clone(), held.len() as u32);
            now.extend(held.into_iter().map(|b| (def.name.clone(), b)));
        }
        for (network, block) in self.my_blocks.difference(&now) {
            self.out.push_back(Output::BlockReleased {
                network: network.clone(),
                block: *block,
            });
        }
        for (network, block) in now.difference(&self.my_blocks) {
            self.out.push_back(Output::BlockGranted {
                network: network.clone(),
                block: *block,
            });
        }
        self.my_blocks = now;
        // A request is done once we hold what we asked for, or its network is gone.
        self.pending_blocks
            .retain(|n, want| held_per_network.get(n).is_some_and(|h| h < want));
    }

    /// Anti-entropy: ship the catalog / grants if the peer's digests differ from ours.
    pub(super) fn ship_catalog(
        &mut self,
        to: SocketAddr,
        catalog: u64,
        grants: u64,
    ) -> Result<(), ControlError> {
        if catalog != self.catalog.digest() {
            let records: Vec<NetworkRecord> = self.catalog.records().cloned().collect();
            for chunk in records.chunks(RECORDS_PER_MESSAGE) {
                self.send_sync(
                    to,
                    &SyncMessage::Catalog {
                        records: chunk.to_vec(),
                    },
                )?;
            }
        }
        if grants != self.grants.digest() {
            let list: Vec<BlockGrant> = self.grants.iter().cloned().collect();
            for chunk in list.chunks(GRANTS_PER_MESSAGE) {
                self.send_sync(to, &SyncMessage::Grants { list: chunk.to_vec() })?;
            }
        }
        Ok(())
    }

    /// The lowest-id active admitter other than this node.
    fn lowest_admitter(&self) -> Option<(NodeId, SocketAddr)> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared
            .members
            .values()
            .filter(|m| m.id != self.identity.id && !self.revocations.contains(m.id))
            .filter(|m| m.attestation().is_some_and(|a| a.admitter))
            .map(|m| (m.id, m.addr))
            .min()
    }

    fn send_block_request(&mut self, network: &str, want: u32) -> Result<Option<NodeId>, ControlError> {
        let Some((admitter, addr)) = self.lowest_admitter() else {
            return Ok(None);
        };
        let me = self.identity.id;
        let sig = self
            .trust
            .signer
            .sign(
                messages::DOMAIN_BLOCK_REQUEST,
                &messages::block_request_bytes(network, me, want),
            )
            .map_err(|e| ControlError::Encode(e.to_string()))?;
        self.send_sync(
            addr,
            &SyncMessage::BlockRequest {
                network: network.to_string(),
                requester: me,
                want,
                sig,
            },
        )?;
        Ok(Some(admitter))
    }

    /// Re-send every unsatisfied block request (on each anti-entropy tick, and when an admitter appears).
    pub(super) fn request_pending_blocks(&mut self) -> Result<(), ControlError> {
        if self.trust.ca_signer.is_some() {
            return Ok(());
        }
        let pending: Vec<(String, u32)> = self.pending_blocks.iter().map(|(n, w)| (n.clone(), *w)).collect();
        for (network, want) in pending {
            self.send_block_request(&network, want)?;
        }
        Ok(())
    }

    /// May this admitter grant? Only once its grant table matched a peer's (an anti-entropy digest
    /// with equal grant digests), or if it founded the cluster and is still alone: a restarted
    /// admitter starts with an empty table and must not hand out blocks others hold.
    pub(super) fn ipam_ready(&self) -> bool {
        self.ipam_synced || (self.seeds.is_empty() && self.foca.num_members() == 0)
    }

    /// Admitter: a member asks for blocks.
    pub(super) fn handle_block_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        network: &str,
        requester: NodeId,
        want: u32,
        sig: &[u8],
    ) -> Result<(), ControlError> {
        if self.trust.ca_signer.is_none() || want > MAX_BLOCKS_PER_HOLDER {
            self.stats.rejected += 1;
            return Ok(());
        }
        let Some(req) = self.active_identity(requester) else {
            self.stats.rejected += 1;
            return Ok(());
        };
        let msg = messages::block_request_bytes(network, requester, want);
        if req.addr != from || !req.verify_own(messages::DOMAIN_BLOCK_REQUEST, &msg, sig) {
            self.stats.bad_signatures += 1;
            return Ok(());
        }
        let Some(def) = self.catalog.get(network) else {
            // Not (yet) in our catalog: anti-entropy brings it, the requester asks again.
            return Ok(());
        };
        if !self.ipam_ready() {
            // Not synced yet after a restart: the requester asks again next tick.
            return Ok(());
        }
        let new = self.grant_to(now, &def, requester, want)?;
        if !new.is_empty() {
            // Also straight to the holder, so it need not wait for gossip.
            let list: Vec<BlockGrant> = self
                .grants
                .live(network)
                .filter(|g| g.holder == requester)
                .cloned()
                .collect();
            self.send_sync(from, &SyncMessage::Grants { list })?;
        }
        Ok(())
    }

    /// Admitter: grant `holder` the lowest free blocks until it holds `want`; returns the new blocks.
    fn grant_to(
        &mut self,
        now: Instant,
        def: &NetworkDef,
        holder: NodeId,
        want: u32,
    ) -> Result<Vec<IpNet>, ControlError> {
        let Some(ca) = self.trust.ca_signer.clone() else {
            return Ok(Vec::new());
        };
        let mut new = Vec::new();
        while (self.grants.held(def, holder).len() as u32) < want {
            let Some(block) = self.grants.first_free(def) else {
                tracing::debug!(network = %def.name, "no free address block left");
                break;
            };
            let stamp = self.grants.next_stamp(&def.name, block);
            let g = BlockGrant::issue(&ca, &def.name, block, holder, stamp, false, self.identity.id)
                .map_err(|e| ControlError::Encode(e.to_string()))?;
            if !self.grants.insert(g.clone()) {
                break;
            }
            self.stats.blocks_granted += 1;
            tracing::info!(network = %def.name, %block, %holder, "granted address block");
            self.disseminate(now, &Broadcast::Grant(g))?;
            new.push(block);
        }
        Ok(new)
    }

    /// On each anti-entropy tick: re-send pending requests; admitters release the blocks of holders
    /// that have not been active members for `block_grace`.
    pub(super) fn ipam_tick(&mut self, now: Instant) -> Result<(), ControlError> {
        self.request_pending_blocks()?;
        let Some(ca) = self.trust.ca_signer.clone() else {
            return Ok(());
        };
        if !self.ipam_ready() {
            return Ok(());
        }
        // Our own requests that waited for the sync.
        let own: Vec<(String, u32)> = self.pending_blocks.iter().map(|(n, w)| (n.clone(), *w)).collect();
        let me = self.identity.id;
        for (network, want) in own {
            if let Some(def) = self.catalog.get(&network) {
                self.grant_to(now, &def, me, want)?;
            }
        }
        self.report_blocks();
        let active: std::collections::HashSet<NodeId> = {
            let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            shared
                .members
                .keys()
                .copied()
                .filter(|id| !self.revocations.contains(*id))
                .chain(std::iter::once(self.identity.id))
                .collect()
        };
        let holders: std::collections::BTreeSet<NodeId> = self
            .grants
            .iter()
            .filter(|g| !g.released)
            .map(|g| g.holder)
            .collect();
        // Only a holder that left (a signed leave) or was revoked loses its blocks after the grace. One that is
        // merely down may be alive behind a partition, still using its addresses: releasing its blocks could
        // give one block to two hosts. A host that is gone for good without leaving is revoked by the operator.
        let gone: std::collections::HashSet<NodeId> = self
            .left
            .values()
            .map(|i| i.id)
            .chain(holders.iter().copied().filter(|h| self.revocations.contains(*h)))
            .collect();
        self.absent_since
            .retain(|id, _| holders.contains(id) && !active.contains(id) && gone.contains(id));
        let mut expired = Vec::new();
        for h in holders.iter().filter(|h| !active.contains(h) && gone.contains(h)) {
            let since = *self.absent_since.entry(*h).or_insert(now);
            if now.saturating_duration_since(since) >= self.config.block_grace {
                expired.push(*h);
            }
        }
        // Grants of a network that has been removed (or redefined without that block) for the grace
        // too: released, so a re-created network starts empty and the table does not keep them forever.
        // (The grace covers an admitter that has not heard of a new network yet.)
        let defs = self.catalog.effective();
        let orphans: std::collections::BTreeSet<(String, IpNet)> = self
            .grants
            .iter()
            .filter(|g| !g.released && !defs.get(&g.network).is_some_and(|d| d.has_block(&g.block)))
            .map(|g| (g.network.clone(), g.block))
            .collect();
        self.orphan_since.retain(|k, _| orphans.contains(k));
        let mut orphans_expired = std::collections::BTreeSet::new();
        for k in orphans {
            let since = *self.orphan_since.entry(k.clone()).or_insert(now);
            if now.saturating_duration_since(since) >= self.config.block_grace {
                orphans_expired.insert(k);
            }
        }
        if expired.is_empty() && orphans_expired.is_empty() {
            return Ok(());
        }
        let releases: Vec<BlockGrant> = self
            .grants
            .iter()
            .filter(|g| {
                !g.released
                    && (expired.contains(&g.holder)
                        || orphans_expired.contains(&(g.network.clone(), g.block)))
            })
            .cloned()
            .collect();
        for g in releases {
            let stamp = g.stamp.saturating_add(1);
            let r = BlockGrant::issue(&ca, &g.network, g.block, g.holder, stamp, true, self.identity.id)
                .map_err(|e| ControlError::Encode(e.to_string()))?;
            if self.grants.insert(r.clone()) {
                self.stats.blocks_released += 1;
                tracing::info!(network = %g.network, block = %g.block, holder = %g.holder, "released the address block of a departed holder");
                self.disseminate(now, &Broadcast::Grant(r))?;
            }
        }
        for h in expired {
            self.absent_since.remove(&h);
        }
        for k in orphans_expired {
            self.orphan_since.remove(&k);
        }
        self.report_blocks();
        Ok(())
    }
}
