use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::attest::Attestation;
use crate::membership::NodeId;
use crate::revocation::RevocationList;

pub(crate) fn tempdir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let p = std::env::temp_dir().join(format!(
        "overlayd-auth-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&p);
    p
}

#[test]
fn init_token_reload() {
    let vtep = std::net::IpAddr::from([10, 0, 0, 1]);
    let dir = StateDir::new(tempdir("init")).with_vteps(vec![vtep]);
    let cred = dir.init_cluster(vtep).unwrap();
    assert!(cred.attestation.admitter && cred.attestation.allows_vtep(vtep));
    assert_eq!(cred.attestation.node, cred.node_id);
    let ca_key = cred.ca_public_key().unwrap();
    assert_eq!(cred.attestation.verify(&ca_key), Ok(()));
    assert_eq!(cred.attestation.key, cred.signer().unwrap().public_key());
    assert!(dir.ca_signer().unwrap().is_some());
    // Another VTEP than the attested one: re-attested here (this node holds the CA key).
    let moved = StateDir::new(dir.path()).with_vteps(vec![std::net::IpAddr::from([10, 0, 0, 9])]);
    let c2 = moved.load_credential().unwrap();
    assert!(c2.attestation.allows_vtep(std::net::IpAddr::from([10, 0, 0, 9])));
    assert!(c2.attestation.admitter, "re-issuing keeps the admitter flag");
    let dir = StateDir::new(dir.path()).with_vteps(vec![vtep]);
    // Revocations persist and reload only if CA-signed.
    let mut list = RevocationList::default();
    let ca = dir.ca_signer().unwrap().unwrap();
    assert!(list.insert_verified(
        crate::revocation::Revocation::issue(&ca, NodeId(9)).unwrap(),
        &ca_key
    ));
    dir.save_revocations(&list).unwrap();
    assert!(dir.load_revocations(&ca_key).unwrap().contains(NodeId(9)));
    assert!(matches!(
        dir.init_cluster(vtep),
        Err(AuthError::AlreadyInitialised(_))
    ));
    let again = dir.load_credential().unwrap();
    assert_eq!(cred.node_id, again.node_id);
    assert_eq!(node_id_from_cert(&cred.chain[0]), Some(cred.node_id));
    let token = dir.join_token().unwrap();
    let line = token.to_string();
    assert!(!line.contains('\n'));
    assert_eq!(line.parse::<JoinToken>().unwrap(), token);
    assert_eq!(token.ca_fingerprint, fingerprint(&cred.ca));
    let dir_mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "state dir");
    for name in [CA_KEY, NODE_KEY, JOIN_SECRET, NODE_CERT, NODE_ATTEST, REVOKED] {
        let mode = fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    let _ = fs::remove_dir_all(dir.path());
}

#[test]
fn generations_increase() {
    let dir = StateDir::new(tempdir("gen"));
    let a = dir.next_generation().unwrap();
    let b = dir.next_generation().unwrap();
    assert!(b > a);
    fs::write(dir.path().join(GENERATION), (u64::MAX / 2).to_string()).unwrap();
    assert_eq!(
        dir.next_generation().unwrap(),
        u64::MAX / 2 + 1,
        "clock behind the stored value"
    );
    let _ = fs::remove_dir_all(dir.path());
}

/// Every state file that fails to parse (garbage, truncated, empty where a value is needed) is an
/// error that names the file and says what to do; nothing is silently reset.
#[test]
fn corrupt_state_files_are_clear_errors() {
    let vtep = std::net::IpAddr::from([10, 0, 0, 1]);
    let dir = StateDir::new(tempdir("corrupt")).with_vteps(vec![vtep]);
    let cred = dir.init_cluster(vtep).unwrap();
    let ca_key = cred.ca_public_key().unwrap();
    let ca = dir.ca_signer().unwrap().unwrap();
    let peer: SocketAddr = "10.0.0.2:7948".parse().unwrap();
    dir.save_peers(&[peer]).unwrap();
    dir.save_admitters(&[peer]).unwrap();
    let mut list = RevocationList::default();
    list.insert_verified(
        crate::revocation::Revocation::issue(&ca, NodeId(9)).unwrap(),
        &ca_key,
    );
    dir.save_revocations(&list).unwrap();
    let generation = dir.next_generation().unwrap();
    let path = |n: &str| dir.path().join(n);
    let pristine: Vec<(&str, Vec<u8>)> = [
        NODE_ID,
        NODE_CERT,
        NODE_KEY,
        NODE_ATTEST,
        CA_CERT,
        CA_KEY,
        JOIN_SECRET,
        GENERATION,
        PEERS,
        ADMITTERS,
        REVOKED,
    ]
    .into_iter()
    .map(|n| (n, fs::read(path(n)).unwrap()))
    .collect();
    // What loading each file means, as the daemon does at start.
    let load = |name: &str| -> Result<(), AuthError> {
        match name {
            GENERATION => dir.next_generation().map(drop),
            PEERS => dir.load_peers().map(drop),
            ADMITTERS => dir.load_admitters().map(drop),
            REVOKED => dir.load_revocations(&ca_key).map(drop),
            JOIN_SECRET => dir.join_token().map(drop),
            CA_KEY => dir.load_ca().map(drop),
            _ => dir.load_credential().map(drop),
        }
    };
    for (name, good) in &pristine {
        let truncated = good[..good.len() / 2].to_vec();
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x5a;
        let garbage = b"\xff\xfe not a state file \x00".to_vec();
        for (how, bytes) in [
            ("truncated", truncated),
            ("flipped", flipped),
            ("garbage", garbage),
        ] {
            fs::write(path(name), &bytes).unwrap();
            match load(name) {
                Err(e @ (AuthError::Corrupt { .. } | AuthError::CorruptState { .. })) => {
                    let msg = e.to_string();
                    assert!(msg.contains(name), "{name} {how}: names the file: {msg}");
                    assert!(
                        msg.contains("restore") || msg.contains("delete") || msg.contains("re-join"),
                        "{name} {how}: says what to do: {msg}"
                    );
                }
                // A flipped byte inside base64/hex text may still decode to another valid value
                // (then the signature/fingerprint checks catch it) or leave a PEM parsable.
                Ok(())
                    if how == "flipped"
                        && [
                            NODE_CERT,
                            CA_CERT,
                            NODE_KEY,
                            CA_KEY,
                            PEERS,
                            ADMITTERS,
                            GENERATION,
                            JOIN_SECRET,
                        ]
                        .contains(name) => {}
                // Half a decimal number is a smaller number: harmless, the next generation is
                // max(previous + 1, now in ms).
                Ok(()) if how == "truncated" && *name == GENERATION => {}
                // A bad certificate may surface as a mismatch with the attestation or key.
                Err(AuthError::WrongCaKey(_)) if *name == CA_KEY || *name == CA_CERT => {}
                other => panic!("{name} {how}: expected a corrupt-file error, got {other:?}"),
            }
        }
        fs::write(path(name), good).unwrap();
    }
    // Restored: everything loads again, and the generation kept increasing.
    assert!(dir.next_generation().unwrap() > generation);
    assert_eq!(dir.load_peers().unwrap(), vec![peer]);
    assert!(dir.load_revocations(&ca_key).unwrap().contains(NodeId(9)));
    dir.load_credential().unwrap();
    // A revocation that does not verify is not silently dropped.
    let rogue = crate::identity::tests::signer();
    let forged = postcard::to_allocvec(&vec![
        crate::revocation::Revocation::issue(&rogue, NodeId(7)).unwrap()
    ])
    .unwrap();
    fs::write(path(REVOKED), forged).unwrap();
    let e = dir.load_revocations(&ca_key).unwrap_err().to_string();
    assert!(e.contains("not signed by this cluster's CA"), "{e}");
    // Missing optional files are fine (a fresh node has none).
    for n in [PEERS, ADMITTERS, REVOKED] {
        fs::remove_file(path(n)).unwrap();
    }
    assert!(dir.load_peers().unwrap().is_empty() && dir.load_admitters().unwrap().is_empty());
    assert!(dir.load_revocations(&ca_key).unwrap().is_empty());
    let _ = fs::remove_dir_all(dir.path());
}

/// Writes are atomic and private: mode 0600 even under a permissive umask and over a file that
/// was 0644, no temp file left behind, a stale temp file (crash) or a symlink planted at the temp
/// path does not redirect the write.
#[test]
fn writes_are_atomic_and_private() {
    let dir = StateDir::new(tempdir("write"));
    dir.ensure_dir().unwrap();
    let target = dir.path().join(PEERS);
    fs::write(&target, "old\n").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    let outside = dir.path().with_extension("outside");
    fs::write(&outside, "untouched").unwrap();
    std::os::unix::fs::symlink(&outside, dir.path().join(format!(".{PEERS}.tmp"))).unwrap();
    let peer: SocketAddr = "10.0.0.3:7948".parse().unwrap();
    dir.save_peers(&[peer]).unwrap();
    assert_eq!(fs::read_to_string(&outside).unwrap(), "untouched");
    assert_eq!(dir.load_peers().unwrap(), vec![peer]);
    let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = fs::remove_file(&outside);
    let _ = fs::remove_dir_all(dir.path());
}

/// Several files in one batch (one directory fsync): all replaced, private, no temp file left; if one
/// of them cannot be staged, none is replaced and no temp file stays.
#[test]
fn batch_writes_replace_all_or_nothing() {
    let dir = StateDir::new(tempdir("batch"));
    dir.ensure_dir().unwrap();
    for n in [PEERS, ADMITTERS] {
        fs::write(dir.path().join(n), "old\n").unwrap();
    }
    let temps = || -> Vec<String> {
        fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    };
    // A directory where the second temp file goes: it cannot be removed or created over.
    let blocker = dir.path().join(format!(".{ADMITTERS}.tmp"));
    fs::create_dir(&blocker).unwrap();
    let e = dir
        .write_batch(&[(PEERS, b"10.0.0.2:7948\n"), (ADMITTERS, b"10.0.0.1:7948\n")])
        .unwrap_err();
    assert!(e.to_string().contains(ADMITTERS), "{e}");
    for n in [PEERS, ADMITTERS] {
        assert_eq!(
            fs::read_to_string(dir.path().join(n)).unwrap(),
            "old\n",
            "{n} replaced"
        );
    }
    fs::remove_dir(&blocker).unwrap();
    assert!(temps().is_empty(), "{:?}", temps());
    dir.write_batch(&[(PEERS, b"10.0.0.2:7948\n"), (ADMITTERS, b"10.0.0.1:7948\n")])
        .unwrap();
    assert_eq!(dir.load_peers().unwrap(), vec!["10.0.0.2:7948".parse().unwrap()]);
    assert_eq!(
        dir.load_admitters().unwrap(),
        vec!["10.0.0.1:7948".parse().unwrap()]
    );
    for n in [PEERS, ADMITTERS] {
        let mode = fs::metadata(dir.path().join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{n}");
    }
    assert!(temps().is_empty(), "{:?}", temps());
    let _ = fs::remove_dir_all(dir.path());
}

#[test]
fn bad_tokens_rejected() {
    for t in [
        "",
        "OVL1",
        "OVL2-00-00",
        &format!("OVL1-{}-{}", "0".repeat(64), "z".repeat(64)),
    ] {
        assert!(t.parse::<JoinToken>().is_err(), "{t}");
    }
}

#[test]
fn uninitialised_dir_says_what_to_do() {
    let dir = StateDir::new(tempdir("none"));
    let e = dir.load_credential().unwrap_err().to_string();
    assert!(e.contains("--init-cluster"), "{e}");
}

#[test]
fn admitter_state_and_promotion() {
    let vtep = std::net::IpAddr::from([10, 0, 0, 1]);
    let a = StateDir::new(tempdir("adm-a"));
    let cred = a.init_cluster(vtep).unwrap();
    assert!(cred.attestation.admitter);
    assert_eq!(cred.attestation.vteps, vec![vtep]);
    assert!(a.ca_signer().unwrap().is_some());
    // A member's state dir: same CA certificate, its own key and attestation, no CA key, no secret.
    let b = StateDir::new(tempdir("adm-b"));
    let admitter: SocketAddr = "10.0.0.1:7948".parse().unwrap();
    let ca = a.load_ca().unwrap();
    let pending = PendingKey::generate().unwrap();
    let bvtep = std::net::IpAddr::from([10, 0, 0, 2]);
    let cert = ca.issue(NodeId(2), &pending.spki_der(), &[bvtep]).unwrap();
    let att = Attestation::issue(
        &ca.signer().unwrap(),
        NodeId(2),
        vec![bvtep],
        false,
        pending.public_key_raw(),
    )
    .unwrap();
    let cb = b
        .store_joined(NodeId(2), &pending, &cert, ca.cert_pem(), &att, &[admitter])
        .unwrap();
    assert_eq!(
        b.load_admitters().unwrap(),
        vec![admitter],
        "stored with the credential"
    );
    assert!(!cb.attestation.admitter);
    assert!(b.ca_signer().unwrap().is_none());
    assert!(matches!(b.load_ca(), Err(AuthError::NotAdmitter(_))));
    assert!(matches!(b.rotate_join_secret(), Err(AuthError::NotAdmitter(_))));
    assert!(!b.path().join(CA_KEY).exists() && !b.path().join(JOIN_SECRET).exists());
    // A member cannot vouch for a new VTEP itself: it must re-join.
    let moved = StateDir::new(b.path()).with_vteps(vec![std::net::IpAddr::from([10, 0, 0, 7])]);
    assert!(matches!(
        moved.load_credential(),
        Err(AuthError::AttestationMismatch { .. })
    ));
    assert!(StateDir::new(b.path())
        .with_vteps(vec![bvtep])
        .load_credential()
        .is_ok());
    // Another cluster's key is refused; the right key promotes, with the token's secret.
    let foreign = ClusterCa::generate().unwrap();
    let e = b
        .promote_admitter(&foreign.key_pem, Path::new("/k"), Some([5; 32]))
        .unwrap_err();
    assert!(
        matches!(e, AuthError::WrongCaKey(_) | AuthError::Corrupt { .. }),
        "{e}"
    );
    assert!(!b.path().join(CA_KEY).exists(), "nothing written on a wrong key");
    let promoted = b
        .promote_admitter(&ca.key_pem, Path::new("/k"), Some([5; 32]))
        .unwrap();
    assert!(promoted.attestation.admitter);
    assert_eq!(promoted.attestation.vteps, vec![bvtep]);
    assert_eq!(b.join_secret().unwrap(), [5; 32]);
    assert!(b.ca_signer().unwrap().is_some());
    // A tampered attestation file makes the credential unloadable rather than trusted.
    let mut bytes = fs::read(b.path().join(NODE_ATTEST)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(b.path().join(NODE_ATTEST), &bytes).unwrap();
    assert!(matches!(b.load_credential(), Err(AuthError::Corrupt { .. })));
    assert_eq!(decode_attestation(&[]), None);
    for d in [&a, &b] {
        let _ = fs::remove_dir_all(d.path());
    }
}
