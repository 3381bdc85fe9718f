//! The highly available cluster of the `ha` tests and the failover bench: three etcd
//! members (Debian's `etcd`; clients and peers over mutual TLS) and three
//! `kcored server`s, each pair in its own network namespace on a test switch, plus a
//! fourth namespace for one `kcored agent`.
//!
//! Used as `mod common; mod hacluster;` (the test) or through `#[path]` (the bench).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// Fast leader election (the README's test settings).
pub const LEADER_FLAGS: &[&str] = &[
    "--leader-elect-lease-duration",
    "2s",
    "--leader-elect-renew-deadline",
    "1500ms",
    "--leader-elect-retry-period",
    "250ms",
    "--endpoint-reconcile-interval",
    "1s",
];

/// The address of server machine `i` on the switch.
pub fn ip(i: usize) -> String {
    format!("10.98.0.{}", i + 1)
}

/// The agent machine's address.
pub const AGENT_IP: &str = "10.98.0.10";

/// Whether `program --version` runs.
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Panics unless etcd and etcdctl are installed.
pub fn need_etcd() {
    if !have("etcd") || !have("etcdctl") {
        panic!("etcd and etcdctl are needed (Debian: etcd-server, etcd-client; tests/run.sh installs them)");
    }
}

/// Sends `sig` (`-KILL`, `-TERM`, `-STOP`, `-CONT`) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig}");
}

/// The certificates: etcd members' serving and peer certificates and the servers'
/// client one, all from one CA.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = kcore_tls::Ca::load_or_create(dir.path()).unwrap();
        for i in 0..3 {
            ca.issue(
                &format!("etcd{i}"),
                &[ip(i), "127.0.0.1".into()],
                kcore_tls::Usage::Server,
            )
            .unwrap()
            .write(dir.path(), &format!("etcd{i}"))
            .unwrap();
            // a peer serves the others and dials them with the same certificate
            ca.issue(&format!("etcd{i}-peer"), &[ip(i)], kcore_tls::Usage::Peer)
                .unwrap()
                .write(dir.path(), &format!("etcd{i}-peer"))
                .unwrap();
        }
        ca.issue_client("kube-apiserver-etcd-client", &[])
            .unwrap()
            .write(dir.path(), "client")
            .unwrap();
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The kcored flags of mutual TLS towards etcd.
    pub fn server_flags(&self) -> Vec<String> {
        vec![
            "--etcd-cafile".into(),
            self.path("ca.crt").display().to_string(),
            "--etcd-certfile".into(),
            self.path("client.crt").display().to_string(),
            "--etcd-keyfile".into(),
            self.path("client.key").display().to_string(),
        ]
    }

    /// etcdctl with the client's flags, in `m`'s namespace.
    pub fn etcdctl(&self, m: &Machine, endpoint: &str) -> Command {
        let mut c = in_netns(&m.netns, "etcdctl");
        c.env("ETCDCTL_API", "3").args([
            &format!("--endpoints={endpoint}"),
            &format!("--cacert={}", self.path("ca.crt").display()),
            &format!("--cert={}", self.path("client.crt").display()),
            &format!("--key={}", self.path("client.key").display()),
        ]);
        c
    }
}

/// One etcd member in a machine's namespace.
pub struct Etcd {
    child: Option<Child>,
    log: PathBuf,
    args: Vec<String>,
    netns: PathBuf,
}

