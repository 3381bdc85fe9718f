//! The part of SPDY/3.1 Kubernetes clients use: framing, header blocks, and a server-side
//! connection whose streams the client opens.

mod conn;
mod frame;

pub(crate) use conn::{Conn, Inbox, Stream, StreamWriter};
pub use frame::FrameError;
