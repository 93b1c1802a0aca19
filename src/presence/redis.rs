//! Presence in Redis (cluster mode).
