//! Fixtures for the `kcored` end-to-end tests: a network namespace per node, `kcored`
//! processes inside them, the real `kubectl`, the demo images, HTTP from inside a
//! namespace, and a guard that removes every process, mount, cgroup and namespace.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kcore_ns::NetnsDir;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub use kcore_tests::netns::unique;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The demo application, built once per test binary as a static executable.
pub fn demo_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("demo-static");
        let host = String::from_utf8(
            Command::new("rustc")
                .arg("-vV")
                .output()
                .expect("rustc -vV")
                .stdout,
        )
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("host triple");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args(["build", "--release", "-p", "kcore-demo", "--target", &host])
            .status()
            .expect("cargo build kcore-demo");
        assert!(st.success(), "building the demo application failed");
        target_dir.join(host).join("release/kcore-demo")
    })
}

pub const KCORED: &str = env!("CARGO_BIN_EXE_kcored");
pub const KCORE: &str = env!("CARGO_BIN_EXE_kcore");

/// Builds `kcore.local/demo:<version>` into the stores under `data` from the README
/// walkthrough's Dockerfile (`examples/walkthrough/Dockerfile`): the demo binary and the
/// host's static busybox (a shell, `cat` and `tar` for `kubectl exec` and `cp`).
pub fn build_demo_image(data: &Path, version: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let context = tempfile::tempdir().expect("build context");
    std::fs::copy(demo_binary(), context.path().join("kcore-demo")).expect("demo binary");
    std::fs::copy("/bin/busybox", context.path().join("busybox"))
        .expect("busybox-static at /bin/busybox");
    let out = Command::new(KCORE)
        .arg("image")
        .arg("--root")
        .arg(data)
        .arg("build")
        .arg("-f")
        .arg(root.join("examples/walkthrough/Dockerfile"))
        .args([
            "-t",
            &format!("kcore.local/demo:{version}"),
            "--build-arg",
            &format!("APP_VERSION={version}"),
        ])
        .arg(context.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kcore image build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command inside the network namespace at `netns`.
pub fn in_netns(netns: &Path, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns.display())).arg(program);
    c
}

