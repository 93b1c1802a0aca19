//! Switchboard, a WebRTC signaling relay cluster. `docs/architecture.md` draws the layers;
//! each module imports only from the layers below it.
//!
//! - [`protocol`]: the wire messages, identifiers, frames, error and close codes (no I/O).
//! - [`signaling`]: the rules, without I/O.
//! - [`registry`] and [`hub`]: local connections; delivery and membership over the traits below.
//! - [`bus`] and [`presence`]: the cluster traits, in-process and over Redis ([`redis`]);
//!   [`store`]: durable data in SQLite or Postgres.
//! - [`backends`] builds them from the [`config`]; [`tasks`] supervises their background tasks.
//! - [`ws`] and [`http`]: the network edge, answering errors with [`error`]; [`app`] builds the
//!   router, starts, supervises and drains a node; [`tls`] serves its certificate when there is
//!   no proxy in front.
//! - [`accounts`]: who may log in (argon2id passwords over the store).
//! - [`e2ee`]: the E2EE relay's key directory and message queue.
//! - [`auth`], [`state`], [`metrics`], [`telemetry`]: the supporting cast.

pub mod accounts;
pub mod app;
pub mod auth;
pub mod backends;
pub mod bus;
pub mod calls;
pub mod client_ip;
pub mod config;
pub mod credentials;
pub mod datakey;
pub mod e2ee;
pub mod error;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod redis;
pub mod registry;
pub mod resume;
pub mod retention;
mod server;
pub mod signaling;
pub mod state;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod turn;
pub mod ws;
