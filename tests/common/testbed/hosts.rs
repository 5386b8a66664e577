//! The testbed's host and container namespaces: creating a host (underlay veth, addresses, `ovl0`, its
//! container), kernel VXLAN on a host, and the accessors tests use (addresses, MAC, admin socket path).

use super::cmd::{ip, ipn, wait_until};
use super::{quiet_ipv6, BridgeMode, Netns, Testbed, BRIDGE, OVERLAY_MTU, OVERLAY_MTU_V6, UNDERLAY_MTU};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A host namespace: `eth0` on the underlay, the bridge `ovl0`, optionally a container.
#[derive(Debug)]
pub struct Host {
    index: usize,
    pub(super) ns: String,
    underlay_ip: Ipv4Addr,
    underlay_ip6: Option<Ipv6Addr>,
    pub(super) container: Option<Container>,
    log_dir: PathBuf,
}

impl Netns for Host {
    fn ns(&self) -> &str {
        &self.ns
    }
    fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

impl Host {
    pub(super) fn create(tb: &Testbed, n: usize, container: bool, bridge: BridgeMode, ipv6: bool) -> Host {
        let u = &tb.underlay.name;
        let ns = format!("ovt{}h{n}", tb.id);
        ip(&["netns", "add", &ns]);
        let underlay_ip = Ipv4Addr::new(10, 0, 0, n as u8);
        // Register before configuring, so a failure below still gets the namespace deleted.
        let mut host = Host {
            index: n,
            ns,
            underlay_ip,
            underlay_ip6: ipv6.then(|| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n as u16)),
            container: None,
            log_dir: tb.log_dir.clone(),
        };
        let h = host.ns.clone();
        quiet_ipv6(&h, false);
        ipn(&h, "link set lo up");
        let m = UNDERLAY_MTU;
        ipn(
            u,
            &format!("link add h{n} mtu {m} type veth peer name eth0 netns {h} mtu {m}"),
        );
        ipn(u, &format!("link set h{n} master br0 up"));
        ipn(&h, &format!("addr add {underlay_ip}/24 dev eth0"));
        if let Some(ip6) = host.underlay_ip6 {
            // eth0 inherited disable_ipv6 from `default` (quiet_ipv6); no router solicitations either.
            let script = "echo 0 > /proc/sys/net/ipv6/conf/eth0/router_solicitations \
                          && echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6";
            if !Path::new("/proc/sys/net/ipv6").exists() {
                panic!("an IPv6 underlay needs a kernel with IPv6 (no /proc/sys/net/ipv6)");
            }
            ip(&["netns", "exec", &h, "sh", "-c", script]);
            ipn(&h, &format!("addr add {ip6}/64 dev eth0 nodad"));
        }
        ipn(&h, "link set eth0 up");
        if bridge == BridgeMode::Testbed {
            ipn(&h, &format!("link add {BRIDGE} type bridge stp_state 0"));
            ipn(&h, &format!("link set {BRIDGE} up"));
        }
        if container {
            let cns = format!("ovt{}c{n}", tb.id);
            ip(&["netns", "add", &cns]);
            let c = Container {
                index: n,
                ns: cns.clone(),
                ip: Ipv4Addr::new(10, 1, 0, n as u8),
                mac: format!("02:00:00:00:01:{n:02x}"),
                log_dir: tb.log_dir.clone(),
            };
            let (ip4, mac) = (c.ip, c.mac.clone());
            host.container = Some(c);
            quiet_ipv6(&cns, true);
            ipn(&cns, "link set lo up");
            let m = if ipv6 { OVERLAY_MTU_V6 } else { OVERLAY_MTU };
            ipn(
                &h,
                &format!("link add vc{n} mtu {m} type veth peer name eth0 netns {cns} mtu {m} address {mac}"),
            );
            ipn(&cns, &format!("addr add {ip4}/24 dev eth0"));
            ipn(&cns, "link set eth0 up");
            ipn(&h, &format!("link set vc{n} up"));
            if bridge == BridgeMode::Testbed {
                host.attach_container(Duration::ZERO);
            }
        }
        host
    }

    /// 1-based index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Path for this host's overlayd admin socket (`--admin-socket`), in the testbed's log dir. Network
    /// namespaces share one filesystem, so every daemon needs its own path, never the default
    /// `/run/overlayd/admin.sock`.
    pub fn admin_socket(&self) -> PathBuf {
        self.log_dir.join(format!("{}-admin.sock", self.ns))
    }

