//! Host links as the daemon watches them: a subscription to rtnetlink link events (RTNLGRP_LINK: every
//! RTM_NEWLINK/RTM_DELLINK in this network namespace) and the list of a bridge's ports. Set-up of links
//! (create, MTU, master, up) stays in `crate::host::netlink`; this module only observes.
//!
//! Events are wake-ups, not state: the watcher re-reads the links it cares about after any event, so a
//! lost or coalesced event (ENOBUFS on a busy host) costs nothing but a re-read. Never on the hot path.

use std::io::Cursor;
use std::os::fd::AsRawFd;

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Ifla, RtAddrFamily, Rtm};
use neli::consts::socket::NlFamily;
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::rtnl::{Ifinfomsg, IfinfomsgBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::{Buffer, RtBuffer};
use neli::utils::Groups;
use neli::FromBytesWithInput;

/// Receive buffer for link events: room for a burst (a bridge deletion announces every port).
const EVENT_RCVBUF: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LinksError {
    #[error("cannot talk to rtnetlink ({op}): {detail} (is this a Linux host with netlink available?)")]
    Socket { op: &'static str, detail: String },
    #[error("rtnetlink {op} failed: {source}")]
    Kernel {
        op: &'static str,
        source: std::io::Error,
    },
}

fn sock_err(op: &'static str) -> impl Fn(neli::err::SocketError) -> LinksError {
    move |e| LinksError::Socket {
        op,
        detail: e.to_string(),
    }
}

/// A socket subscribed to link events.
pub struct LinkEvents {
    sock: NlSocketHandle,
}

impl std::fmt::Debug for LinkEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkEvents")
            .field("fd", &self.sock.as_raw_fd())
            .finish()
    }
}

impl LinkEvents {
    pub fn subscribe() -> Result<LinkEvents, LinksError> {
        let groups = Groups::new_groups(&[libc::RTNLGRP_LINK]);
        let sock = NlSocketHandle::connect(NlFamily::Route, None, groups).map_err(sock_err("subscribe"))?;
        // Best effort: a small buffer only means more ENOBUFS, which we treat as "re-read everything".
        let _ = sock.set_recv_buffer_size(EVENT_RCVBUF);
        Ok(LinkEvents { sock })
    }

