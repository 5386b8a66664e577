use super::*;
use proptest::prelude::*;

fn env(cmd: &str) -> HashMap<&'static str, &'static str> {
    let mut m = HashMap::new();
    m.insert("CNI_COMMAND", Box::leak(cmd.to_string().into_boxed_str()) as &str);
    m.insert("CNI_CONTAINERID", "abc123");
    m.insert("CNI_NETNS", "/run/netns/pod1");
    m.insert("CNI_IFNAME", "eth0");
    m.insert("CNI_PATH", "/opt/cni/bin");
    m
}

const CONF: &str =
    r#"{"cniVersion":"1.0.0","name":"overlay","type":"overlayd-cni","network":"app","socket":"/tmp/a.sock"}"#;

#[test]
fn env_parses_every_verb() {
    for (c, want) in [
        ("ADD", Command::Add),
        ("DEL", Command::Del),
        ("CHECK", Command::Check),
        ("VERSION", Command::Version),
    ] {
        let e = env_from(&env(c)).unwrap();
        assert_eq!(e.command, want);
    }
    let e = env_from(&env("ADD")).unwrap();
    assert_eq!(e.netns, "/run/netns/pod1");
    assert_eq!(e.ifname, "eth0");
    assert_eq!(e.container_id, "abc123");
}

#[test]
fn env_errors_use_code_4() {
    let mut m = env("GC2");
    assert_eq!(env_from(&m).unwrap_err().code, Code::InvalidEnvironment);
    m.remove("CNI_COMMAND");
    assert_eq!(env_from(&m).unwrap_err().code, Code::InvalidEnvironment);
    let mut m = env("ADD");
    m.insert("CNI_IFNAME", "way-too-long-ifname0");
    assert_eq!(env_from(&m).unwrap_err().code, Code::InvalidEnvironment);
    let mut m = env("ADD");
    m.insert("CNI_CONTAINERID", "-bad");
    assert_eq!(env_from(&m).unwrap_err().code, Code::InvalidEnvironment);
    let mut m = env("ADD");
    m.remove("CNI_NETNS");
    assert_eq!(env_from(&m).unwrap_err().code, Code::InvalidEnvironment);
    let mut m = env("ADD");
    m.insert("CNI_NETNS", "relative/path");
    assert_eq!(env_from(&m).unwrap_err().code, Code::InvalidEnvironment);
    // DEL tolerates a missing namespace (already gone).
    let mut m = env("DEL");
    m.remove("CNI_NETNS");
    assert_eq!(env_from(&m).unwrap().netns, "");
}

#[test]
fn cni_args_ip_and_mac() {
    assert_eq!(parse_args("").unwrap(), (None, None));
    assert_eq!(
        parse_args("IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.20.0.9/16;MAC=02:00:00:00:00:09").unwrap(),
        (Some("10.20.0.9/16".into()), Some("02:00:00:00:00:09".into()))
    );
    assert_eq!(parse_args("IP=fd00::9").unwrap().0.as_deref(), Some("fd00::9"));
    for bad in [
        "IP=x",
        "IP=10.0.0.1/40",
        "MAC=02:00",
        "MAC=zz:00:00:00:00:00",
        "novalue",
    ] {
        assert_eq!(
            parse_args(bad).unwrap_err().code,
            Code::InvalidEnvironment,
            "{bad}"
        );
    }
    let c = parse_config(CONF.as_bytes()).unwrap();
    let mut m = env("ADD");
    m.insert("CNI_ARGS", "IP=10.20.0.9/16;MAC=02:00:00:00:00:09");
    let e = env_from(&m).unwrap();
    let v: Value = serde_json::from_str(&attach_body(&c, &e)).unwrap();
    assert_eq!(
        v,
        json!({"netns":"/run/netns/pod1","network":"app","ifname":"eth0","ip":"10.20.0.9/16","mac":"02:00:00:00:00:09"})
    );
}

#[test]
fn names() {
    assert!(valid_ifname("eth0"));
    assert!(!valid_ifname(""));
    assert!(!valid_ifname(".."));
    assert!(!valid_ifname("a/b"));
    assert!(!valid_ifname("a:b"));
    assert!(!valid_ifname("a b"));
    assert!(!valid_ifname("0123456789abcdef"));
    assert!(valid_container_id("a.b_c-1"));
    assert!(!valid_container_id(""));
    assert!(!valid_container_id("_a"));
    assert!(valid_network_name("app"));
    assert!(!valid_network_name("0123456789abcdef"));
    assert!(!valid_network_name("a/b"));
}

