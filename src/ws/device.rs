//! `GET /api/v1/ws?token=<ticket>`: an E2EE device's WebSocket. The ticket (from
//! `POST /api/v1/ws-token`) is taken before the upgrade, once, cluster-wide; a bad, expired or
//! used one is answered on the socket with an `unauthorized` error frame and close 1008.
//!
//! The device joins the hub as its own user ([`e2ee::hub_user`]), so messages for it reach
//! this connection from any node, and a newer connection of the device replaces this one
//! (4001). Then its queue is sent in pages, written straight to the socket (so a long queue
//! waits for the socket rather than filling the outbox), then `{"type":"queue_empty"}`. What
//! arrives meanwhile comes through the outbox. `{"type":"ack","ids":[...]}` deletes messages;
//! anything else is answered with an error frame with a stable `code`, and the connection
//! goes on.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use super::{Upgrade, socket_text};
use crate::auth::{Credential, unix_now};
use crate::e2ee;
use crate::error::{ApiError, ErrorBody};
use crate::metrics as m;
use crate::protocol::{CloseCode, ConnId, ErrorCode, ErrorFrame, Frame, Member, ServerMessage};
use crate::registry::{ConnHandle, Control};
use crate::state::AppState;
use crate::store::DeviceRef;

/// Message ids one acknowledgement may carry.
const MAX_ACK_IDS: usize = 1000;

/// The device WebSocket's query string.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketQuery {
    /// A ticket from `POST /api/v1/ws-token`: single use, 5 minutes.
    token: Option<String>,
}

/// A client frame of the device protocol.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeviceFrame {
    Ack { ids: Vec<i64> },
}

/// Connect an E2EE device's WebSocket.
#[utoipa::path(
    get,
    path = "/api/v1/ws",
    tag = "e2ee",
    params(TicketQuery),
    responses(
        (status = 101, description = "The WebSocket: queued messages in pages, then \
            `queue_empty`, then messages as they arrive; a bad, expired or used ticket gets an \
            `unauthorized` error frame and close 1008"),
        (status = 400, description = "`not_websocket`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: a refused ticket on a plain HTTP request",
            body = ErrorBody),
        (status = 503, description = "`draining`, `node_full` or `unavailable`",
            body = ErrorBody),
    )
)]
pub async fn device_endpoint(
    State(state): State<AppState>,
    query: Result<Query<TicketQuery>, QueryRejection>,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(ApiError::unavailable(
            "draining",
            "this node is shutting down",
        ));
    }
    let ticket = query.ok().and_then(|Query(q)| q.token).unwrap_or_default();
    let device = e2ee::take_ticket(&state.store, &ticket, unix_now() as i64)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "the E2EE store failed");
            ApiError::unavailable("unavailable", "the database does not answer; try again")
        })?;
    if device.is_none() {
        m::auth_failure("ticket");
    }
    let upgrade = upgrade.map_err(|e| match device {
        None => ApiError::unauthorized("the ticket is unknown, used or expired"),
        Some(_) => ApiError::bad_request("not_websocket", e.body_text()),
    })?;
    let slot = state.slots.take().ok_or_else(|| {
        m::limit_hit("max_connections");
        ApiError::unavailable("node_full", "this node holds as many WebSockets as it may")
    })?;
    let limit = state.config.max_message_bytes;
    let upgrade = upgrade.max_message_size(limit).max_frame_size(limit);
    Ok(upgrade.on_upgrade(move |socket| async move {
        let _slot = slot;
        match device {
            Some(device) => run(socket, state, device).await,
            None => {
                let error = ErrorFrame::new(
                    ErrorCode::Unauthorized,
                    "the ticket is unknown, used or expired",
                );
                let mut socket = socket;
                let _ = socket.send(error_text(error)).await;
                close(socket, CloseCode::PolicyViolation).await;
            }
        }
    }))
}

fn error_text(error: ErrorFrame) -> Message {
    metrics::counter!(m::MESSAGE_ERRORS, "code" => error.code.as_str()).increment(1);
    socket_text(Frame::from(ServerMessage::from(error).to_json()))
}

