//! Validation: the defaults, errors that name the fix, and each option from its flag and its key.

use super::*;

#[test]
fn defaults() {
    let c = parse(&["--peer", "10.0.0.2"]).unwrap();
    assert_eq!(c.vni.get(), 1);
    assert_eq!(c.port, 4789);
    assert_eq!(c.bridge, "ovl0");
    assert_eq!(c.tap, "ovl1");
    assert_eq!(c.admin.to_string(), "127.0.0.1:7947");
    assert_eq!(c.ageing_s, 300);
    assert_eq!(c.block_grace_s, 60);
    assert_eq!(
        parse(&["--init-cluster", "--local", "10.0.0.1", "--block-grace", "5"])
            .unwrap()
            .block_grace_s,
        5
    );
    assert!(matches!(
        parse(&["--init-cluster", "--local", "10.0.0.1", "--block-grace", "0"]),
        Err(ConfigError::BlockGrace)
    ));
    assert_eq!(c.log_format, LogFormat::Text);
    assert!(c.offload);
    assert_eq!(
        parse(&["--peer", "10.0.0.2", "--vni", "42"]).unwrap().tap,
        "ovl42"
    );
}

#[test]
fn errors_name_the_fix() {
    let e = parse(&["--peer", "10.0.0.2", "--vni", "16777216"]).unwrap_err();
    assert!(e.to_string().contains("0..=16777215"), "{e}");
    let e = parse(&["--peer", "10.0.0.2", "--bridge", "a-very-long-bridge-name"]).unwrap_err();
    assert!(e.to_string().contains("at most 15 bytes"), "{e}");
    assert!(matches!(parse(&[]).unwrap_err(), ConfigError::NoPeers));
    assert!(matches!(
        parse(&["--peer", "10.0.0.2", "--tap", "a b"]).unwrap_err(),
        ConfigError::BadName { .. }
    ));
    assert!(matches!(
        parse(&["--peer", "10.0.0.2", "--admin", "0.0.0.0:7947"]).unwrap_err(),
        ConfigError::AdminNotLoopback(_)
    ));
    assert!(Args::try_parse_from(["overlayd", "--peer", "notanip"]).is_err());
    assert!(Args::try_parse_from(["overlayd", "--log-format", "xml"]).is_err());
    assert!(matches!(
        parse(&["--token", "OVL1-x"]).unwrap_err(),
        ConfigError::TokenWithoutPeer
    ));
    assert!(Args::try_parse_from(["overlayd", "--init-cluster", "--token", "t"]).is_err());
}

/// Issue 12: "a bad token repeats its hint twice". The hint comes from the token parser, once.
#[test]
fn bad_token_says_its_hint_once() {
    for bad in ["garbage", "OVL1-00-11", "OVL1-x-y-z"] {
        let e = parse(&["--peer", "10.0.0.2", "--token", bad]).unwrap_err();
        assert!(matches!(e, ConfigError::Token(_)), "{e:?}");
        let msg = e.to_string();
        assert_eq!(msg.matches("overlayctl token").count(), 1, "{msg}");
        assert_eq!(msg.matches("copy").count(), 1, "{msg}");
        assert!(msg.starts_with("--token: invalid join token"), "{msg}");
    }
}

#[test]
fn cluster_modes() {
    assert_eq!(parse(&["--peer", "10.0.0.2"]).unwrap().cluster, Cluster::Static);
    let c = parse(&["--init-cluster"]).unwrap();
    assert_eq!(c.cluster, Cluster::Init);
    assert!(c.peers.is_empty());
    assert_eq!(c.gossip_port, 7948);
}

#[test]
fn learn_any_source_flag_and_key() {
    assert!(
        parse(&["--peer", "10.0.0.2", "--learn-any-source"])
            .unwrap()
            .learn_any_source
    );
    assert!(
        !parse(&["--peer", "10.0.0.2"]).unwrap().learn_any_source,
        "only peers may send by default"
    );
    assert!(matches!(
        parse(&["--init-cluster", "--learn-any-source"]).unwrap_err(),
        ConfigError::LearnAnySourceInCluster
    ));
    let dir = Scratch::new("las");
    let p = dir.write("o.toml", "peer = [\"10.0.0.2\"]\nlearn-any-source = true\n");
    assert!(
        parse(&["--config", p.to_str().unwrap()])
            .unwrap()
            .learn_any_source
    );
    let p = dir.write("o.toml", "peer = [\"10.0.0.2\"]\nlearn-any-source = false\n");
    assert!(
        !parse(&["--config", p.to_str().unwrap()])
            .unwrap()
            .learn_any_source
    );
}

