//! The CNI plugin `overlayd-cni` (CNI spec 1.0): parse and check what a container runtime hands the plugin
//! (environment `CNI_*` and the network configuration on stdin), translate ADD/DEL/CHECK into the daemon's
//! admin API (`POST /v1/attach`, `POST /v1/detach`, `GET /v1/attachments`) and build the CNI result or the
//! CNI error object. Everything here is pure; `src/bin/overlayd-cni.rs` does the I/O.
//!
//! Everything from the runtime is untrusted until checked here: the config (bounded by the binary's read),
//! the container id, the interface name, the netns path.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The spec versions whose result format this plugin produces (1.0's result is a subset of 1.1's).
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];
/// Admin socket used when the config names none.
pub const DEFAULT_SOCKET: &str = "/run/overlayd/admin.sock";
/// Longest configuration read from stdin.
pub const MAX_CONFIG: usize = 64 * 1024;

/// Well-known CNI error codes (spec "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
}

/// A CNI error: printed as JSON on stdout, then exit 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: &str, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.to_string(),
            details: details.into(),
        }
    }

    /// The spec's error object.
    pub fn to_json(&self, cni_version: &str) -> String {
        json!({
            "cniVersion": cni_version,
            "code": self.code as u32,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
    }
}

/// The CNI verbs this plugin serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

/// The validated `CNI_*` environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// Path of the network namespace (may be empty or gone for DEL).
    pub netns: String,
    pub ifname: String,
    /// `IP=` of `CNI_ARGS`: the address to use (static mode needs one), with or without prefix length.
    pub ip: Option<String>,
    /// `MAC=` of `CNI_ARGS`.
    pub mac: Option<String>,
}

/// Parse the environment as the spec defines it. `get` reads one variable (std::env::var in the binary).
pub fn parse_env(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
    let bad = |what: &str, d: String| CniError::new(Code::InvalidEnvironment, what, d);
    let command = match get("CNI_COMMAND").as_deref() {
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("VERSION") => Command::Version,
        Some(other) => {
            return Err(bad(
                "unsupported CNI_COMMAND",
                format!("{other:?}: overlayd-cni serves ADD, DEL, CHECK and VERSION"),
            ))
        }
        None => {
            return Err(bad(
                "CNI_COMMAND is not set",
                "set it to ADD, DEL, CHECK or VERSION".into(),
            ))
        }
    };
    if command == Command::Version {
        return Ok(Env {
            command,
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
            ip: None,
            mac: None,
        });
    }
    let container_id = get("CNI_CONTAINERID").unwrap_or_default();
    if !valid_container_id(&container_id) {
        return Err(bad(
            "invalid CNI_CONTAINERID",
            format!(
                "{container_id:?}: it must start with a letter or digit, then letters, digits, '_', '.', '-'"
            ),
        ));
    }
    let ifname = get("CNI_IFNAME").unwrap_or_default();
    if !valid_ifname(&ifname) {
        return Err(bad(
            "invalid CNI_IFNAME",
            format!("{ifname:?}: 1-15 bytes, no '/', ':' or whitespace, not '.' or '..'"),
        ));
    }
    let netns = get("CNI_NETNS").unwrap_or_default();
    if command != Command::Del && netns.is_empty() {
        return Err(bad(
            "CNI_NETNS is not set",
            "pass the container's network namespace path".into(),
        ));
    }
    if !netns.is_empty() && (!netns.starts_with('/') || netns.len() > 4096 || netns.contains('\0')) {
        return Err(bad(
            "invalid CNI_NETNS",
            format!("{netns:?}: an absolute path is needed"),
        ));
    }
    let (ip, mac) = parse_args(&get("CNI_ARGS").unwrap_or_default())?;
    Ok(Env {
        command,
        container_id,
        netns,
        ifname,
        ip,
        mac,
    })
}

/// `CNI_ARGS` (`K=V;K=V`): `IP` and `MAC` are used and checked; other keys (runtimes pass e.g.
/// `K8S_POD_NAME`, `IgnoreUnknown`) are ignored.
pub fn parse_args(args: &str) -> Result<(Option<String>, Option<String>), CniError> {
    let bad = |d: String| CniError::new(Code::InvalidEnvironment, "invalid CNI_ARGS", d);
    let (mut ip, mut mac) = (None, None);
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("{pair:?} is not KEY=VALUE")))?;
        match k {
            "IP" => {
                if split_cidr(v).is_none() && v.parse::<std::net::IpAddr>().is_err() {
                    return Err(bad(format!("IP={v}: an address, optionally with /prefix")));
                }
                ip = Some(v.to_string());
            }
            "MAC" => {
                let ok = v.len() == 17
                    && v.split(':').count() == 6
                    && v.split(':')
                        .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok());
                if !ok {
                    return Err(bad(format!("MAC={v}: six hex bytes separated by ':'")));
                }
                mac = Some(v.to_string());
            }
            _ => {}
        }
    }
    Ok((ip, mac))
}

