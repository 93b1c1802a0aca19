//! Per-frame costs of the relay path, without I/O: parsing a client frame and applying the
//! signaling rules (which splice in the sender's fields), and packing signals into a bus batch
//! and reading it back; and what the limits add per frame and per request. `cargo bench --bench
//! relay`; figures in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use switchboard::bus::Route;
use switchboard::bus::redis::codec::{BatchWriter, decode};
use switchboard::client_ip::TrustedProxies;
use switchboard::limits::{MemoryThrottle, MessageLimit, Rate, Throttle, UserBudgets, Verdict};
use switchboard::metrics::MessageKind;
use switchboard::protocol::Member;
use switchboard::protocol::RoomGrant;
use switchboard::protocol::{ClientId, ConnId, NodeId, RoomId, UserId, inbound};
use switchboard::protocol::{Frame, RoomSignalKind, Stamp, unix_micros};
use switchboard::resume::Replay;
use switchboard::signaling::{Action, Session};
use switchboard::ws::{socket_text, socket_text_seq};

/// A ~3 KB SDP offer and a ~250 B ICE candidate, as browsers send them.
fn frames() -> [(&'static str, String); 2] {
    let sdp = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".repeat(48);
    let offer = serde_json::json!({
        "type": "offer", "to": "peer-b", "offer": {"type": "offer", "sdp": sdp},
    });
    let ice = serde_json::json!({
        "type": "ice_candidate", "to": "peer-b",
        "candidate": {
            "candidate": "candidate:842163049 1 udp 1677729535 203.0.113.7 49203 typ srflx \
                          raddr 192.168.1.20 rport 49203 generation 0 ufrag 7s3f network-cost 999",
            "sdpMid": "0", "sdpMLineIndex": 0,
        },
    });
    [
        ("offer_3k", offer.to_string()),
        ("ice_250b", ice.to_string()),
    ]
}

fn session() -> Session {
    let me = Member {
        client_id: ClientId::parse("peer-a").unwrap(),
        user_id: UserId::parse("user-a").unwrap(),
        username: "Alice \"A\" Example".into(),
        conn: ConnId(1),
        node: NodeId::generate(),
    };
    let mut session = Session::new(me, RoomGrant::Any, 16);
    session.joined(RoomId::parse("room-1").unwrap());
    session
}

fn parse_and_handle(c: &mut Criterion) {
    let session = session();
    let mut group = c.benchmark_group("parse_and_handle");
    for (name, text) in frames() {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let message = inbound::parse(black_box(&text)).unwrap();
                match session.handle(message).unwrap() {
                    Action::SendRoom { frame, .. } => frame,
                    other => panic!("unexpected {other:?}"),
                }
            })
        });
    }
    group.finish();
}

