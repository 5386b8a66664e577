//! overlayd data plane.
//!
//! - [`wire`]: byte views over Ethernet and VXLAN headers with checked constructors (never panic on input).
//! - [`fdb`]: the bounded, shared MAC → VTEP forwarding database with explicit time.
//! - [`neigh`]: the bounded, shared IP → MAC neighbour table that answers ARP/ND on the TAP path.
//! - [`flow`]: the inner-flow hash that picks the outer UDP source port (flow entropy).
//! - [`engine`]: the sans-IO forwarding engine: a frame or datagram plus `now` in, a verdict out.
//! - [`offload`]: virtio-net header, TSO superframe segmentation and TCP receive coalescing (pure functions).
//! - [`io`]: TAP and UDP syscalls; the only module allowed `unsafe`.
//! - [`worker`]: the loop that moves batches between [`io`] and [`engine`].
//! - [`stats`]: per-reason counters shared with the admin endpoint.

pub mod activity;
pub mod engine;
pub mod fdb;
pub mod flow;
#[allow(unsafe_code)]
pub mod io;
pub mod neigh;
pub mod network;
pub mod offload;
pub mod pmtu;
pub mod stats;
pub mod wire;
pub mod worker;