async fn close(mut socket: WebSocket, code: CloseCode) {
    let frame = CloseFrame {
        code: code.code(),
        reason: code.reason().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn run(socket: WebSocket, state: AppState, device: DeviceRef) {
    let (outbox, rx) = mpsc::channel(state.config.outbox_frames);
    let control = Arc::new(Control::default());
    let conn = ConnId::generate();
    let member = Member {
        client_id: e2ee::hub_client(&device),
        user_id: e2ee::hub_user(&device),
        username: String::new(),
        conn,
        node: state.hub.node.clone(),
    };
    let handle = ConnHandle {
        conn,
        client: member.client_id.clone(),
        user: member.user_id.clone(),
        outbox,
        control: Arc::clone(&control),
        credential: Arc::new(Credential {
            expires_at: u64::MAX,
            ..Credential::default()
        }),
        resume: None,
    };
    let mut session = Session {
        socket,
        state,
        device,
    };
    if let Err(error) = session.state.hub.connect(&member, handle, 0, None).await {
        let _ = session.socket.send(error_text(error)).await;
        close(session.socket, CloseCode::TryAgainLater).await;
        return;
    }
    metrics::counter!(m::CONNECTIONS_OPENED).increment(1);
    metrics::gauge!(m::CONNECTIONS).increment(1.0);
    let code = session.serve(rx, &control).await;
    session.state.hub.disconnect(&member).await;
    metrics::gauge!(m::CONNECTIONS).decrement(1.0);
    metrics::counter!(m::CONNECTIONS_CLOSED, "code" => code.label()).increment(1);
    close(session.socket, code).await;
}

struct Session {
    socket: WebSocket,
    state: AppState,
    device: DeviceRef,
}

/// Why the loop stopped writing: the socket failed or closed.
struct Gone;

impl Session {
    async fn send(&mut self, frame: Frame) -> Result<(), Gone> {
        let write = self.socket.send(socket_text(frame));
        match tokio::time::timeout(self.state.config.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Gone),
        }
    }

    /// Sends the queue in pages, with what arrived live in between, then `queue_empty`.
    async fn drain(&mut self, rx: &mut mpsc::Receiver<Frame>) -> Result<(), CloseCode> {
        let mut after = 0;
        loop {
            let page = self
                .state
                .store
                .e2ee_pending(&self.device, after, e2ee::DRAIN_PAGE)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "could not read a device's queue");
                    CloseCode::InternalError
                })?;
            let full = page.len() as i64 == e2ee::DRAIN_PAGE;
            for message in &page {
                after = message.id;
                let frame = e2ee::message_frame(message, false);
                self.send(frame).await.map_err(|Gone| CloseCode::Normal)?;
            }
            while let Ok(frame) = rx.try_recv() {
                self.send(frame).await.map_err(|Gone| CloseCode::Normal)?;
            }
            if !full {
                break;
            }
        }
        let empty = e2ee::queue_empty_frame();
        self.send(empty).await.map_err(|Gone| CloseCode::Normal)
    }

    async fn serve(&mut self, mut rx: mpsc::Receiver<Frame>, control: &Control) -> CloseCode {
        if let Err(code) = self.drain(&mut rx).await {
            return code;
        }
        let mut ping = tokio::time::interval(self.state.config.ping_interval);
        ping.tick().await;
        loop {
            tokio::select! {
                code = control.closed() => return code,
                frame = rx.recv() => match frame {
                    Some(frame) => if self.send(frame).await.is_err() {
                        return CloseCode::Normal;
                    },
                    None => return CloseCode::Normal,
                },
                _ = ping.tick() => {
                    if self.socket.send(Message::Ping(Default::default())).await.is_err() {
                        return CloseCode::Normal;
                    }
                }
                message = self.socket.recv() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(error) = handle(&self.state, &self.device, text.as_str()).await
                            && self.socket.send(error_text(error)).await.is_err()
                        {
                            return CloseCode::Normal;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let error = ErrorFrame::new(
                            ErrorCode::BinaryNotSupported,
                            "frames are JSON text",
                        );
                        if self.socket.send(error_text(error)).await.is_err() {
                            return CloseCode::Normal;
                        }
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return CloseCode::Normal,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
}

/// Handles one client frame of `device`; an error frame for a refused one.
async fn handle(state: &AppState, device: &DeviceRef, text: &str) -> Option<ErrorFrame> {
    let frame: DeviceFrame = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(e) => {
            let code = if e.is_data() {
                ErrorCode::InvalidField
            } else {
                ErrorCode::InvalidJson
            };
            let message = "expected {\"type\":\"ack\",\"ids\":[...]}";
            return Some(ErrorFrame::new(code, message));
        }
    };
    let DeviceFrame::Ack { ids } = frame;
    if ids.len() > MAX_ACK_IDS {
        let message = format!("at most {MAX_ACK_IDS} ids per ack");
        return Some(ErrorFrame::new(ErrorCode::InvalidField, message));
    }
    match state.store.e2ee_ack(device, &ids).await {
        Ok(n) => {
            metrics::counter!(m::E2EE_ACKED).increment(n);
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not delete acknowledged messages");
            Some(ErrorFrame::new(
                ErrorCode::Unavailable,
                "the acknowledgement was not stored; send it again",
            ))
        }
    }
}
