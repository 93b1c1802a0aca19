//! Fuzzing every parser a client or a peer node reaches: WebSocket frames (parsing and the
//! signaling rules), bus envelopes from Redis, tokens, forwarding headers, ids from URLs and
//! query strings, and config values. A seeded generator mutates a corpus of real inputs
//! (`corpus/`, frames as the seeds' clients send them) and valid inputs built on the spot; each
//! target checks that nothing panics and that what it accepts is what it should.
//!
//! `cargo test --test fuzz` runs a short pass of each target (CI does). The long run:
//! `FUZZ_ITERATIONS=10000000 cargo test --release --test fuzz -- --ignored --nocapture`
//! (`FUZZ_SEED` picks another sequence); it prints how many inputs each target ran.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use switchboard::auth::Tokens;
use switchboard::bus::redis::codec::{BatchWriter, decode};
use switchboard::bus::{Envelope, Route};
use switchboard::client_ip::TrustedProxies;
use switchboard::config::Config;
use switchboard::protocol::{
    ClientId, ConnId, Member, NodeId, RoomGrant, RoomId, ServerMessage, Stamp, UserId, inbound,
};
use switchboard::signaling::{Action, Session};

/// Inputs per target in the short pass.
const SHORT: u64 = 20_000;

/// Pieces that JSON, tokens and headers are made of, for insertions.
const DICTIONARY: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "\\",
    "\\u0000",
    "\\ud800",
    "\\\"",
    "null",
    "true",
    "0",
    "-1",
    "1e309",
    "\"type\"",
    "\"to\"",
    "\"room\"",
    "\"target_user_id\"",
    "\"from\"",
    "\"offer\"",
    "\"join\"",
    "\"auth_token\"",
    "\"webrtc_offer\"",
    "\u{0}",
    "\u{feff}",
    "é",
    "𝄞",
    ".",
    "=",
    "for=",
    ";",
    " ",
    "\t",
    "\r\n",
    "::",
    "/",
    "%",
    "*",
];

struct Mutator {
    rng: StdRng,
    corpus: Vec<Vec<u8>>,
}

