//! Signatures bind FDB entries and leave notices to their owner, generation and fields.

use super::*;
use crate::identity::tests::{ident, signer};

/// An entry verifies only under its owner's key, owner id and generation, and with its own fields.
#[test]
fn entries_and_leaves_are_bound_to_their_owner() {
    let ca = signer();
    let (ka, kb) = (signer(), signer());
    let a = ident(&ca, &ka, 1, 1, 5);
    let b = ident(&ca, &kb, 2, 2, 5);
    let ips = vec![std::net::IpAddr::from([10, 0, 0, 9])];
    let e = FdbEntry::sign(&ka, a.id, 5, (7, [2, 0, 0, 0, 0, 1]), ips.clone(), 3, 3, true);
    assert!(e.verify(&a, 5));
    assert!(!e.verify(&b, 5), "another owner's table");
    assert!(!e.verify(&a, 6), "another generation");
    for f in 0..6 {
        let mut x = e.clone();
        match f {
            0 => x.seq = u64::MAX,
            1 => x.mobility += 1,
            2 => x.present = false,
            3 => x.vni = 8,
            4 => x.ips.push(std::net::IpAddr::from([10, 0, 0, 10])),
            _ => x.mac[5] = 9,
        }
        assert!(!x.verify(&a, 5), "field {f}");
    }
    // A forger signing with its own key for another owner fails.
    let f = FdbEntry::sign(&kb, a.id, 5, (7, [2, 0, 0, 0, 0, 1]), ips, 4, 4, false);
    assert!(!f.verify(&a, 5));
    let l = LeaveNotice::sign(&a, &ka).unwrap();
    assert!(l.verify_sig());
    let forged = LeaveNotice {
        identity: a.clone(),
        sig: LeaveNotice::sign(&b, &kb).unwrap().sig,
    };
    assert!(!forged.verify_sig());
}
