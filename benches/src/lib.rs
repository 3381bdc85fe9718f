//! Shared fixture generators for the kcore benchmarks (deterministic, never downloaded).
