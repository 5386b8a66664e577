use super::*;

fn csr() -> SigningRequest {
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.push(0x04);
    spki.extend((1..=64u8).collect::<Vec<_>>());
    SigningRequest {
        node_id: NodeId(0x0102_0304_0506_0708),
        spki_der: spki,
        vteps: vec![IpAddr::from([10, 0, 0, 7])],
    }
}

#[test]
fn request_bytes_are_stable() {
    // postcard: node id varint, spki len + bytes, vteps len, IpAddr enum tag 0 (V4) + 4 bytes.
    let c = csr();
    let bytes = postcard::to_allocvec(&c).unwrap();
    assert_eq!(
        &bytes[..9],
        &[0x88, 0x8e, 0x98, 0xa8, 0xc0, 0xe0, 0x80, 0x81, 0x01]
    );
    assert_eq!(bytes[9], 91, "spki length");
    assert_eq!(&bytes[10..36], &P256_SPKI_PREFIX[..]);
    assert_eq!(&bytes[bytes.len() - 6..], &[1, 0, 10, 0, 0, 7]);
    let req = JoinRequest::new(&[7; 32], &c);
    let wire = req.encode();
    assert_eq!(wire[0], JOIN_VERSION);
    assert_eq!(JoinRequest::decode(&wire), Ok((req.clone(), c)));
    // The proof is HMAC-SHA256(secret, domain || csr): recompute independently.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7; 32]);
    let mut m = DOMAIN_JOIN_PROOF.to_vec();
    m.extend_from_slice(&req.csr);
    assert_eq!(ring::hmac::sign(&key, &m).as_ref(), &req.proof[..]);
}

#[test]
fn proof_checks() {
    let req = JoinRequest::new(&[7; 32], &csr());
    assert!(req.proof_valid(&[7; 32]));
    assert!(!req.proof_valid(&[8; 32]), "another secret");
    // A relay that changes the request (e.g. the VTEP) breaks the proof.
    let mut c = csr();
    c.vteps = vec![IpAddr::from([10, 0, 0, 9])];
    let forged = JoinRequest {
        csr: postcard::to_allocvec(&c).unwrap(),
        ..req.clone()
    };
    assert!(!forged.proof_valid(&[7; 32]));
    let mut flipped = req.clone();
    flipped.proof[31] ^= 1;
    assert!(!flipped.proof_valid(&[7; 32]));
}

#[test]
fn structural_refusals() {
    let secret = [1; 32];
    let mut c = csr();
    c.vteps.clear();
    assert_eq!(
        JoinRequest::decode(&JoinRequest::new(&secret, &c).encode()),
        Err(RequestError::Vteps)
    );
    c.vteps = vec![IpAddr::from([1, 1, 1, 1]); 5];
    assert_eq!(
        JoinRequest::decode(&JoinRequest::new(&secret, &c).encode()),
        Err(RequestError::Vteps)
    );
    let mut c = csr();
    c.spki_der[3] ^= 0xff; // not the P-256 prefix
    assert_eq!(
        JoinRequest::decode(&JoinRequest::new(&secret, &c).encode()),
        Err(RequestError::Key)
    );
    let mut wire = JoinRequest::new(&secret, &csr()).encode();
    wire[0] = 1;
    assert_eq!(JoinRequest::decode(&wire), Err(RequestError::Version(1)));
    let mut wire = JoinRequest::new(&secret, &csr()).encode();
    wire.push(0);
    assert_eq!(
        JoinRequest::decode(&wire),
        Err(RequestError::Malformed),
        "trailing byte"
    );
    assert_eq!(JoinRequest::decode(&[]), Err(RequestError::Malformed));
    assert_eq!(
        JoinRequest::decode(&vec![0; MAX_REQUEST + 1]),
        Err(RequestError::TooLarge)
    );
}

