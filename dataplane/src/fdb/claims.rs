//! The FDB's entries that do not come from the data path: the control plane's claims (install, withdraw),
//! our bridge's own MACs (reconciling local entries with the bridge, giving one up), and static entries.
//! Precedence and dampening are the same as for learning (see the parent module).

use super::{Counters, Entry, Fdb, Learn, MacAddr, Origin, Slot};
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

impl Fdb {
    /// Install an entry owned by the control plane. It replaces a learned entry and moves a control entry,
    /// both subject to dampening; it never replaces a static entry, and for a local MAC it is kept aside until
    /// the MAC leaves our bridge. Returns whether the entry now points at `vtep` with origin `control`.
    pub fn install_control(&self, mac: MacAddr, vtep: IpAddr, now: Instant) -> bool {
        let t = self.ts(now);
        if self.map.len() >= self.capacity && !self.map.contains_key(&mac) && !self.evict_one() {
            return false;
        }
        let mut o = match self.map.entry(mac) {
            Entry::Vacant(v) => {
                v.insert(Slot::new(vtep, Origin::Control, t));
                self.changed();
                return true;
            }
            Entry::Occupied(o) => o,
        };
        let s = o.get_mut();
        if !self.settle(s, t) {
            if s.origin == Origin::Local {
                self.unlocal();
            }
            let moves = s.moves;
            *s = Slot::new(vtep, Origin::Control, t);
            s.moves = moves;
            self.changed();
            return true;
        }
        match s.origin {
            Origin::Static => false,
            Origin::Local => {
                s.claim = Some(vtep);
                false
            }
            Origin::Control | Origin::Learned => {
                if s.vtep == vtep || s.moves.try_move(t, &self.damping, false) {
                    if (s.vtep, s.origin) != (vtep, Origin::Control) {
                        self.changed();
                    }
                    s.vtep = vtep;
                    s.origin = Origin::Control;
                    s.claim = None;
                    s.seen.store(t, Relaxed);
                    true
                } else {
                    s.claim = Some(vtep);
                    Counters::add(&self.counters.mac_flaps, 1);
                    false
                }
            }
        }
    }

    /// Withdraw the control plane's claim: a control entry is removed, a claim kept aside is forgotten.
    /// Returns whether an entry was removed.
    pub fn remove_control(&self, mac: &MacAddr) -> bool {
        if let Some(mut s) = self.map.get_mut(mac) {
            s.claim = None;
            if s.origin != Origin::Control {
                return false;
            }
        }
        let removed = self
            .map
            .remove_if(mac, |_, s| s.origin == Origin::Control)
            .is_some();
        if removed {
            self.changed();
        }
        removed
    }

    /// Stop holding `mac` as local: it turned out to be the bridge's own address (a bridge without a fixed
    /// address takes a port's MAC, and its frames may have been learned before the daemon saw the change). A
    /// pending control claim takes over, else the entry goes. Returns whether `mac` was local.
    pub fn forget_local(&self, mac: &MacAddr, now: Instant) -> bool {
        let t = self.ts(now);
        let mut was_local = false;
        self.map.remove_if_mut(mac, |_, s| {
            if s.origin != Origin::Local {
                return false;
            }
            was_local = true;
            !self.claim_takes_over(s, t)
        });
        if was_local {
            self.unlocal();
            self.changed();
        }
        was_local
    }

    /// A local entry given up at `t`: its pending control claim, if any, takes it over (the move counted by
    /// dampening). Returns whether one did; else the entry is to be removed.
    fn claim_takes_over(&self, s: &mut Slot, t: u64) -> bool {
        let Some(c) = s.claim.take() else {
            return false;
        };
        s.moves.try_move(t, &self.damping, true);
        s.vtep = c;
        s.origin = Origin::Control;
        s.seen.store(t, Relaxed);
        true
    }

    /// Reconcile local entries with our bridge's own forwarding table, read at `read_at` (an instant just
    /// before the read). `on_bridge` lists the MACs on non-TAP ports of the bridge (containers' veths), each
    /// with whether it is to be announced as local. Returns how many local entries were given up.
    ///
    /// - A local entry whose MAC is no longer on the bridge (container gone, entry aged there) stops being
    ///   local, unless it was seen on the TAP after `read_at`: a pending control claim then takes over, else
    ///   the entry is removed and a remote sighting may learn it.
    /// - A MAC on the bridge marked `announce` becomes (or stays) local, even if it has not sent a frame
    ///   through the TAP yet, so a datagram spoofing it is refused from the moment the bridge knows it.
    pub fn sync_bridge(
        &self,
        on_bridge: &[(MacAddr, bool)],
        local: IpAddr,
        read_at: Instant,
        now: Instant,
    ) -> usize {
        let read = self.ts(read_at);
        let t = self.ts(now);
        let mut sorted: Vec<MacAddr> = on_bridge.iter().map(|(m, _)| *m).collect();
        sorted.sort_unstable();
        let present = |m: &MacAddr| sorted.binary_search(m).is_ok();
        let mut gone = 0;
        self.map.retain(|mac, s| {
            if s.origin != Origin::Local || s.seen.load(Relaxed) >= read || present(mac) {
                return true;
            }
            gone += 1;
            self.unlocal();
            self.claim_takes_over(s, t)
        });
        if gone > 0 {
            self.changed();
        }
        let mut refused: Vec<MacAddr> = on_bridge
            .iter()
            .filter(|(mac, announce)| {
                *announce
                    && mac.is_learnable()
                    && self.learn(*mac, local, Origin::Local, now) == Learn::LocalCap
            })
            .map(|(mac, _)| *mac)
            .collect();
        refused.sort_unstable();
        // The bridge keeps a refused MAC for its own ageing time: count it once, not at every sync. (Every MAC
        // that sent a frame through our TAP is in the bridge's table, so this also counts those refused on
        // the forwarding path.)
        let mut before = self.bridge_refused.lock().unwrap_or_else(|p| p.into_inner());
        let new = refused
            .iter()
            .filter(|m| before.binary_search(m).is_err())
            .count();
        Counters::add(&self.counters.local_mac_cap, new as u64);
        *before = refused;
        gone
    }
    /// Operator-configured entry; never ages, never overridden.
    pub fn insert_static(&self, mac: MacAddr, vtep: IpAddr, now: Instant) {
        let t = self.ts(now);
        if let Some(old) = self.map.insert(mac, Slot::new(vtep, Origin::Static, t)) {
            if old.origin == Origin::Local {
                self.unlocal();
            }
        }
        self.changed();
    }
}
