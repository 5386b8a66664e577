//! Per-network egress (issue 10 §6, CONTRACT "Egress"): containers of an egress network reach addresses
//! outside the overlay through their own host, as with Docker and Flannel.
//!
//! Owns, in the daemon's network namespace:
//! - the network's gateway address ([`crate::ipam::gateway`], the subnet's first host address, the same on
//!   every host) on its bridge, with the subnet's prefix (IPv6 with `nodad`);
//! - IPv4/IPv6 forwarding (`/proc/sys/net/ipv4/ip_forward`, `/proc/sys/net/ipv6/conf/all/forwarding`),
//!   switched on for the families that have an egress network and left on afterwards (as Docker does:
//!   other software may rely on it by then);
//! - the nftables table `inet overlayd`: masquerade for traffic from an egress subnet leaving through a
//!   non-overlay interface, and a forward rule that drops traffic between two overlay interfaces (frames
//!   never cross networks, also not routed through the host). The table is replaced as a whole in one
//!   transaction on every [`Egress::apply`] and deleted by [`Egress::teardown`] (and on drop).
//!
//! Why the `nft` tool and not netlink: no pure-Rust nftables netlink crate fits. `nftnl` binds the C library
//! libnftnl; `rustables` is GPL-3.0 (this project is Apache-2.0) and generates its bindings with bindgen,
//! which needs libclang at build time; `nftnl-rs` only manages set elements. The issue allows the `nft`
//! tool, which applies a whole script atomically (`nft -f -`). A missing `nft` is [`EgressError::NftMissing`],
//! naming the Debian package.
//! Must never: touch another table, run on the hot path, or pass an unchecked name into the script.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnet::IpNet;

use crate::host::{self, HostError};
use crate::ipam;

/// The nftables table overlayd owns (family `inet`).
pub const TABLE: &str = "overlayd";
const IPV4_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// One network with egress on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressNet {
    pub name: String,
    /// The network's bridge (must exist).
    pub bridge: String,
    pub subnet: IpNet,
}

impl EgressNet {
    /// The gateway address as configured on the bridge: first host address / subnet prefix.
    pub fn gateway(&self) -> Option<IpNet> {
        ipam::gateway(self.subnet).and_then(|g| IpNet::new(g, self.subnet.prefix_len()).ok())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress needs the nft tool, which was not found in PATH, /usr/sbin or /sbin (install the Debian package `nftables`)")]
    NftMissing,
    #[error("nft rejected overlayd's ruleset ({status}): {stderr} (is nf_tables available in this kernel: `modprobe nf_tables`?)")]
    Nft { status: String, stderr: String },
    #[error("cannot run {}: {source}", path.display())]
    NftRun { path: PathBuf, source: std::io::Error },
    #[error("cannot enable forwarding in {path}: {source} (overlayd needs write access to /proc/sys/net)")]
    Sysctl {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("network {network}: subnet {subnet} is too small for a gateway address (use at least a /30, or /126 for IPv6)")]
    NoGateway { network: String, subnet: IpNet },
    #[error("interface name {0:?} cannot be used in an nftables rule (only A-Z a-z 0-9 _ . -)")]
    BadName(String),
    #[error("egress on {bridge}: {source}")]
    Host {
        bridge: String,
        #[source]
        source: HostError,
    },
}

fn check_name(n: &str) -> Result<(), EgressError> {
    let ok = host::validate_ifname(n).is_ok()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(EgressError::BadName(n.to_owned()))
    }
}

fn name_set(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("{{ {} }}", quoted.join(", "))
}