/// A batch as the publisher builds under load: 35 ICE candidates to one node.
fn codec(c: &mut Criterion) {
    const BATCH: usize = 35;
    let origin = NodeId::generate();
    let route = Route::Member {
        room: RoomId::parse("room-1").unwrap(),
        client: ClientId::parse("peer-b").unwrap(),
        from: ConnId(1),
    };
    let [_, (_, ice)] = frames();
    let encode = || {
        let mut batch = BatchWriter::new(&origin);
        for _ in 0..BATCH {
            batch.push(&route, Stamp::new(unix_micros(), 1), ice.as_bytes());
        }
        batch.finish()
    };
    let mut group = c.benchmark_group("bus_batch_of_35");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("encode", |b| b.iter(|| black_box(encode())));
    let bytes = encode();
    group.bench_function("decode", |b| {
        b.iter_batched(
            || bytes.clone(),
            |bytes| decode(bytes).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The socket edge: a relayed frame (shared by the core) handed to axum's text type for the
/// write, per recipient.
fn socket_edge(c: &mut Criterion) {
    let session = session();
    let mut group = c.benchmark_group("socket_edge");
    for (name, text) in frames() {
        let frame = match session.handle(inbound::parse(&text).unwrap()).unwrap() {
            Action::SendRoom { frame, .. } => Frame::from(frame),
            other => panic!("unexpected {other:?}"),
        };
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || frame.clone(),
                |frame| socket_text(black_box(frame)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// What resuming adds at the socket edge, per recipient: the frame with its `seq` in front (a
/// copy, which spares the UTF-8 check of `socket_edge`), and its place in the session's replay
/// (a shared handle, the oldest dropped once the replay is full).
fn resume_edge(c: &mut Criterion) {
    let session = session();
    let mut group = c.benchmark_group("resume_edge");
    for (name, text) in frames() {
        let frame = match session.handle(inbound::parse(&text).unwrap()).unwrap() {
            Action::SendRoom { frame, .. } => Frame::from(frame),
            other => panic!("unexpected {other:?}"),
        };
        group.throughput(Throughput::Bytes(frame.len() as u64));
        let mut replay = Replay::new(256);
        group.bench_function(name, |b| {
            b.iter_batched(
                || frame.clone(),
                |frame| {
                    let message = socket_text_seq(black_box(&frame), replay.next_seq());
                    replay.record(frame);
                    message
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// What the limits add: a connection's message-rate check for every frame it sends (the pass
/// path, as under normal load), with its user's, and per upgrade or `/auth` request the client's address behind a
/// trusted proxy and the in-process throttle's hit.
fn limits(c: &mut Criterion) {
    let mut group = c.benchmark_group("limits");
    group.bench_function("message_limit_new", |b| {
        b.iter(|| MessageLimit::new(black_box(30), black_box(120)))
    });
    let mut limit = MessageLimit::new(1_000_000_000, 1_000_000_000);
    group.bench_function("message_rate_check", |b| {
        b.iter(|| black_box(limit.check()))
    });
    let proxies = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
    let peer: std::net::IpAddr = "10.1.2.3".parse().unwrap();
    group.bench_function("client_ip_behind_proxy", |b| {
        b.iter(|| {
            proxies.client_ip(
                black_box(peer),
                std::iter::once("203.0.113.9, 10.0.0.7"),
                std::iter::empty(),
            )
        })
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let throttle = MemoryThrottle::default();
    let rate = Rate::per_minute("bench", usize::MAX, usize::MAX);
    group.bench_function("throttle_hit_in_process", |b| {
        b.iter(|| runtime.block_on(throttle.hit(rate, black_box("203.0.113.9"))))
    });
    // The connection's check and its user's, as with `user_msg_rate` on: a local spend per
    // frame, and a refill from the throttle (in process here) once per chunk of 1000.
    let budgets = UserBudgets::default();
    let mut limit = MessageLimit::new(1_000_000_000, 1_000_000_000);
    limit.with_user(budgets.get("alice"), 1_000_000_000);
    let user_rate = Rate::per_minute("user_msg_rate", usize::MAX, usize::MAX);
    group.bench_function("message_rate_check_with_user", |b| {
        b.iter(|| match limit.check() {
            Verdict::Refill => {
                let budget = std::sync::Arc::clone(limit.user().unwrap());
                let refilled = runtime.block_on(budget.refill(&throttle, user_rate));
                black_box(limit.settle(refilled))
            }
            verdict => black_box(verdict),
        })
    });
    group.finish();
}

/// What the relay's metrics add per signal: its stamp on receipt (a clock read), and on each
/// write its delivery count and latency sample (the clock read once per write batch, here once
/// per frame, as when every batch holds one), with the outbox's depth noted. The recorder is
/// installed, as in a node, with its upkeep thread folding the samples in.
fn relay_metrics(c: &mut Criterion) {
    let handle = switchboard::metrics::install();
    let mut group = c.benchmark_group("relay_metrics");
    let kind = MessageKind::Room(RoomSignalKind::IceCandidate);
    group.bench_function("stamp_on_receipt", |b| {
        b.iter(|| black_box(kind.stamp_now()))
    });
    let stamp = kind.stamp_now();
    group.bench_function("delivered", |b| {
        b.iter(|| switchboard::metrics::delivered(black_box(stamp), black_box(unix_micros())))
    });
    group.bench_function("delivered_remote", |b| {
        b.iter(|| {
            switchboard::metrics::delivered(black_box(stamp.remote()), black_box(unix_micros()))
        })
    });
    group.bench_function("outbox_depth", |b| {
        b.iter(|| switchboard::metrics::outbox_depth(black_box(3)))
    });
    group.finish();
    black_box(handle.render().len());
}

criterion_group!(
    benches,
    parse_and_handle,
    codec,
    socket_edge,
    resume_edge,
    limits,
    relay_metrics
);
criterion_main!(benches);
