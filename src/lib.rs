//! overlayd daemon: configuration, runtime wiring, the admin endpoint and the `overlayctl` client.

pub mod admin;
pub mod attach;
pub mod cluster;
pub mod cni;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod devices;
pub mod diag;
pub mod docker;
pub mod egress;
pub mod host;
pub mod ipam;
pub mod links;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod mtu_check;
pub mod notify;
pub mod observe;
pub mod ownership;
pub mod privileges;
pub mod probe;
pub mod reload;
pub mod trace;
pub mod underlay;
