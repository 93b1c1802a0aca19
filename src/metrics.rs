//! Metric names, their help texts, and the recorder. Every name is a `const` here and is
//! described in `docs/metrics.md` (a test checks both ways). Labels are bounded: message type,
//! scope, close code, route template, limit name, reason, result — never a room, user or
//! client id.
//!
//! The relay path ([`message_in`], [`delivered`]) counts into its thread's own tallies, summed
//! at each scrape: a labelled lookup, a counter shared between cores or a histogram sample per
//! signal each showed in profiles of the relay.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::protocol::{RoomSignalKind, Stamp, UserSignalKind, unix_micros};

/// `version` and `commit` of the running binary; always 1.
pub const BUILD_INFO: &str = "switchboard_build_info";
/// 1 while the node is ready (what `/readyz` answers 200 for), else 0.
pub const READY: &str = "switchboard_ready";
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
/// Relayed signals written to a recipient's socket, by type and scope (`local`: the sender is
/// on this node; `remote`: it came over the bus).
pub const MESSAGES_DELIVERED: &str = "switchboard_messages_delivered_total";
/// From a signal's receipt on the sender's node to its write on the recipient's socket.
pub const RELAY_LATENCY: &str = "switchboard_relay_latency_seconds";
pub const MESSAGE_ERRORS: &str = "switchboard_message_errors_total";
pub const JOINS: &str = "switchboard_room_joins_total";
pub const TAKEOVERS: &str = "switchboard_client_takeovers_total";
pub const SLOW_CONSUMERS: &str = "switchboard_slow_consumers_total";
/// Connections dropped because one write to the client took longer than `write_timeout`.
pub const WRITE_TIMEOUTS: &str = "switchboard_write_timeouts_total";
/// The most frames any connection's outbox held at a write since the previous scrape.
pub const OUTBOX_HIGH_WATER: &str = "switchboard_outbox_high_water";
pub const BUS_ERRORS: &str = "switchboard_bus_errors_total";
pub const BUS_DROPPED: &str = "switchboard_bus_dropped_total";
/// Redis publishes (one batch each) and the envelopes they carried: their ratio is the batching.
pub const BUS_BATCHES: &str = "switchboard_bus_batches_published_total";
pub const BUS_ENVELOPES: &str = "switchboard_bus_envelopes_published_total";
/// How long one publish of a batch took, until Redis answered.
pub const BUS_PUBLISH: &str = "switchboard_bus_publish_seconds";
/// Envelopes per published batch.
pub const BUS_BATCH_SIZE: &str = "switchboard_bus_batch_envelopes";
/// Posted envelopes that reached no other node (or, `short`, fewer than expected), by `reason`
/// (`no_receiver`, `unavailable`, `short`).
pub const BUS_RETURNED: &str = "switchboard_bus_returned_total";
/// `user_left` announcements not delivered because a newer connection of the client is in the
/// room (they arrived after its `user_joined`).
pub const STALE_LEAVES: &str = "switchboard_stale_leaves_total";
pub const HTTP_REJECTED: &str = "switchboard_upgrades_rejected_total";
/// Reconnections of the node's Redis clients.
pub const REDIS_RECONNECTS: &str = "switchboard_redis_reconnects_total";
/// Connection errors of the node's Redis clients.
pub const REDIS_ERRORS: &str = "switchboard_redis_errors_total";
/// Dead nodes whose members and counts this node removed, by `result` (`ok`, `error`).
pub const PRESENCE_REAPS: &str = "switchboard_presence_reaps_total";
/// HTTP requests answered, by method, route template and status.
pub const HTTP_REQUESTS: &str = "switchboard_http_requests_total";
/// How long HTTP requests took to answer, by method, route template and status.
pub const HTTP_DURATION: &str = "switchboard_http_request_duration_seconds";
/// Database operations, by operation.
pub const STORE_QUERY: &str = "switchboard_store_query_seconds";
/// Database operations that failed, by operation.
pub const STORE_ERRORS: &str = "switchboard_store_errors_total";
/// Sessions whose connection was lost, parked for `resume_window`.
pub const SESSIONS_PARKED: &str = "switchboard_sessions_parked";
/// Parked sessions that ended without a resume, by how (`expired`, `closed`, `drained`).
pub const SESSIONS_ENDED: &str = "switchboard_sessions_ended_total";
/// Targeted signals held for a session whose node died, until a survivor takes it over.
pub const SIGNALS_HELD: &str = "switchboard_signals_held_total";
/// Resumable sessions of dead nodes this node took over.
pub const SESSIONS_ADOPTED: &str = "switchboard_sessions_adopted_total";
/// `resume` requests, by result (`resumed`, or the refusal's reason).
pub const RESUMES: &str = "switchboard_resumes_total";
/// Rows the retention job removed, by table.
pub const RETENTION_REMOVED: &str = "switchboard_retention_rows_removed_total";
/// Retention job ticks, by result (`ran`, `skipped`: another node ran it this interval,
/// `failed`).
pub const RETENTION_RUNS: &str = "switchboard_retention_runs_total";
/// Loads of the TLS certificate files, by result (`loaded`, `refused`).
pub const TLS_RELOADS: &str = "switchboard_tls_certificate_loads_total";
/// When the served TLS certificate ends (its `notAfter`), Unix seconds.
pub const TLS_CERT_EXPIRY: &str = "switchboard_tls_certificate_expiry_timestamp_seconds";
/// TLS handshakes that failed or timed out on the public listener.
pub const TLS_HANDSHAKE_ERRORS: &str = "switchboard_tls_handshake_errors_total";
/// E2EE messages accepted for devices, by `kind` (`queued`, `ephemeral`).
pub const E2EE_MESSAGES: &str = "switchboard_e2ee_messages_total";
/// E2EE messages a device acknowledged (deleted from the queue).
pub const E2EE_ACKED: &str = "switchboard_e2ee_messages_acked_total";
/// E2EE key bundles served per device, by `key` (`one_time`, `fallback`).
pub const E2EE_CLAIMS: &str = "switchboard_e2ee_prekey_claims_total";
/// QR calls by what happened (`initiated`, `answered`, `missed`, `rejected`, `ended`,
/// `expired`).
pub const CALLS: &str = "switchboard_calls_total";

