//! Naming and entering network namespaces without `ip netns exec`: a namespace is given as an `ip netns`
//! name (`/run/netns/NAME`), a process id (`/proc/PID/ns/net`) or a path to an nsfs file. Work inside it runs
//! on a short-lived thread that `setns`es (rustix `thread::move_into_link_name_space`) and exits, so no
//! other thread of the daemon ever changes namespace.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
use serde::{Deserialize, Serialize};

use super::HostError;

/// Where `ip netns add` keeps its namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A network namespace as the user named it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum NetnsRef {
    /// `ip netns` name: `/run/netns/NAME`.
    Name(String),
    /// A process (e.g. a container's init, `docker inspect -f '{{.State.Pid}}'`): `/proc/PID/ns/net`.
    Pid(u32),
    /// An absolute path to a namespace file (a bind mount or `/proc/…/ns/net`).
    Path(PathBuf),
}

impl NetnsRef {
    /// The nsfs file to open.
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsRef::Name(n) => Path::new(NETNS_RUN_DIR).join(n),
            NetnsRef::Pid(p) => PathBuf::from(format!("/proc/{p}/ns/net")),
            NetnsRef::Path(p) => p.clone(),
        }
    }
}

/// `NAME`, a decimal `PID` or an absolute `PATH`. A name is what `ip netns` accepts: no '/', not "." or "..".
impl FromStr for NetnsRef {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, HostError> {
        let bad = || HostError::BadNetns { given: s.to_owned() };
        if s.is_empty() || s.len() > 4096 || s.bytes().any(|b| b == 0 || b == b'\n') {
            return Err(bad());
        }
        if s.starts_with('/') {
            return Ok(NetnsRef::Path(PathBuf::from(s)));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse::<u32>()
                .ok()
                .filter(|&p| p > 0)
                .map(NetnsRef::Pid)
                .ok_or_else(bad);
        }
        if s == "." || s == ".." || s.contains('/') || s.len() > 255 {
            return Err(bad());
        }
        Ok(NetnsRef::Name(s.to_owned()))
    }
}

impl fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsRef::Name(n) => f.write_str(n),
            NetnsRef::Pid(p) => write!(f, "{p}"),
            NetnsRef::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl TryFrom<String> for NetnsRef {
    type Error = HostError;
    fn try_from(s: String) -> Result<Self, HostError> {
        s.parse()
    }
}

impl From<NetnsRef> for String {
    fn from(n: NetnsRef) -> String {
        n.to_string()
    }
}

/// Identity of one namespace instance: the nsfs device and inode (`ip netns identify` compares the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    id: NetnsId,
}

impl Netns {
    /// Open the namespace. A name, process or path that no longer exists is [`HostError::NetnsGone`].
    pub fn open(r: &NetnsRef) -> Result<Netns, HostError> {
        let path = r.path();
        let file = File::open(&path).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) => HostError::NetnsGone { netns: r.to_string() },
            Some(libc::EACCES) | Some(libc::EPERM) => HostError::NetnsPermission {
                path: path.clone(),
                source: e,
            },
            _ => HostError::NetnsOpen {
                path: path.clone(),
                source: e,
            },
        })?;
        let meta = file.metadata().map_err(|source| HostError::NetnsOpen {
            path: path.clone(),
            source,
        })?;
        let id = NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        // /run/netns/NAME left behind after its namespace died is an empty regular file, not nsfs; a path
        // to anything else is also refused (setns would fail with EINVAL).
        let net = File::open("/proc/self/ns/net")
            .and_then(|f| f.metadata())
            .map(|m| m.dev())
            .ok();
        if net.is_some_and(|dev| dev != id.dev) {
            return Err(HostError::NotANetns { path });
        }
        Ok(Netns { file, id })
    }

    pub fn id(&self) -> NetnsId {
        self.id
    }

    /// Whether this is the namespace the calling thread is in (attaching the daemon to itself is refused).
    pub fn is_current(&self) -> bool {
        File::open("/proc/thread-self/ns/net")
            .and_then(|f| f.metadata())
            .is_ok_and(|m| m.dev() == self.id.dev && m.ino() == self.id.ino)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Run `f` on a new thread inside this namespace and return its result. The thread exits afterwards,
    /// so its namespace change never leaks into another task.
    pub fn run<T, F>(&self, f: F) -> Result<T, HostError>
    where
        T: Send,
        F: FnOnce() -> Result<T, HostError> + Send,
    {
        std::thread::scope(|s| {
            let fd = self.file.as_fd();
            let handle = std::thread::Builder::new()
                .name("overlayd-netns".into())
                .spawn_scoped(s, move || {
                    move_into_link_name_space(fd, Some(LinkNameSpaceType::Network))
                        .map_err(|e| HostError::Setns(std::io::Error::from(e)))?;
                    f()
                })
                .map_err(HostError::Thread)?;
            handle.join().unwrap_or_else(|_| {
                Err(HostError::Protocol {
                    op: "namespace worker",
                    detail: "the worker thread panicked".into(),
                })
            })
        })
    }
}

/// Whether the namespace `r` still exists and is the instance `id`.
pub fn netns_alive(r: &NetnsRef, id: NetnsId) -> bool {
    Netns::open(r).is_ok_and(|ns| ns.id() == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_forms() {
        assert_eq!("c1".parse::<NetnsRef>().unwrap(), NetnsRef::Name("c1".into()));
        assert_eq!("1234".parse::<NetnsRef>().unwrap(), NetnsRef::Pid(1234));
        assert_eq!(
            "/var/run/netns/x".parse::<NetnsRef>().unwrap(),
            NetnsRef::Path("/var/run/netns/x".into())
        );
        assert_eq!(NetnsRef::Pid(7).path(), PathBuf::from("/proc/7/ns/net"));
        assert_eq!(NetnsRef::Name("a".into()).path(), PathBuf::from("/run/netns/a"));
        for bad in ["", ".", "..", "a/b", "0", "99999999999", "a\0", "x\ny"] {
            assert!(bad.parse::<NetnsRef>().is_err(), "{bad:?}");
        }
        let e = "a/b".parse::<NetnsRef>().unwrap_err().to_string();
        assert!(e.contains("ip netns"), "{e}");
    }

    #[test]
    fn missing_namespace_is_gone() {
        let e = Netns::open(&NetnsRef::Name("overlayd-no-such-ns-x".into())).unwrap_err();
        assert!(matches!(e, HostError::NetnsGone { .. }), "{e:?}");
        // A regular file is not a namespace.
        let e = Netns::open(&NetnsRef::Path("/proc/self/status".into())).unwrap_err();
        assert!(matches!(e, HostError::NotANetns { .. }), "{e:?}");
    }

    #[test]
    fn own_namespace_is_current() {
        let ns = Netns::open(&NetnsRef::Path("/proc/self/ns/net".into())).unwrap();
        assert!(ns.is_current());
        // Entering the namespace we are in works and runs the closure on another thread.
        let me = std::thread::current().id();
        let other = ns.run(|| Ok(std::thread::current().id())).unwrap();
        assert_ne!(me, other);
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,40}") {
            if let Ok(r) = s.parse::<NetnsRef>() {
                prop_assert_eq!(r.to_string().parse::<NetnsRef>().unwrap(), r);
            }
        }
    }
}
