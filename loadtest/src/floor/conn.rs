//! One floor connection: authenticate (without decoding the token), then one loop over the
//! socket, the outbox and the slow-consumer kick.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::splice::{self, Head};
use super::state::{Floor, Me, OUTBOX, Peer, RoomRef, lock};
use crate::payload::json_str;

const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames written per flush when the outbox has a backlog.
const BATCH: usize = 64;

/// What the upgrade request said.
pub struct Hello {
    pub room: Option<String>,
    pub has_token: bool,
    pub client_id: Option<String>,
}

#[derive(Deserialize)]
struct AuthToken {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "clientId")]
    client_id: Option<String>,
}

struct Conn {
    floor: Arc<Floor>,
    me: Me,
    rooms: HashMap<String, RoomRef>,
}

/// Serve one upgraded socket until either side closes it.
pub async fn run(mut socket: WebSocket, floor: Arc<Floor>, hello: Hello) {
    let (tx, mut rx) = mpsc::channel(OUTBOX);
    let kick = CancellationToken::new();
    let Some(claimed) = authenticate(&mut socket, &hello).await else {
        return;
    };
    let client_id = claimed.filter(|c| valid_id(c)).unwrap_or_else(fresh_id);
    let me = Me::new(
        client_id,
        Peer {
            tx,
            kick: kick.clone(),
        },
    );
    let ok = format!(
        r#"{{"type":"auth_success","user":{id},"user_id":{id},"client_id":{id}}}"#,
        id = json_str(&me.client_id)
    );
    if socket.send(Message::Text(ok.into())).await.is_err() {
        return;
    }
    let mut conn = Conn {
        floor,
        me,
        rooms: HashMap::new(),
    };
    if let Some(room) = &hello.room {
        conn.join(room);
    }
    loop {
        tokio::select! {
            biased;
            () = kick.cancelled() => {
                let close = CloseFrame { code: 4002, reason: Utf8Bytes::from_static("slow consumer") };
                let _ = socket.send(Message::Close(Some(close))).await;
                break;
            }
            Some(frame) = rx.recv() => {
                if write_batch(&mut socket, frame, &mut rx).await.is_err() {
                    break;
                }
            }
            msg = socket.next() => match msg {
                Some(Ok(Message::Text(text))) => conn.on_text(&text),
                Some(Ok(Message::Binary(_))) => conn.error("binary_not_supported"),
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    conn.leave_all();
}

/// `Some(client id claimed, if any)` once authenticated; `None` if the client went away.
async fn authenticate(socket: &mut WebSocket, hello: &Hello) -> Option<Option<String>> {
    if hello.has_token {
        return Some(hello.client_id.clone());
    }
    socket
        .send(Message::Text(Utf8Bytes::from_static(
            r#"{"type":"auth_required"}"#,
        )))
        .await
        .ok()?;
    let wait = async {
        while let Some(Ok(msg)) = socket.next().await {
            if let Message::Text(text) = msg {
                match serde_json::from_str::<AuthToken>(&text) {
                    Ok(auth) if auth.kind == "auth_token" => return Some(auth.client_id),
                    _ => {
                        let err = r#"{"type":"error","code":"unauthorized","message":"authenticate first"}"#;
                        socket
                            .send(Message::Text(Utf8Bytes::from_static(err)))
                            .await
                            .ok()?;
                    }
                }
            }
        }
        None
    };
    tokio::time::timeout(AUTH_TIMEOUT, wait)
        .await
        .ok()
        .flatten()
}

async fn write_batch(
    socket: &mut WebSocket,
    first: Utf8Bytes,
    rx: &mut mpsc::Receiver<Utf8Bytes>,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first)).await?;
    for _ in 1..BATCH {
        match rx.try_recv() {
            Ok(frame) => socket.feed(Message::Text(frame)).await?,
            Err(_) => break,
        }
    }
    socket.flush().await
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn fresh_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("floor-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Conn {
    fn on_text(&mut self, text: &str) {
        let Some(head) = splice::read(text) else {
            return self.error("invalid_json");
        };
        match (head.kind, head.room) {
            ("ping", _) => self
                .me
                .peer
                .deliver(Utf8Bytes::from_static(r#"{"type":"pong"}"#)),
            ("join", Some(room)) => self.join(room),
            ("leave", Some(room)) => self.leave(room),
            ("join" | "leave", None) => self.error("missing_field"),
            ("auth_token", _) => self.error("already_authenticated"),
            _ => self.relay(&head),
        }
    }

    fn relay(&mut self, head: &Head<'_>) {
        let name = match (head.room, self.rooms.len()) {
            (Some(room), _) => room,
            (None, 1) => self.rooms.keys().next().map_or("", String::as_str),
            (None, 0) => return self.error("not_in_room"),
            (None, _) => return self.error("missing_field"),
        };
        let Some(room) = self.rooms.get(name) else {
            return self.error("not_in_room");
        };
        let frame = Utf8Bytes::from(head.relay(&self.me.sender_fields, &json_str(name)));
        let found = {
            let r = lock(room);
            match head.to {
                Some(to) => r.send_to(to, frame),
                None => {
                    r.broadcast(&self.me.client_id, &frame);
                    true
                }
            }
        };
        if !found {
            self.error("peer_not_found");
        }
    }

    fn join(&mut self, name: &str) {
        if !self.rooms.contains_key(name) {
            let room = self.floor.join(name, &self.me);
            self.rooms.insert(name.to_owned(), room);
        }
    }

    fn leave(&mut self, name: &str) {
        match self.rooms.remove(name) {
            Some(room) => self.floor.leave(name, &room, &self.me),
            None => self.error("not_in_room"),
        }
    }

    fn leave_all(&mut self) {
        for (name, room) in std::mem::take(&mut self.rooms) {
            self.floor.leave(&name, &room, &self.me);
        }
    }

    fn error(&self, code: &str) {
        self.me
            .peer
            .deliver(format!(r#"{{"type":"error","code":"{code}"}}"#).into());
    }
}
