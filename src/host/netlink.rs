//! Synchronous rtnetlink: create/inspect/configure links and addresses in the calling thread's network
//! namespace (a netlink socket binds to the netns of the thread that opens it). Each call opens one socket,
//! does one request/ack exchange and closes it: these run at startup and in tests, never per packet.
//!
//! Crate choice: `neli` (sync, no runtime). We use its plain `NlSocketHandle` and typed message structs,
//! not its `NlRouter`, which spawns a processing thread per connection. `rtnetlink` would need a tokio
//! runtime inside a data-plane library for a handful of startup calls.

use std::io::{self, Cursor};
use std::net::IpAddr;

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Ifa, Iff, Ifla, IflaInfo, RtAddrFamily, RtScope, Rtm};
use neli::consts::socket::NlFamily;
use neli::err::SocketError;
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::rtnl::{Ifaddrmsg, IfaddrmsgBuilder, Ifinfomsg, IfinfomsgBuilder, RtattrBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::{Buffer, RtBuffer};
use neli::utils::Groups;
use neli::{FromBytesWithInput, Size, ToBytes};
use thiserror::Error;

/// Longest interface name: `IFNAMSIZ` (16) minus the NUL.
pub const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("no such network device {name} (check the name with `ip link`)")]
    NoSuchDevice { name: String },
    #[error("netlink {op} {target}: permission denied (run as root or grant CAP_NET_ADMIN)")]
    Permission { op: &'static str, target: String },
    #[error("interface name {name:?} is too long: at most {MAX_IFNAME_LEN} bytes (IFNAMSIZ-1)")]
    NameTooLong { name: String },
    #[error(
        "interface name {name:?} is invalid: it must be non-empty, not `.` or `..`, and contain only printable \
         ASCII other than '/' and ':'"
    )]
    InvalidName { name: String },
    #[error(
        "network device {name} already exists (delete it with `ip link del {name}` or choose another name)"
    )]
    Exists { name: String },
    #[error("{name} exists but is a {kind} device, not a bridge (delete it or choose another bridge name)")]
    NotABridge { name: String, kind: String },
    #[error(
        "cannot create link {name} of type {kind}: the kernel does not know this link type \
         (load its module, e.g. `modprobe {kind}`)"
    )]
    UnsupportedKind { name: String, kind: String },
    #[error("netlink {op} {target} failed: {source}")]
    Kernel {
        op: &'static str,
        target: String,
        source: io::Error,
    },
    #[error("cannot talk to rtnetlink: {0} (is this a Linux host with netlink available?)")]
    Socket(String),
    #[error("unexpected rtnetlink reply to {op}: {detail}")]
    Protocol { op: &'static str, detail: String },
}

/// Outcome of one request: payloads of the reply messages, or the kernel's errno.
pub(super) enum Fail {
    Kernel(io::Error),
    Local(NetlinkError),
}

fn socket_err(e: SocketError) -> NetlinkError {
    NetlinkError::Socket(e.to_string())
}

pub(super) struct Rtnl {
    sock: NlSocketHandle,
    seq: u32,
}

impl Rtnl {
    pub(super) fn open() -> Result<Self, NetlinkError> {
        let sock = NlSocketHandle::connect(NlFamily::Route, None, Groups::empty()).map_err(socket_err)?;
        Ok(Rtnl { sock, seq: 0 })
    }