    /// Address on the underlay (10.0.0.N).
    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.underlay_ip
    }

    /// IPv6 address on the underlay (fd00::N); panics unless the testbed was built with
    /// [`TestbedBuilder::ipv6_underlay`].
    pub fn underlay_ip6(&self) -> Ipv6Addr {
        self.underlay_ip6
            .unwrap_or_else(|| panic!("host {} has no IPv6 underlay address", self.index))
    }

    pub fn container(&self) -> &Container {
        self.container
            .as_ref()
            .unwrap_or_else(|| panic!("host {} has no container", self.index))
    }

    /// Creates `ovl0` (up, no STP) and plugs the container into it: for a host that runs kernel VXLAN in a
    /// testbed built with [`BridgeMode::Daemon`].
    pub fn add_bridge(&self) {
        ipn(&self.ns, &format!("link add {BRIDGE} type bridge stp_state 0"));
        ipn(&self.ns, &format!("link set {BRIDGE} up"));
        if self.container.is_some() {
            self.attach_container(Duration::ZERO);
        }
    }

    /// Plugs the container's veth (`vc<N>`) into `ovl0`, waiting up to `timeout` for the bridge to appear
    /// (for [`BridgeMode::Daemon`], where overlayd creates it).
    pub fn attach_container(&self, timeout: Duration) {
        if !wait_until(timeout, || self.link_exists(BRIDGE)) {
            panic!("bridge {BRIDGE} did not appear in {} within {timeout:?}", self.ns);
        }
        ipn(&self.ns, &format!("link set vc{} master {BRIDGE} up", self.index));
    }

    /// Kernel VXLAN device `vx<VNI>` with learning on, one all-zero FDB entry per peer (head-end replication of
    /// BUM traffic), plugged into `ovl0`, MTU 1450. Returns the device name. The underlay veth keeps its default
    /// offloads: the kernel then sends inner TCP/UDP checksums partial (CHECKSUM_PARTIAL survives a veth) and
    /// TSO superframes as UDP-tunnel GSO packets, as on a virtio underlay; [`Host::kernel_tx_csum_off`] makes
    /// it fill them in like a physical NIC would.
    pub fn add_kernel_vxlan(&self, vni: u32, dstport: u16, peers: &[Ipv4Addr]) -> String {
        let peers: Vec<String> = peers.iter().map(Ipv4Addr::to_string).collect();
        self.kernel_vxlan(vni, dstport, &self.underlay_ip.to_string(), OVERLAY_MTU, &peers)
    }

    /// Like [`Host::add_kernel_vxlan`] over the IPv6 underlay: `local fd00::N`, MTU 1430. The kernel sends UDP
    /// checksums over IPv6 by default (`udp6zerocsumtx` off) and refuses zero-checksum datagrams
    /// (`udp6zerocsumrx` off), as RFC 6935/7348 ask.
    pub fn add_kernel_vxlan6(&self, vni: u32, dstport: u16, peers: &[Ipv6Addr]) -> String {
        let peers: Vec<String> = peers.iter().map(Ipv6Addr::to_string).collect();
        self.kernel_vxlan(
            vni,
            dstport,
            &self.underlay_ip6().to_string(),
            OVERLAY_MTU_V6,
            &peers,
        )
    }

    fn kernel_vxlan(&self, vni: u32, dstport: u16, local: &str, m: u32, peers: &[String]) -> String {
        let dev = format!("vx{vni}");
        let h = &self.ns;
        ipn(
            h,
            &format!("link add {dev} type vxlan id {vni} dstport {dstport} local {local} dev eth0"),
        );
        ipn(h, &format!("link set {dev} mtu {m}"));
        for dst in peers {
            self.run(
                "bridge",
                &["fdb", "append", "00:00:00:00:00:00", "dev", &dev, "dst", dst],
            );
        }
        ipn(h, &format!("link set {dev} master {BRIDGE} up"));
        dev
    }

    /// `ethtool -K eth0 tx off`: the kernel computes every checksum (and segments) in software before the
    /// underlay, so it carries what a physical wire would.
    pub fn kernel_tx_csum_off(&self) {
        if let Err(e) = self.exec("ethtool", &["-K", "eth0", "tx", "off"]) {
            panic!("`ethtool -K eth0 tx off` failed (apt-get install ethtool): {e}");
        }
    }
}

/// A container namespace behind a host's `ovl0`: `eth0` 10.1.0.N/24, MAC 02:00:00:00:01:0N, MTU 1450.
#[derive(Debug)]
pub struct Container {
    index: usize,
    pub(super) ns: String,
    ip: Ipv4Addr,
    mac: String,
    log_dir: PathBuf,
}

impl Netns for Container {
    fn ns(&self) -> &str {
        &self.ns
    }
    fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

impl Container {
    pub fn index(&self) -> usize {
        self.index
    }
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// Lower-case, colon-separated, e.g. `02:00:00:00:01:01`.
    pub fn mac(&self) -> &str {
        &self.mac
    }
}
