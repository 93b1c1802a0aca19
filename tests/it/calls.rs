//! QR call invites (seed 004's API): codes, calls rung on every device of the owner, one
//! device winning the answer, signaling between the two participants, and what must never
//! work: bad codes, joining with a session id alone, guessing codes. One node on SQLite here;
//! [`cluster`] runs the flow across three nodes on Redis and Postgres.

mod abuse;
mod bench;
mod cluster;
mod data;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::*;

pub const PASSWORD: &str = "correct horse battery";
pub const CONTACT: &str = "+1-555-0100-7788";
pub const VEHICLE: &str = "KA-01-XY-9876";
const WAIT: Duration = Duration::from_secs(10);

/// An account that hands out codes.
pub struct Owner {
    pub username: String,
    pub user_id: String,
    pub token: String,
}

/// A POST with a JSON body (and a bearer token); the status and the JSON answer.
pub async fn post(node: &TestNode, path: &str, bearer: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = http_client().post(node.http(path)).json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn register(node: &TestNode) -> Owner {
    let username = format!("owner{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let body = json!({"username": username, "password": PASSWORD,
        "emergencyContact": CONTACT, "vehicleNumber": VEHICLE});
    let (status, answer) = post(node, "/api/v1/auth/register", None, body).await;
    assert_eq!(status, 201, "{answer}");
    Owner {
        username,
        user_id: answer["userId"].as_str().unwrap().to_owned(),
        token: answer["token"].as_str().unwrap().to_owned(),
    }
}

/// A new code of `owner`: `pqc:1:<token>:<checksum>`.
pub async fn generate(node: &TestNode, owner: &Owner) -> String {
    let body = json!({"userId": owner.user_id});
    let (status, answer) = post(node, "/api/v1/tokens/generate", Some(&owner.token), body).await;
    assert_eq!(status, 200, "{answer}");
    answer["qrCodeData"].as_str().unwrap().to_owned()
}

/// One of `owner`'s devices: a `/ws` connection with its account token.
pub async fn device(node: &TestNode, owner: &Owner, id: &str) -> Client {
    let url = node.ws(&format!("/ws?token={}&client_id={id}", owner.token));
    let mut client = connect(&url).await.expect("upgrade accepted");
    client.recv_type("auth_success").await;
    client
}

pub async fn initiate(node: &TestNode, code: &str) -> (u16, Value) {
    post(
        node,
        "/api/v1/calls/initiate",
        None,
        json!({"scannedToken": code}),
    )
    .await
}

pub async fn accept(node: &TestNode, owner: &Owner, session: &str) -> (u16, Value) {
    let path = format!("/api/v1/calls/{session}/accept");
    post(node, &path, Some(&owner.token), json!({})).await
}

/// A participant's signaling socket.
pub struct Leg {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Leg {
    /// Opens the signaling socket of `session` with `secret`, or the refusal's status and body.
    pub async fn open(node: &TestNode, session: &str, secret: &str) -> Result<Leg, (u16, Value)> {
        let url = node.ws(&format!("/api/v1/calls/signaling/{session}?token={secret}"));
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => Ok(Leg { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().as_ref();
                let body = body.and_then(|b| serde_json::from_slice(b).ok());
                Err((response.status().as_u16(), body.unwrap_or(Value::Null)))
            }
            Err(e) => panic!("connect: {e}"),
        }
    }

    /// Opens the socket and reads its `session` frame.
    pub async fn join(node: &TestNode, session: &str, secret: &str) -> (Leg, Value) {
        let mut leg = Leg::open(node, session, secret).await.expect("upgrade");
        let hello = leg.recv_type("session").await;
        (leg, hello)
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// Sends `text`; `false` when the node has closed the socket meanwhile.
    pub async fn try_send_text(&mut self, text: &str) -> bool {
        self.ws.send(Message::text(text)).await.is_ok()
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    /// The next text frame (`Err(code)` when the socket closes instead).
    pub async fn next(&mut self) -> Result<Value, Option<u16>> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next()).await;
            match message.expect("a frame in time") {
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        self.next().await.expect("a frame, not a close")
    }

    /// The next frame of type `kind`, skipping others.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Waits for the close; its code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Err(code) = self.next().await {
                return code;
            }
        }
    }
}

pub fn offer(fingerprint: &str) -> Value {
    let sdp = format!("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\na=fingerprint:{fingerprint}\r\n");
    json!({"type": "offer", "payload": {"type": "offer", "sdp": sdp}})
}

pub fn answer(fingerprint: &str) -> Value {
    let sdp = format!("v=0\r\na=fingerprint:{fingerprint}\r\n");
    json!({"type": "answer", "payload": {"type": "answer", "sdp": sdp}})
}

