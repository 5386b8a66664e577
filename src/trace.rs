//! `overlayctl trace <MAC|IP> [--network N]`: where a frame to that destination would go — the network, the
//! FDB entry (VTEP, origin, age) and the path MTU towards that VTEP, or that it would be flooded and to whom.
//! An IP address is first resolved to a MAC through the kernel's IPv4 neighbour table on the network's bridge
//! (`/proc/net/arp`, the daemon's own namespace); a destination the host has not talked to is reported as
//! unresolved. Read-only: it looks up state and never sends anything.

use crate::admin::AdminState;
use dataplane::fdb::Origin;
use dataplane::wire::MacAddr;
use serde::Serialize;
use std::net::IpAddr;
use std::time::Instant;

/// What `GET /v1/trace?dst=…[&network=…]` answers.
#[derive(Debug, Serialize, PartialEq)]
pub struct Trace {
    pub query: String,
    pub network: String,
    pub vni: u32,
    /// The destination MAC (given, or resolved from the IP).
    pub mac: Option<MacAddr>,
    /// How an IP was resolved to `mac`.
    pub resolved_via: Option<String>,
    /// `unicast` (to one VTEP), `local` (behind our bridge), `flood` (to every peer) or `unresolved`.
    pub verdict: &'static str,
    pub vtep: Option<IpAddr>,
    pub origin: Option<Origin>,
    pub age_s: Option<u64>,
    /// Peers a flooded frame goes to.
    pub flood_to: Vec<IpAddr>,
    /// Inner MTU usable towards `vtep`: the kernel's path MTU to it minus the VXLAN overhead, capped by the TAP.
    pub path_mtu: Option<u32>,
    pub note: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceError {
    #[error("missing dst: GET /v1/trace?dst=<MAC or IP>[&network=<name or VNI>]")]
    NoDst,
    #[error("{0:?} is neither a MAC (02:00:00:00:00:01) nor an IP address")]
    BadDst(String),
    #[error("no network {0:?} here: `overlayctl network ls` lists them (this daemon serves {1:?})")]
    NoNetwork(String, String),
}

/// `key=value&…` → the value of `key` (percent-decoding `%3A` only, enough for MACs and IPv6).
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.replace("%3A", ":").replace("%3a", ":"))
    })
}

/// The MAC the neighbour table (text of `/proc/net/arp`) holds for `ip` on `dev`.
pub fn arp_lookup(table: &str, ip: IpAddr, dev: &str) -> Option<MacAddr> {
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // IP address, HW type, Flags, HW address, Mask, Device. Flags 0x0: incomplete.
        match f.as_slice() {
            [a, _, flags, hw, _, d]
                if *d == dev && a.parse::<IpAddr>().ok() == Some(ip) && *flags != "0x0" =>
            {
                hw.parse().ok()
            }
            _ => None,
        }
    })
}

