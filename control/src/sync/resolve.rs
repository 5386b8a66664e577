//! Resolution of the held claims into what this node installs: the winning owner of each (VNI, MAC)
//! across all held tables (highest (mobility, generation, node id)), the FdbInstall/FdbRemove that
//! keep the data plane's control entries equal to the winners, and the per-VNI flood sets.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use super::{FdbSync, Key};
use crate::identity::NodeId;
use crate::{Output, Vni};

impl FdbSync {
    /// The winning owner of `key` across all held owners, with its VTEP and the IPs it binds.
    fn winner(&self, key: Key) -> Option<(NodeId, IpAddr, &[IpAddr])> {
        self.owners
            .iter()
            .filter_map(|(id, st)| {
                st.entries
                    .get(&key)
                    .filter(|v| v.present)
                    .map(|v| ((v.mobility, st.generation, *id), st.vtep, v.ips.as_slice()))
            })
            .max_by_key(|(k, _, _)| *k)
            .map(|((_, _, id), vtep, ips)| (id, vtep, ips))
    }

    pub(super) fn resolve(&mut self, key: Key, out: &mut VecDeque<Output>) {
        let want = match self.winner(key) {
            Some((id, vtep, ips)) if id != self.me => Some((vtep, ips.to_vec())),
            _ => None,
        };
        let have = self.installed.get(&key);
        if want.as_ref() == have {
            return;
        }
        let (vni, mac) = key;
        match want {
            Some((vtep, ips)) => {
                self.installed.insert(key, (vtep, ips.clone()));
                out.push_back(Output::FdbInstall { vni, mac, vtep, ips });
            }
            None => {
                self.installed.remove(&key);
                out.push_back(Output::FdbRemove { vni, mac });
            }
        }
    }

    /// Recompute the per-VNI flood sets (VTEPs of other held owners with ≥ 1 present entry on the
    /// VNI) and report the ones that changed.
    pub(super) fn update_flood(&mut self, out: &mut VecDeque<Output>) {
        let mut now: BTreeMap<Vni, BTreeSet<IpAddr>> = BTreeMap::new();
        for (id, st) in &self.owners {
            if *id == self.me {
                continue;
            }
            for v in st.per_vni.keys() {
                now.entry(*v).or_default().insert(st.vtep);
            }
        }
        if now == self.flood {
            return;
        }
        for (v, old) in &self.flood {
            if !now.contains_key(v) && !old.is_empty() {
                out.push_back(Output::FloodSet {
                    vni: *v,
                    vteps: Vec::new(),
                });
            }
        }
        for (v, set) in &now {
            if self.flood.get(v) != Some(set) {
                out.push_back(Output::FloodSet {
                    vni: *v,
                    vteps: set.iter().copied().collect(),
                });
            }
        }
        self.flood = now;
    }

    /// The flood set of `vni` as last reported.
    pub fn flood_set(&self, vni: Vni) -> Vec<IpAddr> {
        self.flood
            .get(&vni)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Re-resolve one key (after a local change, the winner may switch between us and a remote).
    pub fn refresh(&mut self, key: Key, out: &mut VecDeque<Output>) {
        self.resolve(key, out);
    }

    /// Every key with a live claim → its winning owner (self included). Identical on all converged nodes.
    pub fn resolved(&self) -> BTreeMap<Key, NodeId> {
        let mut macs: Vec<Key> = self
            .owners
            .values()
            .flat_map(|o| o.entries.keys().copied())
            .collect();
        macs.sort_unstable();
        macs.dedup();
        macs.into_iter()
            .filter_map(|m| self.winner(m).map(|(id, _, _)| (m, id)))
            .collect()
    }

    /// Remote entries this node has installed in the data plane: (VNI, MAC) → (VTEP, IPs).
    pub fn installed(&self) -> &BTreeMap<Key, (IpAddr, Vec<IpAddr>)> {
        &self.installed
    }
}
