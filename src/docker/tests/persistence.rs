//! `docker.json`: the driver's state survives a restart; a corrupt or hostile file is refused, never a panic.

use super::*;
use proptest::prelude::*;

#[test]
fn state_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("overlayd-docker-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(dir.join(state::STATE_FILE));
    let fake = Fake::default();
    let d = Driver::new(fake, Some(&dir)).unwrap();
    create(&d, NID, "10.20.0.0/16", json!({"network": "app"}), json!({})).unwrap();
    ok(
        &d,
        "/NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.20.0.5/16"}}),
    );
    ok(
        &d,
        "/NetworkDriver.Join",
        json!({"NetworkID": NID, "EndpointID": EID}),
    );
    let nets = d.backend().networks.lock().unwrap().clone();
    drop(d);
    // A restarted daemon: the same cluster networks, a fresh driver reading docker.json.
    let d = Driver::new(Fake::default(), Some(&dir)).unwrap();
    *d.backend().networks.lock().unwrap() = nets;
    d.backend().veths.lock().unwrap().insert("ovhbbbbbbbbbb".into());
    assert_eq!(d.snapshot().endpoints[EID].host_ifname, "ovhbbbbbbbbbb");
    ok(
        &d,
        "/NetworkDriver.Leave",
        json!({"NetworkID": NID, "EndpointID": EID}),
    );
    assert!(d.backend().veths.lock().unwrap().is_empty());
    ok(
        &d,
        "/NetworkDriver.DeleteEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID}),
    );
    ok(&d, "/NetworkDriver.DeleteNetwork", json!({"NetworkID": NID}));
    // A corrupt file is refused, naming the file.
    std::fs::write(dir.join(state::STATE_FILE), "{not json").unwrap();
    let e = Driver::new(Fake::default(), Some(&dir)).unwrap_err();
    assert!(e.to_string().contains("docker.json"), "{e}");
    std::fs::write(
        dir.join(state::STATE_FILE),
        r#"{"networks":{},"endpoints":{"x":{"network_id":"n","network":"app","address":"10.0.0.1/8","mac":"02:00:00:00:00:01","host_ifname":"bad/name","peer_ifname":"p","joined":true}}}"#,
    )
    .unwrap();
    assert!(Driver::new(Fake::default(), Some(&dir)).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest! {
    #[test]
    fn state_loader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let dir = std::env::temp_dir().join(format!("overlayd-docker-prop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(state::STATE_FILE), &bytes).unwrap();
        let _ = State::load(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