/// The nft script that replaces table `inet overlayd` (pure; names must be checked first, as
/// [`Egress::apply`] does: only `A-Z a-z 0-9 _ . -`).
/// `overlay_ifaces`: every overlay bridge and TAP of this host, of all networks.
pub fn ruleset(nets: &[EgressNet], overlay_ifaces: &[String]) -> String {
    // Declaring the table first makes the delete succeed when it does not exist yet; the whole script is
    // one transaction, so no packet ever sees a half-built table.
    let mut s = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
    let ifaces = name_set(overlay_ifaces);
    s.push_str("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n");
    for n in nets {
        let fam = if n.subnet.addr().is_ipv4() { "ip" } else { "ip6" };
        s.push_str(&format!(
            "    {fam} saddr {} oifname != {ifaces} masquerade comment \"egress {}\"\n",
            n.subnet.trunc(),
            n.name
        ));
    }
    s.push_str("  }\n  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
    s.push_str(&format!(
        "    iifname {ifaces} oifname {ifaces} drop comment \"no traffic between overlay networks\"\n"
    ));
    s.push_str("  }\n}\n");
    s
}

/// The teardown script: delete the table if it exists.
fn delete_script() -> String {
    format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")
}

/// Where `nft` is.
pub fn find_nft() -> Result<PathBuf, EgressError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("nft"))
        .find(|p| p.is_file())
        .ok_or(EgressError::NftMissing)
}