/// Every metric with its kind and help text, for the `# HELP` lines and `docs/metrics.md`.
pub const ALL: &[(&str, Kind, &str)] = &[
    (
        BUILD_INFO,
        Kind::Gauge,
        "The running binary's version and commit; always 1.",
    ),
    (
        READY,
        Kind::Gauge,
        "1 while the node is ready for new clients, else 0.",
    ),
    (
        CONNECTIONS,
        Kind::Gauge,
        "Authenticated WebSocket connections on this node.",
    ),
    (
        CONNECTIONS_OPENED,
        Kind::Counter,
        "WebSocket connections opened.",
    ),
    (
        CONNECTIONS_CLOSED,
        Kind::Counter,
        "WebSocket connections closed, by close code.",
    ),
    (
        AUTH_FAILURES,
        Kind::Counter,
        "Refused credentials, by reason.",
    ),
    (
        RATE_LIMITED,
        Kind::Counter,
        "Requests, messages and connections refused by a limit, by limit.",
    ),
    (
        RATE_LIMIT_ERRORS,
        Kind::Counter,
        "Limit checks that could not reach Redis and let the request through, by limit.",
    ),
    (TURN_CREDENTIALS, Kind::Counter, "TURN credentials issued."),
    (
        REVOCATIONS,
        Kind::Counter,
        "Revocations this node applied, by kind.",
    ),
    (
        JWKS_LOADS,
        Kind::Counter,
        "Loads of the external issuer's keys, by outcome.",
    ),
    (
        MESSAGES_IN,
        Kind::Counter,
        "Signals received from clients, by type.",
    ),
    (
        MESSAGES_DELIVERED,
        Kind::Counter,
        "Signals written to a recipient's socket, by type and scope.",
    ),
    (
        RELAY_LATENCY,
        Kind::Histogram,
        "Seconds from a signal's receipt on the sender's node to its write on the recipient's socket, by scope.",
    ),
    (
        MESSAGE_ERRORS,
        Kind::Counter,
        "Error frames sent to clients, by code.",
    ),
    (JOINS, Kind::Counter, "Room joins."),
    (
        TAKEOVERS,
        Kind::Counter,
        "Connections replaced by a newer one with the same client id.",
    ),
    (
        SLOW_CONSUMERS,
        Kind::Counter,
        "Connections closed because their outbox was full.",
    ),
    (
        WRITE_TIMEOUTS,
        Kind::Counter,
        "Connections closed because a write took longer than write_timeout.",
    ),
    (
        OUTBOX_HIGH_WATER,
        Kind::Gauge,
        "The most frames any outbox held at a write since the previous scrape.",
    ),
    (BUS_ERRORS, Kind::Counter, "Bus operations that failed."),
    (
        BUS_DROPPED,
        Kind::Counter,
        "Bus messages dropped: malformed, or the inbound queue was full.",
    ),
    (BUS_BATCHES, Kind::Counter, "Batches published on the bus."),
    (
        BUS_ENVELOPES,
        Kind::Counter,
        "Envelopes published on the bus.",
    ),
    (
        BUS_PUBLISH,
        Kind::Histogram,
        "Seconds one publish of a batch took until Redis answered.",
    ),
    (
        BUS_BATCH_SIZE,
        Kind::Histogram,
        "Envelopes per published batch.",
    ),
    (
        BUS_RETURNED,
        Kind::Counter,
        "Posted envelopes that reached no other node (or fewer than expected), by reason.",
    ),
    (
        STALE_LEAVES,
        Kind::Counter,
        "user_left announcements overtaken by a newer join and not delivered.",
    ),
    (
        HTTP_REJECTED,
        Kind::Counter,
        "WebSocket upgrades refused, by code.",
    ),
    (
        REDIS_RECONNECTS,
        Kind::Counter,
        "Reconnections of the node's Redis clients.",
    ),
    (
        REDIS_ERRORS,
        Kind::Counter,
        "Connection errors of the node's Redis clients.",
    ),
    (
        PRESENCE_REAPS,
        Kind::Counter,
        "Dead nodes this node removed from presence, by result.",
    ),
    (
        HTTP_REQUESTS,
        Kind::Counter,
        "HTTP requests answered, by method, route and status.",
    ),
    (
        HTTP_DURATION,
        Kind::Histogram,
        "Seconds HTTP requests took to answer, by method, route and status.",
    ),
    (
        STORE_QUERY,
        Kind::Histogram,
        "Seconds database operations took, by operation.",
    ),
    (
        STORE_ERRORS,
        Kind::Counter,
        "Database operations that failed, by operation.",
    ),
    (
        SESSIONS_PARKED,
        Kind::Gauge,
        "Sessions whose connection was lost, waiting to be resumed.",
    ),
    (
        SESSIONS_ENDED,
        Kind::Counter,
        "Parked sessions that ended without being resumed, by how.",
    ),
    (
        SIGNALS_HELD,
        Kind::Counter,
        "Targeted signals held for a session whose node died, until a survivor takes it over.",
    ),
    (
        SESSIONS_ADOPTED,
        Kind::Counter,
        "Resumable sessions of dead nodes this node took over.",
    ),
    (RESUMES, Kind::Counter, "Resume requests, by result."),
    (
        RETENTION_REMOVED,
        Kind::Counter,
        "Rows the retention job removed, by table.",
    ),
    (
        RETENTION_RUNS,
        Kind::Counter,
        "Retention job ticks on this node, by result.",
    ),
    (
        TLS_RELOADS,
        Kind::Counter,
        "Loads of the TLS certificate and key files, by result.",
    ),
    (
        TLS_CERT_EXPIRY,
        Kind::Gauge,
        "When the served TLS certificate ends, Unix seconds.",
    ),
    (
        TLS_HANDSHAKE_ERRORS,
        Kind::Counter,
        "TLS handshakes on the public listener that failed or timed out.",
    ),
    (
        E2EE_MESSAGES,
        Kind::Counter,
        "E2EE messages accepted for devices, by kind (queued, ephemeral).",
    ),
    (
        E2EE_ACKED,
        Kind::Counter,
        "E2EE messages a device acknowledged and the queue deleted.",
    ),
    (
        E2EE_CLAIMS,
        Kind::Counter,
        "E2EE bundles served per device, by key (one_time, fallback).",
    ),
    (
        CALLS,
        Kind::Counter,
        "QR calls by what happened: initiated, answered, missed, rejected, ended, expired.",
    ),
];

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Relay latency buckets, seconds: 100 µs (a local delivery) to 2.5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Request and query buckets, seconds (a login's password hash takes tens of milliseconds).
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Envelopes per batch.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
];
/// How often histogram samples are folded into their buckets (without it they would pile up
/// between scrapes).
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Installs the process-wide Prometheus recorder once, with every metric described and the
/// build info set; later calls return the same handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = || {
                let buckets = [
                    (BUS_PUBLISH, LATENCY_BUCKETS),
                    (HTTP_DURATION, REQUEST_BUCKETS),
                    (STORE_QUERY, REQUEST_BUCKETS),
                    (BUS_BATCH_SIZE, BATCH_BUCKETS),
                ];
                buckets
                    .into_iter()
                    .fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
                        builder
                            .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
                            .expect("bucket lists are not empty")
                    })
            };
            let handle = builder()
                .install_recorder()
                .unwrap_or_else(|_| builder().build_recorder().handle());
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                })
                .expect("a thread for the metrics upkeep");
            handle
        })
        .clone()
}

