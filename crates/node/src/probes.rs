//! Liveness, readiness and startup probes: httpGet, tcpSocket and exec.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::netctx::NetCtx;
use crate::pods::PodEvent;

/// What probes and lifecycle handlers run with: the runtime (exec) and the node's
/// network namespace (httpGet, tcpSocket, gRPC).
#[derive(Debug)]
pub(crate) struct ProbeEnv {
    pub runtime: kcore_runtime::Runtime,
    pub net: NetCtx,
}

/// Which probe a result is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    /// Liveness: failure restarts the container.
    Liveness,
    /// Readiness: gates the Ready condition.
    Readiness,
    /// Startup succeeded (gates the other two).
    Startup,
    /// Startup failed past its threshold: restart.
    StartupFailed,
}

fn port_of(c: &Container, p: &IntOrString) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(s) => s.parse().ok().or_else(|| {
            c.ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(s.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
        }),
    }
}

/// Runs one probe; `true` on success.
pub(crate) async fn run_once(
    env: &ProbeEnv,
    c: &Container,
    probe: &Probe,
    ip: Ipv4Addr,
    id: &str,
) -> bool {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let net = &env.net;
    if let Some(h) = &probe.http_get {
        let Some(port) = port_of(c, &h.port) else {
            return false;
        };
        let host = h.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(ip);
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: {}\r\nAccept: */*\r\nConnection: close\r\n",
            kcore_k8s::PROBE_USER_AGENT
        );
        for hd in h.http_headers.iter().flatten() {
            req.push_str(&format!("{}: {}\r\n", hd.name, hd.value));
        }
        req.push_str("\r\n");
        let fut = async {
            let mut s = net.connect(SocketAddr::new(host.into(), port)).await.ok()?;
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = vec![0u8; 1024];
            let mut got = 0;
            while got < 12 {
                let n = s.read(&mut buf[got..]).await.ok()?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            let line = String::from_utf8_lossy(&buf[..got]).to_string();
            let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some((200..400).contains(&code))
        };
        return tokio::time::timeout(timeout, fut)
            .await
            .ok()
            .flatten()
            .unwrap_or(false);
    }
    if let Some(t) = &probe.tcp_socket {
        let Some(port) = port_of(c, &t.port) else {
            return false;
        };
        let host = t.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(ip);
        return matches!(
            tokio::time::timeout(timeout, net.connect(SocketAddr::new(host.into(), port))).await,
            Ok(Ok(_))
        );
    }
    if let Some(e) = &probe.exec {
        let cmd = e.command.clone().unwrap_or_default();
        if cmd.is_empty() {
            return false;
        }
        let rt = env.runtime.clone();
        let id = id.to_owned();
        let res = tokio::task::spawn_blocking(move || -> Option<bool> {
            let mut ctr = rt.load(&id).ok()?;
            let mut process = ctr.spec().process().clone()?;
            process.set_args(Some(cmd));
            process.set_terminal(Some(false));
            let null = || {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .ok()
                    .map(Into::into)
            };
            let opts = kcore_runtime::ExecOptions {
                stdin: null(),
                stdout: null(),
                stderr: null(),
                ..Default::default()
            };
            let mut p = ctr.exec(&process, opts).ok()?;
            let pid = p.pid();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(p.wait().ok());
            });
            match rx.recv_timeout(timeout) {
                Ok(st) => Some(st.is_some_and(|s| s.success())),
                Err(_) => {
                    // SAFETY: plain kill(2) of the exec'd process we started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    Some(false)
                }
            }
        })
        .await;
        return matches!(res, Ok(Some(true)));
    }
    if let Some(g) = &probe.grpc {
        // a gRPC health check needs HTTP/2; a reachable port is the best this node checks
        return matches!(
            tokio::time::timeout(
                timeout,
                net.connect(SocketAddr::new(ip.into(), g.port as u16))
            )
            .await,
            Ok(Ok(_))
        );
    }
    false
}

/// Runs a lifecycle handler (postStart / preStop): exec, httpGet, tcpSocket or sleep,
/// bounded by `limit`; `true` on success.
pub(crate) async fn run_handler(
    env: &ProbeEnv,
    c: &Container,
    h: &LifecycleHandler,
    ip: Ipv4Addr,
    id: &str,
    limit: Duration,
) -> bool {
    if let Some(s) = &h.sleep {
        let d = Duration::from_secs(s.seconds.max(0) as u64).min(limit);
        tokio::time::sleep(d).await;
        return true;
    }
    let probe = Probe {
        exec: h.exec.clone(),
        http_get: h.http_get.clone(),
        tcp_socket: h.tcp_socket.clone(),
        timeout_seconds: Some(limit.as_secs().clamp(1, i32::MAX as u64) as i32),
        ..Default::default()
    };
    run_once(env, c, &probe, ip, id).await
}

/// Starts the probe loop of a container attempt, if it has probes.
pub(crate) fn spawn(
    env: Arc<ProbeEnv>,
    c: Container,
    ip: Ipv4Addr,
    id: String,
    attempt: u32,
    tx: mpsc::UnboundedSender<PodEvent>,
) -> Option<tokio::task::AbortHandle> {
    if c.liveness_probe.is_none() && c.readiness_probe.is_none() && c.startup_probe.is_none() {
        return None;
    }
    let task = tokio::spawn(async move {
        let send = |kind, ok| {
            let _ = tx.send(PodEvent::Probe {
                name: c.name.clone(),
                attempt,
                kind,
                ok,
            });
        };
        let period = |p: &Probe| Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
        let delay =
            |p: &Probe| Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        if let Some(p) = &c.startup_probe {
            tokio::time::sleep(delay(p)).await;
            let threshold = p.failure_threshold.unwrap_or(3).max(1);
            let mut failures = 0;
            loop {
                if run_once(&env, &c, p, ip, &id).await {
                    send(ProbeKind::Startup, true);
                    break;
                }
                failures += 1;
                if failures >= threshold {
                    send(ProbeKind::StartupFailed, false);
                    return;
                }
                tokio::time::sleep(period(p)).await;
            }
        }
        let live = c.liveness_probe.clone().map(|p| {
            let (env, c, id, send) = (env.clone(), c.clone(), id.clone(), send);
            async move {
                tokio::time::sleep(delay(&p)).await;
                let threshold = p.failure_threshold.unwrap_or(3).max(1);
                let mut failures = 0;
                loop {
                    if run_once(&env, &c, &p, ip, &id).await {
                        failures = 0;
                    } else {
                        failures += 1;
                        if failures >= threshold {
                            send(ProbeKind::Liveness, false);
                            return;
                        }
                    }
                    tokio::time::sleep(period(&p)).await;
                }
            }
        });
        let ready = c.readiness_probe.clone().map(|p| {
            let (env, c, id, send) = (env.clone(), c.clone(), id.clone(), send);
            async move {
                tokio::time::sleep(delay(&p)).await;
                let fail_t = p.failure_threshold.unwrap_or(3).max(1);
                let ok_t = p.success_threshold.unwrap_or(1).max(1);
                let (mut oks, mut fails) = (0, 0);
                let mut state: Option<bool> = None;
                loop {
                    if run_once(&env, &c, &p, ip, &id).await {
                        oks += 1;
                        fails = 0;
                        if oks >= ok_t && state != Some(true) {
                            state = Some(true);
                            send(ProbeKind::Readiness, true);
                        }
                    } else {
                        fails += 1;
                        oks = 0;
                        if fails >= fail_t && state != Some(false) {
                            state = Some(false);
                            send(ProbeKind::Readiness, false);
                        }
                    }
                    tokio::time::sleep(period(&p)).await;
                }
            }
        });
        let a = async {
            if let Some(l) = live {
                l.await
            }
        };
        let b = async {
            if let Some(r) = ready {
                r.await
            }
        };
        futures::join!(a, b);
    });
    Some(task.abort_handle())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ports_resolve_through_container_ports() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "a", "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .unwrap();
        assert_eq!(port_of(&c, &IntOrString::String("http".into())), Some(8080));
        assert_eq!(port_of(&c, &IntOrString::Int(81)), Some(81));
        assert_eq!(port_of(&c, &IntOrString::String("nope".into())), None);
    }
}
