//! overlayd's Docker network + IPAM driver (src/docker) driven by a real dockerd, before the daemon serves
//! it: the driver runs in this test process behind a backend that wires veths and a bridge with `ip` in the
//! testbed host namespace (what the daemon's backend does with netlink). This checks the protocol against
//! the Docker actually installed: plugin discovery through a `.spec` file, `docker network create` with
//! driver and IPAM options, `docker run` (address, MAC, MTU, gateway route), `docker rm` and
//! `docker network rm` leaving no veth behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::docker::{bridge_ports, Dockerd, PluginSpec, BUSYBOX_IMAGE};
use common::testbed::{run_cmd, Netns, Testbed};
use overlayd::docker::listen::Listener;
use overlayd::docker::{listen, DockerAddr, DockerBackend, Driver, NetworkDef, NetworkInfo, OpsError};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Wires what the driver asks for with `ip -n NS` in one host namespace.
/// The cluster networks every host sees (what the control plane distributes).
type Cluster = Arc<Mutex<Vec<NetworkInfo>>>;

#[derive(Debug)]
struct IpBackend {
    ns: String,
    networks: Cluster,
    /// This host's block: `subnet + 64 * block`, a /26.
    block: u32,
    next: Mutex<u32>,
    released: Mutex<Vec<IpAddr>>,
}

impl IpBackend {
    fn new(ns: &str, networks: Cluster, block: u32) -> IpBackend {
        IpBackend {
            ns: ns.to_string(),
            networks,
            block,
            next: Mutex::new(0),
            released: Mutex::new(Vec::new()),
        }
    }

    /// The network's bridge in this host namespace, created on first use (as the daemon does when a
    /// network appears).
    fn bridge(&self, n: &NetworkInfo) -> Result<String, OpsError> {
        let br = format!("ovbr{}", n.vni);
        if self.ip(&format!("link show {br}")).is_err() {
            self.ip(&format!("link add {br} type bridge stp_state 0"))?;
            self.ip(&format!("link set {br} up"))?;
            if let (true, Some(g), Some(s)) = (n.egress, n.gateway, n.subnet) {
                self.ip(&format!("addr add {g}/{} dev {br}", s.prefix_len()))?;
            }
        }
        Ok(br)
    }
}

impl IpBackend {
    fn ip(&self, args: &str) -> Result<String, OpsError> {
        run_cmd(
            Command::new("ip")
                .args(["-n", &self.ns])
                .args(args.split_whitespace()),
        )
        .map_err(|e| OpsError::Internal(e.to_string()))
    }
}

impl DockerBackend for IpBackend {
    fn networks(&self) -> Result<Vec<NetworkInfo>, OpsError> {
        Ok(self.networks.lock().unwrap().clone())
    }

    fn create_network(&self, def: &NetworkDef) -> Result<NetworkInfo, OpsError> {
        let gateway = overlayd::docker::gateway_of(&def.subnet);
        let info = NetworkInfo {
            name: def.name.clone(),
            vni: def.vni,
            subnet: Some(def.subnet),
            mtu: def.mtu.unwrap_or(1450),
            egress: def.egress,
            gateway: if def.egress { gateway } else { None },
        };
        self.bridge(&info)?;
        self.networks.lock().unwrap().push(info.clone());
        Ok(info)
    }

    fn allocate_address(&self, network: &str, want: Option<IpAddr>) -> Result<IpAddr, OpsError> {
        let nets = self.networks.lock().unwrap();
        let n = nets
            .iter()
            .find(|n| n.name == network)
            .ok_or_else(|| OpsError::NotFound(network.into()))?;
        if let Some(w) = want {
            return Ok(w);
        }
        let IpAddr::V4(base) = n.subnet.unwrap().network() else {
            return Err(OpsError::BadRequest("IPv4 only here".into()));
        };
        let mut next = self.next.lock().unwrap();
        *next += 1;
        Ok(IpAddr::V4(Ipv4Addr::from(
            u32::from(base) + 64 * self.block + *next,
        )))
    }

    fn release_address(&self, _: &str, ip: IpAddr) -> Result<(), OpsError> {
        self.released.lock().unwrap().push(ip);
        Ok(())
    }

    fn create_veth(
        &self,
        network: &str,
        host: &str,
        peer: &str,
        mac: [u8; 6],
        _ip: IpAddr,
    ) -> Result<u32, OpsError> {
        let n = self
            .networks
            .lock()
            .unwrap()
            .iter()
            .find(|n| n.name == network)
            .cloned()
            .ok_or_else(|| OpsError::NotFound(network.into()))?;
        let m = n.mtu;
        let br = self.bridge(&n)?;
        let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        self.ip(&format!(
            "link add {host} mtu {m} type veth peer name {peer} mtu {m} address {}",
            mac.join(":")
        ))?;
        self.ip(&format!("link set {host} master {br} up"))?;
        Ok(m)
    }

