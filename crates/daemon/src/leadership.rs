//! Active/standby control-plane components: several `kcored server`s on one datastore
//! each run the API server, while the scheduler and the controllers run on one server at
//! a time, the holder of their Lease (`kube-system/kube-scheduler`,
//! `kube-system/kube-controller-manager`), as kube-scheduler and kube-controller-manager
//! do with `--leader-elect`.
//!
//! The election is kcore-reconcile's [`LeaderElector`] (one implementation for the whole
//! project). On top of it this module:
//!
//! - starts the component on standby, where it may only read (list and watch, so its
//!   caches are warm), lets it act when the Lease is won, and aborts it the moment the
//!   Lease is lost (a lost lease is never waited out: upstream's components exit), then
//!   starts it again on standby;
//! - hands the component a client that refuses every write once the Lease's monotonic
//!   deadline has passed ([`fenced_client`]), so a leader that was frozen (SIGSTOP) and
//!   resumes after another server took over cannot write a single object before its
//!   tasks are stopped;
//! - on a clean shutdown stops the component first and then releases the Lease (empty
//!   holder), so a standby takes over at its next retry instead of after the lease
//!   duration.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use kcore_reconcile::{LeaderElectionConfig, LeaderElector, LeaseFence};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;

/// Timings of the leader elections (upstream's `--leader-elect-lease-duration`,
/// `--leader-elect-renew-deadline`, `--leader-elect-retry-period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderTimings {
    /// How long a Lease stays valid without renewal (15 s).
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it stops acting (10 s).
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and leaders renew (2 s).
    pub retry_period: Duration,
}

impl Default for LeaderTimings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaderTimings {
    /// Checks upstream's rules: lease duration > renew deadline > retry period > 0,
    /// and whole seconds for the lease duration (a Lease stores seconds).
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut t = kcored::leadership::LeaderTimings::default();
    /// assert!(t.validate().is_ok());
    /// t.renew_deadline = Duration::from_secs(20);
    /// assert!(t.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.lease_duration > self.renew_deadline,
            "the leader election's lease duration must be greater than its renew deadline"
        );
        anyhow::ensure!(
            self.renew_deadline > self.retry_period && !self.retry_period.is_zero(),
            "the leader election's renew deadline must be greater than its retry period, \
             which must not be zero"
        );
        anyhow::ensure!(
            self.lease_duration.subsec_nanos() == 0,
            "the leader election's lease duration must be whole seconds"
        );
        Ok(())
    }

    fn config(&self, name: &str, identity: &str) -> LeaderElectionConfig {
        let mut c = LeaderElectionConfig::new("kube-system", name, identity);
        c.lease_duration = self.lease_duration;
        c.renew_deadline = self.renew_deadline;
        c.retry_period = self.retry_period;
        c
    }
}

/// Parses a duration as the Kubernetes flags write them: `15s`, `500ms`, `1m`, `1m30s`.
///
/// ```
/// use std::time::Duration;
/// use kcored::leadership::parse_duration;
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert!(parse_duration("15").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    anyhow::ensure!(!rest.is_empty(), "an empty duration");
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .with_context(|| format!("{s:?} lacks a unit (h, m, s or ms)"))?;
        let (num, tail) = rest.split_at(digits);
        let value: f64 = num
            .parse()
            .with_context(|| format!("{num:?} in {s:?} is not a number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let secs = match unit {
            "h" => value * 3600.0,
            "m" => value * 60.0,
            "s" => value,
            "ms" => value / 1000.0,
            other => anyhow::bail!("unknown unit {other:?} in {s:?} (h, m, s or ms)"),
        };
        total += Duration::from_secs_f64(secs);
        rest = next;
    }
    Ok(total)
}

/// This process's identity in the elections: host name, an underscore and a random
/// suffix (upstream's `<hostname>_<uuid>`), so two servers on one host differ.
pub fn identity() -> String {
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    format!("{}_{}", crate::agent::host_name(), hex::encode(bytes))
}

