use super::*;
use crate::messages::OwnerDump;

fn ip(n: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, n])
}
const M: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const V: u32 = 5;

fn v() -> Vni {
    Vni::new(V).unwrap()
}

fn k(m: MacAddr) -> Key {
    (v(), m)
}

fn inst(mac: MacAddr, vtep: IpAddr) -> Option<Output> {
    Some(Output::FdbInstall {
        vni: v(),
        mac,
        vtep,
        ips: Vec::new(),
    })
}

fn rm(mac: MacAddr) -> Option<Output> {
    Some(Output::FdbRemove { vni: v(), mac })
}

/// The next FDB output (flood-set changes are tested on their own).
fn next(out: &mut VecDeque<Output>) -> Option<Output> {
    while let Some(o) = out.pop_front() {
        if !matches!(o, Output::FloodSet { .. }) {
            return Some(o);
        }
    }
    None
}

fn elig(list: &[(u64, u64, u8)]) -> BTreeMap<NodeId, (u64, IpAddr)> {
    list.iter().map(|&(id, g, v)| (NodeId(id), (g, ip(v)))).collect()
}

/// Signatures are the node's business (tested there); here entries carry a dummy one.
fn adv(owner: u64, generation: u64, seq: u64, mobility: u64, mac: MacAddr, present: bool) -> FdbAdvert {
    FdbAdvert {
        owner: NodeId(owner),
        generation,
        entry: FdbEntry {
            vni: V,
            mac: mac.0,
            ips: Vec::new(),
            seq,
            mobility,
            present,
            sig: Vec::new(),
        },
    }
}

fn apply(s: &mut FdbSync, a: &FdbAdvert, out: &mut VecDeque<Output>) -> bool {
    s.apply_entry(a.owner, a.generation, a.entry.clone(), out)
}

fn merge(s: &mut FdbSync, d: &OwnerDump, out: &mut VecDeque<Output>) {
    let mut entries = d.entries.clone();
    entries.sort_by_key(|e| e.seq);
    for e in entries {
        s.apply_entry(d.owner, d.generation, e, out);
    }
}

fn key() -> Signer {
    crate::identity::tests::signer()
}

#[test]
fn install_move_withdraw() {
    let mut out = VecDeque::new();
    let mut s = FdbSync::new(NodeId(1), 1, ip(1));
    s.set_eligible(&elig(&[(2, 5, 2), (3, 5, 3)]), &mut out);
    assert!(apply(&mut s, &adv(2, 5, 4, 1, M, true), &mut out));
    assert_eq!(next(&mut out), inst(M, ip(2)));
    // Move: node 3 claims with a higher mobility.
    assert!(apply(&mut s, &adv(3, 5, 1, 2, M, true), &mut out));
    assert_eq!(next(&mut out), inst(M, ip(3)));
    // Stale re-delivery of node 2's claim changes nothing.
    assert!(!apply(&mut s, &adv(2, 5, 4, 1, M, true), &mut out));
    assert_eq!(next(&mut out), None);
    // Node 3 dies: falls back to node 2's still-live claim.
    s.set_eligible(&elig(&[(2, 5, 2)]), &mut out);
    assert_eq!(next(&mut out), inst(M, ip(2)));
    // Node 2 restarts (new generation): old claims vanish.
    s.set_eligible(&elig(&[(2, 6, 2)]), &mut out);
    assert_eq!(next(&mut out), rm(M));
    // And adverts of the old generation are ignored.
    assert_eq!(
        s.admit(NodeId(2), 5, &adv(2, 5, 9, 9, M, true).entry),
        Admit::UnknownOwner
    );
    assert!(!apply(&mut s, &adv(2, 5, 9, 9, M, true), &mut out));
    assert_eq!(next(&mut out), None);
}

