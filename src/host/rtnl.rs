//! Synchronous rtnetlink in the calling thread's network namespace (a netlink socket binds to the netns of
//! the thread that opens it): links, veth pairs, addresses and routes. Each public call opens one socket,
//! does its request/ack exchanges and closes it; these run at attach/detach time, never per packet.
//!
//! Shares the socket and request/reply code of [`super::netlink`] (neli's plain `NlSocketHandle` and typed
//! message structs, no router thread, no runtime). That module keeps the helpers the data path's start-up
//! uses (bridge, TAP master); this one adds what container wiring needs: veth pairs created across
//! namespaces, address and route set-up, reading a link's MAC.

use std::io::Cursor;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Ifa, IfaF, Ifla, IflaInfo, RtAddrFamily, RtScope, RtTable, Rta, Rtm, Rtn, Rtprot};
use neli::rtnl::{IfaddrmsgBuilder, RtattrBuilder, RtmsgBuilder};
use neli::types::{Buffer, RtBuffer};
use neli::{Size, ToBytes};

use super::netlink::{self, ip_bytes, link_msg, name_attr, Fail, NetlinkError};
use super::HostError;

pub use super::netlink::{LinkInfo, MAX_IFNAME_LEN};
/// `VETH_INFO_PEER` from `<linux/veth.h>` (not in neli or libc).
const VETH_INFO_PEER: u16 = 1;

fn proto(op: &'static str, detail: impl std::fmt::Display) -> HostError {
    HostError::Protocol {
        op,
        detail: detail.to_string(),
    }
}

/// Turn a failed request into an error that names the operation and what to do: [`netlink::kernel_err`]'s
/// errno mapping, and EEXIST as [`HostError::Exists`].
pub(super) fn kernel_err(op: &'static str, target: &str, err: Fail) -> HostError {
    match err {
        Fail::Kernel(e) if e.raw_os_error() == Some(libc::EEXIST) => HostError::Exists {
            name: target.to_owned(),
        },
        err => netlink::kernel_err(op, target, err).into(),
    }
}

/// Non-empty, at most 15 bytes, not `.` or `..`, printable ASCII without '/' or ':'.
pub fn validate_ifname(name: &str) -> Result<(), HostError> {
    netlink::validate_name(name).map_err(HostError::from)
}

/// A route netlink socket: [`super::netlink`]'s, with its errors as [`HostError`]s.
pub(super) struct Rtnl(netlink::Rtnl);

impl Rtnl {
    pub(super) fn open() -> Result<Self, HostError> {
        netlink::Rtnl::open().map(Rtnl).map_err(HostError::from)
    }

