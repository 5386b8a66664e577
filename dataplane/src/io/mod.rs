//! The data path's syscalls: TAP, UDP batching/offloads, polling, PMTU, ethtool reads. The only module allowed
//! `unsafe`; every block has a SAFETY line. Host set-up (rtnetlink: bridges, links, addresses, bridge FDB) lives in the daemon crate
//! (`overlayd::host`), not here.
//!
//! Owns file descriptors and the kernel ABI (ioctl numbers, cmsg layouts). Never decides
//! what to do with a packet, never allocates on the hot path (`read`/`write`/`recv_batch`/`send_batch`):
//! buffers are preallocated by constructors.

pub mod ethtool;
pub mod pmtu;
pub mod poll;
pub mod sched;
pub mod tap;
pub mod udp;

#[cfg(test)]
pub(crate) mod testns;

pub use poll::{poll_fds, Waker};
pub use tap::{
    Tap, TapConfig, TapError, TapQueue, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO,
    TUN_F_USO4, TUN_F_USO6, VNET_HDR_LEN,
};
pub use udp::{
    bind_group, route_source, RecvBatch, RecvMeta, SendBatch, SendReport, SenderSet, UdpError, UdpOptions,
    UdpSocket, GSO_MAX_SEGMENTS,
};