pub fn run_ok(mut c: Command) -> String {
    let out: Output = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 200 ms until it returns `Some`, or panics with `what` after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One HTTP/1.1 request made from inside `netns`; returns status and body.
pub fn http(
    netns: &Path,
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = kcore_ns::netns::run_in(netns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
    })
    .map_err(std::io::Error::other)??;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// A network namespace standing for one machine, with its own state directory; on
/// drop every kcored in it is stopped, the node reset, leftovers removed.
pub struct Machine {
    pub name: String,
    pub netns: PathBuf,
    pub data: PathBuf,
    pub cgroup_parent: String,
    pub kcored: Option<Child>,
    netns_dir: NetnsDir,
    dir: tempfile::TempDir,
}

impl Machine {
    /// A namespace with `lo` up and, when given, an interface `eth0` carrying `ip/24`
    /// (one end of a veth pair whose other end stays in the namespace, down).
    pub fn new(tag: &str, dummy_ip: Option<&str>) -> Machine {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kcored-e2e-{tag}-"))
            .tempdir()
            .unwrap();
        let netns_dir = NetnsDir::new(dir.path().join("netns"));
        let name = unique(tag);
        let ns = netns_dir.create(&name).unwrap();
        ns.run(kcore_ns::netns::loopback_up).unwrap().unwrap();
        let netns = ns.path().to_owned();
        let m = Machine {
            name: name.clone(),
            netns,
            data: dir.path().join("data"),
            cgroup_parent: unique("kcore-e2e-"),
            kcored: None,
            netns_dir,
            dir,
        };
        if let Some(ip) = dummy_ip {
            m.ip(&[
                "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
            ]);
            m.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            m.ip(&["link", "set", "eth0p", "up"]);
            m.ip(&["link", "set", "eth0", "up"]);
            // like any host, a default route (Service VIPs need a route before DNAT)
            m.ip(&["route", "add", "default", "dev", "eth0"]);
        }
        m
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut c = in_netns(&self.netns, "ip");
        c.args(args);
        run_ok(c)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data.join("apiserver/admin.kubeconfig")
    }

    /// Starts `kcored <args>` in the namespace, logging to `<dir>/kcored-N.log`.
    pub fn start_kcored(&mut self, args: &[&str]) {
        std::fs::create_dir_all(&self.data).unwrap();
        let log_path = self.dir.path().join(format!(
            "kcored-{}.log",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut c = in_netns(&self.netns, KCORED);
        c.args(args)
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--cgroup-parent", &self.cgroup_parent])
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        self.kcored = Some(c.spawn().expect("spawn kcored"));
    }

    /// Whether kcored still runs; panics with its log when it died.
    pub fn check_alive(&mut self) {
        if let Some(c) = &mut self.kcored {
            if let Ok(Some(st)) = c.try_wait() {
                panic!("kcored exited with {st}:\n{}", self.logs());
            }
        }
    }

    /// The logs of every kcored started here.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path()) {
            let mut files: Vec<_> = rd
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .collect();
            files.sort_by_key(|e| e.file_name());
            for f in files {
                out.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
            }
        }
        out
    }

    /// SIGTERM (graceful) or SIGKILL, then waits.
    pub fn stop_kcored(&mut self, graceful: bool) {
        if let Some(mut c) = self.kcored.take() {
            let sig = if graceful { "-TERM" } else { "-KILL" };
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
    }

    /// `kubectl <args>` against the cluster whose admin kubeconfig is `kubeconfig`,
    /// from inside this namespace; returns (success, stdout + stderr).
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
        let mut c = in_netns(&self.netns, "kubectl");
        c.arg("--kubeconfig").arg(kubeconfig).args(args);
        let out = c.output().expect("kubectl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        let (ok, text) = self.kubectl_with(&self.kubeconfig(), args);
        assert!(
            ok,
            "kubectl {args:?} failed: {text}\n--- kcored log ---\n{}",
            self.logs()
        );
        text
    }

    /// Waits until the Node exists and is Ready.
    pub fn wait_node_ready(&mut self, node: &str) {
        wait_for(90, &format!("node {node} to be Ready"), || {
            self.check_alive();
            let (ok, out) = self.kubectl_with(
                &self.kubeconfig(),
                &[
                    "get",
                    "node",
                    node,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ],
            );
            (ok && out.trim() == "True").then_some(())
        });
    }

    pub fn kubectl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).expect("kubectl json")
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop_kcored(true);
        // whatever a crashed daemon left: pods, rules, bridge
        if self.data.join("node.json").exists() {
            let mut c = in_netns(&self.netns, KCORED);
            c.arg("reset").arg("--data-dir").arg(&self.data);
            let _ = c.output();
        }
        if let Ok(h) = kcore_cgroup::Host::detect() {
            if let Ok(cg) = kcore_cgroup::Cgroup::open(&h, &self.cgroup_parent) {
                let _ = cg.kill();
                let _ = cg.delete();
            }
        }
        kcore_tests::mounts::unmount_under(self.dir.path());
        let _ = self.netns_dir.remove(&self.name);
    }
}

/// The test switch: a bridge in its own namespace, one veth port per machine.
pub struct Switch {
    pub m: Machine,
}

impl Switch {
    pub fn new() -> Switch {
        let m = Machine::new("ksw", None);
        m.ip(&["link", "add", "br0", "type", "bridge"]);
        m.ip(&["link", "set", "br0", "up"]);
        Switch { m }
    }

    /// Plugs `machine` in: its `eth0` gets `ip/24` and a default route.
    pub fn plug(&self, machine: &Machine, port: usize, ip: &str) {
        // a process in the machine's namespace names it for `ip link ... netns`
        let mut holder: Child = in_netns(&machine.netns, "sleep")
            .arg("60")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // only once the holder has entered the namespace does its pid name it
        use std::os::unix::fs::MetadataExt;
        let target = std::fs::metadata(&machine.netns).unwrap().ino();
        wait_for(10, "the holder to enter the namespace", || {
            let ino = std::fs::metadata(format!("/proc/{}/ns/net", holder.id()))
                .ok()?
                .ino();
            (ino == target).then_some(())
        });
        let port_name = format!("swp{port}");
        self.m.ip(&[
            "link",
            "add",
            &port_name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &holder.id().to_string(),
        ]);
        let _ = holder.kill();
        let _ = holder.wait();
        self.m
            .ip(&["link", "set", &port_name, "master", "br0", "up"]);
        machine.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        machine.ip(&["link", "set", "eth0", "up"]);
        machine.ip(&["route", "add", "default", "dev", "eth0"]);
    }
}

/// `kubectl apply -f -` of `yaml` with `server`'s admin kubeconfig.
pub fn apply(server: &Machine, yaml: &str) {
    let mut c = in_netns(&server.netns, "kubectl");
    c.arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