/// A claim far ahead (u64::MAX included) is refused; no arithmetic on it can overflow; later
/// honest moves still win.
#[test]
fn far_ahead_values_are_refused_and_nothing_wraps() {
    let mut out = VecDeque::new();
    let mut s = FdbSync::new(NodeId(1), 1, ip(1));
    s.set_eligible(&elig(&[(2, 1, 2), (3, 1, 3)]), &mut out);
    for (seq, mob) in [(u64::MAX, 1), (1, u64::MAX), (MAX_JUMP + 1, 1), (1, MAX_JUMP + 1)] {
        let a = adv(2, 1, seq, mob, M, true);
        assert_eq!(s.admit(a.owner, 1, &a.entry), Admit::TooFar, "{seq} {mob}");
        assert!(!apply(&mut s, &a, &mut out));
    }
    assert_eq!(next(&mut out), None);
    // Exactly at the bound is fine.
    assert!(apply(&mut s, &adv(2, 1, MAX_JUMP, MAX_JUMP, M, true), &mut out));
    assert!(apply(&mut s, &adv(3, 1, 1, MAX_JUMP + 1, M, true), &mut out));
    assert_eq!(s.installed().get(&k(M)).map(|e| e.0), Some(ip(3)));
    // Our own counters keep working next to huge received values.
    let kk = key();
    let a = s.local_change(k(M), Vec::new(), true, &kk).unwrap();
    assert_eq!(a.entry.seq, 1);
    assert_eq!(a.entry.mobility, MAX_JUMP + 2);
}

#[test]
fn local_counters_saturate() {
    let mut out = VecDeque::new();
    let mut s = FdbSync::new(NodeId(1), 1, ip(1));
    s.set_eligible(&elig(&[(2, 1, 2)]), &mut out);
    // Held state near the top (reachable only through ~2^44 accepted claims, each a bounded step).
    if let Some(st) = s.owners.get_mut(&NodeId(2)) {
        st.put(k(M), adv(2, 1, 1, u64::MAX - 1, M, true).entry);
    }
    let kk = key();
    assert_eq!(
        s.local_change(k(M), Vec::new(), true, &kk)
            .unwrap()
            .entry
            .mobility,
        u64::MAX
    );
    let b = s.local_change(k(M), Vec::new(), true, &kk).unwrap();
    assert_eq!(b.entry.mobility, u64::MAX, "saturates, never wraps");
    // An entry already at the top admits nothing further and panics on nothing.
    assert_ne!(
        s.admit(NodeId(2), 1, &adv(2, 1, 2, u64::MAX, M, true).entry),
        Admit::TooFar
    );
}

#[test]
fn anti_entropy_converges() {
    let mut out = VecDeque::new();
    let kk = key();
    let mut a = FdbSync::new(NodeId(1), 1, ip(1));
    let mut b = FdbSync::new(NodeId(2), 1, ip(2));
    a.set_eligible(&elig(&[(2, 1, 2)]), &mut out);
    b.set_eligible(&elig(&[(1, 1, 1)]), &mut out);
    a.local_change(k(M), Vec::new(), true, &kk);
    b.local_change(k(MacAddr([2, 0, 0, 0, 0, 2])), Vec::new(), true, &kk);
    assert_ne!(a.fdb_digest(), b.fdb_digest());
    for d in a.dumps_for(&b.digest()) {
        merge(&mut b, &d, &mut out);
    }
    for d in b.dumps_for(&a.digest()) {
        merge(&mut a, &d, &mut out);
    }
    assert_eq!(a.fdb_digest(), b.fdb_digest());
    assert_eq!(a.resolved(), b.resolved());
    assert_eq!(
        a.installed().get(&k(MacAddr([2, 0, 0, 0, 0, 2]))).map(|e| e.0),
        Some(ip(2))
    );
    assert_eq!(b.installed().get(&k(M)).map(|e| e.0), Some(ip(1)));
}