#[test]
fn admin_socket_and_token_file() {
    use std::os::unix::fs::PermissionsExt;
    let c = parse(&["--peer", "10.0.0.2"]).unwrap();
    assert_eq!(c.admin_socket, PathBuf::from("/run/overlayd/admin.sock"));
    let c = parse(&["--peer", "10.0.0.2", "--admin-socket", "/tmp/x/a.sock"]).unwrap();
    assert_eq!(c.admin_socket, PathBuf::from("/tmp/x/a.sock"));
    let long = format!("/{}", "a".repeat(107));
    assert!(matches!(
        parse(&["--peer", "10.0.0.2", "--admin-socket", &long]).unwrap_err(),
        ConfigError::AdminSocketTooLong { .. }
    ));
    let dir = Scratch::new("tokfile");
    let garbage = dir.write("garbage", "not a token\n");
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    let g = garbage.to_str().unwrap();
    // The file is read and parsed like --token (a garbage token is refused as such).
    assert!(matches!(
        parse(&["--peer", "10.0.0.2", "--token-file", g]).unwrap_err(),
        ConfigError::Token(_)
    ));
    let tf = dir.write("token", "x");
    for mode in [0o640, 0o604, 0o620, 0o644] {
        std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = parse(&["--peer", "10.0.0.2", "--token-file", tf.to_str().unwrap()]).unwrap_err();
        assert!(matches!(e, ConfigError::TokenFileMode { .. }), "{mode:o}: {e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
    let e = parse(&["--peer", "10.0.0.2", "--token-file", "/nonexistent/tok"]).unwrap_err();
    assert!(matches!(e, ConfigError::TokenFile { .. }), "{e}");
    assert!(Args::try_parse_from(["overlayd", "--token", "t", "--token-file", "f"]).is_err());
    assert!(Args::try_parse_from(["overlayd", "--init-cluster", "--token-file", "f"]).is_err());
    // Config keys.
    let p = dir.write(
        "o.toml",
        &format!("peer = [\"10.0.0.2\"]\nadmin-socket = \"/tmp/y.sock\"\ntoken-file = \"{g}\"\n"),
    );
    let e = parse(&["--config", p.to_str().unwrap()]).unwrap_err();
    assert!(matches!(e, ConfigError::Token(_)), "token-file key is read: {e}");
    assert!(matches!(
        parse(&["--config", p.to_str().unwrap(), "--init-cluster"]).unwrap_err(),
        ConfigError::InitWithTokenFile
    ));
    let p = dir.write(
        "o.toml",
        "peer = [\"10.0.0.2\"]\nadmin-socket = \"/tmp/y.sock\"\n",
    );
    assert_eq!(
        parse(&["--config", p.to_str().unwrap()]).unwrap().admin_socket,
        PathBuf::from("/tmp/y.sock")
    );
}

#[test]
fn flood_limits_flags_and_keys() {
    let c = parse(&["--peer", "10.0.0.2"]).unwrap();
    assert_eq!(c.max_local_macs, 4096);
    assert_eq!(c.bum_pps, 1000);
    let c = parse(&["--peer", "10.0.0.2", "--max-local-macs", "64", "--bum-pps", "0"]).unwrap();
    assert_eq!((c.max_local_macs, c.bum_pps), (64, 0));
    let e = parse(&["--peer", "10.0.0.2", "--max-local-macs", "0"]).unwrap_err();
    assert!(matches!(e, ConfigError::MaxLocalMacs), "{e}");
    let dir = Scratch::new("flood");
    let p = dir.write(
        "o.toml",
        "peer = [\"10.0.0.2\"]\nmax-local-macs = 10\nbum-pps = 50\n",
    );
    let c = parse(&["--config", p.to_str().unwrap(), "--bum-pps", "70"]).unwrap();
    assert_eq!((c.max_local_macs, c.bum_pps), (10, 70), "flags win over the file");
}

#[test]
fn src_ports() {
    assert_eq!(parse(&["--peer", "10.0.0.2"]).unwrap().src_ports, 64);
    assert_eq!(
        parse(&["--peer", "10.0.0.2", "--src-ports", "1"])
            .unwrap()
            .src_ports,
        1
    );
    assert_eq!(
        parse(&["--peer", "10.0.0.2", "--src-ports", "1024"])
            .unwrap()
            .src_ports,
        1024
    );
    for bad in ["0", "1025"] {
        let e = parse(&["--peer", "10.0.0.2", "--src-ports", bad]).unwrap_err();
        assert!(matches!(e, ConfigError::SrcPorts(_)), "{e:?}");
        assert!(e.to_string().contains("use 1..=1024"), "{e}");
    }
    // The same key in a config file, and the flag winning over it.
    let d = Scratch::new("src-ports");
    let p = d.write("o.toml", "peer = [\"10.0.0.2\"]\nsrc-ports = 8\n");
    let f = p.to_str().unwrap();
    assert_eq!(parse(&["--config", f]).unwrap().src_ports, 8);
    assert_eq!(parse(&["--config", f, "--src-ports", "2"]).unwrap().src_ports, 2);
}

#[test]
fn busy_poll_us() {
    let get = |a: &[&str]| parse(a).unwrap().busy_poll_us;
    assert_eq!(get(&["--peer", "10.0.0.2"]), DEFAULT_BUSY_POLL_US);
    assert_eq!(get(&["--peer", "10.0.0.2", "--busy-poll-us", "0"]), 0);
    assert_eq!(get(&["--peer", "10.0.0.2", "--busy-poll-us", "10000"]), 10_000);
    let e = parse(&["--peer", "10.0.0.2", "--busy-poll-us", "10001"]).unwrap_err();
    assert!(matches!(e, ConfigError::BusyPollUs(10_001)), "{e:?}");
    assert!(e.to_string().contains("use 0..=10000"), "{e}");
    assert!(Args::try_parse_from(["overlayd", "--peer", "10.0.0.2", "--busy-poll-us", "-1"]).is_err());
    // The same key in a config file, the flag winning over it, and --print-config giving it back.
    let d = Scratch::new("busy-poll");
    let p = d.write("o.toml", "peer = [\"10.0.0.2\"]\nbusy-poll-us = 75\n");
    let f = p.to_str().unwrap();
    let c = parse(&["--config", f]).unwrap();
    assert_eq!(c.busy_poll_us, 75);
    assert_eq!(c.to_options().busy_poll_us, Some(75));
    assert_eq!(get(&["--config", f, "--busy-poll-us", "5"]), 5);
}

#[test]
fn busy_poll_spin() {
    let get = |a: &[&str]| parse(a).unwrap().busy_poll_spin;
    assert_eq!(get(&["--peer", "10.0.0.2"]), BusyPollSpin::Keepers);
    for (v, want) in [
        ("keepers", BusyPollSpin::Keepers),
        ("loops", BusyPollSpin::Loops),
        ("both", BusyPollSpin::Both),
    ] {
        assert_eq!(get(&["--peer", "10.0.0.2", "--busy-poll-spin", v]), want);
    }
    // A typo names the accepted values instead of silently falling back to the default.
    let e = Args::try_parse_from(["overlayd", "--peer", "10.0.0.2", "--busy-poll-spin", "loop"]).unwrap_err();
    assert!(e.to_string().contains("keepers, loops, both"), "{e}");
    let d = Scratch::new("busy-poll-spin");
    let p = d.write("o.toml", "peer = [\"10.0.0.2\"]\nbusy-poll-spin = \"both\"\n");
    let f = p.to_str().unwrap();
    let c = parse(&["--config", f]).unwrap();
    assert_eq!(c.busy_poll_spin, BusyPollSpin::Both);
    assert_eq!(c.to_options().busy_poll_spin, Some(BusyPollSpin::Both));
    assert_eq!(
        get(&["--config", f, "--busy-poll-spin", "loops"]),
        BusyPollSpin::Loops
    );
    let p = d.write("bad.toml", "peer = [\"10.0.0.2\"]\nbusy-poll-spin = \"spin\"\n");
    assert!(parse(&["--config", p.to_str().unwrap()]).is_err());
}

#[test]
fn workers() {
    // Default: the CPUs available, at most 8.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let d = parse(&["--peer", "10.0.0.2"]).unwrap().workers;
    assert_eq!(d, cpus.clamp(1, 8));
    assert_eq!(d, crate::config::default_workers());
    for (flag, want) in [("1", 1), ("4", 4), ("64", 64)] {
        assert_eq!(
            parse(&["--peer", "10.0.0.2", "--workers", flag]).unwrap().workers,
            want
        );
    }
    for bad in ["0", "65", "1000"] {
        let e = parse(&["--peer", "10.0.0.2", "--workers", bad]).unwrap_err();
        assert!(matches!(e, ConfigError::Workers(_)), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("--workers {bad} is out of range")), "{msg}");
        assert!(msg.contains("use 1..=64 forwarding workers"), "{msg}");
    }
    // Not a number at all: clap refuses it before validation.
    let v = [
        "overlayd",
        "--state-dir",
        STATE,
        "--peer",
        "10.0.0.2",
        "--workers",
        "many",
    ];
    assert!(Args::try_parse_from(v).is_err());
    // The TOML key, the flag winning over it, and a bad value in the file.
    let d = Scratch::new("workers");
    let p = d.write("o.toml", "peer = [\"10.0.0.2\"]\nworkers = 3\n");
    let f = p.to_str().unwrap();
    assert_eq!(parse(&["--config", f]).unwrap().workers, 3);
    assert_eq!(parse(&["--config", f, "--workers", "2"]).unwrap().workers, 2);
    let p = d.write("bad.toml", "peer = [\"10.0.0.2\"]\nworkers = 0\n");
    let e = parse(&["--config", p.to_str().unwrap()]).unwrap_err();
    assert!(matches!(e, ConfigError::Workers(0)), "{e:?}");
}

#[test]
fn admitter_flags_and_keys() {
    let tok = control::auth::JoinToken {
        ca_fingerprint: [0x11; 32],
        secret: [0x22; 32],
    }
    .to_string();
    let join = ["--peer", "10.0.0.2", "--token", tok.as_str()];
    assert_eq!(parse(&join).unwrap().admitter_key, None);
    let mut a = join.to_vec();
    a.extend(["--admitter", "--ca-key-file", "/k"]);
    let c = parse(&a).unwrap();
    assert!(matches!(c.cluster, Cluster::Join(_)));
    assert_eq!(c.admitter_key, Some(PathBuf::from("/k")));
    round_trip(&a);
    // Each half alone says what is missing; an admitter must be (or become) a member.
    let mut a = join.to_vec();
    a.push("--admitter");
    assert!(matches!(parse(&a).unwrap_err(), ConfigError::AdmitterWithoutKey));
    let mut a = join.to_vec();
    a.extend(["--ca-key-file", "/k"]);
    assert!(matches!(
        parse(&a).unwrap_err(),
        ConfigError::CaKeyWithoutAdmitter
    ));
    for mode in [&["--peer", "10.0.0.2"][..], &["--init-cluster"][..]] {
        let mut a = mode.to_vec();
        a.extend(["--admitter", "--ca-key-file", "/k"]);
        let e = parse(&a).unwrap_err();
        assert!(matches!(e, ConfigError::AdmitterNotMember), "{a:?}: {e}");
        assert!(e.to_string().contains("--token"), "{e}");
    }
    // The same from the config file, and split between the file and the flags.
    let d = Scratch::new("adm");
    let p = d.write("o.toml", "admitter = true\nca-key-file = \"/k2\"\n");
    let mut a = join.to_vec();
    a.extend(["--config", p.to_str().unwrap()]);
    assert_eq!(parse(&a).unwrap().admitter_key, Some(PathBuf::from("/k2")));
    let p = d.write("half.toml", "ca-key-file = \"/k3\"\n");
    let mut a = join.to_vec();
    a.extend(["--config", p.to_str().unwrap(), "--admitter"]);
    assert_eq!(parse(&a).unwrap().admitter_key, Some(PathBuf::from("/k3")));
    let p = d.write("nokey.toml", "admitter = true\n");
    let mut a = join.to_vec();
    a.extend(["--config", p.to_str().unwrap()]);
    assert!(matches!(parse(&a).unwrap_err(), ConfigError::AdmitterWithoutKey));
}

#[test]
fn networks_from_flags_and_file() {
    // The legacy flags alone: one network `default` on ovl0/ovl<VNI>.
    let c = parse(&["--peer", "10.0.0.2", "--vni", "7"]).unwrap();
    let names: Vec<_> = c
        .networks
        .iter()
        .map(|n| (n.name.as_str(), n.vni.get(), n.bridge.as_str(), n.tap.as_str()))
        .collect();
    assert_eq!(names, [("default", 7, "ovl0", "ovl7")]);
    // --network without --vni: no `default`.
    let c = parse(&[
        "--peer",
        "10.0.0.2",
        "--network",
        "a:100",
        "--network",
        "b:200:10.20.0.0/16",
    ])
    .unwrap();
    let names: Vec<_> = c
        .networks
        .iter()
        .map(|n| (n.name.as_str(), n.vni.get(), n.bridge.as_str(), n.tap.as_str()))
        .collect();
    assert_eq!(
        names,
        [("a", 100, "ovbr100", "ovl100"), ("b", 200, "ovbr200", "ovl200")]
    );
    assert_eq!(c.networks[1].subnet.unwrap().to_string(), "10.20.0.0/16");
    assert!(!c.legacy);
    // With --vni as well: `default` first.
    let c = parse(&["--peer", "10.0.0.2", "--vni", "5", "--network", "a:100"]).unwrap();
    assert_eq!(
        c.networks.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["default", "a"]
    );
    // [[network]] tables, with mtu and egress.
    let d = Scratch::new("nets");
    let p = d.write(
        "n.toml",
        "peer = [\"10.0.0.2\"]\n[[network]]\nname = \"blue\"\nvni = 10\nsubnet = \"10.30.0.0/16\"\nmtu = 1400\negress = true\n\n[[network]]\nname = \"red\"\nvni = 11\n",
    );
    let c = parse(&["--config", p.to_str().unwrap()]).unwrap();
    assert_eq!(c.networks.len(), 2);
    let blue = &c.networks[0];
    assert_eq!((blue.mtu, blue.egress), (Some(1400), true));
    assert_eq!(blue.gateway(), Some("10.30.0.1".parse().unwrap()));
    // Flags replace the file's list.
    let c = parse(&["--config", p.to_str().unwrap(), "--network", "green:12"]).unwrap();
    assert_eq!(
        c.networks.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["green"]
    );
    let bad = d.write(
        "bad.toml",
        "peer = [\"10.0.0.2\"]\n[[network]]\nname = \"x\"\nvni = 1\ncolour = 3\n",
    );
    assert!(parse(&["--config", bad.to_str().unwrap()]).is_err());
    round_trip(&[
        "--peer",
        "10.0.0.2",
        "--network",
        "a:100",
        "--network",
        "b:200:fd20::/64",
    ]);
    round_trip(&["--peer", "10.0.0.2", "--vni", "3", "--network", "a:100"]);
    round_trip(&["--config", p.to_str().unwrap()]);
}

#[test]
fn network_collisions_are_errors_naming_the_fix() {
    let e = |a: &[&str]| {
        let mut v = vec!["--peer", "10.0.0.2"];
        v.extend_from_slice(a);
        parse(&v).unwrap_err().to_string()
    };
    assert!(e(&["--network", "a:1", "--network", "a:2"]).contains("two networks are named a"));
    assert!(e(&["--network", "a:1", "--network", "b:1"]).contains("both use VNI 1"));
    assert!(e(&["--vni", "1", "--network", "b:1"]).contains("both use VNI 1"));
    assert!(e(&["--vni", "1", "--network", "default:2"]).contains("two networks are named default"));
    // The default network's TAP named like another network's device.
    assert!(e(&["--vni", "1", "--tap", "ovl100", "--network", "a:100"]).contains("interface ovl100"));
    assert!(e(&["--network", "a:1", "--bridge", "br0"]).contains("add --vni N"));
    assert!(e(&["--network", "bad name:1"]).contains("letters"));
    let clap_err = Args::try_parse_from(["overlayd", "--network", "a"])
        .unwrap_err()
        .to_string();
    assert!(clap_err.contains("NAME:VNI"), "{clap_err}");
}

#[test]
fn docker_plugin_flag_and_key() {
    assert_eq!(
        parse(&["--peer", "10.0.0.2"]).unwrap().docker_plugin,
        None,
        "off by default"
    );
    let c = parse(&["--peer", "10.0.0.2", "--docker-plugin", "tcp:127.0.0.1:9100"]).unwrap();
    assert_eq!(
        c.docker_plugin,
        Some(crate::docker::DockerAddr::Tcp("127.0.0.1:9100".parse().unwrap()))
    );
    assert_eq!(
        c.to_options().docker_plugin.as_deref(),
        Some("tcp:127.0.0.1:9100")
    );
    assert_eq!(
        parse(&["--docker-plugin", "--peer", "10.0.0.2"])
            .unwrap()
            .docker_plugin,
        Some(crate::docker::DockerAddr::Unix(
            "/run/docker/plugins/overlayd.sock".into()
        )),
        "the flag alone serves the default socket"
    );
    assert!(matches!(
        parse(&["--peer", "10.0.0.2", "--docker-plugin", "tcp:10.0.0.1:9100"]).unwrap_err(),
        ConfigError::DockerPlugin(_)
    ));
    let file = parse_file(
        Path::new("t.toml"),
        "peer = [\"10.0.0.2\"]\ndocker-plugin = \"unix:/run/docker/plugins/overlayd.sock\"\n",
    )
    .unwrap();
    assert_eq!(
        file.validate().unwrap().docker_plugin,
        Some(crate::docker::DockerAddr::Unix(
            "/run/docker/plugins/overlayd.sock".into()
        ))
    );
}

#[test]
fn worker_loops() {
    let get = |a: &[&str]| parse(a).unwrap().worker_loops;
    assert_eq!(get(&["--peer", "10.0.0.2"]), WorkerLoops::Split);
    assert_eq!(
        get(&["--peer", "10.0.0.2", "--worker-loops", "combined"]),
        WorkerLoops::Combined
    );
    assert_eq!(
        get(&["--peer", "10.0.0.2", "--worker-loops", "split"]),
        WorkerLoops::Split
    );
    let e = Args::try_parse_from(["overlayd", "--peer", "10.0.0.2", "--worker-loops", "one"]).unwrap_err();
    assert!(e.to_string().contains("split, combined"), "{e}");
    let d = Scratch::new("worker-loops");
    let p = d.write("o.toml", "peer = [\"10.0.0.2\"]\nworker-loops = \"combined\"\n");
    let c = parse(&["--config", p.to_str().unwrap()]).unwrap();
    assert_eq!(c.worker_loops, WorkerLoops::Combined);
    assert_eq!(c.to_options().worker_loops, Some(WorkerLoops::Combined));
}

/// A combined worker never spins itself: busy-polling with `--busy-poll-spin loops` or `both` there would
/// silently give no loop spin, so it is refused, naming the spin that works. Keepers, the split loops, or
/// no busy-poll at all are accepted.
#[test]
fn combined_workers_spin_only_through_keepers() {
    let base = ["--peer", "10.0.0.2", "--worker-loops", "combined"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        parse(&a)
    };
    for spin in ["loops", "both"] {
        let e = with(&["--busy-poll-us", "200", "--busy-poll-spin", spin]).unwrap_err();
        assert!(
            matches!(e, ConfigError::BusyPollSpinCombined(s) if s == spin),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("--busy-poll-spin keepers"), "{msg}");
        assert!(msg.contains(&format!("--busy-poll-spin {spin}")), "{msg}");
        // Without busy-poll nobody spins anyway; split loops do spin themselves.
        assert!(with(&["--busy-poll-spin", spin]).is_ok());
        let split = parse(&[
            "--peer",
            "10.0.0.2",
            "--busy-poll-us",
            "200",
            "--busy-poll-spin",
            spin,
        ])
        .unwrap();
        assert_eq!(split.worker_loops, WorkerLoops::Split);
    }
    let c = with(&["--busy-poll-us", "200", "--busy-poll-spin", "keepers"]).unwrap();
    assert_eq!((c.busy_poll_us, c.busy_poll_spin), (200, BusyPollSpin::Keepers));
    assert!(with(&["--busy-poll-us", "200"]).is_ok());
    // The same from a config file.
    let d = Scratch::new("combined-spin");
    let p = d.write(
        "o.toml",
        "peer = [\"10.0.0.2\"]\nworker-loops = \"combined\"\nbusy-poll-us = 200\nbusy-poll-spin = \"loops\"\n",
    );
    let e = parse(&["--config", p.to_str().unwrap()]).unwrap_err();
    assert!(matches!(e, ConfigError::BusyPollSpinCombined("loops")), "{e:?}");
}
