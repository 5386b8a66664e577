//! A real `dockerd` per testbed host namespace, for the Docker end-to-end tests.
//!
//! Owns: starting `dockerd` inside a host's network namespace with its own data root, exec root, API socket,
//! pid file and config (so several run side by side and none touches the machine's own Docker), waiting until
//! it answers, importing a busybox image (no registry here: a rootfs of Debian's static `/bin/busybox` plus
//! symlinks), running and removing containers, and on `Drop` removing every container, stopping dockerd and
//! its containerd, unmounting what they left and deleting the directories.
//! Must never: use `ip netns exec` (it remounts /sys, hides the cgroup mounts, and dockerd then refuses to
//! start; `nsenter --net` enters only the network namespace), or touch `/var/lib/docker` and `/run/docker.sock`.
//!
//! Tools: dockerd, docker (Debian package docker.io), /bin/busybox (busybox-static), nsenter (util-linux),
//! tar (tar). A missing one fails the test naming the package.
#![allow(dead_code)]

use super::testbed::{run_cmd, wait_until, CmdError, Netns};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The image [`Dockerd::import_busybox`] creates.
pub const BUSYBOX_IMAGE: &str = "overlayd-busybox:latest";
/// Applets linked in the image (beyond `busybox` itself).
pub const APPLETS: &[&str] = &[
    "sh", "ping", "wget", "httpd", "sleep", "ip", "cat", "echo", "ls", "hostname", "ifconfig", "seq",
];

/// `/etc/docker/plugins/NAME.spec` naming a plugin URL (`tcp://127.0.0.1:PORT` or `unix:///path.sock`):
/// dockerd discovers the plugin `NAME` through it. Every test uses a unique NAME (the file is shared by all
/// dockerds on the machine); removed on drop.
#[derive(Debug)]
pub struct PluginSpec {
    pub name: String,
    path: PathBuf,
}

impl PluginSpec {
    pub fn write(name: &str, url: &str) -> PluginSpec {
        let dir = Path::new("/etc/docker/plugins");
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.spec"));
        std::fs::write(&path, format!("{url}\n"))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        PluginSpec {
            name: name.to_string(),
            path,
        }
    }
}

impl Drop for PluginSpec {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A tool the harness needs and the Debian package that provides it.
fn need(tool: &str, package: &str) {
    let found = if tool.starts_with('/') {
        Path::new(tool).exists()
    } else {
        run_cmd(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_ok()
    };
    assert!(
        found,
        "the Docker tests need `{tool}`: apt-get install -y {package}"
    );
}

/// Whether an ELF64 little-endian executable has no program interpreter (PT_INTERP), i.e. is statically
/// linked and runs in an image that holds nothing else.
pub fn is_static_elf(b: &[u8]) -> bool {
    let u16_at = |o: usize| b.get(o..o + 2).map(|x| u16::from_le_bytes([x[0], x[1]]) as usize);
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .and_then(|x| <[u8; 8]>::try_from(x).ok())
            .map(u64::from_le_bytes)
    };
    if !b.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(size), Some(num)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..num).all(|i| u32_at(phoff as usize + i * size).is_some_and(|t| t != PT_INTERP))
}

/// The docker CLI matching Debian's dockerd (`/usr/bin/docker` from docker.io) if present, else PATH's.
fn docker_cli() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