    /// Send one request and collect the payloads of every reply until the ACK / DONE (or an error).
    fn request<P>(&mut self, op: &'static str, ty: Rtm, flags: NlmF, payload: P) -> Result<Vec<Vec<u8>>, Fail>
    where
        P: Size + ToBytes + std::fmt::Debug,
    {
        self.0.request(op, ty, flags, payload)
    }
}

/// [`super::netlink`]'s errors as [`HostError`]s: the socket's own failures (it cannot talk to rtnetlink, or
/// an unexpected reply) and the errno mapping of [`netlink::kernel_err`].
impl From<NetlinkError> for HostError {
    fn from(e: NetlinkError) -> HostError {
        match e {
            NetlinkError::Permission { op, target } => HostError::Permission { op, target },
            NetlinkError::NoSuchDevice { name } => HostError::NoSuchDevice { name },
            NetlinkError::NameTooLong { name } => HostError::NameTooLong { name },
            NetlinkError::InvalidName { name } => HostError::InvalidName { name },
            NetlinkError::Kernel { op, target, source } => HostError::Kernel { op, target, source },
            NetlinkError::Socket(detail) => HostError::Netlink(detail),
            NetlinkError::Protocol { op, detail } => HostError::Protocol { op, detail },
            other => HostError::Netlink(other.to_string()),
        }
    }
}

fn attr<T: neli::consts::rtnl::RtaType, P: Size + ToBytes>(
    ty: T,
    payload: P,
) -> Result<neli::rtnl::Rtattr<T, Buffer>, HostError> {
    RtattrBuilder::default()
        .rta_type(ty)
        .rta_payload(payload)
        .build()
        .map_err(|e| proto("build attribute", e))
}

/// `RTM_GETLINK` by name. `Ok(None)` when there is no such link.
pub(super) fn get_link(rt: &mut Rtnl, name: &str) -> Result<Option<LinkInfo>, HostError> {
    netlink::get_link(&mut rt.0, name).map_err(HostError::from)
}

pub(super) fn require_link(rt: &mut Rtnl, name: &str) -> Result<LinkInfo, HostError> {
    netlink::require_link(&mut rt.0, name).map_err(HostError::from)
}

/// Every link of this namespace.
pub(super) fn dump_links(rt: &mut Rtnl) -> Result<Vec<LinkInfo>, HostError> {
    let msg = link_msg(0, RtBuffer::new(), false)?;
    let replies = rt
        .request("list links", Rtm::Getlink, NlmF::DUMP, msg)
        .map_err(|e| kernel_err("list links", "", e))?;
    let links = replies.iter().map(|b| netlink::parse_link("list links", b));
    Ok(links.collect::<Result<_, _>>()?)
}

/// Apply `attrs` (and optionally the UP flag) to an existing link: [`netlink::modify_link`].
fn modify_link(
    rt: &mut Rtnl,
    op: &'static str,
    link: &LinkInfo,
    attrs: RtBuffer<Ifla, Buffer>,
    up: bool,
) -> Result<(), HostError> {
    Ok(netlink::modify_link(&mut rt.0, op, link, attrs, up)?)
}

/// Set MTU, master and the UP flag of link `name` in one request each (a master change needs its own).
pub(super) fn set_link(
    rt: &mut Rtnl,
    name: &str,
    mtu: Option<u32>,
    master: Option<&str>,
    up: bool,
) -> Result<(), HostError> {
    let link = require_link(rt, name)?;
    if let Some(mtu) = mtu {
        let mut attrs = RtBuffer::new();
        attrs.push(attr(Ifla::Mtu, mtu)?);
        modify_link(rt, "set mtu", &link, attrs, false)?;
    }
    if let Some(master) = master {
        let m = require_link(rt, master)?;
        if m.kind.as_deref() != Some("bridge") {
            return Err(HostError::NotABridge {
                name: master.to_owned(),
            });
        }
        let mut attrs = RtBuffer::new();
        attrs.push(attr(Ifla::Master, m.index as u32)?);
        modify_link(rt, "set master", &link, attrs, false)?;
    }
    if up {
        modify_link(rt, "set up", &link, RtBuffer::new(), true)?;
    }
    Ok(())
}

/// Set the link-layer address of link `name` (`IFLA_ADDRESS`). On a bridge this also fixes the address: it no
/// longer follows the lowest port MAC (the kernel marks it `NET_ADDR_SET`).
pub(super) fn set_link_mac(rt: &mut Rtnl, name: &str, mac: [u8; 6]) -> Result<(), HostError> {
    let link = require_link(rt, name)?;
    if link.mac == Some(mac) {
        return Ok(());
    }
    let mut attrs = RtBuffer::new();
    attrs.push(attr(Ifla::Address, Buffer::from(mac.to_vec()))?);
    modify_link(rt, "set address", &link, attrs, false)
}

/// Delete link `name`; `Ok(false)` if it did not exist.
pub(super) fn delete_link(rt: &mut Rtnl, name: &str) -> Result<bool, HostError> {
    let Some(link) = get_link(rt, name)? else {
        return Ok(false);
    };
    let msg = link_msg(link.index, RtBuffer::new(), false)?;
    match rt.request("delete link", Rtm::Dellink, NlmF::ACK, msg) {
        Ok(_) => Ok(true),
        Err(Fail::Kernel(e)) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(kernel_err("delete link", name, e)),
    }
}

/// The veth pair `host` (here) ↔ `peer` (created directly inside the namespace `peer_ns`, so its name never
/// exists here and cannot collide with a host link). Both ends get `mtu`; the peer gets `peer_mac` if given.
pub(super) fn create_veth(
    rt: &mut Rtnl,
    host: &str,
    peer: &str,
    peer_ns: BorrowedFd<'_>,
    mtu: u32,
    peer_mac: Option<[u8; 6]>,
) -> Result<(), HostError> {
    validate_ifname(host)?;
    validate_ifname(peer)?;
    // The peer: a struct ifinfomsg followed by its attributes, inside VETH_INFO_PEER.
    let mut peer_attrs = name_attr(peer)?;
    peer_attrs.push(attr(Ifla::Mtu, mtu)?);
    peer_attrs.push(attr(Ifla::NetNsFd, peer_ns.as_raw_fd() as u32)?);
    if let Some(mac) = peer_mac {
        peer_attrs.push(attr(Ifla::Address, Buffer::from(mac.to_vec()))?);
    }
    let peer_msg = link_msg(0, peer_attrs, false)?;
    let mut peer_bytes = Cursor::new(Vec::new());
    peer_msg
        .to_bytes(&mut peer_bytes)
        .map_err(|e| proto("encode veth peer", e))?;
    let peer_bytes = peer_bytes.into_inner();
    let mut info = RtBuffer::<IflaInfo, Buffer>::new();
    info.push(attr(IflaInfo::Kind, "veth".to_owned())?);
    let mut data = RtBuffer::<Ifla, Buffer>::new();
    // Ifla is only used as a carrier for the numeric type VETH_INFO_PEER of the nested attribute.
    data.push(attr(Ifla::from(VETH_INFO_PEER), Buffer::from(peer_bytes))?);
    info.push(attr(IflaInfo::Data, data)?);

    let mut attrs = name_attr(host)?;
    attrs.push(attr(Ifla::Mtu, mtu)?);
    attrs.push(attr(Ifla::Linkinfo, info)?);
    let msg = link_msg(0, attrs, false)?;
    match rt.request(
        "create veth",
        Rtm::Newlink,
        NlmF::CREATE | NlmF::EXCL | NlmF::ACK,
        msg,
    ) {
        Ok(_) => Ok(()),
        // EEXIST names either end: the host end was checked by the caller, so report both.
        Err(Fail::Kernel(e)) if e.raw_os_error() == Some(libc::EEXIST) => Err(HostError::Exists {
            name: format!("{host} (here) or {peer} (in the target namespace)"),
        }),
        Err(Fail::Kernel(e)) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Err(HostError::NoVeth),
        Err(e) => Err(kernel_err("create veth", host, e)),
    }
}

fn family(ip: IpAddr) -> RtAddrFamily {
    if ip.is_ipv4() {
        RtAddrFamily::Inet
    } else {
        RtAddrFamily::Inet6
    }
}

/// Add or delete `addr/prefix` on `ifname`. Adding an address that is there, or deleting one that is not,
/// is not an error. `nodad` skips IPv6 duplicate address detection (usable at once).
pub(super) fn change_address(
    rt: &mut Rtnl,
    add: bool,
    ifname: &str,
    addr: IpAddr,
    prefix: u8,
    nodad: bool,
) -> Result<(), HostError> {
    let op = if add { "add address" } else { "delete address" };
    let link = require_link(rt, ifname)?;
    let mut attrs = RtBuffer::<Ifa, Buffer>::new();
    for ty in [Ifa::Local, Ifa::Address] {
        attrs.push(attr(ty, Buffer::from(ip_bytes(addr)))?);
    }
    let flags = if nodad && addr.is_ipv6() {
        IfaF::NODAD
    } else {
        IfaF::empty()
    };
    let msg = IfaddrmsgBuilder::default()
        .ifa_family(family(addr))
        .ifa_prefixlen(prefix)
        .ifa_flags(flags)
        .ifa_scope(RtScope::Universe)
        .ifa_index(link.index as u32)
        .rtattrs(attrs)
        .build()
        .map_err(|e| proto(op, e))?;
    let (ty, fl) = if add {
        (Rtm::Newaddr, NlmF::CREATE | NlmF::EXCL | NlmF::ACK)
    } else {
        (Rtm::Deladdr, NlmF::ACK)
    };
    match rt.request(op, ty, fl, msg) {
        Ok(_) => Ok(()),
        Err(Fail::Kernel(e)) if add && e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(Fail::Kernel(e))
            if !add && matches!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL) | Some(libc::ENOENT)) =>
        {
            Ok(())
        }
        Err(e) => Err(kernel_err(op, &format!("{addr}/{prefix} on {ifname}"), e)),
    }
}

