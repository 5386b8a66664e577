//! Syscalls: TAP, UDP batching/offloads, netlink. The only module allowed `unsafe`; every block has a SAFETY line.
