//! The config file: merged under the flags, unknown keys and bad values named with their line, every flag a
//! key, `--print-config` read back to the same configuration, and the shipped `dist/overlayd.toml`.

use super::*;

#[test]
fn file_then_flags() {
    let d = Scratch::new("merge");
    let p = d.write(
        "o.toml",
        "peer = [\"10.0.0.2\", \"10.0.0.3\"]\nvni = 7\nbridge = \"br-x\"\nno-offload = true\nlog-format = \"json\"\n",
    );
    let p = p.to_str().unwrap();
    let c = parse(&["--config", p, "--vni", "9"]).unwrap();
    assert_eq!(c.peers.len(), 2);
    assert_eq!(c.vni.get(), 9, "flag wins");
    assert_eq!(c.bridge, "br-x");
    assert!(
        !c.offload,
        "a flag left unset does not undo the file's no-offload = true"
    );
    assert_eq!(c.log_format, LogFormat::Json);
    let c = parse(&["--config", p, "--peer", "10.0.0.9", "--log-format", "text"]).unwrap();
    assert_eq!(
        c.peers,
        vec![IpAddr::from([10, 0, 0, 9])],
        "--peer replaces the file's list"
    );
    assert_eq!(c.log_format, LogFormat::Text);
    let p2 = d.write("both.toml", "init-cluster = true\n");
    let e = parse(&[
        "--config",
        p2.to_str().unwrap(),
        "--peer",
        "10.0.0.2",
        "--token",
        "x",
    ])
    .unwrap_err();
    assert!(matches!(e, ConfigError::InitAndToken), "{e:?}");
}

#[test]
fn unknown_key_names_key_and_line() {
    let d = Scratch::new("unknown");
    let p = d.write("o.toml", "# comment\nvni = 7\n\npeers = [\"10.0.0.2\"]\n");
    let e = parse(&["--config", p.to_str().unwrap()]).unwrap_err();
    match &e {
        ConfigError::UnknownKey { line, key, .. } => assert_eq!((*line, key.as_str()), (4, "peers")),
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("line 4") && msg.contains("`peers`"), "{msg}");
    // Inside a table too (no tables exist, so the table name itself is the unknown key).
    let e = parse_file(Path::new("x.toml"), "vni = 1\n[no-such-table]\n").unwrap_err();
    assert!(
        matches!(&e, ConfigError::UnknownKey { line: 2, key, .. } if key == "no-such-table"),
        "{e:?}"
    );
    // A quoted key is named without its quotes.
    let e = parse_file(Path::new("x.toml"), "\"vnid\" = 1\n").unwrap_err();
    assert!(
        matches!(&e, ConfigError::UnknownKey { line: 1, key, .. } if key == "vnid"),
        "{e:?}"
    );
}

#[test]
fn bad_value_names_its_line() {
    let e = parse_file(Path::new("x.toml"), "vni = 1\nport = \"http\"\n").unwrap_err();
    match &e {
        ConfigError::Parse { line, .. } => assert_eq!(*line, 2, "{e}"),
        other => panic!("expected Parse, got {other:?}"),
    }
    let e = parse_file(Path::new("x.toml"), "vni = \n").unwrap_err();
    assert!(matches!(e, ConfigError::Parse { line: 1, .. }), "{e:?}");
    let e = parse_file(Path::new("x.toml"), "peer = [\"10.0.0.300\"]\n").unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
}

/// Every command-line option is also a config key (the config-only flags aside).
#[test]
fn every_flag_is_a_config_key() {
    let cmd = Args::command();
    let mut n = 0;
    for a in cmd.get_arguments() {
        let Some(long) = a.get_long() else { continue };
        if ["config", "print-config", "help", "version"].contains(&long) {
            continue;
        }
        n += 1;
        // Any value: a type error is fine, an unknown key is not.
        let r = parse_file(Path::new("x.toml"), &format!("{long} = 0\n"));
        assert!(
            !matches!(r, Err(ConfigError::UnknownKey { .. })),
            "--{long} has no config key: {r:?}"
        );
    }
    assert!(n >= 16, "only {n} flags found");
}

#[test]
fn print_config_round_trips() {
    round_trip(&["--peer", "10.0.0.2"]);
    round_trip(&[
        "--peer",
        "10.0.0.2",
        "--peer",
        "fd00::3",
        "--local",
        "10.0.0.1",
        "--vni",
        "4242",
        "--port",
        "8472",
        "--bridge",
        "br-o",
        "--tap",
        "t0",
        "--mtu",
        "1400",
        "--admin",
        "[::1]:9000",
        "--ageing",
        "60",
        "--block-grace",
        "90",
        "--fdb-max",
        "10",
        "--no-offload",
        "--gossip-port",
        "9999",
        "--log-format",
        "json",
    ]);
    round_trip(&["--init-cluster", "--local", "10.0.0.1"]);
    let token = control::auth::JoinToken {
        ca_fingerprint: [0xab; 32],
        secret: [0x01; 32],
    }
    .to_string();
    round_trip(&["--peer", "10.0.0.1", "--token", &token]);
    // From a file plus flags, too.
    let d = Scratch::new("rtfile");
    let p = d.write("in.toml", "peer = [\"10.0.0.5\"]\nageing = 5\n");
    round_trip(&["--config", p.to_str().unwrap(), "--vni", "3"]);
}

#[test]
fn dist_config_parses_and_states_the_defaults() {
    let text = include_str!("../../../dist/overlayd.toml");
    let file = parse_file(Path::new("dist/overlayd.toml"), text).unwrap_or_else(|e| panic!("{e}"));
    let mut file = file;
    // As shipped it needs peers (or a cluster); with one, every value it spells out is the default.
    file.peers = vec![IpAddr::from([10, 0, 0, 2])];
    let from_file = file.validate().unwrap_or_else(|e| panic!("{e}"));
    let defaults = Options {
        peers: vec![IpAddr::from([10, 0, 0, 2])],
        ..Options::default()
    }
    .validate()
    .unwrap();
    assert_eq!(from_file, defaults);
    // Every key is documented in it, set or commented out.
    let all = Config {
        local: Some(IpAddr::from([10, 0, 0, 1])),
        mtu: Some(1450),
        offload: false,
        cluster: Cluster::Init,
        ..defaults
    }
    .to_options();
    let toml::Value::Table(keys) = toml::Value::try_from(&all).unwrap() else {
        panic!("not a table")
    };
    for key in keys.keys().map(String::as_str).chain([
        "token",
        "token-file",
        "learn-any-source",
        "admitter",
        "ca-key-file",
    ]) {
        assert!(
            text.lines()
                .any(|l| l.trim_start_matches(['#', ' ']).starts_with(&format!("{key} = "))),
            "dist/overlayd.toml does not document `{key}`"
        );
    }
}

/// A joiner's `--print-config` names its token file, never the secret in it.
#[test]
fn print_config_never_prints_a_token_from_a_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("tokprint");
    let secret = format!("OVL1-{}-{}", "a".repeat(64), "b".repeat(64));
    let tf = dir.write("token", &secret);
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = parse(&["--peer", "10.0.0.2", "--token-file", tf.to_str().unwrap()]).unwrap();
    assert!(matches!(c.cluster, Cluster::Join(_)));
    let text = c.to_toml().unwrap();
    assert!(!text.contains(&"b".repeat(64)), "{text}");
    assert!(text.contains("token-file"), "{text}");
}