/// Anti-entropy ships a peer that is behind only the tail it lacks, nothing to a peer that is
/// ahead, and the whole table to one with the same highest seq but a gap; pieces resume after
/// the last position shipped and see entries changed meanwhile at the end.
#[test]
fn differing_ships_the_missing_tail() {
    let mut out = VecDeque::new();
    let mut a = FdbSync::new(NodeId(1), 1, ip(1));
    let mut b = FdbSync::new(NodeId(1), 1, ip(1));
    let mut c = FdbSync::new(NodeId(1), 1, ip(1));
    for s in [&mut a, &mut b, &mut c] {
        s.set_eligible(&elig(&[(7, 3, 7)]), &mut out);
    }
    let m = |i: u8| MacAddr([2, 0, 0, 0, 1, i]);
    for seq in 1..=10u64 {
        apply(&mut a, &adv(7, 3, seq, 1, m(seq as u8), true), &mut out);
        if seq <= 5 {
            apply(&mut b, &adv(7, 3, seq, 1, m(seq as u8), true), &mut out);
        }
        if seq != 4 {
            apply(&mut c, &adv(7, 3, seq, 1, m(seq as u8), true), &mut out);
        }
    }
    let owner = |v: Vec<(NodeId, u64, u64)>| v.into_iter().find(|d| d.0 == NodeId(7));
    assert_eq!(owner(a.differing(&b.digest())), Some((NodeId(7), 3, 6)));
    assert_eq!(owner(b.differing(&a.digest())), None);
    assert_eq!(owner(a.differing(&c.digest())), Some((NodeId(7), 3, 0)));
    assert_eq!(owner(a.differing(&a.digest())), None);
    let seqs = |s: &FdbSync, p: Pos| {
        s.entries_from(NodeId(7), 3, p)
            .map(|(p, _)| p.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&a, Pos::FromSeq(6)), vec![6, 7, 8, 9, 10]);
    let after = a
        .entries_from(NodeId(7), 3, Pos::FromSeq(0))
        .nth(2)
        .map(|(p, _)| p)
        .unwrap();
    assert_eq!(seqs(&a, Pos::After(after)), vec![4, 5, 6, 7, 8, 9, 10]);
    // MAC 2 changes (seq 11): it moves to the end of the order.
    apply(&mut a, &adv(7, 3, 11, 1, m(2), false), &mut out);
    assert_eq!(seqs(&a, Pos::After(after)), vec![4, 5, 6, 7, 8, 9, 10, 11]);
    assert_eq!(seqs(&a, Pos::FromSeq(0)), vec![1, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    assert!(seqs(&a, Pos::FromSeq(12)).is_empty());
    assert_eq!(a.entries_from(NodeId(7), 2, Pos::FromSeq(0)).count(), 0);
}

/// Beyond the per-owner cap a new MAC is refused (before any signature check), while updates and
/// withdrawals of held MACs still apply; a withdrawal makes room again.
#[test]
fn per_owner_cap() {
    let mut out = VecDeque::new();
    let mut s = FdbSync::new(NodeId(1), 1, ip(1));
    s.set_max_per_owner(3);
    s.set_eligible(&elig(&[(2, 1, 2), (3, 1, 3)]), &mut out);
    let m = |k: u8| MacAddr([2, 0, 0, 0, 1, k]);
    for k in 1..=3 {
        assert!(apply(&mut s, &adv(2, 1, k as u64, 1, m(k), true), &mut out));
    }
    let over = adv(2, 1, 4, 1, m(4), true);
    assert_eq!(s.admit(over.owner, over.generation, &over.entry), Admit::OverCap);
    assert!(!apply(&mut s, &over, &mut out));
    // Another owner has its own allowance.
    assert!(apply(&mut s, &adv(3, 1, 1, 1, m(9), true), &mut out));
    // A newer entry for a held MAC (a MAC move back, say) is not a new MAC.
    assert!(apply(&mut s, &adv(2, 1, 5, 2, m(1), true), &mut out));
    // A withdrawal applies and makes room.
    assert!(apply(&mut s, &adv(2, 1, 6, 1, m(2), false), &mut out));
    assert!(apply(&mut s, &adv(2, 1, 7, 1, m(4), true), &mut out));
    let held: Vec<MacAddr> = s
        .resolved()
        .into_iter()
        .filter(|(_, o)| *o == NodeId(2))
        .map(|((_, m), _)| m)
        .collect();
    assert_eq!(held, vec![m(1), m(3), m(4)]);
}

#[test]
fn own_mac_is_never_installed() {
    let mut out = VecDeque::new();
    let mut s = FdbSync::new(NodeId(1), 1, ip(1));
    s.set_eligible(&elig(&[(2, 1, 2)]), &mut out);
    apply(&mut s, &adv(2, 1, 1, 1, M, true), &mut out);
    assert_eq!(next(&mut out), inst(M, ip(2)));
    // The MAC shows up locally later (mobility 2 > 1): we win, remote entry removed.
    s.local_change(k(M), Vec::new(), true, &key());
    s.refresh(k(M), &mut out);
    assert_eq!(next(&mut out), rm(M));
}

/// IPs travel with the entry; an IP change re-installs; flood sets list exactly the other owners
/// with a present entry on each VNI, and change only when that set does.
#[test]
fn ips_and_flood_sets_per_vni() {
    let mut out = VecDeque::new();
    let mut s = FdbSync::new(NodeId(1), 1, ip(1));
    s.set_eligible(&elig(&[(2, 1, 2), (3, 1, 3)]), &mut out);
    assert!(out.is_empty(), "no MACs: no flood sets");
    let w = Vni::new(9).unwrap();
    let mut a = adv(2, 1, 1, 1, M, true);
    a.entry.ips = vec![IpAddr::from([10, 20, 0, 5])];
    assert!(apply(&mut s, &a, &mut out));
    assert_eq!(
        out.drain(..).collect::<Vec<_>>(),
        vec![
            Output::FdbInstall {
                vni: v(),
                mac: M,
                vtep: ip(2),
                ips: a.entry.ips.clone()
            },
            Output::FloodSet {
                vni: v(),
                vteps: vec![ip(2)]
            },
        ]
    );
    // Same MAC on another VNI by node 3: independent entry, its own flood set.
    let mut b = adv(3, 1, 1, 1, M, true);
    b.entry.vni = 9;
    assert!(apply(&mut s, &b, &mut out));
    assert_eq!(
        out.drain(..).collect::<Vec<_>>(),
        vec![
            Output::FdbInstall {
                vni: w,
                mac: M,
                vtep: ip(3),
                ips: vec![]
            },
            Output::FloodSet {
                vni: w,
                vteps: vec![ip(3)]
            },
        ]
    );
    assert_eq!(s.flood_set(v()), vec![ip(2)]);
    // IP change: re-installed, flood set unchanged.
    let mut a2 = adv(2, 1, 2, 1, M, true);
    a2.entry.ips = vec![IpAddr::from([10, 20, 0, 6])];
    assert!(apply(&mut s, &a2, &mut out));
    assert_eq!(
        out.drain(..).collect::<Vec<_>>(),
        vec![Output::FdbInstall {
            vni: v(),
            mac: M,
            vtep: ip(2),
            ips: a2.entry.ips.clone()
        }]
    );
    // Too many IPs or VNI 0 / out of range: malformed.
    let mut bad = adv(2, 1, 3, 1, M, true);
    bad.entry.ips = vec![ip(9); crate::messages::MAX_IPS_PER_ENTRY + 1];
    assert_eq!(s.admit(NodeId(2), 1, &bad.entry), Admit::Malformed);
    bad.entry.ips.clear();
    bad.entry.vni = 1 << 24;
    assert_eq!(s.admit(NodeId(2), 1, &bad.entry), Admit::Malformed);
    bad.entry.vni = 0;
    assert_eq!(s.admit(NodeId(2), 1, &bad.entry), Admit::Malformed);
    // Withdrawal: removed, flood set of that VNI ends (empty list).
    assert!(apply(&mut s, &adv(2, 1, 4, 1, M, false), &mut out));
    assert_eq!(
        out.drain(..).collect::<Vec<_>>(),
        vec![
            Output::FdbRemove { vni: v(), mac: M },
            Output::FloodSet {
                vni: v(),
                vteps: vec![]
            }
        ]
    );
    // Owner 3 dies: its entry and flood set go.
    s.set_eligible(&elig(&[(2, 1, 2)]), &mut out);
    assert_eq!(
        out.drain(..).collect::<Vec<_>>(),
        vec![
            Output::FdbRemove { vni: w, mac: M },
            Output::FloodSet {
                vni: w,
                vteps: vec![]
            }
        ]
    );
    // Our own entries never enter a flood set.
    s.local_change((w, M), vec![], true, &key());
    s.refresh((w, M), &mut out);
    assert!(s.flood_set(w).is_empty());
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn advert() -> impl Strategy<Value = FdbAdvert> {
        (2u64..5, 1u64..3, 1u64..30, 1u64..30, 0u8..4, any::<bool>()).prop_map(
            |(owner, generation, seq, mobility, m, present)| {
                adv(
                    owner,
                    generation,
                    seq,
                    mobility,
                    MacAddr([2, 0, 0, 0, 0, m]),
                    present,
                )
            },
        )
    }

    proptest! {
        /// Order-independence (the CRDT property anti-entropy relies on): the same adverts applied in
        /// any order, directly or via dumps, give the same resolution, FDB and digest.
        #[test]
        fn any_order_same_state(adverts in proptest::collection::vec(advert(), 0..60), rot in 0usize..60) {
            let elig = elig(&[(2, 1, 2), (3, 1, 3), (4, 2, 4)]);
            let mut out = VecDeque::new();
            let mut a = FdbSync::new(NodeId(1), 1, ip(1));
            let mut b = FdbSync::new(NodeId(1), 1, ip(1));
            let mut c = FdbSync::new(NodeId(1), 1, ip(1));
            for s in [&mut a, &mut b, &mut c] {
                s.set_eligible(&elig, &mut out);
            }
            for x in &adverts {
                apply(&mut a, x, &mut out);
            }
            let mut shuffled = adverts.clone();
            shuffled.reverse();
            if !shuffled.is_empty() {
                let k = rot % shuffled.len();
                shuffled.rotate_left(k);
            }
            for x in &shuffled {
                apply(&mut b, x, &mut out);
            }
            for d in a.dumps_for(&c.digest()) {
                merge(&mut c, &d, &mut out);
            }
            prop_assert_eq!(a.resolved(), b.resolved());
            prop_assert_eq!(a.installed(), b.installed());
            prop_assert_eq!(a.fdb_digest(), b.fdb_digest());
            prop_assert_eq!(a.installed(), c.installed());
            prop_assert_eq!(a.fdb_digest(), c.fdb_digest());
        }

        /// Arbitrary (including extreme) values never panic and never install anything for an
        /// unknown owner.
        #[test]
        fn extreme_values_never_panic(seq in any::<u64>(), mob in any::<u64>(), owner in 0u64..6, g in any::<u64>()) {
            let mut out = VecDeque::new();
            let mut s = FdbSync::new(NodeId(1), 1, ip(1));
            s.set_eligible(&elig(&[(2, 1, 2)]), &mut out);
            let a = adv(owner, g, seq, mob, M, true);
            let applied = apply(&mut s, &a, &mut out);
            prop_assert!(!applied || (owner == 2 && g == 1 && seq <= MAX_JUMP && mob <= MAX_JUMP));
            let _ = s.local_change(k(M), Vec::new(), true, &key());
        }
    }
}