    /// Send one request and collect the payloads of every reply until the ACK / DONE (or an error).
    pub(super) fn request<P>(
        &mut self,
        op: &'static str,
        ty: Rtm,
        flags: NlmF,
        payload: P,
    ) -> Result<Vec<Vec<u8>>, Fail>
    where
        P: Size + ToBytes + std::fmt::Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = NlmsghdrBuilder::default()
            .nl_type(ty)
            .nl_flags(NlmF::REQUEST | flags)
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(payload))
            .build()
            .map_err(|e| {
                Fail::Local(NetlinkError::Protocol {
                    op,
                    detail: e.to_string(),
                })
            })?;
        self.sock.send(&msg).map_err(|e| Fail::Local(socket_err(e)))?;

        let done_ty = libc::NLMSG_DONE as u16;
        let mut out = Vec::new();
        loop {
            let (iter, _) = self
                .sock
                .recv::<u16, Buffer>()
                .map_err(|e| Fail::Local(socket_err(e)))?;
            for reply in iter {
                let reply = reply.map_err(|e| Fail::Local(socket_err(e)))?;
                if *reply.nl_seq() != seq {
                    continue; // stale reply to an earlier request on this socket
                }
                match reply.nl_payload() {
                    NlPayload::Ack(_) => return Ok(out),
                    NlPayload::Err(e) => return Err(Fail::Kernel(io::Error::from_raw_os_error(-*e.error()))),
                    NlPayload::DumpExtAck(_) | NlPayload::Empty => {
                        if *reply.nl_type() == done_ty {
                            return Ok(out);
                        }
                    }
                    NlPayload::Payload(buf) => {
                        if *reply.nl_type() == done_ty {
                            return Ok(out);
                        }
                        out.push(buf.as_ref().to_vec());
                    }
                }
            }
        }
    }
}

/// Turn a kernel errno into an error that names the operation and what to do.
pub(super) fn kernel_err(op: &'static str, target: &str, err: Fail) -> NetlinkError {
    match err {
        Fail::Local(e) => e,
        Fail::Kernel(e) => match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => NetlinkError::Permission {
                op,
                target: target.to_owned(),
            },
            Some(libc::ENODEV) => NetlinkError::NoSuchDevice {
                name: target.to_owned(),
            },
            _ => NetlinkError::Kernel {
                op,
                target: target.to_owned(),
                source: e,
            },
        },
    }
}