/// The whole flow over `nodes` (one or more): the owner's two devices on the first and the
/// second node, the caller on the last; the second device answers. Returns every answer and
/// frame the caller saw, for the privacy check.
pub async fn full_flow(nodes: &[TestNode]) -> (Owner, Vec<Value>, String) {
    let node = |i: usize| &nodes[i % nodes.len()];
    let mut seen = Vec::new();
    let owner = register(node(0)).await;
    let code = generate(node(0), &owner).await;
    let mut phone = device(node(0), &owner, "phone").await;
    let mut tablet = device(node(1), &owner, "tablet").await;

    let caller = node(2);
    let body = json!({"token": code});
    let (status, valid) = post(caller, "/api/v1/tokens/validate", None, body).await;
    assert_eq!(
        (status, &valid),
        (200, &json!({"valid": true, "canInitiateCall": true}))
    );
    seen.push(valid);
    let (status, call) = initiate(caller, &code).await;
    assert_eq!(status, 200, "{call}");
    assert_eq!(call["status"], "ringing");
    seen.push(call.clone());
    let session = call["sessionId"].as_str().unwrap();
    let caller_anon = call["anonymousId"].as_str().unwrap();
    assert!(caller_anon.starts_with("anon_"));

    let rang = [
        phone.recv_type("incoming_call").await,
        tablet.recv_type("incoming_call").await,
    ];
    for ring in &rang {
        assert_eq!(ring["sessionId"], session);
        assert_eq!(ring["callerAnonymousId"], caller_anon);
    }
    let (mut a, hello) = Leg::join(caller, session, call["signalingToken"].as_str().unwrap()).await;
    assert_eq!(
        (hello["role"].as_str(), hello["status"].as_str()),
        (Some("caller"), Some("ringing"))
    );
    seen.push(hello);

    let (status, answered) = accept(node(1), &owner, session).await;
    assert_eq!(status, 200, "{answered}");
    let (status, late) = accept(node(0), &owner, session).await;
    assert_eq!((status, late["code"].as_str()), (409, Some("call_taken")));
    phone.recv_type("call_answered").await;
    tablet.recv_type("call_answered").await;
    let accepted = a.recv_type("accepted").await;
    let owner_anon = answered["anonymousId"].as_str().unwrap();
    assert_eq!(accepted["peer"], owner_anon);
    assert_eq!(answered["peerAnonymousId"], caller_anon);
    assert_ne!(owner_anon, caller_anon);
    seen.push(accepted);

    let secret = answered["signalingToken"].as_str().unwrap();
    let (mut b, hello) = Leg::join(node(1), session, secret).await;
    assert_eq!(
        (hello["role"].as_str(), hello["status"].as_str()),
        (Some("callee"), Some("active"))
    );
    assert_eq!(hello["peerConnected"], true);
    seen.push(a.recv_type("peer-joined").await);

    a.send(offer("sha-256 AA:BB")).await;
    let got = b.recv().await;
    assert_eq!(
        (got["type"].as_str(), got["from"].as_str()),
        (Some("offer"), Some(caller_anon))
    );
    b.send(answer("sha-256 CC:DD")).await;
    let (got, print) = match a.recv().await {
        print if print["type"] == "fingerprints" => (a.recv().await, print),
        got => (got, a.recv_type("fingerprints").await),
    };
    assert_eq!(
        (got["type"].as_str(), got["from"].as_str()),
        (Some("answer"), Some(owner_anon))
    );
    seen.push(got);
    let prints = [print, b.recv_type("fingerprints").await];
    assert_eq!(
        prints[0]["encryptionFingerprint"],
        prints[1]["encryptionFingerprint"]
    );
    assert_eq!(
        (prints[0]["local"].as_str(), prints[0]["remote"].as_str()),
        (Some("sha-256 AA:BB"), Some("sha-256 CC:DD"))
    );
    seen.push(prints[0].clone());
    for i in 0..5 {
        let candidate = json!({"type": "ice-candidate", "payload": {"candidate": format!("c{i}")}});
        a.send(candidate.clone()).await;
        b.send(candidate).await;
        assert_eq!(b.recv().await["payload"]["candidate"], format!("c{i}"));
        let got = a.recv().await;
        assert_eq!(
            (got["type"].as_str(), got["payload"]["candidate"].as_str()),
            (Some("ice-candidate"), Some(format!("c{i}").as_str()))
        );
        seen.push(got);
    }

    a.send(json!({"type": "hang-up"})).await;
    assert_eq!(b.recv_type("hang-up").await["type"], "hang-up");
    assert_eq!(b.closed().await, Some(1000));
    assert_eq!(a.closed().await, Some(1000));
    let row = node(0).state.store.call(session).await.unwrap().unwrap();
    assert_eq!(row.status, "ended");
    assert!(row.ended_at.is_some() && row.answered_at.is_some());
    assert_eq!(row.fingerprint_a.as_deref(), Some("sha-256 AA:BB"));
    assert!(row.encryption_fingerprint.is_some());
    (owner, seen, code)
}

#[tokio::test]
async fn the_whole_call_flows_on_one_node() {
    let node = spawn_node(test_config());
    full_flow(std::slice::from_ref(&node)).await;
    assert!(metric(&node, "switchboard_calls_total{outcome=\"answered\"}").await >= 1.0);
}

/// Everything the node logs, at `info` (calls' own modules at `trace`), as JSON lines.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_answer_frame_or_log_line_of_a_call_carries_the_owners_identity() {
    let captured = Captured::default();
    let writer = captured.clone();
    let filter = "info,switchboard::calls=trace,switchboard::ws::calls=trace,\
        switchboard::http::calls=trace,switchboard::http::call_sessions=trace";
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only test that logs");
    let node = spawn_node(test_config());
    let (owner, seen, code) = full_flow(std::slice::from_ref(&node)).await;
    let token = switchboard::calls::code::parse(&code).unwrap().to_owned();
    let secrets = [
        owner.username.as_str(),
        owner.user_id.as_str(),
        CONTACT,
        VEHICLE,
    ];
    for frame in &seen {
        let text = frame.to_string();
        for secret in secrets {
            assert!(!text.contains(secret), "the caller saw {secret}: {text}");
        }
    }
    node.shutdown();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.lines().count() > 0, "something was logged");
    let caller_secret = seen[1]["signalingToken"].as_str().unwrap().to_owned();
    assert_eq!(caller_secret.len(), 43);
    let never_logged = [owner.token.as_str(), token.as_str(), caller_secret.as_str()];
    for line in logs.lines() {
        for secret in secrets.iter().chain(&never_logged) {
            assert!(
                !line.contains(secret),
                "a log line carries {secret}: {line}"
            );
        }
    }
}
