//! What this host advertises: every local MAC of every network with its locally bound addresses, as one
//! batch `(VNI, MAC, IPs)`. The data path pushes changes (each FDB calls a [`Notify`] when its local MAC set
//! changes); the ARP/ND tables and the set of networks only bump versions, which are compared a few times a
//! second (atomic loads, no scan of any table).

use control::Vni;
use dataplane::network::NetworkTable;
use dataplane::wire::MacAddr;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

/// At most this many addresses per MAC in an advert (the control plane refuses more).
pub const MAX_IPS_PER_MAC: usize = 8;

/// One advertised entry.
pub type Entry = (Vni, MacAddr, Vec<IpAddr>);

/// The versions whose change means the advert may have changed: the table's, and each network's FDB and
/// neighbour-table local versions.
pub fn versions(table: &NetworkTable) -> Vec<u64> {
    let snap = table.snapshot();
    let mut v = Vec::with_capacity(1 + 2 * snap.len());
    v.push(table.version());
    for n in snap.iter() {
        v.push(n.fdb.local_version());
        v.push(n.neigh.local_version());
    }
    v
}

/// Make every network's FDB wake `changed` when its local MACs change (a no-op for FDBs that already do).
pub fn hook(table: &NetworkTable, changed: &Arc<Notify>) {
    for n in table.snapshot().iter() {
        let c = changed.clone();
        n.fdb.notify_local_changes(move || c.notify_one());
    }
}

/// The full local set, sorted (VNI, MAC): the FDB's local MACs and the MACs of local ARP/ND bindings (an
/// attached container that has not sent a frame yet still makes this host serve its network), never the
/// bridge's own MAC.
pub fn entries(table: &NetworkTable, now: Instant) -> Vec<Entry> {
    let mut out = Vec::new();
    for n in table.snapshot().iter() {
        let mut macs = n.fdb.local_macs(now);
        macs.extend(n.neigh.local_bindings().iter().map(|b| b.mac));
        macs.sort_unstable();
        macs.dedup();
        for mac in macs {
            if Some(mac) == n.bridge_mac {
                continue;
            }
            out.push((n.vni, mac, n.neigh.local_ips_of(&mac, MAX_IPS_PER_MAC)));
        }
    }
    out.sort_by_key(|(v, m, _)| (v.get(), *m));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::fdb::{Fdb, Origin};
    use dataplane::neigh::Binding;
    use dataplane::network::Network;

    #[test]
    fn entries_carry_each_networks_macs_with_their_local_addresses() {
        let now = Instant::now();
        let local = IpAddr::from([10, 0, 0, 1]);
        let mk = |name: &str, vni: u32| {
            let fdb = Arc::new(Fdb::new(64, Fdb::DEFAULT_AGEING, now));
            Arc::new(Network::new(name, Vni::new(vni).unwrap(), fdb, Arc::default()))
        };
        let (a, b) = (mk("a", 100), mk("b", 200));
        let table = NetworkTable::new([a.clone(), b.clone()]).unwrap();
        let changed = Arc::new(Notify::new());
        hook(&table, &changed);
        let v0 = versions(&table);
        let (m1, m2) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        a.fdb.learn(m1, local, Origin::Local, now);
        b.fdb.learn(m2, local, Origin::Local, now);
        let ip: IpAddr = "10.20.0.5".parse().unwrap();
        b.neigh.learn(Binding { ip, mac: m2 }, now);
        // A binding whose MAC has not sent a frame yet (attached, silent) is advertised too.
        let (m3, ip3): (MacAddr, IpAddr) = (MacAddr([2, 0, 0, 0, 0, 3]), "10.20.0.6".parse().unwrap());
        b.neigh.learn(Binding { ip: ip3, mac: m3 }, now);
        assert_ne!(versions(&table), v0, "FDB and neigh changes move the versions");
        let e = entries(&table, now);
        assert_eq!(
            e,
            vec![
                (Vni::new(100).unwrap(), m1, vec![]),
                (Vni::new(200).unwrap(), m2, vec![ip]),
                (Vni::new(200).unwrap(), m3, vec![ip3]),
            ]
        );
        // The hook fired: a permit is stored, so this returns at once.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(1), changed.notified())
                .await
                .expect("the FDB notified the glue");
        });
    }
}
