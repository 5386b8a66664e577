//! `overlayctl diag`: checks run by the daemon on request, each ✓ or ✗ with the fix. Host plumbing (TAP and
//! bridge present, up and attached; MTUs of the bridge, TAP and every bridge port against the underlay minus
//! the VXLAN overhead), then per peer: an overlayd probe to its VXLAN port (a firewall dropping UDP 4789 shows
//! here), a full-size don't-fragment probe (the underlay really carries overlay-MTU frames), the clock offset
//! from the probe reply (fails above 500 ms), static peers that sent nothing recently (`silent`) and, in
//! cluster mode, the member's gossip state (SWIM's own end-to-end probes on the gossip port).
//! Read-only: it sends probes but changes nothing.

use crate::admin::AdminState;
use crate::host::netlink;
use crate::probe::{self, ProbeError};
use dataplane::wire::ETHERNET_HEADER_LEN;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Clock offset above which the clock check fails.
pub const MAX_CLOCK_SKEW_MS: i64 = 500;

#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// Ports of `bridge` (its `brif` directory in sysfs).
fn bridge_ports(bridge: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Plumbing checks of the first network (blocking: netlink).
pub fn host_checks(st: &AdminState) -> Vec<Check> {
    let obs = &st.observe;
    let mut out = Vec::new();
    let Some(net) = obs.network(None) else { return out };
    let (br, tap) = (net.bridge.as_str(), net.tap.as_str());
    let up = |i: &str| netlink::link_is_up(i).unwrap_or(false);
    match netlink::link_exists(br) {
        Ok(true) if up(br) => out.push(pass(format!("bridge {br}"), "present and up")),
        Ok(true) => out.push(fail(
            format!("bridge {br}"),
            "down",
            format!("ip link set {br} up"),
        )),
        _ => out.push(fail(
            format!("bridge {br}"),
            "missing",
            format!("restart overlayd (it creates the bridge) or create it: ip link add {br} type bridge"),
        )),
    }
    match netlink::link_exists(tap) {
        Ok(true) => {
            let master = netlink::link_master(tap).ok().flatten();
            if !up(tap) {
                out.push(fail(
                    format!("tap {tap}"),
                    "down",
                    format!("ip link set {tap} up"),
                ));
            } else if master.as_deref() != Some(br) {
                out.push(fail(
                    format!("tap {tap}"),
                    format!("attached to {master:?}, not {br}"),
                    format!("ip link set {tap} master {br}"),
                ));
            } else {
                out.push(pass(format!("tap {tap}"), format!("up, attached to {br}")));
            }
        }
        _ => out.push(fail(
            format!("tap {tap}"),
            "missing",
            "restart overlayd: the TAP goes away only with the daemon",
        )),
    }
    let limit = obs.underlay_mtu.saturating_sub(obs.overhead());
    let mtu_of = |i: &str| netlink::link_mtu(i).ok();
    if net.mtu > limit {
        out.push(fail(
            "mtu",
            format!(
                "overlay MTU {} exceeds underlay {} ({}) minus {} bytes of VXLAN overhead = {limit}",
                net.mtu,
                obs.underlay,
                obs.underlay_mtu,
                obs.overhead()
            ),
            format!("restart overlayd with --mtu {limit} (or raise the underlay MTU)"),
        ));
    }
    let mut bad = Vec::new();
    for port in bridge_ports(br) {
        match mtu_of(&port) {
            Some(m) if m != net.mtu => bad.push(fail(
                format!("mtu {port}"),
                format!(
                    "{port} (port of {br}) has MTU {m}, the overlay MTU is {}",
                    net.mtu
                ),
                format!(
                    "ip link set {port} mtu {0}, and the same MTU {0} on its peer interface in the container",
                    net.mtu
                ),
            )),
            _ => {}
        }
    }
    if let Some(m) = mtu_of(br) {
        if m != net.mtu && bad.is_empty() {
            bad.push(fail(
                format!("mtu {br}"),
                format!("bridge {br} has MTU {m}, the overlay MTU is {}", net.mtu),
                format!("ip link set {br} mtu {}", net.mtu),
            ));
        }
    }
    out.push(offload_check(st));
    if bad.is_empty() && net.mtu <= limit {
        out.push(pass(
            "mtu",
            format!(
                "{br}, {tap} and every port of {br} at {} (underlay {} {} minus {})",
                net.mtu,
                obs.underlay,
                obs.underlay_mtu,
                obs.overhead()
            ),
        ));
    }
    out.extend(bad);
    out
}

/// Underlay NIC drivers and offload features known to break VXLAN, and why. vmxnet3 (VMware): with TX checksum
/// or UDP-tunnel segmentation offload on, VXLAN datagrams leave with bad checksums or are dropped by the
/// hypervisor (flannel#1279, calico#4727, kURL#5041).
pub const KNOWN_BAD_OFFLOADS: &[(&str, &str)] = &[
    ("vmxnet3", "tx-checksum-ip-generic"),
    ("vmxnet3", "tx-udp_tnl-segmentation"),
    ("vmxnet3", "tx-udp_tnl-csum-segmentation"),
];

/// The active features of `driver` that [`KNOWN_BAD_OFFLOADS`] lists.
pub fn bad_offloads<'a>(driver: &str, features: &'a [(String, bool)]) -> Vec<&'a str> {
    features
        .iter()
        .filter(|(f, on)| *on && KNOWN_BAD_OFFLOADS.iter().any(|(d, b)| *d == driver && b == f))
        .map(|(f, _)| f.as_str())
        .collect()
}