/// Non-empty, at most 15 bytes, not `.` or `..`, printable ASCII without '/' or ':' (what the kernel's
/// `dev_valid_name` accepts, minus non-ASCII bytes).
pub(super) fn validate_name(name: &str) -> Result<(), NetlinkError> {
    if name.len() > MAX_IFNAME_LEN {
        return Err(NetlinkError::NameTooLong {
            name: name.to_owned(),
        });
    }
    if name.is_empty()
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || !b.is_ascii_graphic())
    {
        return Err(NetlinkError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

pub(super) fn proto(op: &'static str, detail: impl std::fmt::Display) -> NetlinkError {
    NetlinkError::Protocol {
        op,
        detail: detail.to_string(),
    }
}

/// What we read back about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: i32,
    pub name: String,
    pub mtu: u32,
    /// Ifindex of the master (bridge), if any.
    pub master: Option<i32>,
    pub kind: Option<String>,
    pub up: bool,
    /// Link-layer address (6 bytes for Ethernet).
    pub mac: Option<[u8; 6]>,
}

pub(super) fn parse_link(op: &'static str, bytes: &[u8]) -> Result<LinkInfo, NetlinkError> {
    let msg =
        Ifinfomsg::from_bytes_with_input(&mut Cursor::new(bytes), bytes.len()).map_err(|e| proto(op, e))?;
    let attrs = msg.rtattrs().get_attr_handle();
    let name = attrs
        .get_attr_payload_as_with_len::<String>(Ifla::Ifname)
        .map(|s| s.trim_end_matches('\0').to_owned())
        .map_err(|e| proto(op, e))?;
    let mtu = attrs
        .get_attr_payload_as::<u32>(Ifla::Mtu)
        .map_err(|e| proto(op, e))?;
    let master = attrs
        .get_attr_payload_as::<u32>(Ifla::Master)
        .ok()
        .filter(|&m| m != 0)
        .and_then(|m| i32::try_from(m).ok());
    let kind = attrs
        .get_attribute(Ifla::Linkinfo)
        .and_then(|a| a.get_attr_handle::<IflaInfo>().ok())
        .and_then(|h| h.get_attr_payload_as_with_len::<String>(IflaInfo::Kind).ok())
        .map(|s| s.trim_end_matches('\0').to_owned());
    let mac = attrs
        .get_attribute(Ifla::Address)
        .and_then(|a| <[u8; 6]>::try_from(a.rta_payload().as_ref()).ok());
    Ok(LinkInfo {
        index: *msg.ifi_index(),
        name,
        mtu,
        master,
        kind,
        up: msg.ifi_flags().contains(Iff::UP),
        mac,
    })
}

/// An `ifinfomsg` for link `index` (0: by name, or all) with `attrs`, and the UP flag if `up`.
pub(super) fn link_msg(
    index: i32,
    attrs: RtBuffer<Ifla, Buffer>,
    up: bool,
) -> Result<Ifinfomsg, NetlinkError> {
    let mut b = IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .ifi_index(index)
        .rtattrs(attrs);
    if up {
        b = b.up();
    }
    b.build().map_err(|e| proto("build ifinfomsg", e))
}

pub(super) fn name_attr(name: &str) -> Result<RtBuffer<Ifla, Buffer>, NetlinkError> {
    let mut attrs = RtBuffer::new();
    attrs.push(
        RtattrBuilder::default()
            .rta_type(Ifla::Ifname)
            .rta_payload(name.to_owned()) // neli appends the NUL
            .build()
            .map_err(|e| proto("build IFLA_IFNAME", e))?,
    );
    Ok(attrs)
}

/// `RTM_GETLINK` by name. `Ok(None)` when there is no such link.
pub(super) fn get_link(rt: &mut Rtnl, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
    validate_name(name)?;
    get_link_with(rt, link_msg(0, name_attr(name)?, false)?, name)
}

/// `RTM_GETLINK` with `msg` (a name or an index; `target` names it in errors). `Ok(None)` when there is no
/// such link.
fn get_link_with(rt: &mut Rtnl, msg: Ifinfomsg, target: &str) -> Result<Option<LinkInfo>, NetlinkError> {
    match rt.request("get link", Rtm::Getlink, NlmF::ACK, msg) {
        Ok(replies) => match replies.first() {
            Some(bytes) => Ok(Some(parse_link("get link", bytes)?)),
            None => Ok(None),
        },
        Err(Fail::Kernel(e)) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(kernel_err("get link", target, e)),
    }
}

pub(super) fn require_link(rt: &mut Rtnl, name: &str) -> Result<LinkInfo, NetlinkError> {
    get_link(rt, name)?.ok_or_else(|| NetlinkError::NoSuchDevice {
        name: name.to_owned(),
    })
}

fn get_link_by_index(rt: &mut Rtnl, index: i32) -> Result<Option<LinkInfo>, NetlinkError> {
    get_link_with(rt, link_msg(index, RtBuffer::new(), false)?, &format!("#{index}"))
}

/// Apply `attrs` (and optionally the UP flag) to an existing link (`RTM_NEWLINK` without CREATE).
pub(super) fn modify_link(
    rt: &mut Rtnl,
    op: &'static str,
    link: &LinkInfo,
    attrs: RtBuffer<Ifla, Buffer>,
    up: bool,
) -> Result<(), NetlinkError> {
    let msg = link_msg(link.index, attrs, up)?;
    rt.request(op, Rtm::Newlink, NlmF::ACK, msg)
        .map_err(|e| kernel_err(op, &link.name, e))?;
    Ok(())
}

fn u32_attr(ty: Ifla, val: u32) -> Result<RtBuffer<Ifla, Buffer>, NetlinkError> {
    let mut attrs = RtBuffer::new();
    attrs.push(
        RtattrBuilder::default()
            .rta_type(ty)
            .rta_payload(val)
            .build()
            .map_err(|e| proto("build attr", e))?,
    );
    Ok(attrs)
}

/// Create a link of `kind` that needs no parameters (e.g. "bridge", "dummy" where the module exists);
/// fails with [`NetlinkError::Exists`] if the name is taken.
pub fn add_link(name: &str, kind: &str) -> Result<(), NetlinkError> {
    validate_name(name)?;
    let mut info = RtBuffer::<IflaInfo, Buffer>::new();
    info.push(
        RtattrBuilder::default()
            .rta_type(IflaInfo::Kind)
            .rta_payload(kind.to_owned())
            .build()
            .map_err(|e| proto("build IFLA_INFO_KIND", e))?,
    );
    let mut attrs = name_attr(name)?;
    attrs.push(
        RtattrBuilder::default()
            .rta_type(Ifla::Linkinfo)
            .rta_payload(info)
            .build()
            .map_err(|e| proto("build IFLA_LINKINFO", e))?,
    );
    let msg = link_msg(0, attrs, false)?;
    let mut rt = Rtnl::open()?;
    match rt.request(
        "create link",
        Rtm::Newlink,
        NlmF::CREATE | NlmF::EXCL | NlmF::ACK,
        msg,
    ) {
        Ok(_) => Ok(()),
        Err(Fail::Kernel(e)) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            Err(NetlinkError::UnsupportedKind {
                name: name.to_owned(),
                kind: kind.to_owned(),
            })
        }
        Err(Fail::Kernel(e)) if e.raw_os_error() == Some(libc::EEXIST) => Err(NetlinkError::Exists {
            name: name.to_owned(),
        }),
        Err(e) => Err(kernel_err("create link", name, e)),
    }
}