fn describe() {
    for &(name, kind, help) in ALL.iter().filter(|(name, _, _)| !SHARDED.contains(name)) {
        let unit = name.ends_with("_seconds").then_some(Unit::Seconds);
        match (kind, unit) {
            (Kind::Counter, _) => metrics::describe_counter!(name, help),
            (Kind::Gauge, _) => metrics::describe_gauge!(name, help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(name, unit, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => COMMIT)
        .set(1.0);
    // Present from the first scrape, so that rates and alerts see a zero rather than nothing.
    for name in UNLABELLED_COUNTERS {
        metrics::counter!(*name).increment(0);
    }
    metrics::gauge!(CONNECTIONS).increment(0.0);
    metrics::gauge!(SESSIONS_PARKED).increment(0.0);
}

/// The counters without labels.
const UNLABELLED_COUNTERS: &[&str] = &[
    CONNECTIONS_OPENED,
    TURN_CREDENTIALS,
    JOINS,
    TAKEOVERS,
    SLOW_CONSUMERS,
    WRITE_TIMEOUTS,
    BUS_ERRORS,
    BUS_DROPPED,
    BUS_BATCHES,
    BUS_ENVELOPES,
    STALE_LEAVES,
    REDIS_RECONNECTS,
    REDIS_ERRORS,
    E2EE_ACKED,
];

/// The commit the binary was built from (`build.rs`), or `unknown`.
pub const COMMIT: &str = env!("SWITCHBOARD_COMMIT");

/// The text to serve for a scrape: the gauges that are read rather than kept (`ready`, the
/// outbox high-water mark, which starts over) set first.
pub fn render(handle: &PrometheusHandle, ready: bool) -> String {
    metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    let high = OUTBOX_HIGH.swap(0, Ordering::Relaxed);
    metrics::gauge!(OUTBOX_HIGH_WATER).set(high as f64);
    let mut text = handle.render();
    text.push_str(&render_shards());
    text
}

/// A request, connection or message refused by limit `limit`: counted, and logged at warn as
/// the security event `rate_limited` (the span names the route and the client's address).
pub fn limit_hit(limit: &'static str) {
    metrics::counter!(RATE_LIMITED, "limit" => limit).increment(1);
    tracing::warn!(event = "rate_limited", limit, "refused by a limit");
}

/// A refusal that is counted but not logged: the messages a connection goes on sending after
/// its first refusal was answered (and logged), dropped until its rate allows again.
pub fn limit_dropped(limit: &'static str) {
    metrics::counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

/// Credentials refused for `reason` (`expired`, `invalid`, `revoked`, `forbidden`, `login`,
/// ...): counted, and logged at warn as the security event `auth_failure`.
pub fn auth_failure(reason: &'static str) {
    metrics::counter!(AUTH_FAILURES, "reason" => reason).increment(1);
    tracing::warn!(event = "auth_failure", reason, "credentials refused");
}

/// The deepest outbox seen at a write since the last scrape.
static OUTBOX_HIGH: AtomicUsize = AtomicUsize::new(0);

/// Notes that an outbox held `depth` frames at a write (a load, and a store only when it is
/// the deepest yet).
pub fn outbox_depth(depth: usize) {
    if depth > OUTBOX_HIGH.load(Ordering::Relaxed) {
        OUTBOX_HIGH.fetch_max(depth, Ordering::Relaxed);
    }
}

/// A relayed signal's type, as [`message_in`] and [`delivered`] count it.
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

    /// The stamp of a signal of this kind received now: its tag is its index + 1 (0 is "not a
    /// signal").
    pub fn stamp_now(self) -> Stamp {
        Stamp::new(unix_micros(), self.index() as u8 + 1)
    }
}

/// Every signal type's name, in [`MessageKind::index`] order.
fn type_names() -> impl Iterator<Item = &'static str> {
    let rooms = RoomSignalKind::ALL.iter().map(|k| k.as_str());
    rooms.chain(UserSignalKind::ALL.iter().map(|k| k.as_str()))
}

/// Counts one relayed message of `kind`.
pub fn message_in(kind: MessageKind) {
    SHARD.with(|shard| shard.received[kind.index()].fetch_add(1, Ordering::Relaxed));
}

/// Counts one signal written to a socket at `now` (microseconds of the Unix epoch) and records
/// its latency since its receipt. Frames that are not relayed signals are not counted. A
/// receipt "after" `now` (clocks of two hosts out of step) counts as no time at all.
pub fn delivered(stamp: Stamp, now: u64) {
    let tag = stamp.tag() as usize;
    if tag == 0 || tag > KINDS {
        return;
    }
    let remote = usize::from(stamp.is_remote());
    let micros = now.saturating_sub(stamp.micros());
    let bucket = LATENCY_MICROS.partition_point(|&bound| bound < micros);
    SHARD.with(|shard| {
        shard.delivered[(tag - 1) * 2 + remote].fetch_add(1, Ordering::Relaxed);
        shard.buckets[remote][bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum_micros[remote].fetch_add(micros, Ordering::Relaxed);
    });
}

/// Signal kinds: room kinds, then user kinds.
const KINDS: usize = RoomSignalKind::ALL.len() + UserSignalKind::ALL.len();
/// [`LATENCY_BUCKETS`] in microseconds.
const LATENCY_MICROS: [u64; LATENCY_BUCKETS.len()] = {
    let mut micros = [0; LATENCY_BUCKETS.len()];
    let mut i = 0;
    while i < micros.len() {
        micros[i] = (LATENCY_BUCKETS[i] * 1e6) as u64;
        i += 1;
    }
    micros
};
/// The metrics the relay path counts in [`Shard`]s, rendered by [`render_shards`] rather than
/// by the recorder.
const SHARDED: [&str; 3] = [MESSAGES_IN, MESSAGES_DELIVERED, RELAY_LATENCY];

/// One thread's tallies of the relay path: received and delivered signals, and the latency
/// histogram (its buckets not cumulative; the last is `+Inf`). Only its own thread adds to
/// it, so no cache line is shared between cores per signal (a shared counter, or the
/// recorder's histogram, cost a tenth of a delivery at the relay's ceiling); a scrape sums the
/// shards of every thread that ever counted.
struct Shard {
    received: [AtomicU64; KINDS],
    delivered: [AtomicU64; KINDS * 2],
    buckets: [[AtomicU64; LATENCY_BUCKETS.len() + 1]; 2],
    sum_micros: [AtomicU64; 2],
}

/// Every thread's shard (kept after the thread ends, so that counts never go back).
static SHARDS: Mutex<Vec<Arc<Shard>>> = Mutex::new(Vec::new());

thread_local! {
    static SHARD: Arc<Shard> = {
        let shard = Arc::new(Shard {
            received: std::array::from_fn(|_| AtomicU64::new(0)),
            delivered: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            sum_micros: std::array::from_fn(|_| AtomicU64::new(0)),
        });
        SHARDS.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::clone(&shard));
        shard
    };
}

/// The sharded metrics in the Prometheus text format, summed over the shards.
fn render_shards() -> String {
    use std::fmt::Write;
    let shards = SHARDS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let total = |read: &dyn Fn(&Shard) -> &AtomicU64| -> u64 {
        shards.iter().map(|s| read(s).load(Ordering::Relaxed)).sum()
    };
    let help = |name: &str| ALL.iter().find(|(n, _, _)| *n == name).map_or("", |m| m.2);
    let mut out = String::with_capacity(8192);
    let family = |out: &mut String, name: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", help(name));
    };
    family(&mut out, MESSAGES_IN, "counter");
    for (i, t) in type_names().enumerate() {
        let n = total(&|s| &s.received[i]);
        let _ = writeln!(out, "{MESSAGES_IN}{{type=\"{t}\"}} {n}");
    }
    out.push('\n');
    family(&mut out, MESSAGES_DELIVERED, "counter");
    for (i, t) in type_names().enumerate() {
        for (scope_index, scope) in SCOPES.iter().enumerate() {
            let n = total(&|s| &s.delivered[i * 2 + scope_index]);
            let _ = writeln!(
                out,
                "{MESSAGES_DELIVERED}{{type=\"{t}\",scope=\"{scope}\"}} {n}"
            );
        }
    }
    out.push('\n');
    family(&mut out, RELAY_LATENCY, "histogram");
    for (scope_index, scope) in SCOPES.iter().enumerate() {
        let mut cumulative = 0;
        for (b, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += total(&|s| &s.buckets[scope_index][b]);
            let _ = writeln!(
                out,
                "{RELAY_LATENCY}_bucket{{scope=\"{scope}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += total(&|s| &s.buckets[scope_index][LATENCY_BUCKETS.len()]);
        let sum = total(&|s| &s.sum_micros[scope_index]) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{RELAY_LATENCY}_bucket{{scope=\"{scope}\",le=\"+Inf\"}} {cumulative}\n\
             {RELAY_LATENCY}_sum{{scope=\"{scope}\"}} {sum}\n\
             {RELAY_LATENCY}_count{{scope=\"{scope}\"}} {cumulative}"
        );
    }
    out.push('\n');
    out
}

/// The scopes of a delivery, in the order of [`Stamp::is_remote`] (false, true).
const SCOPES: [&str; 2] = ["local", "remote"];

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
        assert!(kinds.len() < 127, "tags fit the stamp's 7 bits");
        assert_eq!(type_names().count(), kinds.len());
    }

    #[test]
    fn every_metric_is_described_once_with_a_name_that_fits_its_kind() {
        let mut names: Vec<&str> = ALL.iter().map(|(name, _, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a metric is listed twice");
        for (name, kind, help) in ALL {
            assert!(name.starts_with("switchboard_"), "{name}");
            assert!(!help.is_empty() && help.ends_with('.'), "{name}: {help}");
            assert_eq!(
                name.ends_with("_total"),
                *kind == Kind::Counter,
                "{name}: counters and only counters end in _total"
            );
        }
    }

    #[test]
    fn docs_metrics_md_lists_exactly_the_metrics_of_the_code() {
        let doc = include_str!("../docs/metrics.md");
        let documented: std::collections::BTreeSet<&str> = doc
            .lines()
            .filter_map(|line| line.strip_prefix("| `switchboard_")?.split('`').next())
            .collect();
        let code: std::collections::BTreeSet<&str> = ALL
            .iter()
            .map(|(name, _, _)| name.strip_prefix("switchboard_").unwrap())
            .collect();
        assert_eq!(documented, code);
        for (name, kind, _) in ALL {
            let row = doc
                .lines()
                .find(|line| line.starts_with(&format!("| `{name}` |")))
                .unwrap();
            let kind = format!("| {} |", format!("{kind:?}").to_lowercase());
            assert!(row.contains(&kind), "{name}: {row}");
        }
    }

    #[test]
    fn the_relay_tallies_add_up_over_threads_into_cumulative_buckets() {
        let kind = MessageKind::User(UserSignalKind::ALL[0]);
        let t = kind.stamp_now();
        let series = |text: &str, name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .map_or(0.0, |v| v.parse().unwrap())
        };
        let type_name = UserSignalKind::ALL[0].as_str();
        let remote = format!("{MESSAGES_DELIVERED}{{type=\"{type_name}\",scope=\"remote\"}}");
        let before = render_shards();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    message_in(kind);
                    // 50 µs, 3 ms and 10 s after receipt.
                    for after in [50, 3_000, 10_000_000] {
                        delivered(t.remote(), t.micros() + after);
                    }
                });
            }
        });
        delivered(Stamp::NONE, t.micros());
        let after = render_shards();
        assert_eq!(series(&after, &remote) - series(&before, &remote), 6.0);
        let received = format!("{MESSAGES_IN}{{type=\"{type_name}\"}}");
        assert_eq!(series(&after, &received) - series(&before, &received), 2.0);
        let bucket = |le: &str| {
            let name = format!("{RELAY_LATENCY}_bucket{{scope=\"remote\",le=\"{le}\"}}");
            series(&after, &name) - series(&before, &name)
        };
        assert_eq!(bucket("0.0001"), 2.0);
        assert_eq!(bucket("0.0025"), 2.0);
        assert_eq!(bucket("0.005"), 4.0);
        assert_eq!(bucket("2.5"), 4.0);
        assert_eq!(bucket("+Inf"), 6.0);
        let count = format!("{RELAY_LATENCY}_count{{scope=\"remote\"}}");
        assert_eq!(series(&after, &count) - series(&before, &count), 6.0);
        assert!(after.contains(&format!("# TYPE {RELAY_LATENCY} histogram")));
    }

    #[test]
    fn the_outbox_high_water_mark_keeps_the_deepest_and_starts_over_at_each_scrape() {
        let handle = install();
        outbox_depth(3);
        outbox_depth(40);
        outbox_depth(7);
        let text = render(&handle, true);
        assert!(text.contains("switchboard_outbox_high_water 40"), "{text}");
        let text = render(&handle, false);
        assert!(text.contains("switchboard_outbox_high_water 0"), "{text}");
        assert!(text.contains("switchboard_ready 0"), "{text}");
    }
}