/// Container ids per the spec: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn valid_container_id(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Interface names per the spec (Linux limits).
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s
            .bytes()
            .any(|c| c == b'/' || c == b':' || c.is_ascii_whitespace() || c == 0)
}

/// Network names as the contract defines them: 1-15 of `[A-Za-z0-9_.-]`.
pub fn valid_network_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The network configuration overlayd-cni reads from stdin.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    /// The overlayd network to attach to.
    pub network: String,
    /// The daemon's admin socket.
    pub socket: String,
    /// The previous result (DEL, CHECK).
    pub prev_result: Option<Value>,
}

#[derive(Deserialize)]
struct RawConf {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    network: Option<String>,
    socket: Option<String>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
}

/// The `cniVersion` of a config, as far as it can be read (for error objects of configs that fail later).
pub fn config_version(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

/// Parse and check the network configuration.
pub fn parse_config(bytes: &[u8]) -> Result<NetConf, CniError> {
    if bytes.len() > MAX_CONFIG {
        return Err(CniError::new(
            Code::Decode,
            "network configuration too large",
            format!("{} bytes, at most {MAX_CONFIG}", bytes.len()),
        ));
    }
    let raw: RawConf = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(
            Code::Decode,
            "cannot decode the network configuration",
            e.to_string(),
        )
    })?;
    let invalid = |msg: &str, d: String| CniError::new(Code::InvalidConfig, msg, d);
    let cni_version = raw
        .cni_version
        .ok_or_else(|| invalid("cniVersion is missing", "set \"cniVersion\": \"1.0.0\"".into()))?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            "incompatible CNI version",
            format!("config is {cni_version:?}, overlayd-cni supports {SUPPORTED_VERSIONS:?}"),
        ));
    }
    let name = raw.name.unwrap_or_default();
    if !valid_container_id(&name) {
        return Err(invalid(
            "invalid network configuration name",
            format!("{name:?}: letters, digits, '_', '.', '-', starting with a letter or digit"),
        ));
    }
    if raw.kind.as_deref() != Some("overlayd-cni") {
        return Err(invalid(
            "wrong plugin type",
            format!("\"type\" is {:?}, expected \"overlayd-cni\"", raw.kind),
        ));
    }
    let network = raw.network.ok_or_else(|| {
        invalid(
            "\"network\" is missing",
            "name the overlayd network, e.g. \"network\": \"app\"".into(),
        )
    })?;
    if !valid_network_name(&network) {
        return Err(invalid(
            "invalid \"network\"",
            format!("{network:?}: 1-15 of letters, digits, '_', '.', '-'"),
        ));
    }
    let socket = raw.socket.unwrap_or_else(|| DEFAULT_SOCKET.to_string());
    if !socket.starts_with('/') || socket.contains('\0') || socket.len() > 107 {
        return Err(invalid(
            "invalid \"socket\"",
            format!("{socket:?}: the absolute path of overlayd's --admin-socket"),
        ));
    }
    Ok(NetConf {
        cni_version,
        name,
        network,
        socket,
        prev_result: raw.prev_result,
    })
}

/// The VERSION answer.
pub fn version_json(cni_version: &str) -> String {
    json!({ "cniVersion": cni_version, "supportedVersions": SUPPORTED_VERSIONS }).to_string()
}

/// Body of `POST /v1/attach`.
pub fn attach_body(conf: &NetConf, env: &Env) -> String {
    let mut b = json!({ "netns": env.netns, "network": conf.network, "ifname": env.ifname });
    if let Some(ip) = &env.ip {
        b["ip"] = json!(ip);
    }
    if let Some(mac) = &env.mac {
        b["mac"] = json!(mac);
    }
    b.to_string()
}

/// Body of `POST /v1/detach`.
pub fn detach_body(conf: &NetConf, env: &Env) -> String {
    json!({ "netns": env.netns, "network": conf.network, "ifname": env.ifname }).to_string()
}

/// One attachment as the daemon reports it (`POST /v1/attach` answer and rows of `GET /v1/attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub netns: String,
    pub ifname: String,
    pub host_ifname: String,
    pub mac: String,
    /// Address with the subnet's prefix length, e.g. `10.20.0.5/16`.
    pub ip: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// Check an attach answer before building a result from it: the address and gateway must parse.
pub fn parse_attachment(body: &str) -> Result<Attachment, CniError> {
    let a: Attachment = serde_json::from_str(body)
        .map_err(|e| CniError::new(Code::Io, "overlayd sent a malformed attach answer", e.to_string()))?;
    let (ip, _) = split_cidr(&a.ip)
        .ok_or_else(|| CniError::new(Code::Io, "overlayd sent a malformed address", a.ip.clone()))?;
    if let Some(g) = &a.gateway {
        let gw: std::net::IpAddr = g
            .parse()
            .map_err(|_| CniError::new(Code::Io, "overlayd sent a malformed gateway", g.clone()))?;
        if gw.is_ipv4() != ip.is_ipv4() {
            return Err(CniError::new(
                Code::Io,
                "overlayd sent a gateway of another family",
                g.clone(),
            ));
        }
    }
    Ok(a)
}

