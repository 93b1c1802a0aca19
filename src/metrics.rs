//! Metric names. Labels are bounded: message type, close code, route — never a room, user or
//! client id.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::protocol::{RoomSignalKind, UserSignalKind};

pub const CONNECTIONS: &str = "switchboard_connections";
pub const CONNECTIONS_OPENED: &str = "switchboard_connections_opened_total";
pub const CONNECTIONS_CLOSED: &str = "switchboard_connections_closed_total";
pub const AUTH_FAILURES: &str = "switchboard_auth_failures_total";
/// Requests, messages and connections refused by a limit, by limit name.
pub const RATE_LIMITED: &str = "switchboard_rate_limited_total";
/// Limit checks that could not reach Redis (and let the request through), by limit name.
pub const RATE_LIMIT_ERRORS: &str = "switchboard_rate_limit_errors_total";
/// TURN credentials issued (REST answers and `auth_success` frames).
pub const TURN_CREDENTIALS: &str = "switchboard_turn_credentials_total";
/// Revocations a node learned of, by kind (`token`, `key`, `user`).
pub const REVOCATIONS: &str = "switchboard_revocations_total";
/// Loads of the external issuer's JWKS, by outcome (`ok`, `error`).
pub const JWKS_LOADS: &str = "switchboard_jwks_loads_total";
pub const MESSAGES_IN: &str = "switchboard_messages_received_total";
pub const MESSAGE_ERRORS: &str = "switchboard_message_errors_total";
pub const JOINS: &str = "switchboard_room_joins_total";
pub const TAKEOVERS: &str = "switchboard_client_takeovers_total";
pub const SLOW_CONSUMERS: &str = "switchboard_slow_consumers_total";
/// Connections dropped because one write to the client took longer than `write_timeout`.
pub const WRITE_TIMEOUTS: &str = "switchboard_write_timeouts_total";
pub const BUS_ERRORS: &str = "switchboard_bus_errors_total";
pub const BUS_DROPPED: &str = "switchboard_bus_dropped_total";
/// Redis publishes (one batch each) and the envelopes they carried: their ratio is the batching.
pub const BUS_BATCHES: &str = "switchboard_bus_batches_published_total";
pub const BUS_ENVELOPES: &str = "switchboard_bus_envelopes_published_total";
/// Posted envelopes that reached no other node, by `reason` (`no_receiver`, `unavailable`).
pub const BUS_RETURNED: &str = "switchboard_bus_returned_total";
/// `user_left` announcements not delivered because a newer connection of the client is in the
/// room (they arrived after its `user_joined`).
pub const STALE_LEAVES: &str = "switchboard_stale_leaves_total";
pub const HTTP_REJECTED: &str = "switchboard_upgrades_rejected_total";

/// Counts one relayed message of `kind`, through handles resolved once (the labelled lookup
/// showed in profiles of the relay path).
pub fn message_in(kind: MessageKind) {
    static COUNTERS: OnceLock<Vec<metrics::Counter>> = OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        let rooms = RoomSignalKind::ALL.iter().map(|k| k.as_str());
        let users = UserSignalKind::ALL.iter().map(|k| k.as_str());
        rooms
            .chain(users)
            .map(|t| metrics::counter!(MESSAGES_IN, "type" => t))
            .collect()
    });
    counters[kind.index()].increment(1);
}

/// A relayed message type, as [`message_in`] counts it.
#[derive(Debug, Clone, Copy)]
pub enum MessageKind {
    Room(RoomSignalKind),
    User(UserSignalKind),
}

impl MessageKind {
    /// The position of the type's counter: room kinds first, then user kinds, each in the
    /// order of their declaration.
    fn index(self) -> usize {
        match self {
            Self::Room(kind) => kind as usize,
            Self::User(kind) => RoomSignalKind::ALL.len() + kind as usize,
        }
    }
}

/// Installs the process-wide Prometheus recorder once; later calls return the same handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_kind_has_its_own_counter() {
        let kinds: Vec<MessageKind> = RoomSignalKind::ALL
            .iter()
            .map(|k| MessageKind::Room(*k))
            .chain(UserSignalKind::ALL.iter().map(|k| MessageKind::User(*k)))
            .collect();
        let indexes: Vec<usize> = kinds.iter().map(|k| k.index()).collect();
        assert_eq!(indexes, (0..kinds.len()).collect::<Vec<_>>());
    }
}
