//! Convergence checks over the whole simulated cluster (what tests wait for with [`Sim::run_until`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::Sim;
use crate::node::{ControlNode, MemberState};
use crate::MacAddr;

impl Sim {
    pub fn running(&self) -> impl Iterator<Item = (usize, &ControlNode)> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.node.as_ref().map(|c| (i, c)))
    }

    /// Every running node sees every other running node as alive, with the running generation.
    pub fn membership_converged(&self) -> bool {
        let live: BTreeMap<String, u64> = self
            .nodes
            .iter()
            .filter(|n| n.node.is_some())
            .map(|n| (n.id.to_string(), n.generation))
            .collect();
        self.running().all(|(_, c)| {
            // A necessary condition first, without building the member list (that formats every id:
            // O(N²) per check at N nodes, and the scale scenario checks every 5 ms): the alive
            // members besides itself are among foca's active ones.
            if 1 + c.active_members() < live.len() {
                return false;
            }
            let alive: BTreeMap<String, u64> = c
                .members()
                .into_iter()
                .filter(|m| m.state == MemberState::Alive)
                .map(|m| (m.id, m.generation))
                .collect();
            alive == live
        })
    }

    /// Every running node's data-plane FDB holds exactly the MACs of the other running nodes, each
    /// pointing at its owner's VTEP (assuming every MAC has exactly one owner).
    pub fn fdb_converged(&self) -> bool {
        let mut owner: BTreeMap<MacAddr, (usize, IpAddr)> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.node.is_some() {
                for m in &n.macs {
                    owner.insert(*m, (i, n.vtep));
                }
            }
        }
        self.running().all(|(i, _)| {
            let want: BTreeMap<MacAddr, IpAddr> = owner
                .iter()
                .filter(|(_, (o, _))| *o != i)
                .map(|(m, (_, v))| (*m, *v))
                .collect();
            self.nodes[i].fdb == want
        })
    }

    /// All running nodes report the same FDB digest.
    pub fn digests_equal(&self) -> bool {
        let mut it = self.running().map(|(_, c)| c.fdb_digest());
        match it.next() {
            Some(first) => it.all(|d| d == first),
            None => true,
        }
    }
}
