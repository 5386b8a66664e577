//! What the simulator does with a node's outputs ([`crate::Output`]): sends go to the simulated network
//! (`sim/network.rs`), timers to the event queue, FDB/flood/network/block outputs to the node's
//! modelled data plane ([`super::SimNode`]), revocations to its state dir, and reported deaths to
//! [`Sim::deaths`]. Inconsistent block grants or releases are recorded in [`Sim::errors`].

use super::queue::Event;
use super::{Sim, SIM_VNI};
use crate::membership::NodeId;
use crate::node::MemberState;
use crate::Output;

impl Sim {
    /// Apply every output node `i` has queued.
    pub(super) fn drain(&mut self, i: usize) {
        while let Some((out, budgeted)) = self.nodes[i]
            .node
            .as_mut()
            .and_then(|n| n.poll_output().map(|o| (o, n.polled_budgeted())))
        {
            match out {
                Output::Send { to, bytes } => self.send(i, to, bytes, budgeted),
                Output::ScheduleTimer { at, timer } => {
                    let instance = self.nodes[i].instance;
                    self.push(
                        at.max(self.now),
                        Event::Timer {
                            node: i,
                            instance,
                            timer,
                        },
                    );
                }
                Output::FdbInstall { vni, mac, vtep, ips } => {
                    if vni.get() == SIM_VNI {
                        self.nodes[i].fdb.insert(mac, vtep);
                    }
                    self.nodes[i].entries.insert((vni, mac), (vtep, ips));
                }
                Output::FdbRemove { vni, mac } => {
                    if vni.get() == SIM_VNI {
                        self.nodes[i].fdb.remove(&mac);
                    }
                    self.nodes[i].entries.remove(&(vni, mac));
                }
                Output::FloodSet { vni, vteps } => {
                    if vteps.is_empty() {
                        self.nodes[i].flood.remove(&vni);
                    } else {
                        self.nodes[i].flood.insert(vni, vteps);
                    }
                }
                Output::NetworkUpsert(d) => {
                    self.nodes[i].networks.insert(d.name.clone(), d);
                }
                Output::NetworkRemoved { name, .. } => {
                    self.nodes[i].networks.remove(&name);
                }
                Output::BlockGranted { network, block } => {
                    if !self.nodes[i].blocks.insert((network.clone(), block)) {
                        self.errors
                            .push(format!("node {i}: block {network} {block} granted twice"));
                    }
                }
                Output::BlockReleased { network, block } => {
                    if !self.nodes[i].blocks.remove(&(network.clone(), block)) {
                        self.errors
                            .push(format!("node {i}: block {network} {block} released but not held"));
                    }
                }
                Output::Revoked { .. } => {
                    // Persist, as the transport does in the state dir.
                    if let Some(node) = self.nodes[i].node.as_ref() {
                        self.nodes[i].revoked = node.revocations().clone();
                    }
                }
                Output::MembersChanged(rows) => {
                    for m in rows {
                        if matches!(m.state, MemberState::Dead | MemberState::Left) {
                            let id = u64::from_str_radix(&m.id, 16).map(NodeId).unwrap_or_default();
                            self.deaths.insert((i, id, m.generation, m.state));
                        }
                    }
                }
            }
        }
    }
}