/// Add the default route via `gateway` out of `ifname` (main table). An existing default route is replaced.
pub(super) fn add_default_route(rt: &mut Rtnl, ifname: &str, gateway: IpAddr) -> Result<(), HostError> {
    const OP: &str = "add default route";
    let link = require_link(rt, ifname)?;
    let mut attrs = RtBuffer::<Rta, Buffer>::new();
    attrs.push(attr(Rta::Gateway, Buffer::from(ip_bytes(gateway)))?);
    attrs.push(attr(Rta::Oif, link.index as u32)?);
    let msg = RtmsgBuilder::default()
        .rtm_family(family(gateway))
        .rtm_dst_len(0)
        .rtm_src_len(0)
        .rtm_tos(0)
        .rtm_table(RtTable::Main)
        .rtm_protocol(Rtprot::Static)
        .rtm_scope(RtScope::Universe)
        .rtm_type(Rtn::Unicast)
        .rtattrs(attrs)
        .build()
        .map_err(|e| proto(OP, e))?;
    rt.request(OP, Rtm::Newroute, NlmF::CREATE | NlmF::REPLACE | NlmF::ACK, msg)
        .map_err(|e| kernel_err(OP, &format!("via {gateway} dev {ifname}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_validation() {
        for ok in ["eth0", "ovv0123456789ab", "a", "net-1_x.y"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\0b",
            "é",
            "0123456789abcdef",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
        assert!(validate_ifname("0123456789abcdef")
            .unwrap_err()
            .to_string()
            .contains("at most 15 bytes"));
    }
}
