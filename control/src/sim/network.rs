//! The simulated network between nodes: each node's FIFO uplink ([`super::SimConfig::uplink`]), the cost of
//! opening a connection ([`super::SimConfig::connect`]), latency and jitter, seeded loss, partitions into
//! groups and cuts between pairs; and the faults a test raises on it (partition, heal, cut, loss,
//! injected bytes). Must never: use unseeded randomness (loss and jitter come from [`Sim`]'s xorshift,
//! in a fixed order, so a seed replays the same run).

use std::net::SocketAddr;
use std::time::Duration;

use super::queue::Event;
use super::Sim;
use crate::messages;

impl Sim {
    /// Node `i` hands `bytes` for `to` to the network: counted, logged, queued on its uplink, then
    /// delivered after the latency (and the connection's opening), unless a partition, a cut or
    /// loss drops it. `budgeted`: it left through the node's gossip budget.
    pub(super) fn send(&mut self, i: usize, to: SocketAddr, bytes: Vec<u8>, budgeted: bool) {
        self.sent += 1;
        let elapsed = self.now - self.start;
        let swim = messages::is_swim(&bytes);
        let n = &mut self.nodes[i];
        n.sent_bytes += bytes.len() as u64;
        if !swim {
            n.sync_messages += 1;
            if self.cfg.log_sync {
                n.sync_log.push((elapsed, bytes.len()));
            }
            if self.cfg.record_sync {
                n.sync_sent.push((elapsed, to, bytes.clone(), budgeted));
            }
        }
        // The uplink: FIFO, `uplink` bytes per second.
        let depart = if self.cfg.uplink > 0 {
            let start = n.link_free_at.max(self.now);
            let nanos = bytes.len() as u128 * 1_000_000_000 / self.cfg.uplink as u128;
            n.link_free_at = start + Duration::from_nanos(nanos as u64);
            if swim {
                n.max_swim_wait = n.max_swim_wait.max(start - self.now);
            }
            n.link_free_at
        } else {
            self.now
        };
        let Some(&j) = self.by_addr.get(&to) else {
            self.dropped += 1;
            return;
        };
        let pair = (i.min(j), i.max(j));
        if self.nodes[j].group != self.nodes[i].group
            || self.cut.contains(&pair)
            || self.rng.unit() < self.cfg.loss
        {
            self.dropped += 1;
            return;
        }
        let depart = if self.cfg.connect.is_zero() {
            depart
        } else {
            let ready = *self.conns.entry(pair).or_insert_with(|| {
                self.connections += 1;
                self.now + self.cfg.connect
            });
            depart.max(ready)
        };
        let jitter = self.cfg.jitter.mul_f64(self.rng.unit());
        let at = depart + self.cfg.latency + jitter;
        let from = self.nodes[i].addr;
        self.push(at, Event::Deliver { to: j, from, bytes });
    }

    /// Nodes `i` and `j` can no longer reach each other (both ways), whatever their groups.
    pub fn cut(&mut self, i: usize, j: usize) {
        self.cut.insert((i.min(j), i.max(j)));
    }

    /// Split the cluster: `groups[k]` lists the node indices that can talk to each other.
    /// Nodes not listed stay in group 0.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        for (g, members) in groups.iter().enumerate() {
            for &i in members {
                self.nodes[i].group = g;
            }
        }
    }

    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.group = 0;
        }
    }

    /// Deliver raw `bytes` to node `to` as if node `from` had sent them (for stale/forged message tests).
    pub fn inject(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let at = self.now + self.cfg.latency;
        let from = self.nodes[from].addr;
        self.push(at, Event::Deliver { to, from, bytes });
    }

    pub fn set_loss(&mut self, loss: f64) {
        self.cfg.loss = loss;
    }
}
