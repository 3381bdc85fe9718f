//! Helpers for kcore's tests, shared by the crates' own root tests and the end-to-end
//! tests.
//!
//! - [`netns`]: network namespaces with unique names removed on drop, and small TCP
//!   servers and clients inside them.
//! - [`mounts`]: unmounting whatever a test left under its directory.
//! - [`python`]: an interpreter with the official Python client.
//! - [`process`]: a command run to completion with optional stdin.
//! - [`wait`]: polling until something happens, in async tests.

pub mod mounts;
pub mod netns;
pub mod process;
pub mod python;
pub mod wait;
