//! Revocations in [`ControlNode`]: `overlayctl revoke` (signed here on an admitter, else requested
//! from one) and enforcing a CA-signed revocation (withdrawn, down in foca, disseminated).

use std::net::SocketAddr;
use std::time::Instant;

use foca::Member;

use super::{ControlNode, RevokeOutcome};
use crate::membership::{NodeId, NodeIdentity};
use crate::messages::{self, Broadcast, SyncMessage};
use crate::revocation::Revocation;
use crate::{ControlError, Output};

impl ControlNode {
    /// `overlayctl revoke NODE_ID`: sign the revocation here if this node is an admitter, otherwise ask
    /// an admitter (signed request). Static peers are not members and cannot be revoked.
    pub fn revoke(&mut self, now: Instant, target: NodeId) -> Result<RevokeOutcome, ControlError> {
        self.check_not_left()?;
        if target == self.identity.id {
            return Err(ControlError::RevokeSelf);
        }
        if self.revocations.contains(target) {
            return Ok(RevokeOutcome::AlreadyRevoked);
        }
        if let Some(ca) = self.trust.ca_signer.clone() {
            let r = Revocation::issue(&ca, target).map_err(|e| ControlError::Encode(e.to_string()))?;
            self.apply_revocation(now, r)?;
            return Ok(RevokeOutcome::Revoked);
        }
        let admitter = {
            let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            let mut admitters: Vec<&NodeIdentity> = shared
                .members
                .values()
                .filter(|m| m.id != target && m.attestation().is_some_and(|a| a.admitter))
                .collect();
            admitters.sort_by_key(|m| m.id);
            admitters.first().map(|m| (m.id, m.addr))
        };
        let Some((admitter, addr)) = admitter else {
            return Err(ControlError::NoAdmitter);
        };
        let msg = messages::revoke_request_bytes(target, self.identity.id);
        let sig = self
            .trust
            .signer
            .sign(messages::DOMAIN_REVOKE_REQUEST, &msg)
            .map_err(|e| ControlError::Encode(e.to_string()))?;
        self.send_now(
            addr,
            &SyncMessage::RevokeRequest {
                target,
                requester: self.identity.id,
                sig,
            },
        )?;
        Ok(RevokeOutcome::Forwarded(admitter))
    }

    /// Enforce a CA-signed revocation (no-op if invalid or known): the node leaves foca's table as down,
    /// its MACs are withdrawn, it vanishes from `members`, and the revocation is disseminated (direct
    /// to every member, piggybacked, and by anti-entropy).
    pub(super) fn apply_revocation(&mut self, now: Instant, r: Revocation) -> Result<(), ControlError> {
        if self.revocations.contains(r.node) {
            return Ok(());
        }
        if !self.revocations.insert_verified(r.clone(), &self.trust.ca_key) {
            self.stats.bad_signatures += 1;
            return Ok(());
        }
        let node = r.node;
        tracing::warn!(%node, "node revoked");
        self.verifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revoke(node);
        self.out.push_back(Output::Revoked { node });
        if node == self.identity.id {
            tracing::error!("this node was revoked by the cluster; it stops gossiping (re-admit it with a new token and an empty state dir)");
            self.has_left = true;
            return Ok(());
        }
        let bytes = messages::encode_sync(&SyncMessage::Revocations {
            list: vec![r.clone()],
        })
        .map_err(|e| ControlError::Encode(e.to_string()))?;
        let victims: Vec<NodeIdentity> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.id().id == node)
            .map(|m| m.id().clone())
            .collect();
        let peers: Vec<SocketAddr> = self
            .foca
            .iter_members()
            .filter(|m| m.id().id != node)
            .map(|m| m.id().addr)
            .collect();
        self.revoked_addrs.extend(victims.iter().map(|v| v.addr));
        for to in peers {
            self.out.push_back(Output::Send {
                to,
                bytes: bytes.clone(),
            });
        }
        let item = messages::encode_broadcast(&Broadcast::Revoke(r))
            .map_err(|e| ControlError::Encode(e.to_string()))?;
        // Through the handler first (it skips nodes it already marks revoked), then mark.
        self.foca
            .add_broadcast(&item)
            .map_err(|e| ControlError::Swim(e.to_string()))?;
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revoked
            .insert(node);
        // Our own item comes back through the inbox as a pending revocation: a no-op when applied.
        self.drain_inbox();
        self.swim(now, |foca, rt| {
            foca.apply_many(victims.into_iter().map(Member::down), true, rt)
        })?;
        self.reconcile_membership();
        Ok(())
    }

    /// Revocations received by piggyback, applied after foca returned.
    pub(super) fn apply_pending_revocations(&mut self, now: Instant) -> Result<(), ControlError> {
        while let Some(r) = self.pending_revocations.pop() {
            self.apply_revocation(now, r)?;
        }
        Ok(())
    }
}
