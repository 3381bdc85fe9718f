//! RUN steps: a kcore-runtime container on the mounted snapshot, in its own network
//! namespace (loopback only; on the build bridge with `--network=default`; the host's
//! with `--network=host`), with the Docker default
//! capability set, the step's environment, user and working directory, and the
//! `--mount`s of the step. Output goes to the progress callback line by line, and the
//! last lines are kept for the error when the command fails.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{Error, IoContext, Result};

/// Lines of output kept for a failed step's error.
const TAIL_LINES: usize = 20;

/// Docker's (and BuildKit's) default capabilities.
const CAPS: &[&str] = kcore_runtime::DEFAULT_CAPABILITIES;

/// The network a RUN step gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Network {
    /// A new network namespace with only loopback, up (the default, and `none`).
    Isolated,
    /// The host's network namespace.
    Host,
    /// A new network namespace on the build bridge, NAT'd (`--network=default`).
    Bridge,
}

/// A bind or tmpfs mount for the step's container.
#[derive(Debug, Clone)]
pub(crate) enum RunMount {
    /// A host directory bound at `target`.
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
    },
    /// A tmpfs at `target`.
    Tmpfs { target: String, size: Option<u64> },
}

/// One process to run.
#[derive(Debug, Clone)]
pub(crate) struct Process {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub network: Network,
    pub mounts: Vec<RunMount>,
}

/// How a step's process ended.
pub(crate) struct Outcome {
    pub status: kcore_runtime::ExitStatus,
    pub tail: Vec<String>,
}

/// Runs `p` with `rootfs` as its root; `work` is a private scratch directory for the
/// bundle, runtime state and namespace files.
pub(crate) fn run(
    line: usize,
    rootfs: &Path,
    work: &Path,
    id: &str,
    p: &Process,
    bridge: &crate::net::BridgeNetwork,
    on_line: &(dyn Fn(&str) + Sync),
) -> Result<Outcome> {
    let _span = tracing::info_span!("run_step", line, id).entered();
    let bundle = work.join("bundle");
    std::fs::create_dir_all(&bundle).at("create", &bundle)?;
    let netns_dir = kcore_ns::netns::NetnsDir::new(work.join("netns"));
    let mut netns_path = None;
    let mut lease = None;
    if p.network == Network::Bridge {
        crate::net::check_allowed(line)?;
    }
    if matches!(p.network, Network::Isolated | Network::Bridge) {
        std::fs::create_dir_all(netns_dir.dir()).at("create", netns_dir.dir())?;
        let ns = netns_dir
            .create(id)
            .map_err(|source| Error::Netns { line, source })?;
        netns_path = Some(ns.path().to_path_buf());
        let set_up = ns
            .run(kcore_ns::netns::loopback_up)
            .and_then(|r| r)
            .map_err(|source| Error::Netns { line, source })
            .and_then(|()| {
                if p.network == Network::Bridge {
                    lease = Some(crate::net::attach(line, bridge, &ns, id)?);
                }
                Ok(())
            });
        if let Err(e) = set_up {
            remove_netns(&netns_dir, id);
            return Err(e);
        }
    }
    let res = run_in_ns(
        line,
        rootfs,
        work,
        &bundle,
        id,
        p,
        netns_path.as_deref(),
        on_line,
    );
    // the veth pair goes first, then the namespace
    drop(lease);
    if netns_path.is_some() {
        remove_netns(&netns_dir, id);
    }
    res
}