    fn delete_veth(&self, host: &str) -> Result<(), OpsError> {
        match self.ip(&format!("link del {host}")) {
            Err(OpsError::Internal(e)) if e.contains("Cannot find device") => Ok(()),
            r => r.map(|_| ()),
        }
    }
}

/// The runtime the drivers under test are served on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn real_dockerd_drives_the_driver() {
    let tb = Testbed::builder().hosts(1).containers(false).build();
    tb.cleanup_on_exit();
    let host = tb.host(1);

    // The driver, served on a Unix socket; a uniquely named .spec file points dockerd at it.
    let plugin = format!("ovd{}", tb.id());
    let sock = tb.log_dir().join("plugin.sock");
    let addr: DockerAddr = format!("unix:{}", sock.display()).parse().unwrap();
    let driver = Arc::new(
        Driver::new(
            IpBackend::new(host.ns(), Cluster::default(), 1),
            Some(tb.log_dir()),
        )
        .unwrap(),
    );
    let rt = runtime();
    let listener = rt.block_on(listen::bind(&addr)).unwrap();
    rt.spawn(listen::serve(listener, driver.clone()));
    let _spec = PluginSpec::write(&plugin, &addr.spec_url());

    let d = Dockerd::start(host);
    d.import_busybox();

    // A wrong subnet for an existing name is refused with the driver's message.
    d.network_create(
        &plugin,
        &[
            "--subnet",
            "10.20.0.0/16",
            "-o",
            "network=app",
            "-o",
            "vni=4242",
            "-o",
            "egress=true",
            "app",
        ],
    );
    let e = d
        .try_network_create(
            &plugin,
            &["--subnet", "10.30.0.0/16", "--ipam-opt", "network=app", "app2"],
        )
        .unwrap_err();
    assert!(e.stderr.contains("has subnet 10.20.0.0/16"), "{e}");
    assert!(host.link_exists("ovbr4242"));

    // Two containers: addresses from the block, the driver's MAC and MTU, a default route via the gateway.
    let a = d.run_detached(&["--network", "app", BUSYBOX_IMAGE, "sleep", "600"]);
    let b = d.run_detached(&["--network", "app", BUSYBOX_IMAGE, "sleep", "600"]);
    let (ipa, ipb) = (d.container_ip(&a), d.container_ip(&b));
    assert!(
        ipa.starts_with("10.20.0.") && ipb.starts_with("10.20.0.") && ipa != ipb,
        "{ipa} {ipb}"
    );
    let st = driver.snapshot();
    println!("containers got {ipa} and {ipb}; endpoints {:?}", st.endpoints);
    assert_eq!(st.endpoints.len(), 2);
    let ep = st
        .endpoints
        .values()
        .find(|e| e.address.starts_with(&format!("{ipa}/")))
        .unwrap();
    assert_eq!(ep.address, format!("{ipa}/16"));
    let link = d.exec(&a, &["ip", "-o", "link", "show", "eth0"]).unwrap();
    assert!(link.contains("mtu 1450"), "{link}");
    assert!(link.contains(&ep.mac), "{link} should have {}", ep.mac);
    let addrs = d.exec(&a, &["ip", "-o", "addr", "show", "eth0"]).unwrap();
    assert!(addrs.contains(&format!("{ipa}/16")), "{addrs}");
    let routes = d.exec(&a, &["ip", "route"]).unwrap();
    assert!(routes.contains("default via 10.20.0.1"), "{routes}");
    assert!(host.link_exists(&ep.host_ifname));
    // Same host, same bridge: they talk, and reach the gateway on the bridge.
    d.exec(&a, &["ping", "-c", "2", "-W", "2", &ipb]).unwrap();
    d.exec(&b, &["ping", "-c", "1", "-W", "2", "10.20.0.1"]).unwrap();

    // docker rm -f: Leave + DeleteEndpoint delete the veth; the addresses go back.
    let veths: Vec<String> = st.endpoints.values().map(|e| e.host_ifname.clone()).collect();
    d.rm(&a);
    d.rm(&b);
    for v in &veths {
        assert!(!host.link_exists(v), "{v} left behind");
    }
    assert!(driver.snapshot().endpoints.is_empty());
    let released = driver.backend().released.lock().unwrap().clone();
    assert!(
        released.contains(&ipa.parse().unwrap()) && released.contains(&ipb.parse().unwrap()),
        "{released:?}"
    );
    // The bridge has no ports left.
    let ports = bridge_ports(host, "ovbr4242");
    assert!(ports.is_empty(), "{ports:?}");

    // Ten containers started at once: concurrent plugin calls, ten distinct addresses and veths.
    let ids = d.run_many("app", 10);
    let mut addrs: Vec<String> = ids.iter().map(|id| d.container_ip(id)).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 10, "{addrs:?}");
    assert_eq!(driver.snapshot().endpoints.len(), 10);
    for id in &ids {
        d.rm(id);
    }
    assert!(driver.snapshot().endpoints.is_empty());
    let ports = bridge_ports(host, "ovbr4242");
    assert!(ports.is_empty(), "{ports:?}");

    // docker network rm: forgotten on this host.
    d.must(&["network", "rm", "app"]);
    assert!(driver.snapshot().networks.is_empty());
    drop(d);
}