/// Create bridge `name` if missing and bring it up. Returns whether it was created.
pub fn ensure_bridge(name: &str) -> Result<bool, NetlinkError> {
    validate_name(name)?;
    let mut rt = Rtnl::open()?;
    let created = match get_link(&mut rt, name)? {
        Some(link) => match link.kind.as_deref() {
            Some("bridge") => false,
            other => {
                return Err(NetlinkError::NotABridge {
                    name: name.to_owned(),
                    kind: other.unwrap_or("plain").to_owned(),
                })
            }
        },
        None => match add_link(name, "bridge") {
            Ok(()) => true,
            // Lost a race with another creator: fine if it is a bridge (checked below).
            Err(NetlinkError::Exists { .. }) => false,
            Err(e) => return Err(e),
        },
    };
    let link = require_link(&mut rt, name)?;
    if link.kind.as_deref() != Some("bridge") {
        return Err(NetlinkError::NotABridge {
            name: name.to_owned(),
            kind: link.kind.unwrap_or_else(|| "plain".to_owned()),
        });
    }
    modify_link(&mut rt, "set up", &link, RtBuffer::new(), true)?;
    Ok(created)
}

pub fn link_exists(name: &str) -> Result<bool, NetlinkError> {
    let mut rt = Rtnl::open()?;
    Ok(get_link(&mut rt, name)?.is_some())
}

/// Enslave `ifname` to `master` (e.g. a TAP to a bridge).
pub fn set_master(ifname: &str, master: &str) -> Result<(), NetlinkError> {
    let mut rt = Rtnl::open()?;
    let link = require_link(&mut rt, ifname)?;
    let m = require_link(&mut rt, master)?;
    modify_link(
        &mut rt,
        "set master",
        &link,
        u32_attr(Ifla::Master, m.index as u32)?,
        false,
    )
}

pub fn set_mtu(ifname: &str, mtu: u32) -> Result<(), NetlinkError> {
    let mut rt = Rtnl::open()?;
    let link = require_link(&mut rt, ifname)?;
    modify_link(&mut rt, "set mtu", &link, u32_attr(Ifla::Mtu, mtu)?, false)
}

pub fn set_up(ifname: &str) -> Result<(), NetlinkError> {
    let mut rt = Rtnl::open()?;
    let link = require_link(&mut rt, ifname)?;
    modify_link(&mut rt, "set up", &link, RtBuffer::new(), true)
}

/// Whether the link is administratively up.
pub fn link_is_up(ifname: &str) -> Result<bool, NetlinkError> {
    let mut rt = Rtnl::open()?;
    Ok(require_link(&mut rt, ifname)?.up)
}

/// Name of the link's master (bridge), if any.
pub fn link_master(ifname: &str) -> Result<Option<String>, NetlinkError> {
    let mut rt = Rtnl::open()?;
    let link = require_link(&mut rt, ifname)?;
    match link.master {
        Some(idx) => Ok(get_link_by_index(&mut rt, idx)?.map(|m| m.name)),
        None => Ok(None),
    }
}

