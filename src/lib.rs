//! overlayd daemon: configuration, runtime wiring, the admin endpoint and the `overlayctl` client.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod diag;
pub mod metrics;
pub mod observe;
pub mod probe;
pub mod trace;
