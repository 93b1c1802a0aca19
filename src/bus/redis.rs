//! The Redis bus (cluster mode).
