//! Ethernet II header view and MAC addresses.

use super::WireError;
use std::fmt;
use std::str::FromStr;

pub const ETHERNET_HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// A 48-bit IEEE MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Group bit set: broadcast or multicast.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }
    /// A MAC that may be learned as a source: unicast and not all-zero (RFC 7348 §4 / kernel vxlan_snoop).
    pub fn is_learnable(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }
    pub fn from_slice(b: &[u8]) -> Option<MacAddr> {
        b.get(..6).and_then(|s| <[u8; 6]>::try_from(s).ok()).map(MacAddr)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for o in out.iter_mut() {
            let p = parts.next().ok_or_else(|| WireError::MacSyntax(s.to_string()))?;
            if p.len() != 2 {
                return Err(WireError::MacSyntax(s.to_string()));
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| WireError::MacSyntax(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(WireError::MacSyntax(s.to_string()));
        }
        Ok(MacAddr(out))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A checked view of an Ethernet II frame: at least [`ETHERNET_HEADER_LEN`] bytes.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let have = buf.as_ref().len();
        if have < ETHERNET_HEADER_LEN {
            return Err(WireError::Truncated {
                need: ETHERNET_HEADER_LEN,
                have,
            });
        }
        Ok(EthernetFrame { buf })
    }
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn dst(&self) -> MacAddr {
        let b = self.b();
        MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
    }
    pub fn src(&self) -> MacAddr {
        let b = self.b();
        MacAddr([b[6], b[7], b[8], b[9], b[10], b[11]])
    }
    pub fn ethertype(&self) -> u16 {
        let b = self.b();
        u16::from_be_bytes([b[12], b[13]])
    }
    pub fn payload(&self) -> &[u8] {
        &self.b()[ETHERNET_HEADER_LEN..]
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.b()
    }
}