/// This server's identity, kept in `<dir>/leader-identity` so that a server restarted
/// after a crash renews the Leases it held at once instead of waiting them out.
pub fn stable_identity(dir: &Path) -> Result<String> {
    let path = dir.join("leader-identity");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = identity();
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// A client from `kubeconfig` whose writes (every method but GET, HEAD and OPTIONS) fail
/// without reaching the server unless `fence` is valid at the moment they are sent. Each
/// write carries the end of the lease's validity as its deadline
/// ([`kcore_apiserver::WRITE_DEADLINE_HEADER`]), so that a write sent just before this
/// process (or its server) was frozen, and served only after the lease passed on, is
/// refused by the server instead of applied.
pub async fn fenced_client(kubeconfig: &Path, fence: LeaseFence) -> Result<kube::Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", kubeconfig.display()))?;
    let builder =
        kube::client::ClientBuilder::try_from(config).context("building the API client")?;
    let layer =
        tower::filter::FilterLayer::new(move |mut req: http::Request<kube::client::Body>| {
            if is_read(req.method()) {
                return Ok(req);
            }
            match fence.deadline().and_then(write_deadline) {
                Some(deadline) => {
                    req.headers_mut()
                        .insert(kcore_apiserver::WRITE_DEADLINE_HEADER, deadline);
                    Ok(req)
                }
                None => Err(Box::new(LeaseExpired) as tower::BoxError),
            }
        });
    Ok(builder.with_layer(&layer).build())
}

/// The header value of a write's deadline at the monotonic instant `valid_until`: that
/// instant on the wall clock, in microseconds since the Unix epoch; `None` once it passed.
fn write_deadline(valid_until: std::time::Instant) -> Option<http::HeaderValue> {
    let left = valid_until.checked_duration_since(std::time::Instant::now())?;
    if left.is_zero() {
        return None;
    }
    let at = std::time::SystemTime::now() + left;
    let micros = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros();
    http::HeaderValue::from_str(&micros.to_string()).ok()
}

fn is_read(m: &http::Method) -> bool {
    matches!(
        *m,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// The error of a write refused by [`fenced_client`].
#[derive(Debug, thiserror::Error)]
#[error("not writing: this server's leader lease has expired")]
pub struct LeaseExpired;

/// Runs the component that `start` makes behind the Lease `kube-system/<lease>`, until
/// `shutdown` is set.
///
/// `start` gets the lease's fence (build the component's client with
/// [`fenced_client`]), a stop signal and whether this process leads. It is called at
/// once, while this process stands by: the component may list and watch (warm caches,
/// so a standby that wins acts at once instead of first listing every kind), and acts
/// only once [`leads`] resolves. When the Lease is lost the component is aborted at once
/// and started again on standby. Fails when the component fails on its own.
pub async fn run_while_leading<F, Fut>(
    election_client: kube::Client,
    lease: &str,
    identity: &str,
    timings: LeaderTimings,
    mut shutdown: watch::Receiver<bool>,
    mut start: F,
) -> Result<()>
where
    F: FnMut(LeaseFence, watch::Receiver<bool>, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let elector = Arc::new(LeaderElector::new(
        election_client,
        timings.config(lease, identity),
    ));
    let mut leading = elector.subscribe();
    let (release_tx, mut release_rx) = watch::channel(false);
    let el = Arc::clone(&elector);
    let election = tokio::spawn(async move {
        el.run(async move {
            let _ = release_rx.wait_for(|v| *v).await;
        })
        .await;
    });
    let stopped_unexpectedly =
        |done: std::result::Result<Result<()>, tokio::task::JoinError>| match done {
            Ok(Ok(())) => Err(anyhow::anyhow!(
                "the component of lease {lease} stopped unexpectedly"
            )),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!(
                "the component of lease {lease} panicked: {e}"
            )),
        };
    let mut result = Ok(());
    'outer: loop {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut task = tokio::spawn(start(elector.fence(), stop_rx, elector.subscribe()));
        // standing by: the component warms up, the election goes on
        tokio::select! {
            _ = until(&mut shutdown, true) => {
                stop(&stop_tx, &mut task).await;
                break 'outer;
            }
            ok = until(&mut leading, true) => if !ok {
                stop(&stop_tx, &mut task).await;
                break 'outer;
            },
            done = &mut task => {
                result = stopped_unexpectedly(done);
                break 'outer;
            }
        }
        tracing::info!(lease, identity, "leading: component active");
        tokio::select! {
            _ = until(&mut shutdown, true) => {
                // a clean stop: the component first, then the lease
                stop(&stop_tx, &mut task).await;
                break 'outer;
            }
            _ = until(&mut leading, false) => {
                task.abort();
                let _ = task.await;
                tracing::warn!(lease, identity, "lost the lease: component stopped");
            }
            done = &mut task => {
                result = stopped_unexpectedly(done);
                break 'outer;
            }
        }
    }
    release_tx.send_replace(true);
    let _ = election.await;
    result
}

