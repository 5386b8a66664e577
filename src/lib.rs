//! overlayd daemon: configuration, runtime wiring, the admin endpoint and the `overlayctl` client.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod devices;
pub mod links;
pub mod lock;
pub mod ownership;