impl Mutator {
    fn new(seed: u64, corpus: Vec<Vec<u8>>) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            corpus,
        }
    }

    /// A corpus entry, mutated from zero to six times.
    fn next(&mut self) -> Vec<u8> {
        let mut input = self.corpus[self.rng.random_range(0..self.corpus.len())].clone();
        for _ in 0..self.rng.random_range(0..=6) {
            self.mutate(&mut input);
        }
        input
    }

    fn mutate(&mut self, input: &mut Vec<u8>) {
        let at = |rng: &mut StdRng, len: usize| rng.random_range(0..=len);
        match self.rng.random_range(0..8) {
            0 if !input.is_empty() => {
                let i = self.rng.random_range(0..input.len());
                input[i] ^= 1 << self.rng.random_range(0..8);
            }
            1 => {
                let i = at(&mut self.rng, input.len());
                input.insert(i, self.rng.random());
            }
            2 => {
                let piece = DICTIONARY[self.rng.random_range(0..DICTIONARY.len())];
                let i = at(&mut self.rng, input.len());
                input.splice(i..i, piece.bytes());
            }
            3 if !input.is_empty() => {
                let i = self.rng.random_range(0..input.len());
                let j = self.rng.random_range(i..=input.len().min(i + 16));
                input.drain(i..j);
            }
            4 if !input.is_empty() => {
                let i = self.rng.random_range(0..input.len());
                let j = self.rng.random_range(i..=input.len().min(i + 32));
                let copy = input[i..j].to_vec();
                let k = at(&mut self.rng, input.len());
                input.splice(k..k, copy);
            }
            5 => {
                let other = &self.corpus[self.rng.random_range(0..self.corpus.len())];
                let from = self.rng.random_range(0..=other.len());
                let cut = at(&mut self.rng, input.len());
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            6 => {
                let cut = at(&mut self.rng, input.len());
                input.truncate(cut);
            }
            _ => {
                // Deep or long: nesting and sizes the limits must hold against.
                let n = self.rng.random_range(1..200);
                let piece = if self.rng.random() { "[" } else { "a" };
                let i = at(&mut self.rng, input.len());
                input.splice(i..i, piece.repeat(n).into_bytes());
            }
        }
    }
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn report(target: &str, runs: u64, started: Instant) {
    if runs == 0 {
        return;
    }
    let elapsed = started.elapsed();
    println!(
        "fuzz {target}: {runs} inputs in {:.1} s ({:.0}/s), no failure",
        elapsed.as_secs_f64(),
        runs as f64 / elapsed.as_secs_f64()
    );
}

fn corpus_frames() -> Vec<Vec<u8>> {
    include_str!("corpus/frames.jsonl")
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// Frames: parsed, then handled by a session in one room. An accepted signal comes out as one
/// JSON object carrying the server's sender fields; everything else is an error frame that
/// serializes.
fn frames(runs: u64) {
    let started = Instant::now();
    let me = Member {
        client_id: ClientId::parse("me").unwrap(),
        user_id: UserId::parse("u-me").unwrap(),
        username: "Me \"quoted\"".into(),
        conn: ConnId(1),
        node: NodeId::parse("n1").unwrap(),
    };
    let mut session = Session::new(me, RoomGrant::Any, 4);
    session.joined(RoomId::parse("lobby").unwrap());
    let mut mutator = Mutator::new(seed(), corpus_frames());
    for _ in 0..runs {
        let input = mutator.next();
        let text = String::from_utf8_lossy(&input);
        let handled = inbound::parse(&text).and_then(|m| session.handle(m));
        match handled {
            Ok(Action::SendRoom { frame, .. }) | Ok(Action::SendUser { frame, .. }) => {
                // Well-formed JSON. Payload strings are relayed as sent, so a lone surrogate
                // escape (`\ud800`: JSON's grammar allows it) stays; `Value` would refuse it.
                let raw: Box<serde_json::value::RawValue> = serde_json::from_str(&frame)
                    .unwrap_or_else(|e| panic!("relayed text is not JSON ({e}): {text:?}"));
                let object = inbound::parse(raw.get()).map(|_| ());
                assert!(
                    !matches!(&object, Err(e) if e.code == switchboard::protocol::ErrorCode::InvalidJson),
                    "relayed text is not an object: {frame}"
                );
                // The server's sender fields come last, as the server wrote them.
                let tail = frame.ends_with("\"room\":\"lobby\"}")
                    || frame.ends_with("\"from\":\"me\",\"username\":\"Me \\\"quoted\\\"\"}");
                assert!(tail, "server fields not last, from {text:?}: {frame}");
                if let Ok(TopKeys(keys)) = serde_json::from_str::<TopKeys>(&frame) {
                    for key in ["from", "username", "user_id", "sender_user_id", "type"] {
                        let n = keys.iter().filter(|k| *k == key).count();
                        assert!(n <= 1, "`{key}` {n} times, from {text:?}: {frame}");
                    }
                }
                let top: Result<HashMap<String, Box<serde_json::value::RawValue>>, _> =
                    serde_json::from_str(&frame);
                if let Ok(top) = top {
                    assert_eq!(top["from"].get(), "\"me\"", "sender forged by {text:?}");
                    assert_eq!(top["username"].get(), "\"Me \\\"quoted\\\"\"");
                }
            }
            Ok(_) => {}
            Err(e) => {
                let json = ServerMessage::from(e).to_json();
                let out: Value = serde_json::from_str(&json).expect("error frames are JSON");
                assert_eq!(out["type"], "error");
            }
        }
    }
    report("frames", runs, started);
}

/// The keys of a JSON object, duplicates included, in order.
struct TopKeys(Vec<String>);

impl<'de> serde::Deserialize<'de> for TopKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = TopKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TopKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(TopKeys(keys))
            }
        }
        d.deserialize_map(Keys)
    }
}

fn random_route(rng: &mut StdRng) -> Route {
    let room = RoomId::parse(&format!("r{}", rng.random_range(0..100))).unwrap();
    let client = ClientId::parse(&format!("c{}", rng.random_range(0..100))).unwrap();
    let conn = ConnId(rng.random());
    match rng.random_range(0..4) {
        0 => Route::Room { room, except: conn },
        1 => Route::User {
            user: UserId::parse(&format!("u{}", rng.random_range(0..100))).unwrap(),
            except: conn,
        },
        2 => Route::Kick { client, conn },
        _ => Route::Left { room, client, conn },
    }
}