pub fn trace(st: &AdminState, query: &str) -> Result<Trace, TraceError> {
    let dst = query_param(query, "dst").ok_or(TraceError::NoDst)?;
    let want = query_param(query, "network");
    let obs = &st.observe;
    let net = obs.network(want.as_deref()).ok_or_else(|| {
        let nets = obs.networks();
        let names: Vec<&str> = nets.iter().map(|n| n.name.as_str()).collect();
        TraceError::NoNetwork(want.clone().unwrap_or_default(), names.join(", "))
    })?;
    let mut t = Trace {
        query: dst.clone(),
        network: net.name.clone(),
        vni: net.vni.get(),
        mac: None,
        resolved_via: None,
        verdict: "unresolved",
        vtep: None,
        origin: None,
        age_s: None,
        flood_to: Vec::new(),
        path_mtu: None,
        note: String::new(),
    };
    let mac = match (dst.parse::<MacAddr>(), dst.parse::<IpAddr>()) {
        (Ok(m), _) => m,
        (_, Ok(ip)) => {
            let table = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
            match arp_lookup(&table, ip, &net.bridge) {
                Some(m) => {
                    t.resolved_via = Some(format!("neighbour table of {}", net.bridge));
                    m
                }
                None => {
                    t.note = format!(
                        "{ip} is not in this host's neighbour table on {}: trace its MAC instead (`ip neigh` in the container shows it), or reach it once from this host",
                        net.bridge
                    );
                    return Ok(t);
                }
            }
        }
        _ => return Err(TraceError::BadDst(dst)),
    };
    t.mac = Some(mac);
    let now = Instant::now();
    let flood = |t: &mut Trace, why: &str| {
        t.verdict = "flood";
        t.flood_to = st
            .peers
            .snapshot()
            .iter()
            .copied()
            .filter(|p| *p != obs.local)
            .collect();
        t.note = if t.flood_to.is_empty() {
            format!("{why}: it would be flooded, but there is no peer to flood to (dropped as no_peers)")
        } else {
            format!("{why}: head-end replicated to every peer VTEP")
        };
    };
    if mac.is_multicast() {
        flood(&mut t, "broadcast/multicast destination");
        return Ok(t);
    }
    let Some(fdb) = st.table.by_name(&net.name).map(|n| n.fdb.clone()) else {
        flood(&mut t, "unknown unicast (the network is being removed)");
        return Ok(t);
    };
    let Some(d) = fdb.lookup(&mac, now) else {
        flood(&mut t, "unknown unicast (no FDB entry)");
        return Ok(t);
    };
    t.origin = Some(d.origin);
    t.vtep = Some(d.vtep);
    t.age_s = fdb.rows(now).into_iter().find(|r| r.mac == mac).map(|r| r.age_s);
    if d.origin == Origin::Local || d.vtep == obs.local {
        t.verdict = "local";
        t.note = format!(
            "lives behind this host's bridge {}: never sent on the overlay",
            net.bridge
        );
        return Ok(t);
    }
    t.verdict = "unicast";
    match dataplane::io::pmtu::path_mtu(obs.local, d.vtep) {
        Ok(m) => {
            t.path_mtu = Some(m.saturating_sub(obs.overhead()).min(net.mtu));
            t.note = format!(
                "path MTU to {} is {m}, minus {} bytes of VXLAN overhead",
                d.vtep,
                obs.overhead()
            );
        }
        Err(e) => t.note = format!("no route to VTEP {}: {e}", d.vtep),
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP: &str = "IP address       HW type     Flags       HW address            Mask     Device\n\
10.1.0.2         0x1         0x2         02:00:00:00:01:02     *        ovl0\n\
10.1.0.3         0x1         0x0         00:00:00:00:00:00     *        ovl0\n\
10.0.0.2         0x1         0x2         02:aa:00:00:00:02     *        eth0\n";

    #[test]
    fn neighbour_table_lookup() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            arp_lookup(ARP, ip("10.1.0.2"), "ovl0"),
            Some("02:00:00:00:01:02".parse().unwrap())
        );
        // Incomplete entries and other devices do not count.
        assert_eq!(arp_lookup(ARP, ip("10.1.0.3"), "ovl0"), None);
        assert_eq!(arp_lookup(ARP, ip("10.0.0.2"), "ovl0"), None);
        assert_eq!(arp_lookup("", ip("10.0.0.2"), "ovl0"), None);
        assert_eq!(arp_lookup("garbage\nx y z", ip("10.0.0.2"), "ovl0"), None);
    }

    #[test]
    fn query_parameters() {
        assert_eq!(
            query_param("dst=02%3A00%3A00%3A00%3A00%3A01&network=default", "dst").as_deref(),
            Some("02:00:00:00:00:01")
        );
        assert_eq!(query_param("dst=x&network=7", "network").as_deref(), Some("7"));
        assert_eq!(query_param("", "dst"), None);
        assert_eq!(query_param("dst", "dst"), None);
    }
}