/// The underlay NIC's offloads against [`KNOWN_BAD_OFFLOADS`] (blocking: ioctl).
pub fn offload_check(st: &AdminState) -> Check {
    let nic = &st.observe.underlay;
    let name = format!("offloads {nic}");
    let driver = dataplane::io::ethtool::driver(nic).unwrap_or_default();
    match dataplane::io::ethtool::features(nic) {
        Err(e) => fail(
            name,
            format!("cannot read the offloads of {nic}: {e}"),
            "run `ethtool -k` on it by hand",
        ),
        Ok(f) => {
            let bad = bad_offloads(&driver, &f);
            if bad.is_empty() {
                pass(
                    name,
                    format!("driver {driver:?}: no offload known to break VXLAN is on"),
                )
            } else {
                fail(
                    name,
                    format!(
                        "driver {driver} with {} on: known to corrupt or drop VXLAN",
                        bad.join(", ")
                    ),
                    format!(
                        "ethtool -K {nic} {}",
                        bad.iter()
                            .map(|b| format!("{b} off"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                )
            }
        }
    }
}

/// Probe checks towards one peer (blocking).
pub fn peer_checks(st: &AdminState, peer: IpAddr) -> Vec<Check> {
    let obs = &st.observe;
    let mut out = Vec::new();
    let Some(net) = obs.network(None) else { return out };
    let to = SocketAddr::new(peer, obs.port);
    let wait = Duration::from_millis(700);
    let name = format!("peer {peer} udp/{}", obs.port);
    match probe::probe(obs.local, to, net.vni, ETHERNET_HEADER_LEN, 3, wait) {
        Err(e) => {
            out.push(fail(
                name,
                format!("no answer from {peer} on UDP port {} (VXLAN) to an overlayd probe: {e}", obs.port),
                format!(
                    "allow UDP {} from {} on {peer} and on the path (nft/iptables/security groups); check that overlayd runs there",
                    obs.port, obs.local
                ),
            ));
            return out;
        }
        Ok(r) => {
            out.push(pass(
                name,
                format!("probe answered in {:.1} ms", r.rtt.as_secs_f64() * 1e3),
            ));
            let c = format!("clock {peer}");
            if r.clock_offset_ms.abs() > MAX_CLOCK_SKEW_MS {
                out.push(fail(
                    c,
                    format!(
                        "clock differs by {} ms (more than {MAX_CLOCK_SKEW_MS} ms)",
                        r.clock_offset_ms
                    ),
                    "run NTP (chrony or systemd-timesyncd) on both hosts",
                ));
            } else {
                out.push(pass(c, format!("offset {} ms", r.clock_offset_ms)));
            }
        }
    }
    let full = net.mtu as usize + ETHERNET_HEADER_LEN;
    let name = format!("pmtu {peer}");
    match probe::probe(obs.local, to, net.vni, full, 3, wait) {
        Ok(_) => out.push(pass(
            name,
            format!("a {}-byte overlay frame with DF set reaches {peer}", net.mtu),
        )),
        Err(e) => {
            let why = match e {
                ProbeError::Timeout(_) => {
                    "lost on the way (a link on the path has a smaller MTU)".to_string()
                }
                other => other.to_string(),
            };
            out.push(fail(
                name,
                format!(
                    "full-size ({} bytes inner) don't-fragment probe to {peer}: {why}",
                    net.mtu
                ),
                format!(
                    "lower the overlay MTU (--mtu) or raise the MTU of the underlay path to at least {}",
                    net.mtu + obs.overhead()
                ),
            ));
        }
    }
    out
}

/// Liveness of static peers and gossip state of members (non-blocking).
pub fn liveness_checks(st: &AdminState) -> Vec<Check> {
    let obs = &st.observe;
    let now = Instant::now();
    let mut out = Vec::new();
    if let Some(rows) = st.members.read().ok().and_then(|m| m.clone()) {
        for m in rows.iter().filter(|m| m.vtep != obs.local) {
            let state = format!("{:?}", m.state).to_lowercase();
            let name = format!("gossip {}", m.addr);
            match state.as_str() {
                "alive" => out.push(pass(
                    name,
                    "member alive (SWIM probes on the gossip port answered)",
                )),
                "left" => out.push(pass(name, "member left the cluster")),
                _ => out.push(fail(
                    name,
                    format!("member is {state}: its gossip port does not answer"),
                    format!(
                        "allow UDP {} both ways between this host and {}; check that overlayd runs there",
                        m.addr.port(),
                        m.vtep
                    ),
                )),
            }
        }
        return out;
    }
    for p in obs.activity.peers() {
        let (ago, state) = obs.static_peer_state(p, now);
        let name = format!("activity {p}");
        match (state, ago) {
            ("reachable", Some(s)) => out.push(pass(name, format!("last datagram {s:.0} s ago"))),
            (_, ago) => out.push(fail(
                name,
                match ago {
                    Some(s) => format!("silent: last datagram {s:.0} s ago"),
                    None => "silent: no datagram received since start".to_string(),
                },
                format!(
                    "allow UDP {} from {p} to this host; check that the peer runs (a kernel VTEP stays silent until it has traffic)",
                    obs.port
                ),
            )),
        }
    }
    out
}

/// Every peer to probe: the flood set (static peers or alive members).
pub fn probe_targets(st: &AdminState) -> Vec<IpAddr> {
    let local = st.observe.local;
    let mut v: Vec<IpAddr> = st
        .peers
        .snapshot()
        .iter()
        .copied()
        .filter(|p| *p != local)
        .collect();
    if v.is_empty() {
        v = st.observe.activity.peers().collect();
    }
    v
}

pub fn report(checks: Vec<Check>) -> Report {
    Report {
        ok: checks.iter().all(|c| c.ok),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bad_offloads_are_flagged_only_for_their_driver() {
        let f = |v: &[(&str, bool)]| v.iter().map(|(n, on)| (n.to_string(), *on)).collect::<Vec<_>>();
        let feats = f(&[
            ("tx-checksum-ip-generic", true),
            ("tx-udp_tnl-segmentation", false),
            ("tx-udp_tnl-csum-segmentation", true),
            ("rx-gro", true),
        ]);
        assert_eq!(
            bad_offloads("vmxnet3", &feats),
            ["tx-checksum-ip-generic", "tx-udp_tnl-csum-segmentation"]
        );
        assert!(bad_offloads("virtio_net", &feats).is_empty());
        assert!(bad_offloads("vmxnet3", &f(&[("tx-checksum-ip-generic", false)])).is_empty());
    }
}
