//! The E2EE relay on real nodes: registration and key bundles ([`keys`]), store-and-forward
//! over the device WebSocket ([`messages`]), hostile input and limits ([`hostile`]), push
//! tokens, device removal and retention ([`devices`]), and three nodes on real Redis and
//! Postgres ([`cluster`]). Clients here are what seed 003's were: Ed25519 identity keys
//! signing X25519-sized prekeys.
mod cluster;
mod devices;
mod hostile;
mod keys;
mod messages;

use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::config::Config;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::*;

/// A node config with the E2EE limits off (their own test turns them on).
pub fn e2ee_config() -> Config {
    let mut config = test_config();
    config.e2ee.register_rate = 0;
    config.e2ee.claim_rate = 0;
    config.e2ee.ticket_rate = 0;
    config
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A phone: its identity key and its number's hash.
pub struct Phone {
    pub signer: SigningKey,
    pub hash: String,
}

impl Phone {
    pub fn new() -> Self {
        let hash: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        Self {
            signer: SigningKey::from_bytes(&rand::random()),
            hash,
        }
    }

    pub fn identity(&self) -> String {
        b64(self.signer.verifying_key().as_bytes())
    }

    /// A fresh key and its signature by the identity key, Base64.
    pub fn signed_key(&self) -> (String, String) {
        let key: [u8; 32] = rand::random();
        (b64(&key), b64(&self.signer.sign(&key).to_bytes()))
    }

    /// A device's keys with one-time prekeys `keys`.
    pub fn device(&self, keys: Range<u32>) -> Value {
        let (spk, spk_sig) = self.signed_key();
        let (fallback, fallback_sig) = self.signed_key();
        json!({
            "identity_key": self.identity(),
            "signed_prekey": spk, "signed_prekey_id": 1, "prekey_signature": spk_sig,
            "one_time_prekeys": prekeys(keys),
            "fallback_key": {"key_id": 9999, "public_key": fallback, "signature": fallback_sig},
        })
    }

    /// `POST /api/v1/register`'s body.
    pub fn registration(&self, keys: Range<u32>) -> Value {
        let mut body = self.device(keys);
        body["phone_hash"] = self.hash.clone().into();
        body
    }
}

/// One-time prekeys with ids `ids` and random keys.
pub fn prekeys(ids: Range<u32>) -> Vec<Value> {
    ids.map(|id| json!({"key_id": id, "public_key": b64(&rand::random::<[u8; 32]>())}))
        .collect()
}

/// A registered device's credentials.
#[derive(Debug, Clone)]
pub struct Creds {
    pub user_id: String,
    pub device_id: i64,
    pub token: String,
}

/// A request to `node` with an optional device token and JSON body; the status and JSON.
pub async fn call(
    node: &TestNode,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http_client().request(method, node.http(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Registers `phone` with one-time prekeys `keys` on `node`.
pub async fn register(node: &TestNode, phone: &Phone, keys: Range<u32>) -> Creds {
    let body = phone.registration(keys);
    let (status, reply) = call(node, "POST", "/api/v1/register", None, Some(&body)).await;
    assert_eq!(status, 201, "{reply}");
    creds(&reply)
}

pub fn creds(reply: &Value) -> Creds {
    Creds {
        user_id: reply["user_id"].as_str().unwrap().to_owned(),
        device_id: reply["device_id"].as_i64().unwrap(),
        token: reply["device_token"].as_str().unwrap().to_owned(),
    }
}

/// A device's WebSocket.
pub struct DeviceWs {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// A fresh ticket for `creds` from `node`.
pub async fn ticket(node: &TestNode, creds: &Creds) -> String {
    let (status, reply) = call(node, "POST", "/api/v1/ws-token", Some(&creds.token), None).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["expires_in"], 300);
    reply["token"].as_str().unwrap().to_owned()
}

impl DeviceWs {
    /// Connects with `ticket` to `node`.
    pub async fn with_ticket(node: &TestNode, ticket: &str) -> Self {
        let url = node.ws(&format!("/api/v1/ws?token={ticket}"));
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        Self { ws }
    }

    /// Connects `creds`' device to `node` with a fresh ticket.
    pub async fn connect(node: &TestNode, creds: &Creds) -> Self {
        Self::with_ticket(node, &ticket(node, creds).await).await
    }

    /// The next JSON frame.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(WAIT).await.expect("a frame within the wait")
    }

    /// The next JSON frame within `wait`, if any.
    pub async fn try_recv(&mut self, wait: std::time::Duration) -> Option<Value> {
        loop {
            let next = tokio::time::timeout(wait, self.ws.next()).await.ok()?;
            match next.expect("socket open").expect("frame read") {
                Message::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Every `message` frame up to `queue_empty`.
    pub async fn until_queue_empty(&mut self) -> Vec<Value> {
        let mut messages = Vec::new();
        loop {
            let frame = self.recv().await;
            match frame["type"].as_str() {
                Some("queue_empty") => return messages,
                Some("message") => messages.push(frame),
                _ => panic!("unexpected frame {frame}"),
            }
        }
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    /// Acknowledges `ids`.
    pub async fn ack(&mut self, ids: &[i64]) {
        self.send(json!({"type": "ack", "ids": ids})).await;
    }

    /// The server's close code, after any frames.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await;
            match next.expect("close within the wait") {
                Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(_)) => continue,
                other => panic!("socket ended without a close frame: {other:?}"),
            }
        }
    }
}

/// `n` messages from `from` to the account of `to_phone`'s device 1, one request each.
pub async fn send_to(node: &TestNode, from: &Creds, to_phone: &str, contents: &[&str]) -> Vec<i64> {
    let mut ids = Vec::new();
    for content in contents {
        let body = json!({"messages": [{"device_id": 1, "content": b64(content.as_bytes())}]});
        let path = format!("/api/v1/messages/{to_phone}");
        let (status, reply) = call(node, "PUT", &path, Some(&from.token), Some(&body)).await;
        assert_eq!(status, 200, "{reply}");
        ids.push(reply["ids"][0].as_i64().unwrap());
    }
    ids
}

/// The plaintext of a `message` frame's content.
pub fn content(frame: &Value) -> String {
    let bytes = STANDARD.decode(frame["content"].as_str().unwrap()).unwrap();
    String::from_utf8(bytes).unwrap()
}
