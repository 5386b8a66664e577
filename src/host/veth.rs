//! Wiring one container: a veth pair whose inner end lives in the container's namespace (renamed, MAC, MTU,
//! address, up, default route) and whose host end is a port of the network's bridge.

use std::net::IpAddr;

use dataplane::wire::MacAddr;
use ipnet::IpNet;

use super::netns::Netns;
use super::rtnl::{self, LinkInfo, Rtnl};
use super::HostError;

/// What to create. The host end gets `host_ifname`; the inner end `ifname` in `netns`.
#[derive(Debug)]
pub struct VethSpec<'a> {
    pub netns: &'a Netns,
    pub host_ifname: &'a str,
    pub ifname: &'a str,
    pub bridge: &'a str,
    pub mtu: u32,
    pub mac: Option<MacAddr>,
    pub addr: Option<IpNet>,
    pub gateway: Option<IpAddr>,
}

/// Create the pair, configure both ends and plug the host end into the bridge. On any failure the pair is
/// deleted again (deleting one end deletes both), so nothing is left half-wired. Returns the inner end's MAC.
pub fn create(spec: &VethSpec<'_>) -> Result<MacAddr, HostError> {
    rtnl::validate_ifname(spec.host_ifname)?;
    rtnl::validate_ifname(spec.ifname)?;
    if let (Some(addr), Some(gw)) = (spec.addr, spec.gateway) {
        if addr.addr().is_ipv4() != gw.is_ipv4() {
            return Err(HostError::FamilyMismatch { addr, gateway: gw });
        }
    }
    if spec.netns.is_current() {
        return Err(HostError::SameNetns);
    }
    let mut rt = Rtnl::open()?;
    let bridge = rtnl::require_link(&mut rt, spec.bridge)?;
    if bridge.kind.as_deref() != Some("bridge") {
        return Err(HostError::NotABridge {
            name: spec.bridge.to_owned(),
        });
    }
    if rtnl::get_link(&mut rt, spec.host_ifname)?.is_some() {
        return Err(HostError::Exists {
            name: spec.host_ifname.to_owned(),
        });
    }
    rtnl::create_veth(
        &mut rt,
        spec.host_ifname,
        spec.ifname,
        spec.netns.fd(),
        spec.mtu,
        spec.mac.map(|m| m.0),
    )?;
    let wired = (|| {
        let mac = spec.netns.run(|| configure_inner(spec))?;
        rtnl::set_link(&mut rt, spec.host_ifname, None, Some(spec.bridge), true)?;
        Ok(mac)
    })();
    if wired.is_err() {
        let _ = rtnl::delete_link(&mut rt, spec.host_ifname);
    }
    wired
}

/// Runs inside the container's namespace.
fn configure_inner(spec: &VethSpec<'_>) -> Result<MacAddr, HostError> {
    let mut rt = Rtnl::open()?;
    rtnl::set_link(&mut rt, "lo", None, None, true)?;
    if let Some(addr) = spec.addr {
        // IPv6: no DAD, so the address is usable at once (IPAM already made it unique).
        rtnl::change_address(&mut rt, true, spec.ifname, addr.addr(), addr.prefix_len(), true)?;
    }
    rtnl::set_link(&mut rt, spec.ifname, None, None, true)?;
    if let Some(gw) = spec.gateway {
        rtnl::add_default_route(&mut rt, spec.ifname, gw)?;
    }
    let link = rtnl::require_link(&mut rt, spec.ifname)?;
    link.mac.map(MacAddr).ok_or(HostError::Protocol {
        op: "read veth address",
        detail: format!("{} has no Ethernet address", spec.ifname),
    })
}

/// Delete the pair by its host end. `Ok(false)` if there was no such link.
pub fn delete(host_ifname: &str) -> Result<bool, HostError> {
    let mut rt = Rtnl::open()?;
    rtnl::delete_link(&mut rt, host_ifname)
}

/// A link of the calling thread's namespace, if it exists.
pub fn link(name: &str) -> Result<Option<LinkInfo>, HostError> {
    let mut rt = Rtnl::open()?;
    rtnl::get_link(&mut rt, name)
}

/// Name of the link's master (bridge), if the link exists and has one.
pub fn master_of(name: &str) -> Result<Option<String>, HostError> {
    let mut rt = Rtnl::open()?;
    let Some(l) = rtnl::get_link(&mut rt, name)? else {
        return Ok(None);
    };
    let Some(m) = l.master else { return Ok(None) };
    Ok(rtnl::dump_links(&mut rt)?
        .into_iter()
        .find(|x| x.index == m)
        .map(|x| x.name))
}

/// Put an existing host end back into `bridge` and up (after a restart re-created the bridge).
pub fn plug(host_ifname: &str, bridge: &str) -> Result<(), HostError> {
    let mut rt = Rtnl::open()?;
    rtnl::set_link(&mut rt, host_ifname, None, Some(bridge), true)
}

/// veth links of this namespace whose name starts with `prefix`.
pub fn veths_with_prefix(prefix: &str) -> Result<Vec<String>, HostError> {
    let mut rt = Rtnl::open()?;
    Ok(rtnl::dump_links(&mut rt)?
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("veth") && l.name.starts_with(prefix))
        .map(|l| l.name)
        .collect())
}

/// Add (or delete) `addr` on `ifname` in the calling thread's namespace; IPv6 with `nodad`.
pub fn set_address(ifname: &str, addr: IpNet, present: bool) -> Result<(), HostError> {
    let mut rt = Rtnl::open()?;
    rtnl::change_address(&mut rt, present, ifname, addr.addr(), addr.prefix_len(), true)
}

/// A veth pair with both ends in the calling thread's namespace (Docker's driver: Docker moves the peer into
/// the container, renames it and sets its address itself). Both ends get `mtu`, the peer `peer_mac`; the host
/// end is plugged into `bridge` and set up, the peer is left down. A leftover pair with the same host end (a
/// crash between Join and Leave) is deleted first. On failure nothing is left.
pub fn create_local(
    host_ifname: &str,
    peer_ifname: &str,
    bridge: &str,
    mtu: u32,
    peer_mac: MacAddr,
) -> Result<(), HostError> {
    rtnl::validate_ifname(host_ifname)?;
    rtnl::validate_ifname(peer_ifname)?;
    let mut rt = Rtnl::open()?;
    let br = rtnl::require_link(&mut rt, bridge)?;
    if br.kind.as_deref() != Some("bridge") {
        return Err(HostError::NotABridge {
            name: bridge.to_owned(),
        });
    }
    rtnl::delete_link(&mut rt, host_ifname)?;
    // The calling thread's own namespace (not the process's: a thread may have entered another one).
    let here = std::fs::File::open("/proc/thread-self/ns/net").map_err(|source| HostError::NetnsOpen {
        path: "/proc/thread-self/ns/net".into(),
        source,
    })?;
    use std::os::fd::AsFd;
    rtnl::create_veth(
        &mut rt,
        host_ifname,
        peer_ifname,
        here.as_fd(),
        mtu,
        Some(peer_mac.0),
    )?;
    let r = rtnl::set_link(&mut rt, host_ifname, None, Some(bridge), true);
    if r.is_err() {
        let _ = rtnl::delete_link(&mut rt, host_ifname);
    }
    r
}