fn remove_netns(dir: &kcore_ns::netns::NetnsDir, id: &str) {
    if let Err(e) = dir.remove(id) {
        tracing::warn!(
            error = &e as &dyn std::error::Error,
            "removing a RUN network namespace"
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn run_in_ns(
    line: usize,
    rootfs: &Path,
    work: &Path,
    bundle: &Path,
    id: &str,
    p: &Process,
    netns: Option<&Path>,
    on_line: &(dyn Fn(&str) + Sync),
) -> Result<Outcome> {
    let spec = spec(rootfs, p, netns);
    let spec = kcore_runtime::parse_spec(&spec.to_string())
        .map_err(|source| Error::Runtime { line, source })?;
    let rt = kcore_runtime::Runtime::new(work.join("state"));
    let (reader, writer) = UnixStream::pair().at("socketpair", work)?;
    let writer2 = writer.try_clone().at("socketpair", work)?;
    let opts = kcore_runtime::CreateOptions {
        stdin: None,
        stdout: Some(OwnedFd::from(writer)),
        stderr: Some(OwnedFd::from(writer2)),
        ..kcore_runtime::CreateOptions::default()
    };
    std::thread::scope(|s| {
        let collector = s.spawn(move || {
            let mut tail = VecDeque::with_capacity(TAIL_LINES);
            for l in BufReader::new(reader).split(b'\n') {
                let Ok(l) = l else { break };
                let l = String::from_utf8_lossy(&l)
                    .trim_end_matches('\r')
                    .to_string();
                on_line(&l);
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(l);
            }
            Vec::from(tail)
        });
        let status = (|| {
            let mut c = rt.create(id, bundle, &spec, opts)?;
            let started = c.start();
            let status = match started {
                Ok(()) => c.wait(),
                Err(e) => Err(e),
            };
            let deleted = c.delete(true);
            let status = status?;
            deleted?;
            Ok(status)
        })();
        // The container's copies of the writer are closed once it is deleted (or
        // never made), so the collector reaches end of file.
        let tail = collector.join().unwrap_or_default();
        let status = status.map_err(|source| Error::Runtime { line, source })?;
        Ok(Outcome { status, tail })
    })
}

fn spec(rootfs: &Path, p: &Process, netns: Option<&Path>) -> Value {
    let mut v = serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap_or_default();
    v["root"] = json!({"path": rootfs, "readonly": false});
    v["hostname"] = json!("buildkitsandbox");
    v["process"]["terminal"] = json!(false);
    v["process"]["args"] = json!(p.args);
    v["process"]["env"] = json!(p.env);
    v["process"]["cwd"] = json!(p.cwd);
    v["process"]["user"] = json!({"uid": p.uid, "gid": p.gid});
    v["process"]["noNewPrivileges"] = json!(false);
    v["process"]["capabilities"] = json!({
        "bounding": CAPS, "effective": CAPS, "permitted": CAPS,
    });
    let ns: Vec<Value> = v["linux"]["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|mut n| {
            if n["type"] == "network" {
                match netns {
                    Some(path) => n["path"] = json!(path),
                    None => return None,
                }
            }
            Some(n)
        })
        .collect();
    v["linux"]["namespaces"] = json!(ns);
    if let Some(mounts) = v["mounts"].as_array_mut() {
        for m in &p.mounts {
            mounts.push(match m {
                RunMount::Bind {
                    source,
                    target,
                    read_only,
                } => {
                    let mut o = vec!["rbind", "private"];
                    if *read_only {
                        o.push("ro");
                    }
                    json!({"destination": target, "type": "bind", "source": source, "options": o})
                }
                RunMount::Tmpfs { target, size } => {
                    let mut o = vec![
                        "nosuid".to_owned(),
                        "nodev".to_owned(),
                        "mode=1777".to_owned(),
                    ];
                    if let Some(s) = size {
                        o.push(format!("size={s}"));
                    }
                    json!({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": o})
                }
            });
        }
    }
    v
}

/// The mount points the runtime may create in a rootfs for a step with `mounts`.
pub(crate) fn mount_points(mounts: &[RunMount]) -> Vec<String> {
    let mut v: Vec<String> = ["/proc", "/dev", "/sys"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for m in mounts {
        match m {
            RunMount::Bind { target, .. } | RunMount::Tmpfs { target, .. } => {
                v.push(target.clone())
            }
        }
    }
    v
}
