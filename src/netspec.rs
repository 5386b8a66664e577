//! Network definitions in the configuration (issue 10 §1): `--network NAME:VNI[:SUBNET]` (repeatable) and
//! `[[network]]` tables (keys `name`, `vni`, `subnet`, `mtu`, `egress`), checked into [`NetworkSpec`]s with
//! their devices. The legacy single-network flags (`--vni --bridge --tap`) define the network `default`.
//!
//! Must never: accept two networks with one name, one VNI or one device name, or a name the kernel or the
//! admin API cannot carry.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::str::FromStr;

/// The network the legacy flags define.
pub const DEFAULT_NETWORK: &str = "default";
/// Longest network name (it is also part of nothing longer than an interface name).
pub const NAME_MAX: usize = 15;

/// One network as written in a flag or a `[[network]]` table.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkOpt {
    pub name: String,
    pub vni: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub egress: bool,
}

/// A network that passed every check, with its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    pub vni: dataplane::wire::Vni,
    pub subnet: Option<IpNet>,
    /// `None`: the daemon's overlay MTU (`--mtu`, else the underlay's minus the overhead).
    pub mtu: Option<u32>,
    pub egress: bool,
    pub bridge: String,
    pub tap: String,
}

impl NetworkSpec {
    /// The anycast gateway of an egress network: the subnet's first host address.
    pub fn gateway(&self) -> Option<IpAddr> {
        if !self.egress {
            return None;
        }
        self.subnet.and_then(first_host)
    }

    pub fn to_opt(&self) -> NetworkOpt {
        NetworkOpt {
            name: self.name.clone(),
            vni: self.vni.get(),
            subnet: self.subnet,
            mtu: self.mtu,
            egress: self.egress,
        }
    }
}

/// The first host address of `net` (10.20.0.1 in 10.20.0.0/16); `None` for a /32 or /128.
pub fn first_host(net: IpNet) -> Option<IpAddr> {
    let first = net.hosts().next()?;
    // `hosts()` of a /31 or /127 starts at the network address; skip it like any other subnet's.
    if first == net.network() {
        return net.hosts().nth(1);
    }
    Some(first)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetSpecError {
    #[error("--network {0:?}: write NAME:VNI or NAME:VNI:SUBNET, e.g. --network blue:100:10.20.0.0/16")]
    Syntax(String),
    #[error("--network {given:?}: {what} (e.g. --network blue:100:10.20.0.0/16)")]
    Part { given: String, what: String },
    #[error("network name {0:?}: use 1 to 15 letters, digits, '_', '.' or '-'")]
    Name(String),
    #[error("network {name}: VNI {vni} is out of range: use 1..=16777215")]
    Vni { name: String, vni: u32 },
    #[error("network {name}: --mtu {mtu} is out of range: use 576..=65000")]
    Mtu { name: String, mtu: u32 },
    #[error("network {name}: egress needs a subnet (its first address is the gateway): add one, e.g. {name}:VNI:10.20.0.0/16")]
    EgressWithoutSubnet { name: String },
    #[error("network {name}: subnet {subnet} has no host address for the gateway: use a larger subnet")]
    SubnetTooSmall { name: String, subnet: IpNet },
    #[error("two networks are named {0}: give each --network / [[network]] its own name")]
    DuplicateName(String),
    #[error("networks {a} and {b} both use VNI {vni}: give each network its own VNI")]
    DuplicateVni { a: String, b: String, vni: u32 },
    #[error("networks {a} and {b} would both use the interface {dev}: change a VNI, or --bridge/--tap of the default network")]
    DuplicateDevice { a: String, b: String, dev: String },
}

impl FromStr for NetworkOpt {
    type Err = NetSpecError;
    fn from_str(s: &str) -> Result<NetworkOpt, NetSpecError> {
        let mut parts = s.splitn(3, ':');
        let (Some(name), Some(vni)) = (parts.next(), parts.next()) else {
            return Err(NetSpecError::Syntax(s.to_string()));
        };
        let part = |what: String| NetSpecError::Part {
            given: s.to_string(),
            what,
        };
        let vni = vni
            .parse::<u32>()
            .map_err(|_| part(format!("VNI {vni:?} is not a number")))?;
        let subnet = match parts.next() {
            None => None,
            Some(t) => Some(
                t.parse::<IpNet>()
                    .map_err(|_| {
                        part(format!(
                            "subnet {t:?} is not a CIDR such as 10.20.0.0/16 or fd20::/64"
                        ))
                    })?
                    .trunc(),
            ),
        };
        Ok(NetworkOpt {
            name: name.to_string(),
            vni,
            subnet,
            mtu: None,
            egress: false,
        })
    }
}

/// 1 to [`NAME_MAX`] letters, digits, `_`, `.` or `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn check_name(name: &str) -> Result<(), NetSpecError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(NetSpecError::Name(name.to_string()))
    }
}