    /// Wait up to `timeout_ms` for link events and consume all that are queued. `Ok(true)` if any arrived
    /// (or some were lost: ENOBUFS), `Ok(false)` on timeout.
    pub fn wait(&self, timeout_ms: i32) -> Result<bool, LinksError> {
        let mut any = false;
        let mut timeout = timeout_ms;
        loop {
            let mut fds = [libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let ready = dataplane::io::poll_fds(&mut fds, timeout)
                .map_err(|source| LinksError::Kernel { op: "poll", source })?;
            if ready == 0 {
                return Ok(any);
            }
            // The socket is readable, so this recv does not block. Its content does not matter (see the
            // module comment); an overflow (ENOBUFS) also means "something changed".
            match self.sock.recv::<u16, Buffer>() {
                Ok((msgs, _)) => msgs.for_each(drop),
                Err(neli::err::SocketError::Io(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => return Err(sock_err("receive event")(e)),
            }
            any = true;
            timeout = 0;
        }
    }
}

/// Names of the links whose master is `bridge` (its ports). Empty if there is no such link.
pub fn bridge_ports(bridge: &str) -> Result<Vec<String>, LinksError> {
    let links = dump_links()?;
    let Some(index) = links.iter().find(|l| l.name == bridge).map(|l| l.index) else {
        return Ok(Vec::new());
    };
    Ok(links
        .into_iter()
        .filter(|l| l.master == Some(index))
        .map(|l| l.name)
        .collect())
}

/// Interface index of link `name`, if it exists.
pub fn link_index(name: &str) -> Result<Option<i32>, LinksError> {
    Ok(dump_links()?
        .into_iter()
        .find(|l| l.name == name)
        .map(|l| l.index))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    index: i32,
    name: String,
    master: Option<i32>,
}

/// `RTM_GETLINK` dump of every link in this namespace.
fn dump_links() -> Result<Vec<Link>, LinksError> {
    const OP: &str = "list links";
    let sock = NlSocketHandle::connect(NlFamily::Route, None, Groups::empty()).map_err(sock_err(OP))?;
    let req = IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .ifi_index(0)
        .rtattrs(RtBuffer::<Ifla, Buffer>::new())
        .build()
        .map_err(|e| LinksError::Socket {
            op: OP,
            detail: e.to_string(),
        })?;
    let msg = NlmsghdrBuilder::default()
        .nl_type(Rtm::Getlink)
        .nl_flags(NlmF::REQUEST | NlmF::DUMP)
        .nl_seq(1)
        .nl_payload(NlPayload::Payload(req))
        .build()
        .map_err(|e| LinksError::Socket {
            op: OP,
            detail: e.to_string(),
        })?;
    sock.send(&msg).map_err(sock_err(OP))?;
    let done = libc::NLMSG_DONE as u16;
    let mut out = Vec::new();
    loop {
        let (msgs, _) = sock.recv::<u16, Buffer>().map_err(sock_err(OP))?;
        for m in msgs {
            let m = m.map_err(sock_err(OP))?;
            if *m.nl_type() == done {
                return Ok(out);
            }
            match m.nl_payload() {
                NlPayload::Err(e) => {
                    return Err(LinksError::Kernel {
                        op: OP,
                        source: std::io::Error::from_raw_os_error(-*e.error()),
                    })
                }
                NlPayload::Payload(buf) => {
                    if let Some(l) = parse_link(buf.as_ref()) {
                        out.push(l);
                    }
                }
                _ => {}
            }
        }
    }
}

/// One `ifinfomsg` with its name and master; `None` if the kernel sent something we cannot read (skipped:
/// a link we cannot name is not one of ours).
fn parse_link(bytes: &[u8]) -> Option<Link> {
    let msg = Ifinfomsg::from_bytes_with_input(&mut Cursor::new(bytes), bytes.len()).ok()?;
    let attrs = msg.rtattrs().get_attr_handle();
    let name = attrs
        .get_attr_payload_as_with_len::<String>(Ifla::Ifname)
        .ok()?
        .trim_end_matches('\0')
        .to_owned();
    let master = attrs
        .get_attr_payload_as::<u32>(Ifla::Master)
        .ok()
        .and_then(|m| i32::try_from(m).ok())
        .filter(|&m| m != 0);
    Some(Link {
        index: *msg.ifi_index(),
        name,
        master,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An RTM_NEWLINK payload as the kernel sends it: ifinfomsg (16 bytes) + IFLA_IFNAME "vc1" + IFLA_MASTER 7.
    fn newlink_bytes(index: i32, name: &str, master: Option<u32>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&[0, 0]); // family, pad
        b.extend_from_slice(&1u16.to_ne_bytes()); // ARPHRD_ETHER
        b.extend_from_slice(&index.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // flags
        b.extend_from_slice(&0u32.to_ne_bytes()); // change
        let mut attr = |ty: u16, payload: &[u8]| {
            let len = 4 + payload.len();
            b.extend_from_slice(&(len as u16).to_ne_bytes());
            b.extend_from_slice(&ty.to_ne_bytes());
            b.extend_from_slice(payload);
            b.resize(b.len() + (4 - len % 4) % 4, 0);
        };
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        attr(libc::IFLA_IFNAME, &n);
        if let Some(m) = master {
            attr(libc::IFLA_MASTER, &m.to_ne_bytes());
        }
        b
    }

    #[test]
    fn parses_name_and_master() {
        let l = parse_link(&newlink_bytes(9, "vc1", Some(7))).unwrap();
        assert_eq!(
            l,
            Link {
                index: 9,
                name: "vc1".into(),
                master: Some(7)
            }
        );
        let l = parse_link(&newlink_bytes(3, "ovl0", None)).unwrap();
        assert_eq!(l.master, None);
        // IFLA_MASTER 0 means "no master".
        assert_eq!(parse_link(&newlink_bytes(3, "x", Some(0))).unwrap().master, None);
        // Too short for an ifinfomsg, or no name: not a link we can use.
        assert_eq!(parse_link(&[0u8; 8]), None);
        assert_eq!(parse_link(&newlink_bytes(3, "x", None)[..16]), None);
    }

    proptest! {
        #[test]
        fn truncated_or_flipped_never_panics(cut in 0usize..40, pos in 0usize..40, bit in 0u8..8) {
            let mut b = newlink_bytes(5, "ovl1", Some(4));
            if pos < b.len() {
                b[pos] ^= 1 << bit;
            }
            b.truncate(cut.min(b.len()));
            let _ = parse_link(&b);
        }
    }
}
