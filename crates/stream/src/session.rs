//! An exec or attach session once its transport is up: stdio pumped between the client's
//! channels and the process, resizes passed on, and the end reported on the error channel.

use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::spdy::{Inbox, StreamWriter};
use crate::ws::{Framing, WsOut};
use crate::{BackendError, Exit, Process, Reader, TerminalSize};

/// One direction of a channel towards the client.
#[derive(Clone)]
pub(crate) enum Out {
    /// A WebSocket channel number, the connection's framing and its writer.
    Ws {
        ch: u8,
        framing: Framing,
        tx: mpsc::Sender<WsOut>,
    },
    /// A SPDY stream.
    Spdy(StreamWriter),
}

impl Out {
    /// Sends `data`; false when the client is gone.
    pub(crate) async fn write(&self, data: &[u8]) -> bool {
        match self {
            Out::Ws { ch, framing, tx } => tx
                .send(WsOut::Message(crate::ws::encode(*framing, *ch, data)))
                .await
                .is_ok(),
            Out::Spdy(w) => w.write(data).await,
        }
    }

    /// Copies `src` here until `src` ends or fails (then true) or the client is gone
    /// (false); `buf_len` is the most one read takes. Does not finish this direction.
    pub(crate) async fn copy_from<R>(&self, src: &mut R, buf_len: usize) -> bool
    where
        R: tokio::io::AsyncRead + Unpin + ?Sized,
    {
        match self {
            Out::Ws { ch, framing, tx } => {
                crate::ws::copy_to_channel(src, *framing, *ch, tx, buf_len).await
            }
            Out::Spdy(_) => {
                let mut buf = vec![0u8; buf_len];
                loop {
                    match src.read(&mut buf).await {
                        Ok(0) | Err(_) => return true,
                        Ok(n) => {
                            if !self.write(&buf[..n]).await {
                                return false;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Ends this direction (a FIN on SPDY; WebSocket channels end with the connection).
    pub(crate) async fn finish(&self) {
        if let Out::Spdy(w) = self {
            w.finish().await;
        }
    }
}

/// How the error channel reports the end of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusStyle {
    /// `v4`/`v5`: a JSON `metav1.Status`, Success included.
    Json,
    /// Before `v4`: the error's text, nothing on success.
    Text,
}

/// The client's side of a session, wired by the transport.
pub(crate) struct Wiring {
    pub stdin: Option<Inbox>,
    pub resize: Option<Inbox>,
    pub stdout: Option<Out>,
    pub stderr: Option<Out>,
    pub error: Option<Out>,
    pub style: StatusStyle,
    /// Resolves (with an error: its sender is dropped) when the client's connection ends.
    pub gone: Option<oneshot::Receiver<()>>,
}

/// How long a killed process has to end before the session stops waiting for it.
const REAP: Duration = Duration::from_secs(10);

/// What ended the session, as the error channel says it.
pub(crate) enum Ending {
    /// The exec'd command's exit (exec reports non-zero codes, attach does not).
    Exited {
        code: i32,
        command: Option<Vec<String>>,
    },
    /// The backend failed.
    Failed(BackendError),
}

/// The `metav1.Status` an ending is reported as (`None`: nothing to write).
pub(crate) fn status(end: &Ending) -> serde_json::Value {
    match end {
        Ending::Exited { code: 0, .. } | Ending::Exited { command: None, .. } => {
            json!({"metadata": {}, "status": "Success"})
        }
        Ending::Exited {
            code,
            command: Some(cmd),
        } => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                cmd.join(" ")
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Ending::Failed(e) => {
            let message = format!("error executing command in container: {e}");
            json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
                "details": {"causes": [{"message": message}]},
                "code": 500,
            })
        }
    }
}

/// The bytes the error channel carries for `end` in `style`.
pub(crate) fn status_bytes(end: &Ending, style: StatusStyle) -> Option<Vec<u8>> {
    let s = status(end);
    match style {
        StatusStyle::Json => serde_json::to_vec(&s).ok(),
        StatusStyle::Text if s["status"] == "Success" => None,
        StatusStyle::Text => s["message"].as_str().map(|m| m.as_bytes().to_vec()),
    }
}

/// Runs `p` against the client's channels until it ends and its output is flushed, then
/// reports the end on the error channel.
pub(crate) async fn run(p: Process, w: Wiring, command: Option<Vec<String>>) {
    let Process {
        stdin,
        stdout,
        stderr,
        resize,
        exit,
        kill,
    } = p;
    // client -> process stdin; its end (v5 close signal, SPDY FIN) closes the process's stdin
    let stdin_task = match (w.stdin, stdin) {
        (Some(mut rx), Some(mut writer)) => Some(tokio::spawn(async move {
            while let Some(buf) = rx.recv().await {
                if writer.write_all(&buf).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
        })),
        _ => None,
    };
    let resize_task = match (w.resize, resize) {
        (Some(rx), Some(tx)) => Some(tokio::spawn(resizes(rx, tx))),
        _ => None,
    };
    let out = pump(stdout, w.stdout.clone());
    let err = pump(stderr, w.stderr.clone());
    let work = async { tokio::join!(out, err, exit).2 };
    tokio::pin!(work);
    let gone = async {
        match w.gone {
            Some(rx) => {
                let _ = rx.await;
            }
            None => std::future::pending().await,
        }
    };
    let exit = tokio::select! {
        biased;
        exit = &mut work => Some(exit),
        () = gone => None,
    };
    let Some(exit) = exit else {
        // the client went away while the process runs: end it, as the kubelet's runtime
        // does when the stream closes, and give it a moment to be reaped (an attached
        // container keeps running: dropping the session detaches)
        tracing::info!(
            killed = kill.is_some(),
            "the client went away before the process ended"
        );
        if let Some(kill) = kill {
            kill();
            if tokio::time::timeout(REAP, &mut work).await.is_err() {
                tracing::warn!("the process did not end after the client went away");
            }
        }
        for t in [stdin_task, resize_task].into_iter().flatten() {
            t.abort();
        }
        return;
    };
    let end = match exit {
        Ok(Exit::Code(code)) => Ending::Exited { code, command },
        Ok(Exit::Signal(sig)) => Ending::Exited {
            code: 128 + sig,
            command,
        },
        Err(e) => Ending::Failed(e),
    };
    if let Some(e) = &w.error {
        if let Some(bytes) = status_bytes(&end, w.style) {
            e.write(&bytes).await;
        }
        e.finish().await;
    }
    if let Some(t) = stdin_task {
        t.abort();
    }
    if let Some(t) = resize_task {
        t.abort();
    }
}

/// Copies a process output to the client's channel until either ends.
async fn pump(src: Option<Reader>, dst: Option<Out>) {
    let Some(mut src) = src else {
        if let Some(d) = dst {
            d.finish().await;
        }
        return;
    };
    match dst {
        Some(d) => {
            d.copy_from(&mut src, 32 * 1024).await;
            d.finish().await;
        }
        // nobody reads it: drain it so that the process is not blocked on a full pipe
        None => {
            let _ = tokio::io::copy(&mut src, &mut tokio::io::sink()).await;
        }
    }
}

#[derive(Deserialize)]
struct Size {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Parses the resize channel's JSON objects (split or joined across messages at will).
async fn resizes(mut rx: Inbox, tx: mpsc::UnboundedSender<TerminalSize>) {
    let mut buf = Vec::new();
    while let Some(chunk) = rx.recv().await {
        buf.extend_from_slice(&chunk);
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Size>();
        let mut used = 0;
        loop {
            match it.next() {
                Some(Ok(s)) => {
                    used = it.byte_offset();
                    let _ = tx.send(TerminalSize {
                        width: s.width,
                        height: s.height,
                    });
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    // not a size: drop what was buffered
                    used = buf.len();
                    break;
                }
                None => {
                    used = buf.len();
                    break;
                }
            }
        }
        buf.drain(..used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_are_upstreams() {
        let ok = status(&Ending::Exited {
            code: 0,
            command: Some(vec!["true".into()]),
        });
        assert_eq!(ok, json!({"metadata": {}, "status": "Success"}));
        let three = status(&Ending::Exited {
            code: 3,
            command: Some(vec!["sh".into(), "-c".into(), "exit 3".into()]),
        });
        assert_eq!(three["reason"], "NonZeroExitCode");
        assert_eq!(
            three["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
        assert_eq!(
            three["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        // attach reports a container's end as success, as the kubelet does
        let attach = status(&Ending::Exited {
            code: 1,
            command: None,
        });
        assert_eq!(attach["status"], "Success");
        assert!(status_bytes(
            &Ending::Exited {
                code: 0,
                command: Some(vec![])
            },
            StatusStyle::Text
        )
        .is_none());
    }

    #[tokio::test]
    async fn resizes_parse_across_message_boundaries() {
        let (tx, rx) = mpsc::channel(8);
        let (stx, mut srx) = mpsc::unbounded_channel();
        let t = tokio::spawn(resizes(rx.into(), stx));
        tx.send(bytes::Bytes::from_static(br#"{"Width":80,"Hei"#))
            .await
            .unwrap();
        tx.send(bytes::Bytes::from_static(
            br#"ght":24}{"Width":100,"Height":50}"#,
        ))
        .await
        .unwrap();
        drop(tx);
        t.await.unwrap();
        assert_eq!(
            srx.recv().await,
            Some(TerminalSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(
            srx.recv().await,
            Some(TerminalSize {
                width: 100,
                height: 50
            })
        );
    }
}
