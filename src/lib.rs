//! Switchboard, a WebRTC signaling relay cluster.
//!
//! - [`protocol`]: the wire messages, identifiers, error and close codes.
//! - [`signaling`]: the rules, without I/O.
//! - [`hub`]: delivery and membership over the [`registry`] of local connections, the
//!   [`presence`] store and the [`bus`] (in-process, or Redis via [`cluster`]).
//! - [`ws`] and [`http`]: the network edge; [`app`] starts and drains a node.
//! - [`config`], [`auth`], [`state`], [`metrics`], [`telemetry`]: the supporting cast.

pub mod app;
pub mod auth;
pub mod bus;
pub mod cluster;
pub mod config;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod registry;
pub mod signaling;
pub mod state;
pub mod telemetry;
pub mod ws;
