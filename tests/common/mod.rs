//! Shared helpers for the end-to-end tests.
pub mod capture;
pub mod garbage;
pub mod overlay;
pub mod testbed;
