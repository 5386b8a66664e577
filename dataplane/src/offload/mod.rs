//! TAP offloads: the virtio-net header, TSO superframe segmentation (GSO split, TX) and TCP receive
//! coalescing (GRO, RX).
//!
//! The TAP runs with `IFF_VNET_HDR` and `TUNSETOFFLOAD(CSUM|TSO4|TSO6)`: every read is a 10-byte
//! [`VirtioNetHdr`] followed by an Ethernet frame that may be a ~64 KiB TCP superframe, and every write may
//! carry a coalesced superframe that the kernel delivers as one large skb. This module owns the pure byte
//! work for that: [`segment`] turns one superframe into wire-sized frames laid out for one UDP GSO
//! `sendmsg`, and [`Coalescer`] glues consecutive decapsulated TCP segments back into superframes.
//!
//! Typical use by the I/O worker:
//! - TAP read → [`VirtioNetHdr::decode`] → [`segment_sg`] with the VXLAN header as prefix: each segment's
//!   headers are written to a small buffer and its payload stays in the TAP read buffer → UDP `sendmsg`s
//!   whose iovecs alternate header and payload, with `UDP_SEGMENT = stride` (at most `UDP_MAX_SEGMENTS`
//!   segments each). [`segment`] does the same into one contiguous buffer (a copy), for writes to a TAP
//!   without a virtio header.
//! - Batch of decapsulated frames → [`Coalescer::push`] each, passing the TAP writer as the sink →
//!   [`Coalescer::flush`] at the end of the batch. Frames written without coalescing take [`rx_header`], which
//!   marks checksums a kernel sender left partial ([`partial`]) as `NEEDS_CSUM`.
//! - A decapsulated frame longer than the TAP's MTU (a kernel sender's UDP-tunnel GSO packet, delivered whole)
//!   → [`superframe_hdr`] ([`tunnel`]) → one TSO write, or [`segment`] when the TAP has no virtio header.
//!
//! What it must never do: syscalls, allocation outside constructors, or panicking on input. Every frame
//! and header is hostile; header lengths are derived by parsing, never taken from the virtio header's
//! advisory `hdr_len`. Malformed input is an [`OffloadError`] naming the reason.

pub mod checksum;
mod error;
pub mod gro;
pub mod gso;
pub mod gso_sg;
mod headers;
pub mod partial;
pub mod tunnel;
pub mod virtio;

#[cfg(test)]
pub(crate) mod testutil;

pub use error::OffloadError;
pub use gro::{Bypass, Coalescer, PushOutcome, MAX_SUPERFRAME_LEN};
pub use gso::{fit_mss, segment, Segments};
pub use gso_sg::{segment_sg, SgLayout};
pub use partial::{fill_partial, partial_checksum, rx_header};
pub use tunnel::superframe_hdr;
pub use virtio::{
    VirtioNetHdr, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP,
    VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_LEN,
};
