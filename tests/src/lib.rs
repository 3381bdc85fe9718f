//! Helpers for kcore's end-to-end tests.