/// Bus batches from Redis: anything decodes or is refused whole; a batch as a node writes it
/// decodes to what was written.
fn envelopes(runs: u64) {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed());
    let origin = NodeId::parse("node-a").unwrap();
    let mut corpus = Vec::new();
    for _ in 0..64 {
        let mut batch = BatchWriter::new(&origin);
        let mut written = Vec::new();
        for _ in 0..rng.random_range(1..5) {
            let route = random_route(&mut rng);
            let payload: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            let stamp = Stamp::from_bits(rng.random());
            batch.push(&route, stamp, &payload);
            written.push((route, stamp, payload));
        }
        let bytes = batch.finish();
        let decoded = decode(bytes.clone()).expect("a batch as written decodes");
        let read: Vec<(Route, Stamp, Vec<u8>)> = decoded
            .into_iter()
            .map(|e: Envelope| (e.route, e.stamp, e.payload.to_vec()))
            .collect();
        assert_eq!(read, written);
        corpus.push(bytes.to_vec());
    }
    let mut mutator = Mutator::new(seed(), corpus);
    for _ in 0..runs {
        let _ = decode(Bytes::from(mutator.next()));
    }
    report("envelopes", runs, started);
}

/// Tokens: a mutated token is refused unless it still says exactly what was signed.
fn tokens(runs: u64) {
    let started = Instant::now();
    let tokens = Tokens::new(b"Jq3x9Vb2LmT8wZ4kR7nY1pD6sF0gH5cA");
    let mut corpus = Vec::new();
    for user in ["alice", "bob", "u-1"] {
        let claims = switchboard::auth::claims(
            &UserId::parse(user).unwrap(),
            user,
            std::time::Duration::from_secs(3600),
        );
        corpus.push(tokens.mint(&claims).into_bytes());
    }
    let originals: Vec<_> = corpus
        .iter()
        .map(|t| tokens.verify(std::str::from_utf8(t).unwrap()).unwrap())
        .collect();
    let mut mutator = Mutator::new(seed(), corpus);
    for _ in 0..runs {
        let input = mutator.next();
        let text = String::from_utf8_lossy(&input);
        if let Ok(identity) = tokens.verify(&text) {
            assert!(
                originals.iter().any(|o| o.user_id == identity.user_id
                    && o.credential.jti == identity.credential.jti),
                "a forged token passed: {text}"
            );
        }
    }
    report("tokens", runs, started);
}