/// Asks the component to stop and gives it 10 s before aborting it.
async fn stop<T>(stop_tx: &watch::Sender<bool>, task: &mut tokio::task::JoinHandle<T>) {
    stop_tx.send_replace(true);
    if tokio::time::timeout(Duration::from_secs(10), &mut *task)
        .await
        .is_err()
    {
        task.abort();
    }
}

/// Resolves once `leading` says this process leads (at once when it already does; never
/// when the election ended without it leading).
pub async fn leads(mut leading: watch::Receiver<bool>) {
    if leading.wait_for(|l| *l).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits until the watched flag is `value`; `false` when the sender is gone.
async fn until(rx: &mut watch::Receiver<bool>, value: bool) -> bool {
    rx.wait_for(|v| *v == value).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_upstream_flags() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn timings_follow_upstreams_rules() {
        let fast = LeaderTimings {
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1500),
            retry_period: Duration::from_millis(200),
        };
        assert!(fast.validate().is_ok());
        let fractional = LeaderTimings {
            lease_duration: Duration::from_millis(2500),
            ..fast
        };
        assert!(fractional.validate().is_err());
    }

    #[test]
    fn a_write_deadline_is_the_lease_end_on_the_wall_clock() {
        let now = std::time::Instant::now();
        assert!(write_deadline(now - Duration::from_millis(1)).is_none());
        let v = write_deadline(now + Duration::from_secs(10)).expect("valid");
        let micros: u128 = v.to_str().unwrap().parse().unwrap();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros();
        let ahead = micros.saturating_sub(wall);
        assert!(
            (9_000_000..=10_000_000).contains(&ahead),
            "{ahead} µs ahead"
        );
    }

    #[test]
    fn identities_differ_on_one_host() {
        assert_ne!(identity(), identity());
    }

    /// A fenced client whose lease was never held: a write fails before any byte
    /// reaches the server, a read goes out.
    #[tokio::test]
    async fn a_fenced_client_does_not_write_without_the_lease() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::api::{Api, PostParams};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kubeconfig");
        std::fs::write(
            &kc,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://{addr}\"}}\n\
                 contexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n"
            ),
        )
        .unwrap();
        let client = fenced_client(&kc, LeaseFence::default()).await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let err = api
            .create(&PostParams::default(), &ConfigMap::default())
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("LeaseExpired"), "{err:?}");
        // nothing connected for the write; a read does connect
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "the write reached the server");
        let read = tokio::spawn(async move { api.get("x").await });
        let accepted = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
        assert!(accepted.is_ok(), "the read never reached the server");
        read.abort();
    }

    #[test]
    fn only_reads_pass_an_invalid_fence() {
        assert!(is_read(&http::Method::GET));
        assert!(!is_read(&http::Method::POST));
        assert!(!is_read(&http::Method::PATCH));
        assert!(!is_read(&http::Method::DELETE));
    }
}
