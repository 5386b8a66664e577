//! Shared helpers for the end-to-end tests.
pub mod capture;
pub mod docker;
pub mod garbage;
pub mod overlay;
pub mod testbed;
