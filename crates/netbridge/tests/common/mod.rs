//! The shared network-namespace fixtures (`kcore_tests::netns`).

pub use kcore_tests::netns::*;