/// A grant for `vtep` signed by `ca`, as an admitter would answer it.
fn grant(ca: &auth::ClusterCa, vtep: IpAddr) -> Grant {
    let pending = PendingKey::generate().unwrap();
    let node_id = NodeId(u64::from_le_bytes(random8().unwrap()));
    let node_cert_pem = ca.issue(node_id, &pending.spki_der(), &[vtep]).unwrap();
    let attestation = Attestation::issue(
        &ca.signer().unwrap(),
        node_id,
        vec![vtep],
        false,
        pending.public_key_raw(),
    )
    .unwrap();
    Grant {
        peer: SocketAddr::from(([10, 0, 0, 1], 7948)),
        node_id,
        pending,
        node_cert_pem,
        ca_cert_pem: ca.cert_pem().to_string(),
        attestation,
        admitters: vec![SocketAddr::from(([10, 0, 0, 1], 7948))],
        began: std::time::Instant::now(),
    }
}

/// A dir that an interrupted `--init-cluster` left (a CA key, no credential) is refused before the
/// join dials anyone: it fails at once with the fix, not after a connection attempt to `peer`
/// (nothing listens there), and once the dir is cleared nothing else stands in the way.
#[test]
fn a_join_into_a_dir_with_a_leftover_ca_key_is_refused_before_dialling() {
    let vtep = IpAddr::from([10, 0, 0, 7]);
    let state = StateDir::new(auth::tests::tempdir("leftover")).with_vteps(vec![vtep]);
    std::fs::create_dir_all(state.path()).unwrap();
    std::fs::write(state.path().join("ca.key"), "not this cluster's").unwrap();
    let token = JoinToken {
        ca_fingerprint: [7; 32],
        secret: [9; 32],
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let peer = SocketAddr::from(([127, 0, 0, 1], 9));
    let e = rt.block_on(join_cluster(peer, &token, &state, vtep)).unwrap_err();
    assert!(
        matches!(e, TransportError::Auth(AuthError::LeftoverCaKey(_))),
        "{e}"
    );
    assert!(e.to_string().contains("remove the directory"), "{e}");
    assert!(!state.is_initialised());
    std::fs::remove_file(state.path().join("ca.key")).unwrap();
    state.check_joinable().unwrap();
    let _ = std::fs::remove_dir_all(state.path());
}

/// A store that fails at its last step (`node.crt`) leaves the dir uninitialised and no temp file of
/// its own; once the obstacle is gone, a new grant is stored and loads back as the same node.
#[test]
fn a_failed_store_leaves_no_credential_and_a_retry_stores_it() {
    let vtep = IpAddr::from([10, 0, 0, 7]);
    let state = StateDir::new(auth::tests::tempdir("grant")).with_vteps(vec![vtep]);
    let ca = auth::ClusterCa::generate().unwrap();
    let blocker = state.path().join(".node.crt.tmp");
    std::fs::create_dir_all(&blocker).unwrap();
    let e = grant(&ca, vtep).store(&state).unwrap_err();
    assert!(e.to_string().contains(".node.crt.tmp"), "{e}");
    assert!(!state.is_initialised());
    assert!(matches!(
        state.load_credential(),
        Err(AuthError::NotInitialised(_))
    ));
    let temps: Vec<String> = std::fs::read_dir(state.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") && *n != ".node.crt.tmp")
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
    std::fs::remove_dir(&blocker).unwrap();
    let g = grant(&ca, vtep);
    let id = g.node_id;
    // Debug names the grant and nothing else: never the pending key.
    assert_eq!(
        format!("{g:?}"),
        format!("Grant {{ node_id: {}, peer: {} }}", g.node_id, g.peer)
    );
    let stored = g.store(&state).unwrap();
    assert_eq!(stored.node_id, id);
    assert_eq!(state.load_credential().unwrap().node_id, id);
    let _ = std::fs::remove_dir_all(state.path());
}

proptest::proptest! {
    #[test]
    fn decoder_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1200)) {
        let _ = JoinRequest::decode(&data);
        let _ = JoinResponse::decode(&data);
    }

    #[test]
    fn every_truncation_or_flip_is_refused_or_unproven(cut in 0usize..300, flip in 0usize..300, bit in 0u8..8) {
        let secret = [3; 32];
        let wire = JoinRequest::new(&secret, &csr()).encode();
        if cut < wire.len() {
            proptest::prop_assert!(JoinRequest::decode(&wire[..cut]).is_err());
        }
        if flip < wire.len() {
            let mut w = wire.clone();
            w[flip] ^= 1 << bit;
            if let Ok((r, _)) = JoinRequest::decode(&w) {
                proptest::prop_assert!(!r.proof_valid(&secret), "a flipped request still proves");
            }
        }
    }
}