pub fn delete_link(ifname: &str) -> Result<(), NetlinkError> {
    let mut rt = Rtnl::open()?;
    let link = require_link(&mut rt, ifname)?;
    let msg = link_msg(link.index, RtBuffer::new(), false)?;
    rt.request("delete link", Rtm::Dellink, NlmF::ACK, msg)
        .map_err(|e| kernel_err("delete link", ifname, e))?;
    Ok(())
}

pub fn link_mtu(ifname: &str) -> Result<u32, NetlinkError> {
    let mut rt = Rtnl::open()?;
    Ok(require_link(&mut rt, ifname)?.mtu)
}

pub(super) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Add `addr/prefix` to `ifname`. Adding an address that is already there is not an error.
pub fn add_address(ifname: &str, addr: IpAddr, prefix: u8) -> Result<(), NetlinkError> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(proto(
            "add address",
            format!("prefix /{prefix} is longer than /{max}"),
        ));
    }
    let mut rt = Rtnl::open()?;
    let link = require_link(&mut rt, ifname)?;
    let family = if addr.is_ipv4() {
        RtAddrFamily::Inet
    } else {
        RtAddrFamily::Inet6
    };
    let mut attrs = RtBuffer::<Ifa, Buffer>::new();
    for ty in [Ifa::Local, Ifa::Address] {
        attrs.push(
            RtattrBuilder::default()
                .rta_type(ty)
                .rta_payload(Buffer::from(ip_bytes(addr)))
                .build()
                .map_err(|e| proto("build IFA_ADDRESS", e))?,
        );
    }
    let msg = IfaddrmsgBuilder::default()
        .ifa_family(family)
        .ifa_prefixlen(prefix)
        .ifa_scope(RtScope::Universe)
        .ifa_index(link.index as u32)
        .rtattrs(attrs)
        .build()
        .map_err(|e| proto("add address", e))?;
    match rt.request(
        "add address",
        Rtm::Newaddr,
        NlmF::CREATE | NlmF::EXCL | NlmF::ACK,
        msg,
    ) {
        Ok(_) => Ok(()),
        Err(Fail::Kernel(e)) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(kernel_err(
            "add address",
            &format!("{addr}/{prefix} on {ifname}"),
            e,
        )),
    }
}

fn parse_ip(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(b) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::from(b))
    } else if let Ok(b) = <[u8; 16]>::try_from(bytes) {
        Some(IpAddr::from(b))
    } else {
        None
    }
}

/// Which link owns `ip`, and that link's MTU (the underlay MTU for the `--mtu` default).
pub fn interface_with_addr(ip: IpAddr) -> Result<Option<(String, u32)>, NetlinkError> {
    const OP: &str = "list addresses";
    let mut rt = Rtnl::open()?;
    let msg = IfaddrmsgBuilder::default()
        .ifa_family(RtAddrFamily::Unspecified)
        .ifa_prefixlen(0)
        .ifa_scope(RtScope::Universe)
        .ifa_index(0)
        .build()
        .map_err(|e| proto(OP, e))?;
    let replies = rt
        .request(OP, Rtm::Getaddr, NlmF::DUMP, msg)
        .map_err(|e| kernel_err(OP, "", e))?;
    let mut index = None;
    for bytes in &replies {
        let msg = Ifaddrmsg::from_bytes_with_input(&mut Cursor::new(&bytes[..]), bytes.len())
            .map_err(|e| proto(OP, e))?;
        // IPv4 puts the local address in IFA_LOCAL (IFA_ADDRESS is the peer on point-to-point links);
        // IPv6 usually only sends IFA_ADDRESS.
        let attrs = msg.rtattrs().get_attr_handle();
        let found = attrs
            .get_attribute(Ifa::Local)
            .or_else(|| attrs.get_attribute(Ifa::Address))
            .and_then(|a| parse_ip(a.rta_payload().as_ref()));
        if found == Some(ip) {
            index = Some(*msg.ifa_index());
            break;
        }
    }
    match index {
        Some(idx) => Ok(get_link_by_index(&mut rt, idx as i32)?.map(|l| (l.name, l.mtu))),
        None => Ok(None),
    }
}