#[test]
fn the_shipped_conflist_is_accepted() {
    // A runtime hands each plugin of a list its entry plus the list's "cniVersion" and "name".
    let list: Value = serde_json::from_str(include_str!("../dist/overlayd-cni.conflist")).unwrap();
    let plugins = list["plugins"].as_array().unwrap();
    let mine: Vec<&Value> = plugins.iter().filter(|p| p["type"] == "overlayd-cni").collect();
    assert_eq!(mine.len(), 1);
    let mut conf = mine[0].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    let c = parse_config(conf.to_string().as_bytes()).unwrap();
    assert_eq!(c.socket, DEFAULT_SOCKET);
    assert_eq!(c.network, "app");
}

#[test]
fn config_parses_with_default_socket() {
    let c = parse_config(CONF.as_bytes()).unwrap();
    assert_eq!(c.network, "app");
    assert_eq!(c.socket, "/tmp/a.sock");
    assert_eq!(c.cni_version, "1.0.0");
    let c =
        parse_config(br#"{"cniVersion":"1.0.0","name":"n","type":"overlayd-cni","network":"app"}"#).unwrap();
    assert_eq!(c.socket, DEFAULT_SOCKET);
    assert!(c.prev_result.is_none());
}

#[test]
fn config_errors_have_spec_codes() {
    let code = |s: &str| parse_config(s.as_bytes()).unwrap_err().code;
    assert_eq!(code("not json"), Code::Decode);
    assert_eq!(code(""), Code::Decode);
    assert_eq!(code(r#"{"cniVersion":1}"#), Code::Decode);
    assert_eq!(
        code(r#"{"cniVersion":"0.2.0","name":"n","type":"overlayd-cni","network":"app"}"#),
        Code::IncompatibleVersion
    );
    assert_eq!(
        code(r#"{"name":"n","type":"overlayd-cni","network":"app"}"#),
        Code::InvalidConfig
    );
    assert_eq!(
        code(r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","network":"app"}"#),
        Code::InvalidConfig
    );
    assert_eq!(
        code(r#"{"cniVersion":"1.0.0","name":"n","type":"overlayd-cni"}"#),
        Code::InvalidConfig
    );
    assert_eq!(
        code(r#"{"cniVersion":"1.0.0","name":"n","type":"overlayd-cni","network":"bad/name"}"#),
        Code::InvalidConfig
    );
    assert_eq!(
        code(r#"{"cniVersion":"1.0.0","name":"n","type":"overlayd-cni","network":"a","socket":"rel"}"#),
        Code::InvalidConfig
    );
    assert_eq!(code(&" ".repeat(MAX_CONFIG + 1)), Code::Decode);
    assert_eq!(config_version(CONF.as_bytes()).as_deref(), Some("1.0.0"));
    assert_eq!(config_version(b"x"), None);
}

#[test]
fn error_and_version_objects() {
    let e = CniError::new(Code::TryAgainLater, "busy", "later");
    let v: Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
    assert_eq!(v["code"], 11);
    assert_eq!(v["msg"], "busy");
    assert_eq!(v["details"], "later");
    assert_eq!(v["cniVersion"], "1.0.0");
    let v: Value = serde_json::from_str(&version_json("1.0.0")).unwrap();
    assert_eq!(v["supportedVersions"][0], "1.0.0");
}

const ATTACHED: &str = r#"{"network":"app","netns":"/run/netns/pod1","ifname":"eth0","host_ifname":"ovh1a2b","mac":"02:00:00:00:00:05","ip":"10.20.0.5/16","gateway":"10.20.0.1","mtu":1450}"#;

#[test]
fn attach_and_detach_bodies() {
    let c = parse_config(CONF.as_bytes()).unwrap();
    let e = env_from(&env("ADD")).unwrap();
    let v: Value = serde_json::from_str(&attach_body(&c, &e)).unwrap();
    assert_eq!(
        v,
        json!({"netns":"/run/netns/pod1","network":"app","ifname":"eth0"})
    );
    let v: Value = serde_json::from_str(&detach_body(&c, &e)).unwrap();
    assert_eq!(
        v,
        json!({"netns":"/run/netns/pod1","network":"app","ifname":"eth0"})
    );
}

#[test]
fn result_has_interfaces_ips_routes_mtu() {
    let a = parse_attachment(ATTACHED).unwrap();
    let v: Value = serde_json::from_str(&result_json("1.0.0", "/run/netns/pod1", &a)).unwrap();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["interfaces"][0]["name"], "ovh1a2b");
    assert!(v["interfaces"][0].get("sandbox").is_none());
    assert_eq!(v["interfaces"][1]["name"], "eth0");
    assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/pod1");
    assert_eq!(v["interfaces"][1]["mac"], "02:00:00:00:00:05");
    assert_eq!(v["interfaces"][1]["mtu"], 1450);
    assert_eq!(v["ips"][0]["address"], "10.20.0.5/16");
    assert_eq!(v["ips"][0]["interface"], 1);
    assert_eq!(v["ips"][0]["gateway"], "10.20.0.1");
    assert_eq!(v["routes"], json!([{"dst":"0.0.0.0/0","gw":"10.20.0.1"}]));

    // No egress: no gateway, no route.
    let a = parse_attachment(
        r#"{"network":"app","netns":"/n","ifname":"eth0","host_ifname":"h","mac":"02:00:00:00:00:05","ip":"fd00::5/64"}"#,
    )
    .unwrap();
    let v: Value = serde_json::from_str(&result_json("1.0.0", "/n", &a)).unwrap();
    assert!(v["ips"][0].get("gateway").is_none());
    assert_eq!(v["routes"], json!([]));
    assert!(v["interfaces"][1].get("mtu").is_none());
}

#[test]
fn malformed_attach_answers_are_io_errors() {
    for body in [
        "",
        "{}",
        r#"{"network":"app","netns":"/n","ifname":"eth0","host_ifname":"h","mac":"m","ip":"10.20.0.5"}"#,
        r#"{"network":"app","netns":"/n","ifname":"eth0","host_ifname":"h","mac":"m","ip":"10.20.0.5/33"}"#,
        r#"{"network":"app","netns":"/n","ifname":"eth0","host_ifname":"h","mac":"m","ip":"10.20.0.5/16","gateway":"fd00::1"}"#,
        r#"{"network":"app","netns":"/n","ifname":"eth0","host_ifname":"h","mac":"m","ip":"10.20.0.5/16","gateway":"x"}"#,
    ] {
        assert_eq!(parse_attachment(body).unwrap_err().code, Code::Io, "{body}");
    }
}

#[test]
fn check_finds_the_attachment_and_compares_prev_result() {
    let mut c = parse_config(CONF.as_bytes()).unwrap();
    let e = env_from(&env("CHECK")).unwrap();
    let list = format!("[{ATTACHED}]");
    check(&c, &e, &list).unwrap();
    assert_eq!(check(&c, &e, "[]").unwrap_err().code, Code::UnknownContainer);
    assert_eq!(check(&c, &e, "nope").unwrap_err().code, Code::Io);
    c.prev_result = Some(json!({"ips":[{"address":"10.20.0.5/16","interface":1}]}));
    check(&c, &e, &list).unwrap();
    c.prev_result = Some(json!({"ips":[{"address":"10.20.0.6/16","interface":1}]}));
    assert_eq!(check(&c, &e, &list).unwrap_err().code, Code::InvalidConfig);
    c.network = "other".into();
    c.prev_result = None;
    assert_eq!(check(&c, &e, &list).unwrap_err().code, Code::UnknownContainer);
}

#[test]
fn netns_forms() {
    assert!(same_netns("/run/netns/pod1", "/run/netns/pod1"));
    assert!(same_netns("pod1", "/run/netns/pod1"));
    assert!(same_netns("/var/run/netns/pod1", "/run/netns/pod1"));
    assert!(!same_netns("pod2", "/run/netns/pod1"));
    assert!(!same_netns("/proc/5/ns/net", "/proc/6/ns/net"));
    assert!(!same_netns("", "/run/netns/"));
    let c = parse_config(CONF.as_bytes()).unwrap();
    let e = env_from(&env("CHECK")).unwrap();
    let list = format!("[{}]", ATTACHED.replace("/run/netns/pod1", "pod1"));
    check(&c, &e, &list).unwrap();
}

#[test]
fn admin_errors_map_to_codes() {
    use crate::ctl::{CtlError, Target};
    let t = Target::Socket("/x".into());
    let st = |status| CtlError::Status {
        target: t.clone(),
        status,
        message: "m".into(),
    };
    assert_eq!(
        admin_error(&CtlError::NoSocket { target: t.clone() }).code,
        Code::TryAgainLater
    );
    assert_eq!(admin_error(&st(503)).code, Code::TryAgainLater);
    assert_eq!(admin_error(&st(404)).code, Code::InvalidConfig);
    assert_eq!(admin_error(&st(500)).code, Code::Io);
    assert!(del_is_done(&st(404), true));
    assert!(del_is_done(&st(400), false));
    assert!(!del_is_done(&st(400), true));
    assert!(!del_is_done(&CtlError::NoSocket { target: t }, false));
}

proptest! {
    #[test]
    fn config_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_config(&bytes);
        let _ = config_version(&bytes);
    }

    #[test]
    fn truncated_configs_are_refused(cut in 0usize..CONF.len()) {
        prop_assert!(parse_config(&CONF.as_bytes()[..cut]).is_err());
    }

    #[test]
    fn args_parser_never_panics(s in ".{0,200}") {
        let _ = parse_args(&s);
    }

    #[test]
    fn attach_parser_never_panics(s in ".{0,300}") {
        let _ = parse_attachment(&s);
        let _ = split_cidr(&s);
    }
}
