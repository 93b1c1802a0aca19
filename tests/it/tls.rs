//! TLS on the public listener (`[tls]`), on the real binary with certificates the tests make:
//! `https://` and `wss://` clients that trust only the test's CA, the certificate replaced on
//! disk and served from the next handshake on (by the reload interval, and by SIGHUP), broken
//! replacements refused while the node keeps serving, and every bad pair refused at start with
//! exit code 2 and a message naming the setting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{NodeProcess, WAIT, sample, scrape, token};

/// A test certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `localhost` and 127.0.0.1: (certificate PEM, key PEM, certificate DER).
    fn leaf(&self, edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A client configuration that trusts only this CA.
    fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(self.pem.as_bytes()).unwrap();
        roots.add(der).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

struct Leaf {
    cert: String,
    key: String,
    der: Vec<u8>,
}

/// A directory for one test's files, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "switchboard-tls-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `cert.pem` and `key.pem` the way a certificate manager does: each to a new file,
    /// renamed over the old one.
    fn install(&self, leaf: &Leaf) {
        self.write("cert.pem", leaf.cert.as_bytes());
        self.write("key.pem", leaf.key.as_bytes());
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        let partial = self.path(&format!(".{name}.new"));
        std::fs::write(&partial, bytes).unwrap();
        std::fs::rename(&partial, self.path(name)).unwrap();
    }

    fn env(&self) -> [(&'static str, String); 2] {
        [
            ("SWITCHBOARD_TLS_CERT", path_text(&self.path("cert.pem"))),
            ("SWITCHBOARD_TLS_KEY", path_text(&self.path("key.pem"))),
        ]
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn path_text(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// Starts the binary with TLS on the files in `dir` and `extra` settings and waits until it is
/// ready; returns it with its public address (from the `https://` banner) and its metrics
/// listener's.
fn start(
    dir: &Dir,
    extra: &[(&str, &str)],
) -> (NodeProcess, std::net::SocketAddr, std::net::SocketAddr) {
    let files = dir.env();
    let mut env: Vec<(&str, &str)> = files.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("SWITCHBOARD_LISTEN", "127.0.0.1:0"));
    env.extend_from_slice(extra);
    let mut node = NodeProcess::start(&env);
    let line = node.wait_for("listening on https://", WAIT);
    let rest = line.split("https://").nth(1).unwrap();
    let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
    let metrics = node.metrics_address();
    // Until it is ready, a node answers only liveness and readiness.
    node.wait_for("connected; serving", WAIT);
    (node, addr, metrics)
}

/// A TLS connection to `addr` for `localhost`, trusting `config`'s roots.
async fn handshake(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

/// The leaf certificate a new handshake is served.
async fn served_leaf(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let tls = handshake(addr, config).await.expect("TLS handshake");
    let (_, session) = tls.get_ref();
    let chain: &[CertificateDer<'_>] = session.peer_certificates().unwrap();
    chain[0].to_vec()
}

/// Waits until new handshakes are served `der` (the node reloads on its own schedule).
async fn wait_served(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>, der: &[u8]) {
    let deadline = Instant::now() + WAIT;
    loop {
        if served_leaf(addr, Arc::clone(&config)).await == der {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A `wss://` client that joined `room` as `user`; returns it with its `users_in_room`.
async fn wss_join(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    room: &str,
    user: &str,
) -> (Wss, Value) {
    let tls = handshake(addr, config).await.expect("TLS handshake");
    let url = format!(
        "wss://localhost:{}/ws/{room}?token={}&client_id={user}-1",
        addr.port(),
        token(user)
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("wss upgrade");
    loop {
        let frame = next_json(&mut ws).await;
        if frame["type"] == "users_in_room" {
            return (ws, frame);
        }
    }
}

async fn next_json(ws: &mut Wss) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

async fn recv_type(ws: &mut Wss, kind: &str) -> Value {
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

#[tokio::test]
async fn https_and_wss_relay_with_a_certificate_the_test_made() {
    let ca = Ca::new("Switchboard test CA");
    let dir = Dir::new("serve");
    let leaf = ca.leaf(|_| {});
    dir.install(&leaf);
    let (mut node, addr, metrics) = start(&dir, &[]);
    let client = ca.client();

    // HTTPS, from a client that trusts only the test's CA.
    let http = reqwest::Client::builder()
        .use_preconfigured_tls((*client).clone())
        .build()
        .unwrap();
    let health = http
        .get(format!("https://localhost:{}/health", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(served_leaf(addr, Arc::clone(&client)).await, leaf.der);

    // Two wss:// clients relay an offer, an answer and an ICE candidate.
    let (mut alice, _) = wss_join(addr, Arc::clone(&client), "tls-room", "tls-alice").await;
    let (mut bob, users) = wss_join(addr, Arc::clone(&client), "tls-room", "tls-bob").await;
    assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");
    recv_type(&mut alice, "user_joined").await;
    let signals = [
        ("offer", "sdp", json!({"type": "offer", "sdp": "v=0 offer"})),
        (
            "ice_candidate",
            "candidate",
            json!({"candidate": "candidate:1"}),
        ),
    ];
    for (kind, field, payload) in signals {
        let frame = json!({"type": kind, "to": "tls-bob-1", field: payload});
        alice.send(Message::text(frame.to_string())).await.unwrap();
        let got = recv_type(&mut bob, kind).await;
        assert_eq!(got[field], payload, "{got}");
        assert_eq!(got["from"], "tls-alice-1", "{got}");
    }
    let answer = json!({"type": "answer", "to": "tls-alice-1", "sdp": {"type": "answer", "sdp": "v=0 answer"}});
    bob.send(Message::text(answer.to_string())).await.unwrap();
    assert_eq!(recv_type(&mut alice, "answer").await["from"], "tls-bob-1");

    // Plain HTTP on the TLS port and a client that does not trust the certificate fail their
    // handshakes, counted; the node serves the next client as before.
    let plain = crate::support::http_client()
        .get(format!("http://{addr}/health"))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    let stranger = Ca::new("Another CA").client();
    assert!(handshake(addr, stranger).await.is_err());
    assert_eq!(served_leaf(addr, Arc::clone(&client)).await, leaf.der);
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(metrics).await;
        let errors = sample(&text, "switchboard_tls_handshake_errors_total").unwrap_or(0.0);
        if errors >= 2.0 {
            let loads = r#"switchboard_tls_certificate_loads_total{result="loaded"}"#;
            assert_eq!(sample(&text, loads), Some(1.0), "{text}");
            let expiry = sample(
                &text,
                "switchboard_tls_certificate_expiry_timestamp_seconds",
            );
            assert!(expiry.unwrap() > 1.7e9, "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "handshake errors not counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = json!({"type": "answer", "to": "tls-alice-1", "sdp": {"type": "answer", "sdp": "v=0 again"}});
    bob.send(Message::text(answer.to_string())).await.unwrap();
    recv_type(&mut alice, "answer").await;
    let log = node.terminate_and_collect();
    for secret in [leaf.key.lines().nth(1).unwrap(), "v=0 offer", "candidate:1"] {
        assert!(!log.contains(secret), "the log shows {secret:?}:\n{log}");
    }
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_refused() {
    let ca = Ca::new("Switchboard test CA");
    let dir = Dir::new("reload");
    let first = ca.leaf(|_| {});
    dir.install(&first);
    let (mut node, addr, metrics) = start(&dir, &[("SWITCHBOARD_TLS_RELOAD", "100ms")]);
    let client = ca.client();
    assert_eq!(served_leaf(addr, Arc::clone(&client)).await, first.der);
    let (mut alice, _) = wss_join(addr, Arc::clone(&client), "renew", "renew-alice").await;

    // Renewed: served from the next handshake on; the open connection stays.
    let second = ca.leaf(|_| {});
    dir.install(&second);
    wait_served(addr, Arc::clone(&client), &second.der).await;
    let (_bob, users) = wss_join(addr, Arc::clone(&client), "renew", "renew-bob").await;
    assert_eq!(users["users"][0]["client_id"], "renew-alice-1", "{users}");
    recv_type(&mut alice, "user_joined").await;

    // Broken replacements: a key of another certificate, an expired certificate, garbage. Each
    // is refused (the node says why), and the renewed certificate is still served.
    let other = ca.leaf(|_| {});
    let expired = ca.leaf(|p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    });
    let broken: [(&str, &[u8], &[u8]); 3] = [
        (
            "does not match the certificate",
            second.cert.as_bytes(),
            other.key.as_bytes(),
        ),
        (
            "expired at 2021-01-01T00:00:00Z",
            expired.cert.as_bytes(),
            expired.key.as_bytes(),
        ),
        (
            "is not valid PEM",
            b"-----BEGIN CERTIFICATE-----\nnot base64\n",
            second.key.as_bytes(),
        ),
    ];
    for (why, cert, key) in broken {
        dir.write("key.pem", key);
        dir.write("cert.pem", cert);
        let line = node.wait_for(why, WAIT);
        assert!(line.contains("TLS certificate files refused"), "{line}");
        assert_eq!(
            served_leaf(addr, Arc::clone(&client)).await,
            second.der,
            "{why}"
        );
    }
    // Counted once per refused pair of files, not once per read: at least the three above (a
    // key written before its certificate can make one more), however long they stayed.
    let refused = metric_at(
        metrics,
        r#"switchboard_tls_certificate_loads_total{result="refused"}"#,
    )
    .await;
    assert!((3.0..=5.0).contains(&refused), "{refused}");

    // Fixed again: served.
    let third = ca.leaf(|_| {});
    dir.install(&third);
    wait_served(addr, Arc::clone(&client), &third.der).await;
    let log = node.terminate_and_collect();
    assert!(log.contains("TLS certificate reloaded"), "{log}");
    for key in [&first.key, &second.key, &other.key, &third.key] {
        assert!(
            !log.contains(key.lines().nth(1).unwrap()),
            "a key is in the log:\n{log}"
        );
    }
}

async fn metric_at(addr: std::net::SocketAddr, series: &str) -> f64 {
    sample(&scrape(addr).await, series).unwrap_or(0.0)
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reads_the_certificate_at_once() {
    let ca = Ca::new("Switchboard test CA");
    let dir = Dir::new("hup");
    let first = ca.leaf(|_| {});
    dir.install(&first);
    // Files are otherwise read again only once an hour.
    let (mut node, addr, _) = start(&dir, &[("SWITCHBOARD_TLS_RELOAD", "1h")]);
    let client = ca.client();
    let second = ca.leaf(|_| {});
    dir.install(&second);
    assert_eq!(served_leaf(addr, Arc::clone(&client)).await, first.der);
    node.signal("HUP");
    wait_served(addr, Arc::clone(&client), &second.der).await;
    node.wait_for("TLS certificate reloaded", WAIT);
}

/// Runs `switchboard serve` with `env` and waits for its exit: (exit code, stderr).
fn refused_start(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut node = NodeProcess::start(env);
    let deadline = Instant::now() + WAIT * 2;
    let code = loop {
        if let Some(code) = node.exited() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "the node started with {env:?}: {:?}",
            node.log
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    (code, node.terminate_and_collect())
}

#[test]
fn bad_certificates_and_keys_are_refused_at_start_naming_the_setting() {
    let ca = Ca::new("Switchboard test CA");
    let dir = Dir::new("refused");
    let good = ca.leaf(|_| {});
    let other = ca.leaf(|_| {});
    let expired = ca.leaf(|p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    });
    let early = ca.leaf(|p| {
        p.not_before = date_time_ymd(2090, 1, 1);
        p.not_after = date_time_ymd(2091, 1, 1);
    });
    let huge = "A".repeat(2 * 1024 * 1024);
    let just_key = good.key.clone();
    // (what, certificate file, key file, variable the message names, words it says)
    type Case<'a> = (&'a str, &'a [u8], &'a [u8], &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "expired",
            expired.cert.as_bytes(),
            expired.key.as_bytes(),
            "SWITCHBOARD_TLS_CERT",
            "expired at 2021-01-01T00:00:00Z",
        ),
        (
            "not yet valid",
            early.cert.as_bytes(),
            early.key.as_bytes(),
            "SWITCHBOARD_TLS_CERT",
            "not valid before 2090-01-01T00:00:00Z",
        ),
        (
            "mismatched",
            good.cert.as_bytes(),
            other.key.as_bytes(),
            "SWITCHBOARD_TLS_KEY",
            "does not match the certificate",
        ),
        (
            "key as certificate",
            just_key.as_bytes(),
            good.key.as_bytes(),
            "SWITCHBOARD_TLS_CERT",
            "holds no PEM certificate",
        ),
        (
            "certificate as key",
            good.cert.as_bytes(),
            good.cert.as_bytes(),
            "SWITCHBOARD_TLS_KEY",
            "holds no PEM private key",
        ),
        (
            "empty certificate",
            b"",
            good.key.as_bytes(),
            "SWITCHBOARD_TLS_CERT",
            "holds no PEM certificate",
        ),
        (
            "bad base64",
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            good.key.as_bytes(),
            "SWITCHBOARD_TLS_CERT",
            "not valid PEM",
        ),
        (
            "not a certificate",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            good.key.as_bytes(),
            "SWITCHBOARD_TLS_CERT",
            "cannot be parsed",
        ),
        (
            "huge",
            huge.as_bytes(),
            good.key.as_bytes(),
            "SWITCHBOARD_TLS_CERT",
            "larger than",
        ),
    ];
    for (what, cert, key, variable, words) in cases {
        dir.write("cert.pem", cert);
        dir.write("key.pem", key);
        let files = dir.env();
        let mut env: Vec<(&str, &str)> = files.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("SWITCHBOARD_LISTEN", "127.0.0.1:0"));
        let (code, log) = refused_start(&env);
        assert_eq!(code, Some(2), "{what}: {log}");
        assert!(log.contains(variable), "{what}: {log}");
        assert!(log.contains(words), "{what}: {log}");
        assert!(
            log.contains(&path_text(&dir.0)),
            "{what} does not name the file: {log}"
        );
        let key_line = good.key.lines().nth(1).unwrap();
        assert!(!log.contains(key_line), "{what}: the key is shown: {log}");
    }

    // A file that is not there, a directory, and one setting without the other.
    dir.install(&good);
    let cert = path_text(&dir.path("cert.pem"));
    let key = path_text(&dir.path("key.pem"));
    let missing = path_text(&dir.path("missing.pem"));
    let directory = path_text(&dir.0);
    // (settings, variable the message names, words it says)
    type Settings<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Settings, &str, &str)> = vec![
        (
            vec![
                ("SWITCHBOARD_TLS_CERT", &missing),
                ("SWITCHBOARD_TLS_KEY", &key),
            ],
            "SWITCHBOARD_TLS_CERT",
            "cannot read",
        ),
        (
            vec![
                ("SWITCHBOARD_TLS_CERT", &cert),
                ("SWITCHBOARD_TLS_KEY", &directory),
            ],
            "SWITCHBOARD_TLS_KEY",
            "cannot read",
        ),
        (
            vec![("SWITCHBOARD_TLS_CERT", &cert)],
            "SWITCHBOARD_TLS_KEY",
            "with tls.cert",
        ),
        (
            vec![("SWITCHBOARD_TLS_KEY", &key)],
            "SWITCHBOARD_TLS_CERT",
            "with tls.key",
        ),
    ];
    for (mut env, variable, words) in cases {
        env.push(("SWITCHBOARD_LISTEN", "127.0.0.1:0"));
        let (code, log) = refused_start(&env);
        assert_eq!(code, Some(2), "{env:?}: {log}");
        assert!(
            log.contains(variable) && log.contains(words),
            "{env:?}: {log}"
        );
    }
}

#[test]
fn production_without_tls_on_a_public_address_says_it_expects_a_proxy() {
    let production = [
        ("SWITCHBOARD_ENV", "production"),
        (
            "SWITCHBOARD_DATA_KEY",
            "TVwOw8QWITOAn2/Q4vnPT4hhdHHIfGspL9NPW1R0VrA=",
        ),
        (
            "SWITCHBOARD_JWT_SECRET",
            "a-production-secret-of-forty-bytes-000000",
        ),
        ("SWITCHBOARD_CORS_ORIGINS", "https://app.example"),
        ("SWITCHBOARD_ALLOWED_ORIGINS", "https://app.example"),
    ];
    let note = "TLS-terminating proxy";
    let mut env = production.to_vec();
    env.push(("SWITCHBOARD_LISTEN", "0.0.0.0:0"));
    let mut public = NodeProcess::start(&env);
    public.wait_for(note, WAIT);

    // On loopback, or with TLS, there is nothing to say.
    let mut env = production.to_vec();
    env.push(("SWITCHBOARD_LISTEN", "127.0.0.1:0"));
    let mut loopback = NodeProcess::start(&env);
    loopback.wait_for("connected; serving", WAIT);
    let ca = Ca::new("Switchboard test CA");
    let dir = Dir::new("public");
    dir.install(&ca.leaf(|_| {}));
    let files = dir.env();
    let mut env = production.to_vec();
    env.extend(files.iter().map(|(k, v)| (*k, v.as_str())));
    env.push(("SWITCHBOARD_LISTEN", "0.0.0.0:0"));
    let mut tls = NodeProcess::start(&env);
    tls.wait_for("connected; serving", WAIT);
    for node in [&loopback, &tls] {
        assert!(!node.log.iter().any(|l| l.contains(note)), "{:?}", node.log);
    }
}