impl NetworkOpt {
    /// Check one network; its devices are `ovbr<VNI>` and `ovl<VNI>`.
    pub fn check(&self) -> Result<NetworkSpec, NetSpecError> {
        check_name(&self.name)?;
        let vni = dataplane::wire::Vni::new(self.vni)
            .ok()
            .filter(|v| v.get() > 0)
            .ok_or_else(|| NetSpecError::Vni {
                name: self.name.clone(),
                vni: self.vni,
            })?;
        if let Some(m) = self.mtu {
            if !(576..=65000).contains(&m) {
                return Err(NetSpecError::Mtu {
                    name: self.name.clone(),
                    mtu: m,
                });
            }
        }
        let spec = NetworkSpec {
            name: self.name.clone(),
            vni,
            subnet: self.subnet.map(|s| s.trunc()),
            mtu: self.mtu,
            egress: self.egress,
            bridge: format!("ovbr{}", self.vni),
            tap: format!("ovl{}", self.vni),
        };
        if self.egress {
            match spec.subnet {
                None => {
                    return Err(NetSpecError::EgressWithoutSubnet {
                        name: self.name.clone(),
                    })
                }
                Some(s) if first_host(s).is_none() => {
                    return Err(NetSpecError::SubnetTooSmall {
                        name: self.name.clone(),
                        subnet: s,
                    })
                }
                Some(_) => {}
            }
        }
        Ok(spec)
    }
}

/// Refuse two networks sharing a name, a VNI or a device; `existing` are the networks already served (the
/// runtime add checks against them too).
pub fn check_collisions<'a>(
    new: &NetworkSpec,
    existing: impl IntoIterator<Item = &'a NetworkSpec>,
) -> Result<(), NetSpecError> {
    for n in existing {
        if n.name == new.name {
            return Err(NetSpecError::DuplicateName(n.name.clone()));
        }
        if n.vni == new.vni {
            return Err(NetSpecError::DuplicateVni {
                a: n.name.clone(),
                b: new.name.clone(),
                vni: n.vni.get(),
            });
        }
        for d in [&new.bridge, &new.tap] {
            if *d == n.bridge || *d == n.tap {
                return Err(NetSpecError::DuplicateDevice {
                    a: n.name.clone(),
                    b: new.name.clone(),
                    dev: d.clone(),
                });
            }
        }
    }
    if new.bridge == new.tap {
        return Err(NetSpecError::DuplicateDevice {
            a: new.name.clone(),
            b: new.name.clone(),
            dev: new.tap.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_syntax() {
        let n: NetworkOpt = "blue:100:10.20.0.7/16".parse().unwrap();
        assert_eq!(
            (n.name.as_str(), n.vni, n.subnet.unwrap().to_string()),
            ("blue", 100, "10.20.0.0/16".to_string())
        );
        let n: NetworkOpt = "a:7".parse().unwrap();
        assert_eq!((n.vni, n.subnet), (7, None));
        let n: NetworkOpt = "v6:9:fd20::/64".parse().unwrap();
        assert_eq!(n.subnet.unwrap().to_string(), "fd20::/64");
        for bad in ["", "a", "a:", "a:x", "a:1:10.0.0.0", "a:1:nope/8", "a:-1"] {
            assert!(bad.parse::<NetworkOpt>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn checks_name_vni_mtu_and_egress() {
        let ok = |s: &str| s.parse::<NetworkOpt>().unwrap().check();
        let spec = ok("blue:100:10.20.0.0/16").unwrap();
        assert_eq!((spec.bridge.as_str(), spec.tap.as_str()), ("ovbr100", "ovl100"));
        assert_eq!(spec.gateway(), None, "no egress, no gateway");
        let e = |n: &str| ok(n).unwrap_err().to_string();
        assert!(e("a-name-that-is-too-long:1").contains("1 to 15"));
        assert!(e("sp ace:1").contains("letters"));
        assert!(e("a:0").contains("1..=16777215"));
        assert!(e("a:16777216").contains("1..=16777215"));
        let mut o: NetworkOpt = "g:5".parse().unwrap();
        o.egress = true;
        assert!(o
            .check()
            .unwrap_err()
            .to_string()
            .contains("egress needs a subnet"));
        o.subnet = Some("10.20.0.0/16".parse().unwrap());
        assert_eq!(o.check().unwrap().gateway(), Some("10.20.0.1".parse().unwrap()));
        o.subnet = Some("fd20::/64".parse().unwrap());
        assert_eq!(o.check().unwrap().gateway(), Some("fd20::1".parse().unwrap()));
        o.subnet = Some("10.0.0.1/32".parse().unwrap());
        assert!(matches!(o.check(), Err(NetSpecError::SubnetTooSmall { .. })));
        o.subnet = None;
        o.egress = false;
        o.mtu = Some(100);
        assert!(o.check().unwrap_err().to_string().contains("576..=65000"));
    }

    #[test]
    fn collisions_name_the_clash() {
        let a = "a:100".parse::<NetworkOpt>().unwrap().check().unwrap();
        let same_name = "a:200".parse::<NetworkOpt>().unwrap().check().unwrap();
        let same_vni = "b:100".parse::<NetworkOpt>().unwrap().check().unwrap();
        let other = "c:300".parse::<NetworkOpt>().unwrap().check().unwrap();
        assert_eq!(
            check_collisions(&same_name, [&a]),
            Err(NetSpecError::DuplicateName("a".into()))
        );
        assert!(matches!(
            check_collisions(&same_vni, [&a]),
            Err(NetSpecError::DuplicateVni { vni: 100, .. })
        ));
        assert_eq!(check_collisions(&other, [&a]), Ok(()));
        let mut legacy = other.clone();
        legacy.name = "default".into();
        legacy.vni = dataplane::wire::Vni::new(1).unwrap();
        legacy.bridge = "ovl0".into();
        legacy.tap = "ovl100".into();
        let e = check_collisions(&legacy, [&a]).unwrap_err();
        assert!(e.to_string().contains("interface ovl100"), "{e}");
    }
}