fn run_nft(nft: &Path, script: &str) -> Result<(), EgressError> {
    let run = |source| EgressError::NftRun {
        path: nft.to_owned(),
        source,
    };
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(run)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(run)?;
    }
    let out = child.wait_with_output().map_err(run)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(EgressError::Nft {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn enable_forwarding(path: &'static str) -> Result<(), EgressError> {
    std::fs::write(path, b"1").map_err(|source| EgressError::Sysctl { path, source })
}

/// Egress of this host. Call [`Egress::apply`] with the egress networks whenever networks change, and
/// [`Egress::teardown`] at exit (dropping it also tears down, best effort).
#[derive(Debug, Default)]
pub struct Egress {
    /// What is applied now (gateway addresses to remove later).
    applied: Vec<EgressNet>,
    /// The table exists (we created it).
    table: bool,
}

impl Egress {
    pub fn new() -> Egress {
        Egress::default()
    }

    /// The networks whose egress is set up.
    pub fn applied(&self) -> &[EgressNet] {
        &self.applied
    }

    /// Make egress match `nets` (the networks with egress on). `overlay_ifaces`: every overlay bridge and TAP
    /// of this host (of all networks, with or without egress). With no egress network the table is deleted.
    pub fn apply(&mut self, nets: &[EgressNet], overlay_ifaces: &[String]) -> Result<(), EgressError> {
        for n in nets {
            check_name(&n.bridge)?;
            if n.gateway().is_none() {
                return Err(EgressError::NoGateway {
                    network: n.name.clone(),
                    subnet: n.subnet,
                });
            }
        }
        for i in overlay_ifaces {
            check_name(i)?;
        }
        if nets.is_empty() {
            return self.teardown();
        }
        let nft = find_nft()?;
        if nets.iter().any(|n| n.subnet.addr().is_ipv4()) {
            enable_forwarding(IPV4_FORWARD)?;
        }
        if nets.iter().any(|n| n.subnet.addr().is_ipv6()) {
            enable_forwarding(IPV6_FORWARD)?;
        }
        // Bridges are always overlay interfaces, even if the caller forgot one.
        let mut ifaces: Vec<String> = overlay_ifaces.to_vec();
        for n in nets {
            if !ifaces.contains(&n.bridge) {
                ifaces.push(n.bridge.clone());
            }
        }
        ifaces.sort();
        ifaces.dedup();
        run_nft(&nft, &ruleset(nets, &ifaces))?;
        self.table = true;
        // Gateways: remove the ones no longer wanted, then add the new ones (adding is idempotent).
        let old = std::mem::take(&mut self.applied);
        for o in old.iter().filter(|o| !nets.contains(o)) {
            remove_gateway(o);
        }
        for n in nets {
            let gw = n.gateway().ok_or_else(|| EgressError::NoGateway {
                network: n.name.clone(),
                subnet: n.subnet,
            })?;
            host::veth::set_address(&n.bridge, gw, true).map_err(|source| EgressError::Host {
                bridge: n.bridge.clone(),
                source,
            })?;
            self.applied.push(n.clone());
        }
        Ok(())
    }

    /// Delete the table and the gateway addresses. Idempotent.
    pub fn teardown(&mut self) -> Result<(), EgressError> {
        for n in std::mem::take(&mut self.applied) {
            remove_gateway(&n);
        }
        if self.table {
            run_nft(&find_nft()?, &delete_script())?;
            self.table = false;
        }
        Ok(())
    }
}

fn remove_gateway(n: &EgressNet) {
    if let Some(gw) = n.gateway() {
        match host::veth::set_address(&n.bridge, gw, false) {
            Ok(()) | Err(HostError::NoSuchDevice { .. }) => {}
            Err(e) => {
                tracing::warn!(bridge = %n.bridge, gateway = %gw, error = %e, "cannot remove the gateway address")
            }
        }
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!(error = %e, "cannot remove overlayd's egress rules");
        }
    }
}

/// Whether table `inet overlayd` exists in the calling thread's namespace (for tests and `diag`).
pub fn table_exists() -> Result<bool, EgressError> {
    let nft = find_nft()?;
    let out = Command::new(&nft)
        .args(["list", "table", "inet", TABLE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|source| EgressError::NftRun { path: nft, source })?;
    Ok(out.success())
}

/// The gateway of `subnet` as an address (for the attach default route), if the subnet has one.
pub fn gateway_ip(subnet: IpNet) -> Option<IpAddr> {
    ipam::gateway(subnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blue() -> EgressNet {
        EgressNet {
            name: "blue".into(),
            bridge: "ovbr10".into(),
            subnet: "10.20.0.0/16".parse().unwrap(),
        }
    }

    #[test]
    fn ruleset_text() {
        let red6 = EgressNet {
            name: "red".into(),
            bridge: "ovbr20".into(),
            subnet: "fd00:20::5/64".parse().unwrap(),
        };
        let ifaces = vec!["ovbr10".to_owned(), "ovbr20".to_owned(), "ovl10".to_owned()];
        let s = ruleset(&[blue(), red6], &ifaces);
        assert!(
            s.starts_with("table inet overlayd {}\ndelete table inet overlayd\n"),
            "{s}"
        );
        assert!(s.contains(
            "ip saddr 10.20.0.0/16 oifname != { \"ovbr10\", \"ovbr20\", \"ovl10\" } masquerade comment \"egress blue\""
        ), "{s}");
        assert!(s.contains("ip6 saddr fd00:20::/64 oifname != "), "{s}");
        assert!(s.contains("type nat hook postrouting priority srcnat;"), "{s}");
        assert!(s.contains("type filter hook forward priority filter;"), "{s}");
        assert!(s.contains(
            "iifname { \"ovbr10\", \"ovbr20\", \"ovl10\" } oifname { \"ovbr10\", \"ovbr20\", \"ovl10\" } drop"
        ), "{s}");
    }

    #[test]
    fn gateway_on_the_bridge_has_the_subnet_prefix() {
        assert_eq!(blue().gateway(), Some("10.20.0.1/16".parse().unwrap()));
        let tiny = EgressNet {
            subnet: "10.0.0.0/31".parse().unwrap(),
            ..blue()
        };
        assert_eq!(tiny.gateway(), None);
    }

    #[test]
    fn unsafe_names_and_tiny_subnets_are_refused_before_anything_runs() {
        let mut e = Egress::new();
        let bad = EgressNet {
            bridge: "br\"x".into(),
            ..blue()
        };
        assert!(matches!(e.apply(&[bad], &[]), Err(EgressError::BadName(_))));
        assert!(matches!(
            e.apply(&[blue()], &["a b".into()]),
            Err(EgressError::BadName(_))
        ));
        let tiny = EgressNet {
            subnet: "10.0.0.0/31".parse().unwrap(),
            ..blue()
        };
        let err = e.apply(&[tiny], &[]).unwrap_err();
        assert!(matches!(err, EgressError::NoGateway { .. }), "{err:?}");
        assert!(e.applied().is_empty());
        assert!(EgressError::NftMissing
            .to_string()
            .contains("Debian package `nftables`"));
    }
}
