//! The kubelet's streaming endpoints as an axum router.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, MethodFilter};
use axum::{Json, Router};

use crate::{Backend, Kind, Sessions, Target};

#[derive(Clone)]
struct Streaming {
    backend: Option<Arc<dyn Backend>>,
    sessions: Sessions,
}

/// The kubelet's streaming endpoints, each with and without the pod's uid segment:
/// `/exec/{ns}/{pod}[/{uid}]/{container}?command=..&stdin=1&stdout=1&stderr=1&tty=1`,
/// `/attach/{ns}/{pod}[/{uid}]/{container}` and `/portforward/{ns}/{pod}[/{uid}]` (GET or
/// POST, WebSocket or SPDY upgrades, see [`serve`](crate::serve)), and
/// `GET /debug/streams`: the protocols recent sessions negotiated (see
/// [`Sessions::to_json`]). Without a backend the session endpoints answer
/// `501 Not Implemented`.
///
/// ```
/// let app: axum::Router = kcore_stream::routes(None, kcore_stream::Sessions::default());
/// # let _ = app;
/// ```
pub fn routes(backend: Option<Arc<dyn Backend>>, sessions: Sessions) -> Router {
    let any = MethodFilter::GET.or(MethodFilter::POST);
    let st = Streaming { backend, sessions };
    Router::new()
        .route("/exec/{ns}/{pod}/{container}", on(any, exec))
        .route("/exec/{ns}/{pod}/{uid}/{container}", on(any, exec))
        .route("/attach/{ns}/{pod}/{container}", on(any, attach))
        .route("/attach/{ns}/{pod}/{uid}/{container}", on(any, attach))
        .route("/portforward/{ns}/{pod}", on(any, port_forward))
        .route("/portforward/{ns}/{pod}/{uid}", on(any, port_forward))
        .route(
            "/debug/streams",
            get(|State(st): State<Streaming>| async move { Json(st.sessions.to_json()) }),
        )
        .with_state(st)
}

fn target(p: HashMap<String, String>) -> Target {
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    Target {
        namespace: get("ns"),
        pod: get("pod"),
        uid: p.get("uid").cloned(),
        container: get("container"),
    }
}

async fn session(st: Streaming, kind: Kind, t: Target, req: Request) -> Response {
    let Some(backend) = st.backend else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "this node does not run exec, attach or port-forward sessions",
        )
            .into_response();
    };
    crate::serve(backend, &st.sessions, kind, t, req)
        .await
        .into_response()
}

async fn exec(
    State(st): State<Streaming>,
    Path(p): Path<HashMap<String, String>>,
    req: Request,
) -> Response {
    session(st, Kind::Exec, target(p), req).await
}

async fn attach(
    State(st): State<Streaming>,
    Path(p): Path<HashMap<String, String>>,
    req: Request,
) -> Response {
    session(st, Kind::Attach, target(p), req).await
}

async fn port_forward(
    State(st): State<Streaming>,
    Path(p): Path<HashMap<String, String>>,
    req: Request,
) -> Response {
    session(st, Kind::PortForward, target(p), req).await
}