/// Forwarding headers: the client's address is the peer's or one the headers name.
fn addresses(runs: u64) {
    let started = Instant::now();
    let proxies = TrustedProxies::parse(&["10.0.0.0/8", "2001:db8::/32"]).unwrap();
    let corpus: Vec<Vec<u8>> = [
        "203.0.113.9, 10.0.0.7",
        "for=192.0.2.60;proto=http;by=203.0.113.43",
        "for=\"[2001:db8:cafe::17]:4711\", for=10.1.2.3",
        "unknown, 198.51.100.1",
        "_hidden, 10.0.0.1",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let peer: std::net::IpAddr = "10.1.2.3".parse().unwrap();
    let mut mutator = Mutator::new(seed(), corpus);
    for _ in 0..runs {
        let (a, b) = (mutator.next(), mutator.next());
        let (xff, fwd) = (String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
        let ip = proxies.client_ip(peer, std::iter::once(&*xff), std::iter::once(&*fwd));
        let named = ip == peer || {
            let shown = ip.to_string();
            xff.contains(&shown) || fwd.contains(&shown) || shown.contains(':')
        };
        assert!(named, "{ip} from {xff:?} / {fwd:?}");
    }
    report("addresses", runs, started);
}

/// Ids from URLs and query strings: what parses is exactly what was given, within the charset.
fn ids(runs: u64) {
    let started = Instant::now();
    let corpus: Vec<Vec<u8>> = ["lobby", "team.alpha:call-1_x", "c-42", "ü@x", "a b", ""]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let mut mutator = Mutator::new(seed(), corpus);
    for _ in 0..runs {
        let input = mutator.next();
        let text = String::from_utf8_lossy(&input);
        if let Ok(room) = RoomId::parse(&text) {
            assert_eq!(room.as_str(), text);
            assert!(text.len() <= 128 && text.bytes().all(|b| b.is_ascii_graphic()));
        }
        if let Ok(client) = ClientId::parse(&text) {
            assert_eq!(client.as_str(), text);
        }
        if let Ok(user) = UserId::parse(&text) {
            assert_eq!(user.as_str(), text);
        }
    }
    report("ids", runs, started);
}

/// QR call codes and call signaling frames: a code parses only as a well-formed token with its
/// checksum; a frame parses or is refused with a stable code, and a relayed frame is JSON.
fn calls(runs: u64) {
    use switchboard::calls::{code, signal};
    let started = Instant::now();
    let (token, _) = code::new_token();
    let corpus: Vec<Vec<u8>> = [
        code::qr_data(&token),
        token.clone(),
        r#"{"type":"offer","payload":{"type":"offer","sdp":"v=0\r\na=fingerprint:sha-256 AB:CD\r\n"}}"#
            .to_owned(),
        r#"{"type":"ice-candidate","payload":{"candidate":"c"}}"#.to_owned(),
        r#"{"type":"hang-up"}"#.to_owned(),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let mut mutator = Mutator::new(seed(), corpus);
    for _ in 0..runs {
        let input = mutator.next();
        let text = String::from_utf8_lossy(&input);
        if let Ok(token) = code::parse(&text) {
            assert_eq!(token.len(), code::TOKEN_CHARS);
            assert_eq!(code::parse(&code::qr_data(token)), Ok(token));
        }
        match signal::parse(&text) {
            Ok(signal::Incoming::Relay { kind, payload }) => {
                let out = signal::relayed(kind, "anon_x", payload);
                let value: serde_json::Value = serde_json::from_str(&out).expect("relayed JSON");
                assert_eq!(value["type"], kind);
                if let Some(print) = signal::fingerprint(payload) {
                    assert!(print.len() <= 200 && !print.contains(['"', '\\', '\n']));
                }
            }
            Ok(signal::Incoming::HangUp) => {}
            Err(refusal) => {
                let codes = ["invalid_message", "unknown_type", "invalid_payload"];
                assert!(codes.contains(&refusal.code), "{}", refusal.code);
            }
        }
    }
    report("calls", runs, started);
}

/// Config values: any value of any setting loads or is refused with a message naming the
/// setting's variable.
fn config_values(runs: u64) {
    let started = Instant::now();
    let settings = [
        ("SWITCHBOARD_LISTEN", "127.0.0.1:8080"),
        ("SWITCHBOARD_MSG_RATE", "30"),
        ("SWITCHBOARD_AUTH_TIMEOUT", "10s"),
        (
            "SWITCHBOARD_REDIS_URL",
            "redis-cluster://127.0.0.1:7000,127.0.0.1:7001",
        ),
        ("SWITCHBOARD_TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.7"),
        ("SWITCHBOARD_ALLOWED_ORIGINS", "https://app.example"),
        ("SWITCHBOARD_USER_SIGNALS", "shared_room"),
        ("SWITCHBOARD_LOG_LEVEL", "info,switchboard=debug"),
        ("SWITCHBOARD_DATABASE__URL", "postgres://u:p@h:5432/db"),
        (
            "SWITCHBOARD_TURN_URIS",
            "turn:turn.example:3478?transport=udp",
        ),
    ];
    let corpus = settings
        .iter()
        .map(|(_, v)| v.as_bytes().to_vec())
        .collect();
    let mut mutator = Mutator::new(seed(), corpus);
    let mut rng = StdRng::seed_from_u64(seed());
    for _ in 0..runs {
        let (variable, _) = settings[rng.random_range(0..settings.len())];
        let value = String::from_utf8_lossy(&mutator.next()).into_owned();
        let env = HashMap::from([(variable.to_owned(), value.clone())]);
        if let Err(e) = Config::load(None, &env) {
            let message = e.to_string();
            let named = message.contains(variable) || message.contains("SWITCHBOARD_DATABASE");
            assert!(named, "{variable}={value:?}: {message}");
        }
    }
    report("config", runs, started);
}

/// The inputs per target of a long run: `FUZZ_ITERATIONS`, or 0 when it is unset (the test
/// script includes ignored tests, and a long run is for a person to start).
/// REST bodies and query strings, through the router of a node in this process (SQLite in
/// memory, rate limits off): every request is answered, never with a 500, and every refusal is
/// JSON `{detail, code}`. A password check costs an argon2 hash (~18 ms), so the fuzzed address
/// is locked out after one failed login (a locked address is refused after its body was read
/// and checked, before any hash) and registration is closed (refused after the body was read).
fn requests(runs: u64) {
    use tower::ServiceExt;
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config::default();
    config.database.url = switchboard::config::Secret::new("sqlite::memory:");
    config.auth_rate = 0;
    config.lockout_threshold = 0;
    config.lockout_address_threshold = 1;
    config.registration = "closed".into();
    let admin = {
        let tokens = Tokens::new(config.jwt_secret.expose().as_bytes());
        let mut claims = switchboard::auth::claims(
            &UserId::parse("root").unwrap(),
            "root",
            std::time::Duration::from_secs(3600),
        );
        claims.role = Some("admin".into());
        tokens.mint(&claims)
    };
    let router = runtime.block_on(async {
        let node = switchboard::app::node_id(&config);
        let store = switchboard::backends::open_store(&config).await.unwrap();
        let backends = switchboard::backends::Backends::standalone(&node, store);
        switchboard::app::router(switchboard::app::build(config, node, backends))
    });
    let corpus: Vec<Vec<u8>> = [
        r#"POST /auth/login {"username":"alice","password":"correct horse battery"}"#,
        r#"POST /auth/register {"username":"bob","password":"a long password","email":"b@x.example"}"#,
        r#"POST /auth/refresh {"refresh_token":"rt_abc"}"#,
        r#"POST /auth/logout {"refresh_token":"rt_abc"}"#,
        "POST /auth/token grant_type=password&username=alice&password=secret&scope=",
        r#"POST /api/rooms/lobby/info {}"#,
        "GET /api/rooms?limit=10&after=lobby {}",
        "GET /api/rooms/lobby {}",
        "GET /api/users/alice/presence {}",
        "GET /ws?token=abc&client_id=c-1 {}",
        "GET /api/webrtc/ice-servers {}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let peer = std::net::SocketAddr::from(([203, 0, 113, 9], 40000));
    let lock = axum::http::Request::post("/auth/login")
        .header("content-type", "application/json")
        .extension(axum::extract::ConnectInfo(peer))
        .body(axum::body::Body::from(
            r#"{"username":"nobody","password":"wrong password"}"#,
        ))
        .unwrap();
    let locked = runtime.block_on(router.clone().oneshot(lock)).unwrap();
    assert_eq!(
        locked.status().as_u16(),
        429,
        "one failed login locks the address"
    );
    let mut mutator = Mutator::new(seed(), corpus);
    for _ in 0..runs {
        let input = mutator.next();
        let text = String::from_utf8_lossy(&input).into_owned();
        let (head, body) = text.split_once(' ').unwrap_or(("GET", &text));
        let (path, body) = body.split_once(' ').unwrap_or((body, ""));
        let method = if head == "POST" { "POST" } else { "GET" };
        let Ok(mut request) = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {admin}"))
            .header(
                "content-type",
                if path.starts_with("/auth/token") {
                    "application/x-www-form-urlencoded"
                } else {
                    "application/json"
                },
            )
            .body(axum::body::Body::from(body.to_owned()))
        else {
            continue;
        };
        // As the server does for every connection.
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let response = runtime.block_on(router.clone().oneshot(request)).unwrap();
        let status = response.status();
        assert_ne!(status.as_u16(), 500, "{text:?}");
        if status.is_client_error() || status.is_server_error() {
            let bytes = runtime
                .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
                .unwrap();
            let body: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{status} not JSON ({e}) for {text:?}"));
            let coded = body["code"].is_string() || body["error"].is_string();
            assert!(coded, "{status} {body} for {text:?}");
        }
    }
    report("requests", runs, started);
}

fn long_runs() -> u64 {
    let runs = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if runs == 0 {
        eprintln!("long fuzz run skipped: set FUZZ_ITERATIONS (10000000 for the recorded run)");
    }
    runs
}

#[test]
fn short_pass_of_every_target() {
    frames(SHORT);
    envelopes(SHORT);
    tokens(SHORT);
    addresses(SHORT);
    ids(SHORT);
    calls(SHORT);
    config_values(SHORT / 10);
    requests(SHORT / 10);
}

#[test]
#[ignore = "long: FUZZ_ITERATIONS inputs per target, run by hand"]
fn long_run_requests() {
    requests(long_runs());
}

#[test]
#[ignore = "long: FUZZ_ITERATIONS inputs per target, run by hand"]
fn long_run_frames() {
    frames(long_runs());
}

#[test]
#[ignore = "long: FUZZ_ITERATIONS inputs per target, run by hand"]
fn long_run_envelopes() {
    envelopes(long_runs());
}

#[test]
#[ignore = "long: FUZZ_ITERATIONS inputs per target, run by hand"]
fn long_run_tokens() {
    tokens(long_runs());
}

#[test]
#[ignore = "long: FUZZ_ITERATIONS inputs per target, run by hand"]
fn long_run_addresses() {
    addresses(long_runs());
}

#[test]
#[ignore = "long: FUZZ_ITERATIONS inputs per target, run by hand"]
fn long_run_ids() {
    ids(long_runs());
}

#[test]
#[ignore = "long: FUZZ_ITERATIONS inputs per target, run by hand"]
fn long_run_config() {
    config_values(long_runs());
}

#[test]
#[ignore = "long: FUZZ_ITERATIONS inputs per target, run by hand"]
fn long_run_calls() {
    calls(long_runs());
}
