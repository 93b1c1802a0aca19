//! The floor: the smallest sensible relay that speaks Switchboard's message shapes, the
//! reference every figure is compared to.
//!
//! It accepts `/ws/{room}` and `/ws` with an optional `?token=` (never decoded or verified) and
//! `client_id`, answers `auth_required` / `auth_token` when there is no token, sends
//! `auth_success`, `users_in_room` and `user_joined` / `user_left`, and relays every other
//! frame after reading only its top level: `to` is dropped, `from` / `username` / `user_id` /
//! `room` are set, the frame goes to `to` or to the rest of the room, never back to the sender.
//! One process may listen on several ports that share one set of rooms.

mod conn;
mod splice;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;

use crate::target::check_listen;
use conn::Hello;
use state::Floor;

type Params = Query<HashMap<String, String>>;

/// Serve on every address in `listen` until SIGINT / SIGTERM.
pub async fn serve(listen: &[SocketAddr]) -> Result<()> {
    let app = Router::new()
        .route("/ws", get(lobby))
        .route("/ws/{room}", get(room))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(Floor::default()));
    let mut servers = JoinSet::new();
    for &addr in listen {
        let listener = bind(check_listen(addr)?).with_context(|| format!("binding {addr}"))?;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        eprintln!("floor listening on {addr}");
        let app = app.clone();
        servers.spawn(async move { axum::serve(listener, app).await });
    }
    tokio::select! {
        () = shutdown_signal() => Ok(()),
        Some(ended) = servers.join_next() => Ok(ended??),
    }
}

/// Listen with a deep accept queue (the kernel caps it at `net.core.somaxconn`); the default
/// of 128 overflows when a few hundred clients connect at once, and each overflow costs the
/// client a one-second SYN retransmit.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

async fn lobby(
    ws: WebSocketUpgrade,
    Query(q): Params,
    State(floor): State<Arc<Floor>>,
) -> Response {
    upgrade(ws, floor, None, q)
}

async fn room(
    ws: WebSocketUpgrade,
    Path(room): Path<String>,
    Query(q): Params,
    State(floor): State<Arc<Floor>>,
) -> Response {
    upgrade(ws, floor, Some(room), q)
}

fn upgrade(
    ws: WebSocketUpgrade,
    floor: Arc<Floor>,
    room: Option<String>,
    mut q: HashMap<String, String>,
) -> Response {
    let client_id = q.remove("client_id").or_else(|| q.remove("clientId"));
    let hello = Hello {
        room,
        has_token: q.contains_key("token"),
        client_id,
    };
    ws.read_buffer_size(4 * 1024)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| conn::run(socket, floor, hello))
}
