//! Shared helpers for amp's benchmarks.
