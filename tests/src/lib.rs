//! Helpers for kcore's tests, shared by the crates' own root tests and the end-to-end
//! tests.
//!
//! - [`netns`]: network namespaces with unique names removed on drop, and small TCP
//!   servers and clients inside them.

pub mod netns;
