//! overlayd's Docker network + IPAM driver (src/docker) driven by a real dockerd, before the daemon serves
//! it: the driver runs in this test process behind a backend that wires veths and a bridge with `ip` in the
//! testbed host namespace (what the daemon's backend does with netlink). This checks the protocol against
//! the Docker actually installed: plugin discovery through a `.spec` file, `docker network create` with
//! driver and IPAM options, `docker run` (address, MAC, MTU, gateway route), `docker rm` and
//! `docker network rm` leaving no veth behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::docker::{Dockerd, BUSYBOX_IMAGE};
use common::testbed::{run_cmd, Netns, Testbed};
use overlayd::docker::{listen, BackendError, DockerAddr, DockerBackend, Driver, NetworkDef, NetworkInfo};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Wires what the driver asks for with `ip -n NS` in one host namespace.
#[derive(Debug)]
struct IpBackend {
    ns: String,
    networks: Mutex<Vec<NetworkInfo>>,
    next: Mutex<u32>,
    released: Mutex<Vec<IpAddr>>,
}

impl IpBackend {
    fn ip(&self, args: &str) -> Result<String, BackendError> {
        run_cmd(
            Command::new("ip")
                .args(["-n", &self.ns])
                .args(args.split_whitespace()),
        )
        .map_err(|e| BackendError::Internal(e.to_string()))
    }
}

impl DockerBackend for IpBackend {
    fn networks(&self) -> Result<Vec<NetworkInfo>, BackendError> {
        Ok(self.networks.lock().unwrap().clone())
    }

    fn create_network(&self, def: &NetworkDef) -> Result<NetworkInfo, BackendError> {
        let br = format!("ovbr{}", def.vni);
        self.ip(&format!("link add {br} type bridge stp_state 0"))?;
        self.ip(&format!("link set {br} up"))?;
        let gateway = overlayd::docker::gateway_of(&def.subnet);
        if def.egress {
            let g = gateway.unwrap();
            self.ip(&format!("addr add {g}/{} dev {br}", def.subnet.prefix_len()))?;
        }
        let info = NetworkInfo {
            name: def.name.clone(),
            vni: def.vni,
            subnet: Some(def.subnet),
            mtu: def.mtu.unwrap_or(1450),
            egress: def.egress,
            gateway: if def.egress { gateway } else { None },
        };
        self.networks.lock().unwrap().push(info.clone());
        Ok(info)
    }

    fn allocate_address(&self, network: &str, want: Option<IpAddr>) -> Result<IpAddr, BackendError> {
        let nets = self.networks.lock().unwrap();
        let n = nets
            .iter()
            .find(|n| n.name == network)
            .ok_or_else(|| BackendError::NotFound(network.into()))?;
        if let Some(w) = want {
            return Ok(w);
        }
        let IpAddr::V4(base) = n.subnet.unwrap().network() else {
            return Err(BackendError::BadRequest("IPv4 only here".into()));
        };
        let mut next = self.next.lock().unwrap();
        *next += 1;
        // This host's "block": 10.20.0.64/26.
        Ok(IpAddr::V4(Ipv4Addr::from(u32::from(base) + 64 + *next)))
    }

    fn release_address(&self, _: &str, ip: IpAddr) -> Result<(), BackendError> {
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
    ) -> Result<u32, BackendError> {
        let n = self
            .networks
            .lock()
            .unwrap()
            .iter()
            .find(|n| n.name == network)
            .cloned()
            .ok_or_else(|| BackendError::NotFound(network.into()))?;
        let m = n.mtu;
        let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        self.ip(&format!(
            "link add {host} mtu {m} type veth peer name {peer} mtu {m} address {}",
            mac.join(":")
        ))?;
        self.ip(&format!("link set {host} master ovbr{} up", n.vni))?;
        Ok(m)
    }

    fn delete_veth(&self, host: &str) -> Result<(), BackendError> {
        match self.ip(&format!("link del {host}")) {
            Err(BackendError::Internal(e)) if e.contains("Cannot find device") => Ok(()),
            r => r.map(|_| ()),
        }
    }
}

/// `/etc/docker/plugins/NAME.spec`, removed on drop.
struct SpecFile(std::path::PathBuf);

impl Drop for SpecFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
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
            IpBackend {
                ns: host.ns().to_string(),
                networks: Mutex::new(Vec::new()),
                next: Mutex::new(0),
                released: Mutex::new(Vec::new()),
            },
            Some(tb.log_dir()),
        )
        .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(listen::bind(&addr)).unwrap();
    rt.spawn(listen::serve(listener, driver.clone()));
    std::fs::create_dir_all("/etc/docker/plugins").unwrap();
    let spec = SpecFile(format!("/etc/docker/plugins/{plugin}.spec").into());
    std::fs::write(&spec.0, format!("{}\n", addr.spec_url())).unwrap();

    let d = Dockerd::start(host);
    d.import_busybox();

    // A wrong subnet for an existing name is refused with the driver's message.
    d.must(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--ipam-driver",
        &plugin,
        "--subnet",
        "10.20.0.0/16",
        "-o",
        "network=app",
        "-o",
        "vni=4242",
        "-o",
        "egress=true",
        "app",
    ]);
    let e = d
        .docker(&[
            "network",
            "create",
            "-d",
            &plugin,
            "--ipam-driver",
            &plugin,
            "--subnet",
            "10.30.0.0/16",
            "--ipam-opt",
            "network=app",
            "app2",
        ])
        .unwrap_err();
    assert!(e.stderr.contains("has subnet 10.20.0.0/16"), "{e}");
    assert!(host.link_exists("ovbr4242"));

    // Two containers: addresses from the block, the driver's MAC and MTU, a default route via the gateway.
    let a = d.run_detached(&["--network", "app", BUSYBOX_IMAGE, "sleep", "600"]);
    let b = d.run_detached(&["--network", "app", BUSYBOX_IMAGE, "sleep", "600"]);
    let ip_of = |id: &str| {
        d.must(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            id,
        ])
        .trim()
        .to_string()
    };
    let (ipa, ipb) = (ip_of(&a), ip_of(&b));
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
    let ports =
        run_cmd(Command::new("ip").args(["-n", host.ns(), "-o", "link", "show", "master", "ovbr4242"]))
            .unwrap();
    assert!(ports.trim().is_empty(), "{ports}");

    // docker network rm: forgotten on this host.
    d.must(&["network", "rm", "app"]);
    assert!(driver.snapshot().networks.is_empty());
    drop(d);
}