impl Etcd {
    pub fn start(m: &Machine, i: usize, pki: &Pki, cluster: &str, token: &str) -> Etcd {
        let data = m.data.with_file_name(format!("etcd{i}"));
        let log = m.data.with_file_name(format!("etcd{i}.log"));
        let me = ip(i);
        let file = |name: String| pki.path(&name).display().to_string();
        let args = vec![
            format!("--name=e{i}"),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls=https://{me}:2379"),
            format!("--advertise-client-urls=https://{me}:2379"),
            format!("--listen-peer-urls=https://{me}:2380"),
            format!("--initial-advertise-peer-urls=https://{me}:2380"),
            format!("--initial-cluster={cluster}"),
            "--initial-cluster-state=new".into(),
            format!("--initial-cluster-token={token}"),
            // clients: mutual TLS
            "--client-cert-auth".into(),
            format!("--trusted-ca-file={}", file("ca.crt".into())),
            format!("--cert-file={}", file(format!("etcd{i}.crt"))),
            format!("--key-file={}", file(format!("etcd{i}.key"))),
            // peers: mutual TLS too
            "--peer-client-cert-auth".into(),
            format!("--peer-trusted-ca-file={}", file("ca.crt".into())),
            format!("--peer-cert-file={}", file(format!("etcd{i}-peer.crt"))),
            format!("--peer-key-file={}", file(format!("etcd{i}-peer.key"))),
        ];
        let mut e = Etcd {
            child: None,
            log,
            args,
            netns: m.netns.clone(),
        };
        e.restart();
        e
    }

    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = in_netns(&self.netns, "etcd");
        c.args(&self.args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        self.child = Some(c.spawn().expect("spawn etcd"));
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The member's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The cluster: switch, three server machines, the agent's machine.
pub struct Ha {
    _switch: Switch,
    pub servers: Vec<Machine>,
    pub agent: Machine,
    pub etcd: Vec<Etcd>,
    pub pki: Pki,
    /// The servers' leader-election (and endpoint) flags.
    leader_flags: Vec<String>,
}

impl Ha {
    fn datastore() -> String {
        let eps: Vec<String> = (0..3).map(|i| format!("{}:2379", ip(i))).collect();
        format!("etcd://{}", eps.join(","))
    }

    fn server_args(&self, i: usize, token: Option<&str>) -> Vec<String> {
        let mut a: Vec<String> = [
            "server",
            "--listen",
            "0.0.0.0:6443",
            "--node-ip",
            &ip(i),
            "--node-name",
            &format!("s{i}"),
            "--datastore",
            &Self::datastore(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(self.pki.server_flags());
        a.extend(self.leader_flags.iter().cloned());
        if let Some(t) = token {
            a.extend(["--token".to_string(), t.to_string()]);
        }
        a
    }

    /// Starts the cluster with the tests' fast Lease timings ([`LEADER_FLAGS`]).
    pub fn start() -> Ha {
        Self::start_with(LEADER_FLAGS)
    }

    /// Starts etcd and the three servers with `leader_flags` (none: upstream's
    /// defaults); checks that a wrong join token is refused with its reason, and
    /// returns once the `kubernetes` Endpoints list all three servers.
    pub fn start_with(leader_flags: &[&str]) -> Ha {
        let switch = Switch::new();
        let servers: Vec<Machine> = (0..3)
            .map(|i| Machine::new(&format!("ha{i}"), None))
            .collect();
        for (i, m) in servers.iter().enumerate() {
            switch.plug(m, i, &ip(i));
            std::fs::create_dir_all(&m.data).unwrap();
        }
        let agent = Machine::new("haa", None);
        switch.plug(&agent, 3, AGENT_IP);
        let pki = Pki::new();
        let cluster: Vec<String> = (0..3)
            .map(|i| format!("e{i}=https://{}:2380", ip(i)))
            .collect();
        let token = unique("ha-etcd-");
        let etcd: Vec<Etcd> = servers
            .iter()
            .enumerate()
            .map(|(i, m)| Etcd::start(m, i, &pki, &cluster.join(","), &token))
            .collect();
        let mut ha = Ha {
            _switch: switch,
            servers,
            agent,
            etcd,
            pki,
            leader_flags: leader_flags.iter().map(|s| s.to_string()).collect(),
        };
        wait_for(60, "etcd to be healthy", || {
            ha.etcd_healthy(0).then_some(())
        });
        let args = ha.server_args(0, None);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ha.servers[0].start_kcored(&args);
        ha.wait_api(0);
        let token = ha.token();
        // a wrong secret with the right CA hash: refused, with the reason
        let wrong = format!("{}::not-the-secret", token.split("::").next().unwrap());
        let scratch = tempfile::tempdir().unwrap();
        let mut args = ha.server_args(1, Some(&wrong));
        args.extend(["--data-dir".into(), scratch.path().display().to_string()]);
        let out = in_netns(&ha.servers[1].netns, KCORED)
            .args(&args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "a wrong token joined: {text}");
        assert!(text.contains("wrong token"), "unclear error: {text}");
        for i in 1..3 {
            ha.start_server(i);
        }
        for i in 1..3 {
            ha.wait_api(i);
        }
        ha.wait_endpoints(3);
        ha
    }

    /// (Re)starts server `i` (the second and third with the join token).
    pub fn start_server(&mut self, i: usize) {
        let token = (i > 0).then(|| self.token());
        let args = self.server_args(i, token.as_deref());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.servers[i].start_kcored(&args);
    }

    /// Restarts every server with other leader-election flags.
    pub fn restart_servers_with(&mut self, leader_flags: &[&str]) {
        self.leader_flags = leader_flags.iter().map(|s| s.to_string()).collect();
        for i in 0..3 {
            self.servers[i].stop_kcored(true);
            self.start_server(i);
        }
        for i in 0..3 {
            self.wait_api(i);
        }
        self.wait_endpoints(3);
    }

    pub fn etcd_healthy(&self, i: usize) -> bool {
        let mut c = self
            .pki
            .etcdctl(&self.servers[i], &format!("https://{}:2379", ip(i)));
        c.args(["endpoint", "health"]);
        c.output().is_ok_and(|o| o.status.success())
    }

    /// The cluster's join token.
    pub fn token(&self) -> String {
        let mut c = Command::new(KCORED);
        c.arg("token").arg("--data-dir").arg(&self.servers[0].data);
        run_ok(c).trim().to_owned()
    }

    pub fn wait_api(&mut self, i: usize) {
        wait_for(90, &format!("server s{i} to serve"), || {
            self.servers[i].check_alive();
            let kc = self.servers[i].kubeconfig();
            if !kc.exists() {
                return None;
            }
            let (ok, _) = self.servers[i].kubectl_with(&kc, &["get", "--raw", "/readyz"]);
            ok.then_some(())
        });
    }

    pub fn wait_endpoints(&self, n: usize) {
        wait_for(
            60,
            &format!("the kubernetes endpoints to list {n} servers"),
            || (self.endpoints().len() == n).then_some(()),
        );
    }

    /// `kubectl` through the first live server.
    pub fn kubectl(&self, alive: &[usize], args: &[&str]) -> (bool, String) {
        let mut last = (false, String::new());
        for &i in alive {
            let m = &self.servers[i];
            last = m.kubectl_with(
                &m.kubeconfig(),
                &[&["--request-timeout=15s"], args].concat(),
            );
            if last.0 || !last.1.contains("connect") {
                return last;
            }
        }
        last
    }

    /// `kubectl apply -f -` of `yaml` through server `i`.
    pub fn apply(&self, i: usize, yaml: &str) {
        apply(&self.servers[i], yaml);
    }

    pub fn endpoints(&self) -> Vec<String> {
        let (ok, out) = self.kubectl(
            &[0, 1, 2],
            &[
                "get",
                "endpoints",
                "kubernetes",
                "-o",
                "jsonpath={.subsets[*].addresses[*].ip}",
            ],
        );
        if !ok {
            return Vec::new();
        }
        out.split_whitespace().map(str::to_owned).collect()
    }

    /// The server whose election identity (kept on disk) is `id`.
    pub fn server_of(&self, id: &str) -> Option<usize> {
        (0..3).find(|&i| {
            std::fs::read_to_string(self.servers[i].data.join("apiserver/leader-identity"))
                .is_ok_and(|s| s.trim() == id && !id.is_empty())
        })
    }

    /// Which server holds `lease` (by the identities the servers keep on disk).
    pub fn holder(&self, alive: &[usize], lease: &str) -> Option<usize> {
        let (ok, out) = self.kubectl(
            alive,
            &[
                "get",
                "lease",
                "-n",
                "kube-system",
                lease,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        );
        if !ok {
            return None;
        }
        self.server_of(out.trim())
    }

    /// Starts the agent `a0`, joining through server `via`.
    pub fn start_agent(&mut self, via: usize) {
        let token = self.token();
        self.agent.start_kcored(&[
            "agent",
            "--server",
            &format!("https://{}:6443", ip(via)),
            "--token",
            &token,
            "--node-ip",
            AGENT_IP,
            "--node-name",
            "a0",
            "--no-ingress",
        ]);
        let kc = self.servers[via].kubeconfig();
        wait_for(90, "node a0 to be Ready", || {
            self.agent.check_alive();
            let (ok, out) = self.servers[via].kubectl_with(
                &kc,
                &[
                    "get",
                    "node",
                    "a0",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ],
            );
            (ok && out.trim() == "True").then_some(())
        });
    }

    /// `kubectl get <args> --watch` through server `via`, each line of output
    /// timestamped as it arrives.
    pub fn watch(&self, via: usize, args: &[&str]) -> Watch {
        let m = &self.servers[via];
        let mut child = in_netns(&m.netns, "kubectl")
            .arg("--kubeconfig")
            .arg(m.kubeconfig())
            .arg("get")
            .args(args)
            .arg("--watch")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get --watch");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Watch { child, lines }
    }
}

/// A running `kubectl get --watch`: its lines with the moment each arrived.
pub struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Watch {
    /// Waits up to `secs` for a line that `f` accepts; returns when it arrived.
    pub fn wait(&self, secs: u64, what: &str, f: impl Fn(&str) -> bool) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some((t, _)) = self.lines.lock().unwrap().iter().find(|(_, l)| f(l)) {
                return *t;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
