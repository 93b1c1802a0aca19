//! Opening one client connection: TCP (no Nagle), WebSocket upgrade, authentication, join.
//!
//! Two authentication flows, as the protocol allows: the token in the query string
//! (`auth_success` comes at once) or the token in the first message (answer `auth_required`
//! with `auth_token`). A connection to `/ws/{room}` counts as joined when `users_in_room`
//! arrives; one to `/ws` when `auth_success` does.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::inbound::{Event, Grant, parse};
use crate::target::Target;

pub type Ws = WebSocketStream<TcpStream>;

/// Where the token goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// `?token=JWT` on the upgrade request.
    Query,
    /// `{"type":"auth_token"}` after `auth_required`.
    Message,
}

/// Who connects, where, and how.
pub struct Dial<'a> {
    pub target: &'a Target,
    pub room: Option<&'a str>,
    pub client_id: &'a str,
    pub token: &'a str,
    pub auth: Auth,
    pub timeout: Duration,
}

/// An open, authenticated (and joined, if a room was named) connection.
pub struct Joined {
    pub ws: Ws,
    /// Client ids of the other members, from `users_in_room`.
    pub peers: Vec<String>,
    /// What resumes its session, when the server offers resuming.
    pub grant: Option<Grant>,
}

/// Why a connection attempt failed, as a short key for tallies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialError(pub String);

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(1 << 20))
}

/// Connect, authenticate and (if `dial.room` is set) join, within `dial.timeout`.
pub async fn dial(dial: &Dial<'_>) -> Result<Joined, DialError> {
    match tokio::time::timeout(dial.timeout, dial_inner(dial)).await {
        Ok(result) => result,
        Err(_) => Err(DialError("timeout".into())),
    }
}

async fn dial_inner(d: &Dial<'_>) -> Result<Joined, DialError> {
    let mut ws = open(d.target, &path_and_query(d)).await?;
    if d.auth == Auth::Message {
        expect(&mut ws, |e| matches!(e, Event::AuthRequired).then_some(())).await?;
        let hello = json!({"type": "auth_token", "token": d.token, "clientId": d.client_id});
        ws.send(Message::text(hello.to_string()))
            .await
            .map_err(ws_err)?;
    }
    let grant = expect(&mut ws, |e| match e {
        Event::AuthSuccess(grant) => Some(grant),
        _ => None,
    })
    .await?;
    let peers = match d.room {
        Some(_) => {
            let mut early = Vec::new();
            let users = expect(&mut ws, |e| match e {
                Event::UsersInRoom(users) => Some(users),
                Event::UserJoined(id) => {
                    early.push((true, id));
                    None
                }
                Event::UserLeft(id) => {
                    early.push((false, id));
                    None
                }
                _ => None,
            })
            .await?;
            merge_presence(users, early)
        }
        None => Vec::new(),
    };
    Ok(Joined { ws, peers, grant })
}

/// Connect to `target` (the path of `room`, without a token) and resume session `grant` after
/// `last_seq`, within `timeout`: the open connection once `resumed` arrives (the frames after
/// `last_seq` follow), or why not (`resume_<reason>` for `resume_failed`).
pub async fn resume(
    target: &Target,
    room: Option<&str>,
    grant: &Grant,
    last_seq: u64,
    timeout: Duration,
) -> Result<Ws, DialError> {
    let attempt = async {
        let mut ws = open(target, &room_path(room)).await?;
        expect(&mut ws, |e| matches!(e, Event::AuthRequired).then_some(())).await?;
        let ask = json!({"type": "resume", "session": grant.session,
            "resume_token": grant.token, "last_seq": last_seq});
        ws.send(Message::text(ask.to_string()))
            .await
            .map_err(ws_err)?;
        expect(&mut ws, |e| match e {
            Event::Resumed => Some(Ok(())),
            Event::ResumeFailed(reason) => Some(Err(DialError(format!("resume_{reason}")))),
            _ => None,
        })
        .await??;
        Ok(ws)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(DialError("timeout".into())),
    }
}

/// A TCP connection (no Nagle) to `target`, upgraded to a WebSocket at `path`.
async fn open(target: &Target, path: &str) -> Result<Ws, DialError> {
    let addr = target
        .resolve()
        .await
        .map_err(|_| DialError("resolve".into()))?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    let stream = socket
        .map_err(io_err)?
        .connect(addr)
        .await
        .map_err(io_err)?;
    stream.set_nodelay(true).map_err(io_err)?;
    let url = target.ws_url(path);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .map_err(ws_err)?;
    Ok(ws)
}

/// The member list, corrected by `user_joined` / `user_left` events (`true` = joined) that
/// the server delivered before it: a member who joined at the same moment on another node
/// may be announced before the list that does not yet hold them.
fn merge_presence(mut users: Vec<String>, early: Vec<(bool, String)>) -> Vec<String> {
    for (joined, id) in early {
        if !joined {
            users.retain(|u| *u != id);
        } else if !users.contains(&id) {
            users.push(id);
        }
    }
    users
}

fn room_path(room: Option<&str>) -> String {
    match room {
        Some(room) => format!("/ws/{room}"),
        None => "/ws".to_owned(),
    }
}

fn path_and_query(d: &Dial<'_>) -> String {
    let path = room_path(d.room);
    match d.auth {
        Auth::Query => format!("{path}?token={}&client_id={}", d.token, d.client_id),
        Auth::Message => path,
    }
}

/// Read until `pick` accepts an event; error frames and closes end the attempt.
async fn expect<T>(ws: &mut Ws, mut pick: impl FnMut(Event) -> Option<T>) -> Result<T, DialError> {
    while let Some(frame) = ws.next().await {
        match frame.map_err(ws_err)? {
            Message::Text(text) => match parse(&text) {
                Some(Event::Error(code)) => return Err(DialError(format!("error_{code}"))),
                Some(event) => {
                    if let Some(found) = pick(event) {
                        return Ok(found);
                    }
                }
                None => {}
            },
            Message::Close(frame) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                return Err(DialError(format!("close_{code}")));
            }
            _ => {}
        }
    }
    Err(DialError("eof".into()))
}

fn io_err(e: std::io::Error) -> DialError {
    DialError(ws_error_key(&WsError::Io(e)))
}

fn ws_err(e: WsError) -> DialError {
    DialError(ws_error_key(&e))
}

/// A short tally key for a WebSocket error.
pub fn ws_error_key(e: &WsError) -> String {
    match e {
        WsError::Http(resp) => format!("http_{}", resp.status().as_u16()),
        WsError::Io(e) => format!("io_{:?}", e.kind()).to_lowercase(),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "eof".into(),
        WsError::Protocol(p) => format!("ws_{p:?}"),
        other => format!("ws_{}", short(&other.to_string())),
    }
}

fn short(s: &str) -> String {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_seen_before_the_member_list_counts() {
        let users = vec!["a".to_owned(), "b".to_owned()];
        let early = vec![
            (true, "c".to_owned()),
            (true, "a".to_owned()),
            (false, "b".to_owned()),
        ];
        assert_eq!(merge_presence(users, early), vec!["a", "c"]);
    }

    #[test]
    fn query_flow_puts_token_and_client_id_in_the_url() {
        let target = Target::parse("ws://127.0.0.1:1").unwrap();
        let mut d = Dial {
            target: &target,
            room: Some("r-1"),
            client_id: "c1",
            token: "a.b.c",
            auth: Auth::Query,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(path_and_query(&d), "/ws/r-1?token=a.b.c&client_id=c1");
        d.auth = Auth::Message;
        d.room = None;
        assert_eq!(path_and_query(&d), "/ws");
    }
}