/// `10.20.0.5/16` → (address, prefix length), checked.
pub fn split_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (a, p) = s.split_once('/')?;
    let ip: std::net::IpAddr = a.parse().ok()?;
    let p: u8 = p.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (p <= max).then_some((ip, p))
}

/// The CNI 1.0 result for an attachment: the host veth, the container interface (in its sandbox), the
/// address on interface 1 with its gateway, a default route through the gateway when there is one (egress),
/// and the MTU on the container interface (a 1.1 field; 1.0 readers ignore it).
pub fn result_json(cni_version: &str, netns: &str, a: &Attachment) -> String {
    let mut container = json!({ "name": a.ifname, "mac": a.mac, "sandbox": netns });
    if let Some(m) = a.mtu {
        container["mtu"] = json!(m);
    }
    let mut ip = json!({ "address": a.ip, "interface": 1 });
    let mut routes = Vec::new();
    if let Some(g) = &a.gateway {
        ip["gateway"] = json!(g);
        let dst = if g.contains(':') { "::/0" } else { "0.0.0.0/0" };
        routes.push(json!({ "dst": dst, "gw": g }));
    }
    json!({
        "cniVersion": cni_version,
        "interfaces": [{ "name": a.host_ifname }, container],
        "ips": [ip],
        "routes": routes,
    })
    .to_string()
}

/// CHECK: the attachment of (netns, ifname) must be listed by the daemon on the configured network, and if
/// the runtime passed a prevResult, its address must be the one the daemon holds.
pub fn check(conf: &NetConf, env: &Env, attachments_body: &str) -> Result<(), CniError> {
    let list: Vec<Attachment> = serde_json::from_str(attachments_body).map_err(|e| {
        CniError::new(
            Code::Io,
            "overlayd sent a malformed attachment list",
            e.to_string(),
        )
    })?;
    let Some(a) = list
        .iter()
        .find(|a| same_netns(&a.netns, &env.netns) && a.ifname == env.ifname && a.network == conf.network)
    else {
        return Err(CniError::new(
            Code::UnknownContainer,
            "not attached",
            format!(
                "overlayd has no attachment of {} {} to network {}: run ADD again",
                env.netns, env.ifname, conf.network
            ),
        ));
    };
    if let Some(prev) = &conf.prev_result {
        let want: Vec<&str> = prev
            .get("ips")
            .and_then(Value::as_array)
            .map(|ips| {
                ips.iter()
                    .filter_map(|i| i.get("address").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        if !want.is_empty() && !want.contains(&a.ip.as_str()) {
            return Err(CniError::new(
                Code::InvalidConfig,
                "address differs from prevResult",
                format!("prevResult has {want:?}, overlayd holds {}", a.ip),
            ));
        }
    }
    Ok(())
}

/// Whether two namespace references name the same `ip netns` namespace: equal, or one is the path
/// `/run/netns/NAME` (or `/var/run/netns/NAME`) and the other `NAME` (the daemon may report either form).
pub fn same_netns(a: &str, b: &str) -> bool {
    let name = |s: &str| {
        s.strip_prefix("/run/netns/")
            .or_else(|| s.strip_prefix("/var/run/netns/"))
            .map(str::to_string)
            .unwrap_or_else(|| s.to_string())
    };
    a == b || (!a.is_empty() && name(a) == name(b))
}

/// Map a failed admin request to a CNI error.
pub fn admin_error(e: &crate::ctl::CtlError) -> CniError {
    use crate::ctl::CtlError as E;
    match e {
        E::NoSocket { .. } | E::Connect { .. } => {
            CniError::new(Code::TryAgainLater, "overlayd is not reachable", e.to_string())
        }
        E::Status { status: 503, .. } => {
            CniError::new(Code::TryAgainLater, "overlayd cannot serve now", e.to_string())
        }
        E::Status {
            status: 400 | 404 | 409,
            ..
        } => CniError::new(Code::InvalidConfig, "overlayd refused the request", e.to_string()),
        _ => CniError::new(Code::Io, "talking to overlayd failed", e.to_string()),
    }
}

/// Whether a failed DEL may be reported as success: the network is gone (404), or the namespace path no
/// longer exists and the daemon refused it (400) — there is then nothing left to undo on this host.
pub fn del_is_done(e: &crate::ctl::CtlError, netns_exists: bool) -> bool {
    matches!(e, crate::ctl::CtlError::Status { status: 404, .. })
        || (!netns_exists && matches!(e, crate::ctl::CtlError::Status { status: 400, .. }))
}

/// Environment from a map (tests and harnesses).
pub fn env_from(map: &HashMap<&str, &str>) -> Result<Env, CniError> {
    parse_env(|k| map.get(k).map(|v| v.to_string()))
}

#[cfg(test)]
#[path = "cni_tests.rs"]
mod tests;
