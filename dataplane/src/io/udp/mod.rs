//! Underlay UDP sockets: `recvmmsg` with UDP GRO, `sendmmsg` with per-message UDP GSO, DF on every outer
//! packet (RFC 7348 §4.3), and the [`SenderSet`] of per-port send sockets that gives flow entropy. Owns the
//! sockets and the cmsg ABI; never interprets payloads.
//!
//! - `socket`: binding, options and the `recvmmsg`/`sendmmsg` calls;
//! - `senders`: the send sockets flows are hashed over;
//! - `group`: the receive sockets of the workers, one `SO_REUSEPORT` group on the VXLAN port;
//! - `batch`: the preallocated receive and send batches those calls fill and drain;
//! - `sys`: raw socket options, sockaddr encoding, the UDP GSO/GRO ABI constants.
//!
//! Batches own every buffer the syscalls need (data, sockaddrs, iovecs, cmsg space, mmsghdrs), allocated
//! once by their constructors, so `recv_batch`/`send_batch` never allocate. The mmsghdr pointers are
//! rebuilt on each call from the batch's own vectors, so moving a batch between calls is fine.

mod batch;
mod group;
mod senders;
mod socket;
mod sys;

pub use batch::{RecvBatch, RecvMeta, SendBatch, SendReport, MAX_PIECES_PER_MSG};
pub use group::bind_group;
pub use senders::SenderSet;
pub use socket::{force_recv_buffer, route_source, UdpError, UdpOptions, UdpSocket, GSO_MAX_SEGMENTS};

#[cfg(test)]
mod tests;