/// One dockerd in one network namespace.
#[derive(Debug)]
pub struct Dockerd {
    ns: String,
    dir: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Dockerd {
    /// Start dockerd in `host`'s network namespace with everything under `<host log dir>/dockerd-<ns>/` and
    /// wait (up to 60 s) until its API answers.
    pub fn start(host: &impl Netns) -> Dockerd {
        need("dockerd", "docker.io");
        need(docker_cli(), "docker.io");
        need("nsenter", "util-linux");
        let ns = host.ns().to_string();
        let dir = host.log_dir().join(format!("dockerd-{ns}"));
        for sub in ["data", "exec"] {
            std::fs::create_dir_all(dir.join(sub))
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        }
        let config = dir.join("daemon.json");
        std::fs::write(&config, "{}\n").unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let log_path = dir.join("dockerd.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup a file handle: {e}"));
        let p = |s: &str| dir.join(s).display().to_string();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}"))
            .arg("dockerd")
            .args([
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
            ])
            .args(["--ip-masq=false", "--userland-proxy=false"])
            .arg(format!("--data-root={}", p("data")))
            .arg(format!("--exec-root={}", p("exec")))
            .arg(format!("--pidfile={}", p("dockerd.pid")))
            .arg(format!("--config-file={}", config.display()))
            .arg(format!("-H=unix://{}", p("docker.sock")));
        // nsenter without --fork exec()s dockerd: the child's pid is dockerd's.
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dockerd with nsenter: {e}"));
        let mut d = Dockerd {
            ns,
            dir,
            child: Some(child),
            log_path,
        };
        let ready = wait_until(Duration::from_secs(60), || {
            d.exited().is_none() && d.docker(&["version", "--format", "{{.Server.Version}}"]).is_ok()
        });
        if !ready {
            let exit = d.exited();
            panic!(
                "dockerd in {} did not answer within 60 s (exit: {exit:?}); its log:\n{}",
                d.ns,
                d.log()
            );
        }
        d
    }

    /// The namespace dockerd runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// dockerd's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The API socket (`docker -H unix://…`).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// Everything dockerd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// `docker -H unix://<socket> args…` → stdout.
    pub fn docker(&self, args: &[&str]) -> Result<String, CmdError> {
        run_cmd(
            Command::new(docker_cli())
                .arg("-H")
                .arg(format!("unix://{}", self.socket().display()))
                .args(args),
        )
    }

    /// Like [`Dockerd::docker`], panicking with the error and dockerd's log tail.
    pub fn must(&self, args: &[&str]) -> String {
        self.docker(args).unwrap_or_else(|e| {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "{e}\n---- dockerd ({}) log tail ----\n{}",
                self.ns,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
    }

    /// Import [`BUSYBOX_IMAGE`]: a rootfs of the static `/bin/busybox` and symlinks for [`APPLETS`].
    pub fn import_busybox(&self) {
        need("/bin/busybox", "busybox-static");
        need("tar", "tar");
        let bin = std::fs::read("/bin/busybox").unwrap_or_else(|e| panic!("cannot read /bin/busybox: {e}"));
        assert!(
            is_static_elf(&bin),
            "/bin/busybox is dynamically linked and cannot run in an empty image: apt-get install -y busybox-static"
        );
        let root = self.dir.join("rootfs");
        let _ = std::fs::remove_dir_all(&root);
        for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "var/www", "root"] {
            std::fs::create_dir_all(root.join(d)).unwrap_or_else(|e| panic!("cannot create rootfs: {e}"));
        }
        std::fs::write(root.join("bin/busybox"), &bin).unwrap_or_else(|e| panic!("cannot write rootfs: {e}"));
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(root.join("bin/busybox"), std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("cannot chmod busybox: {e}"));
        }
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a))
                .unwrap_or_else(|e| panic!("cannot link {a}: {e}"));
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
            .unwrap_or_else(|e| panic!("cannot write rootfs: {e}"));
        std::fs::write(root.join("etc/group"), "root:x:0:\n")
            .unwrap_or_else(|e| panic!("cannot write rootfs: {e}"));
        let tar = self.dir.join("rootfs.tar");
        run_cmd(
            Command::new("tar")
                .arg("-cf")
                .arg(&tar)
                .arg("-C")
                .arg(&root)
                .arg("."),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        self.must(&[
            "import",
            "--change",
            "ENV PATH=/bin",
            &tar.display().to_string(),
            BUSYBOX_IMAGE,
        ]);
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_file(&tar);
    }

    /// `docker run -d args…` → the container id.
    pub fn run_detached(&self, args: &[&str]) -> String {
        let mut a = vec!["run", "-d"];
        a.extend_from_slice(args);
        self.must(&a).trim().to_string()
    }

    /// `n` busybox containers (`sleep 600`) on `network`, started at once (concurrent plugin calls) → their ids.
    pub fn run_many(&self, network: &str, n: usize) -> Vec<String> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    s.spawn(move || self.run_detached(&["--network", network, BUSYBOX_IMAGE, "sleep", "600"]))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }

    /// The container's address on its (only) network (`docker inspect … .IPAddress`).
    pub fn container_ip(&self, id: &str) -> String {
        self.must(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            id,
        ])
        .trim()
        .to_string()
    }

    /// `docker network create -d PLUGIN --ipam-driver PLUGIN args…`: a network of the plugin's network and
    /// IPAM driver; `args` end with the network's name.
    pub fn try_network_create(&self, plugin: &str, args: &[&str]) -> Result<String, CmdError> {
        self.docker(&network_create_args(plugin, args))
    }

    /// Like [`Dockerd::try_network_create`], panicking as [`Dockerd::must`] does.
    pub fn network_create(&self, plugin: &str, args: &[&str]) -> String {
        self.must(&network_create_args(plugin, args))
    }

    /// `docker exec id cmd…` → stdout.
    pub fn exec(&self, id: &str, cmd: &[&str]) -> Result<String, CmdError> {
        let mut a = vec!["exec", id];
        a.extend_from_slice(cmd);
        self.docker(&a)
    }

    /// `docker rm -f id`.
    pub fn rm(&self, id: &str) {
        self.must(&["rm", "-f", id]);
    }

    /// The host pid of a running container (`docker inspect -f {{.State.Pid}}`).
    pub fn container_pid(&self, id: &str) -> u32 {
        let out = self.must(&["inspect", "-f", "{{.State.Pid}}", id]);
        out.trim()
            .parse()
            .unwrap_or_else(|e| panic!("pid of {id}: {e}: {out:?}"))
    }

    /// Ids of all containers (running or not).
    pub fn containers(&self) -> Vec<String> {
        self.must(&["ps", "-aq", "--no-trunc"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Remove every container, stop dockerd (SIGTERM, then SIGKILL after 20 s) and its containerd, unmount
    /// what they left under the directory and delete it. Also done on drop.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            for id in self.docker(&["ps", "-aq"]).unwrap_or_default().lines() {
                let _ = self.docker(&["rm", "-f", id]);
            }
            let _ = run_cmd(Command::new("kill").args(["-TERM", &child.id().to_string()]));
            if !wait_until(Duration::from_secs(20), || {
                child.try_wait().ok().flatten().is_some()
            }) {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
        // The managed containerd normally exits with dockerd; after a SIGKILL it may not.
        let pidfile = self.dir.join("exec/containerd/containerd.pid");
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let pid = pid.trim();
            if !pid.is_empty() && Path::new(&format!("/proc/{pid}")).exists() {
                let _ = run_cmd(Command::new("kill").args(["-KILL", pid]));
            }
        }
        self.unmount_all();
        if std::thread::panicking() {
            eprintln!(
                "---- dockerd ({}) log kept in {} ----",
                self.ns,
                self.log_path.display()
            );
            let _ = std::fs::remove_dir_all(self.dir.join("data"));
            let _ = std::fs::remove_dir_all(self.dir.join("exec"));
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Lazily unmount every mount point under our directory, deepest first.
    fn unmount_all(&self) {
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let prefix = self.dir.display().to_string();
        let mut points: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = run_cmd(Command::new("umount").args(["-l", p]));
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Names of the links whose master is `bridge` in `host`'s namespace (`ip -o link show master BRIDGE`).
pub fn bridge_ports(host: &impl Netns, bridge: &str) -> Vec<String> {
    run_cmd(Command::new("ip").args(["-n", host.ns(), "-o", "link", "show", "master", bridge]))
        .unwrap_or_else(|e| panic!("{e}"))
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect()
}

fn network_create_args<'a>(plugin: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["network", "create", "-d", plugin, "--ipam-driver", plugin];
    a.extend_from_slice(args);
    a
}
