//! The agent's server: `GET /containerLogs/{namespace}/{pod}/{container}` (the
//! kubelet's endpoint behind `kubectl logs`), the streaming endpoints `/exec`, `/attach`
//! and `/portforward` (see [`kcore_stream::routes`]), `GET /debug/streams` and `GET /healthz`, over
//! HTTPS for authenticated clients only (see [`crate::auth`]) when [`crate::ServerTls`] is
//! set.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::auth::Authn;
use crate::logs::{self, LogQuery};
use crate::stats::ResourceStats;

#[derive(Clone)]
struct AppState {
    logs_root: Arc<PathBuf>,
    stats: Option<Arc<ResourceStats>>,
}

/// The router of the agent's server, reading logs under `logs_root` and running streaming
/// sessions on `streams` (none: those endpoints answer 501), recorded in `sessions`, and
/// serving resource usage from `stats` (none: 404); with `authn`, every route requires a
/// client certificate or an accepted bearer token.
pub(crate) fn router(
    logs_root: PathBuf,
    authn: Option<Arc<Authn>>,
    streams: Option<Arc<dyn kcore_stream::Backend>>,
    stats: Option<Arc<ResourceStats>>,
    sessions: kcore_stream::Sessions,
) -> Router {
    let r = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/stats/summary", get(summary))
        .with_state(AppState {
            logs_root: Arc::new(logs_root),
            stats,
        })
        .merge(kcore_stream::routes(streams, sessions));
    authenticated(r, authn)
}

/// The agent's streaming endpoints (`/exec`, `/attach`, `/portforward`, `/debug/streams`)
/// for an API server in the agent's own process (see [`crate::NodeAgent::local_server`]):
/// the same handlers, sessions and authentication as [`router`]'s, each request marked
/// [`kcore_stream::InProcess`]. Its callers bring their identity as the connection info a
/// TLS listener would give (`ConnectInfo<PeerCertificates>`).
pub(crate) fn local_router(
    authn: Option<Arc<Authn>>,
    streams: Arc<dyn kcore_stream::Backend>,
    sessions: kcore_stream::Sessions,
) -> Router {
    let r = kcore_stream::routes(Some(streams), sessions)
        .layer(axum::Extension(kcore_stream::InProcess));
    authenticated(r, authn)
}

fn authenticated(r: Router, authn: Option<Arc<Authn>>) -> Router {
    match authn {
        Some(a) => r.layer(axum::middleware::from_fn_with_state(
            a,
            crate::auth::require,
        )),
        None => r,
    }
}

/// The newest log directory of pod `ns/pod` (several pods of the same name may have
/// existed: the latest one wins).
fn pod_dir(root: &Path, ns: &str, pod: &str) -> Option<PathBuf> {
    let prefix = format!("{ns}_{pod}_");
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| {
            // the pod name itself holds no '_': the rest is the uid
            !e.file_name().to_string_lossy()[prefix.len()..].contains('_')
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

async fn summary(State(st): State<AppState>) -> Response {
    match st.stats {
        Some(s) => axum::Json(s.summary()).into_response(),
        None => text(StatusCode::NOT_FOUND, "resource stats are off".into()),
    }
}

fn text(code: StatusCode, msg: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

async fn container_logs(
    State(st): State<AppState>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    // the kubelet's answers: 404 for what it does not know, 400 for a container
    // without the log asked for
    let Some(dir) = pod_dir(&st.logs_root, &ns, &pod) else {
        return text(StatusCode::NOT_FOUND, format!("pod {pod:?} does not exist"));
    };
    let cdir = dir.join(&container);
    if !cdir.is_dir() {
        return text(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod:?}"),
        );
    }
    let Some(file) = logs::select(&cdir, q.previous) else {
        let msg = if q.previous {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        } else {
            format!("container {container:?} in pod {pod:?} is waiting to start - no logs yet")
        };
        return text(StatusCode::BAD_REQUEST, msg);
    };
    let q2 = q.clone();
    let file2 = file.clone();
    let (head, offset) =
        match tokio::task::spawn_blocking(move || logs::read_all(&file2, &q2)).await {
            Ok(r) => r,
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
    let ctype = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow || q.previous {
        return (ctype, head).into_response();
    }
    let budget = q
        .limit_bytes
        .filter(|l| *l >= 0)
        .map(|l| (l as u64).saturating_sub(head.len() as u64));
    if budget == Some(0) {
        return (ctype, head).into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    tokio::spawn(async move {
        if !head.is_empty() && tx.send(head).await.is_err() {
            return;
        }
        logs::follow(file, offset, q, budget, tx).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|c| (Ok::<_, std::io::Error>(axum::body::Bytes::from(c)), rx))
    });
    (ctype, Body::from_stream(stream)).into_response()
}
