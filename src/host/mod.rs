//! Host set-up (issue 10 §3): rtnetlink in the daemon crate, never `ip`.
//!
//! Owns: veth pairs between the daemon's namespace and a container's ([`veth::create`], [`veth::delete`]),
//! naming and entering namespaces ([`NetnsRef`], [`Netns`]), and addresses on host links
//! ([`veth::set_address`], used by [`crate::egress`] for the gateway); the data path's start-up plumbing
//! ([`netlink`]: bridges, TAP MTU/master/up, the underlay link of a local address) and bridge FDB reads
//! ([`bridge_fdb`]). `dataplane::io` keeps only the hot-path syscalls (TAP, UDP).
//! Must never: change the namespace of a long-lived thread (work inside a container's namespace runs on a
//! short-lived thread, [`Netns::run`]), shell out to `ip`, or run on the hot path.
//!
//! Everything here acts on the calling thread's network namespace (the daemon's) unless it says otherwise.
//! Privileges: CAP_NET_ADMIN (links, addresses, routes) and CAP_SYS_ADMIN (`setns`); opening
//! `/proc/PID/ns/net` of a process with capabilities the daemon lacks also needs CAP_SYS_PTRACE (the
//! kernel's ptrace access check), which `ip netns` names and paths do not.

pub mod bridge;
pub mod bridge_fdb;
pub mod netlink;
pub mod netns;
pub mod rtnl;
pub mod veth;

use std::net::IpAddr;
use std::path::PathBuf;

pub use bridge_fdb::{bridge_macs, BridgeMac};
pub use netlink::NetlinkError;
pub use netns::{netns_alive, Netns, NetnsId, NetnsRef};
pub use rtnl::{validate_ifname, LinkInfo, MAX_IFNAME_LEN};
pub use veth::VethSpec;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("no such network device {name} (check the name with `ip link`; bridges are created by overlayd for each network)")]
    NoSuchDevice { name: String },
    #[error("{name} is not a bridge (a network's bridge must be a Linux bridge; delete the other device or rename the network)")]
    NotABridge { name: String },
    #[error("netlink {op} {target}: permission denied (run overlayd as root or grant CAP_NET_ADMIN and CAP_SYS_ADMIN)")]
    Permission { op: &'static str, target: String },
    #[error("interface name {name:?} is too long: at most {MAX_IFNAME_LEN} bytes (IFNAMSIZ-1)")]
    NameTooLong { name: String },
    #[error(
        "interface name {name:?} is invalid: it must be non-empty, not `.` or `..`, and contain only printable \
         ASCII other than '/' and ':'"
    )]
    InvalidName { name: String },
    #[error("network device {name} already exists (detach it first, or choose another --ifname)")]
    Exists { name: String },
    #[error("the kernel cannot create veth devices (load the module: `modprobe veth`)")]
    NoVeth,
    #[error("address {addr} and gateway {gateway} are of different IP families (give an address from the network's subnet)")]
    FamilyMismatch { addr: ipnet::IpNet, gateway: IpAddr },
    #[error("netlink {op} {target} failed: {source}")]
    Kernel {
        op: &'static str,
        target: String,
        source: std::io::Error,
    },
    #[error("cannot talk to rtnetlink: {0} (is this a Linux host with netlink available?)")]
    Netlink(String),
    #[error("unexpected rtnetlink reply to {op}: {detail}")]
    Protocol { op: &'static str, detail: String },
    #[error("invalid network namespace {given:?}: give an `ip netns` name, a process id or an absolute path to a namespace file")]
    BadNetns { given: String },
    #[error("network namespace {netns} does not exist (any more): check `ip netns list`, or that the process is still running")]
    NetnsGone { netns: String },
    #[error("{} is not a network namespace file (give an `ip netns` name, a PID or a path like /proc/PID/ns/net)", path.display())]
    NotANetns { path: PathBuf },
    #[error("cannot open network namespace {}: {source} (overlayd needs CAP_SYS_ADMIN; for a PID of a privileged process also CAP_SYS_PTRACE)", path.display())]
    NetnsPermission { path: PathBuf, source: std::io::Error },
    #[error("cannot open network namespace {}: {source}", path.display())]
    NetnsOpen { path: PathBuf, source: std::io::Error },
    #[error("cannot enter the network namespace: {0} (overlayd needs CAP_SYS_ADMIN for setns)")]
    Setns(std::io::Error),
    #[error("cannot start a thread to enter the namespace: {0}")]
    Thread(std::io::Error),
    #[error("that namespace is overlayd's own: attach a container's namespace, not the host's")]
    SameNetns,
}

impl HostError {
    /// The namespace no longer exists (detach then has nothing to do).
    pub fn is_netns_gone(&self) -> bool {
        matches!(self, HostError::NetnsGone { .. } | HostError::NotANetns { .. })
    }
}