/// Bind a TCP listener on the loopback of a host namespace (from a short-lived thread that enters it), on
/// `port` (0: any); the socket stays in that namespace.
fn bind_in(ns: &str, port: u16) -> std::net::TcpListener {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&f),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        })
        .join()
        .unwrap()
    })
}

/// The production layout for several dockerds: one `.spec` file naming `tcp://127.0.0.1:PORT`, and in every
/// host namespace its own driver on that port. The same cluster network is joined from the second host with
/// `--ipam-opt network=NAME` and no subnet; a different subnet is refused there.
#[test]
fn two_dockerds_share_one_tcp_spec_and_one_cluster_network() {
    let tb = Testbed::builder().hosts(2).containers(false).build();
    tb.cleanup_on_exit();
    let cluster = Cluster::default();
    let rt = runtime();
    let l1 = bind_in(tb.host(1).ns(), 0);
    let port = l1.local_addr().unwrap().port();
    let l2 = bind_in(tb.host(2).ns(), port);
    let mut drivers = Vec::new();
    for (i, l) in [(1u32, l1), (2, l2)] {
        let h = tb.host(i as usize);
        let dir = tb.log_dir().join(format!("state{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let d = Arc::new(Driver::new(IpBackend::new(h.ns(), cluster.clone(), i), Some(&dir)).unwrap());
        let listener = rt
            .block_on(async { tokio::net::TcpListener::from_std(l) })
            .unwrap();
        rt.spawn(listen::serve(Listener::Tcp(listener), d.clone()));
        drivers.push(d);
    }
    let plugin = format!("ovd{}", tb.id());
    let addr: DockerAddr = format!("tcp:127.0.0.1:{port}").parse().unwrap();
    let _spec = PluginSpec::write(&plugin, &addr.spec_url());

    let d1 = Dockerd::start(tb.host(1));
    let d2 = Dockerd::start(tb.host(2));
    let p = plugin.as_str();
    d1.network_create(
        p,
        &["--subnet", "10.20.0.0/16", "--ipam-opt", "network=app", "app"],
    );
    let e = d2
        .try_network_create(
            p,
            &["--subnet", "10.21.0.0/16", "--ipam-opt", "network=app", "app"],
        )
        .unwrap_err();
    assert!(e.stderr.contains("has subnet 10.20.0.0/16"), "{e}");
    d2.network_create(p, &["--ipam-opt", "network=app", "app"]);
    let subnet = d2.must(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        "app",
    ]);
    assert_eq!(subnet.trim(), "10.20.0.0/16");
    assert_eq!(cluster.lock().unwrap().len(), 1, "one cluster network");

    let mut ips = Vec::new();
    for (d, h) in [(&d1, tb.host(1)), (&d2, tb.host(2))] {
        d.import_busybox();
        let c = d.run_detached(&["--network", "app", BUSYBOX_IMAGE, "sleep", "600"]);
        let a = d.exec(&c, &["ip", "-o", "-4", "addr", "show", "eth0"]).unwrap();
        let ip = a.split_whitespace().nth(3).unwrap().to_string();
        assert!(ip.ends_with("/16"), "{a}");
        // Without egress there is no gateway and no default route (and no docker_gwbridge).
        let routes = d.exec(&c, &["ip", "route"]).unwrap();
        assert!(!routes.contains("default"), "{routes}");
        assert!(!h.link_exists("docker_gwbridge"));
        ips.push(ip);
        d.rm(&c);
        let links = run_cmd(Command::new("ip").args(["-n", h.ns(), "-o", "link", "show"])).unwrap();
        assert!(
            !links.lines().any(|l| l.contains(": ovh") || l.contains(": ovc")),
            "endpoint veths left in {}: {links}",
            h.ns()
        );
        d.must(&["network", "rm", "app"]);
    }
    println!("addresses from the two hosts' blocks: {ips:?}");
    assert_ne!(ips[0], ips[1]);
    for d in &drivers {
        let st = d.snapshot();
        assert!(
            st.networks.is_empty() && st.endpoints.is_empty() && st.named_pools.is_empty(),
            "{st:?}"
        );
    }
    drop((d1, d2));
}
