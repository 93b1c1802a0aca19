//! The loop of one participant's call signaling socket: registered on the hub as its side's
//! own user (so the other side reaches it on any node), it relays the participant's signals,
//! writes what the hub delivers, and ends the call on a hang-up or when its time runs out.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use serde_json::json;
use tokio::sync::mpsc;

use crate::calls::signal::{self, Incoming, Refusal};
use crate::calls::{Calls, Side, side_client, side_user, unix_now};
use crate::limits::{MessageLimit, Slot, Verdict};
use crate::metrics as m;
use crate::protocol::{CloseCode, ConnId, Frame, Member};
use crate::registry::{ConnHandle, Control};
use crate::state::AppState;
use crate::store::CallSession;

/// Frames a signaling socket may have queued.
const OUTBOX: usize = 64;
/// How long a closing socket waits to send its close frame, then for the client's.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// What the loop does next.
enum Flow {
    Go,
    Close(CloseCode),
}

struct CallSocket {
    socket: WebSocket,
    calls: Calls,
    call: CallSession,
    side: Side,
    /// The connection's message rate (`msg_rate`, `msg_burst`), as on `/ws`.
    limit: MessageLimit,
}

/// Runs one participant's signaling socket until it closes.
pub async fn call_socket(
    socket: WebSocket,
    state: AppState,
    call: CallSession,
    side: Side,
    _slot: Slot,
) {
    let calls = Calls {
        store: state.store.clone(),
        hub: Arc::clone(&state.hub),
        config: state.config.calls.clone(),
    };
    let me = Member {
        client_id: side_client(&call.session_id, side),
        user_id: side_user(&call.session_id, side),
        username: side.anon(&call).to_owned(),
        conn: ConnId::generate(),
        node: state.hub.node.clone(),
    };
    let (outbox, inbox) = mpsc::channel(OUTBOX);
    let control = Arc::new(Control::default());
    let handle = ConnHandle {
        conn: me.conn,
        client: me.client_id.clone(),
        user: me.user_id.clone(),
        outbox,
        control: Arc::clone(&control),
        credential: Arc::default(),
        resume: None,
    };
    let mut this = CallSocket {
        socket,
        calls,
        call,
        side,
        limit: MessageLimit::new(state.config.msg_rate, state.config.msg_burst),
    };
    if state.hub.connect(&me, handle, 0, None).await.is_err() {
        let refusal = Refusal {
            code: "unavailable",
            detail: "the cluster is unavailable; try again".to_owned(),
        };
        this.send(signal::error(&refusal)).await;
        this.close(CloseCode::InternalError).await;
        return;
    }
    let code = this.run(inbox, &control).await;
    state.hub.disconnect(&me).await;
    if code != CloseCode::Replaced {
        let left = json!({"type": "peer-left", "peer": this.side.anon(&this.call)});
        let other = this.side.other();
        this.calls
            .tell_side(&this.call, other, left.to_string())
            .await;
    }
    this.close(code).await;
}

impl CallSocket {
    async fn run(&mut self, mut inbox: mpsc::Receiver<Frame>, control: &Control) -> CloseCode {
        self.hello().await;
        let left = self.call.session_deadline.saturating_sub(unix_now()).max(0);
        let timeout = tokio::time::sleep(Duration::from_secs(left.unsigned_abs()));
        tokio::pin!(timeout);
        loop {
            let flow = tokio::select! {
                message = self.socket.recv() => match message {
                    Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                        self.on_data(message).await
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Flow::Go,
                    Some(Ok(Message::Close(_))) | None => return CloseCode::Normal,
                    Some(Err(_)) => return CloseCode::InvalidPayload,
                },
                frame = inbox.recv() => match frame {
                    Some(frame) => self.deliver(frame).await,
                    None => Flow::Close(CloseCode::Normal),
                },
                code = control.closed() => Flow::Close(code),
                () = &mut timeout => match self.deadline_moved().await {
                    // Answered after this socket opened: the call's time counts from then.
                    Some(at) => {
                        timeout.as_mut().reset(at);
                        Flow::Go
                    }
                    None => {
                        let _ = self.calls.expire(&self.call).await;
                        self.send(crate::calls::notify_ended("expired")).await;
                        Flow::Close(CloseCode::Normal)
                    }
                }
            };
            if let Flow::Close(code) = flow {
                return code;
            }
        }
    }

    /// When the call's time ends now, if later than this socket thought (the answer set it).
    async fn deadline_moved(&mut self) -> Option<tokio::time::Instant> {
        let now = self.calls.store.call(&self.call.session_id).await.ok()??;
        let left = now.session_deadline.saturating_sub(unix_now());
        self.call.session_deadline = now.session_deadline;
        (left > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(left.unsigned_abs()))
    }

    /// A text or binary frame from the participant, within the connection's rate.
    async fn on_data(&mut self, message: Message) -> Flow {
        match self.within_rate().await {
            Ok(true) => {}
            Ok(false) => return Flow::Go,
            Err(code) => return Flow::Close(code),
        }
        match message {
            Message::Text(text) => self.on_text(text.as_str()).await,
            _ => self.refuse("invalid_message", "frames are JSON text").await,
        }
    }

    /// Whether a data frame is within the connection's rate (a refusal is answered once);
    /// `Err` closes a connection that keeps flooding.
    async fn within_rate(&mut self) -> Result<bool, CloseCode> {
        match self.limit.check() {
            Verdict::Pass | Verdict::Refill => Ok(true),
            Verdict::Refuse(wait) => {
                m::limit_hit("msg_rate");
                let detail = format!("too many messages; wait {} ms", wait.as_millis().max(1));
                self.refuse("rate_limited", &detail).await;
                Ok(false)
            }
            Verdict::Drop => {
                m::limit_dropped("msg_rate");
                Ok(false)
            }
            Verdict::Close => {
                m::limit_hit("flood");
                Err(CloseCode::PolicyViolation)
            }
        }
    }

    /// Tells the other side this one is here, and this one where the call stands.
    async fn hello(&mut self) {
        let anon = self.side.anon(&self.call).to_owned();
        let joined = json!({"type": "peer-joined", "peer": anon});
        let other = self.side.other();
        let present = self
            .calls
            .tell_side(&self.call, other, joined.to_string())
            .await;
        let status = match self.calls.store.call(&self.call.session_id).await {
            Ok(Some(now)) => now.status,
            _ => self.call.status.clone(),
        };
        let hello = json!({
            "type": "session",
            "sessionId": self.call.session_id,
            "role": self.side.role(),
            "anonymousId": anon,
            "peerAnonymousId": other.anon(&self.call),
            "status": status,
            "peerConnected": present,
        });
        self.send(hello.to_string()).await;
    }

    /// Writes a frame the hub delivered; the call's end closes the socket after it.
    async fn deliver(&mut self, frame: Frame) -> Flow {
        let text = frame.as_str().to_owned();
        let ends = ["{\"type\":\"hang-up\"", "{\"type\":\"call-ended\""];
        let last = ends.iter().any(|p| text.starts_with(p));
        self.send(text).await;
        if last {
            Flow::Close(CloseCode::Normal)
        } else {
            Flow::Go
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        match signal::parse(text) {
            Err(refusal) => {
                self.send(signal::error(&refusal)).await;
                Flow::Go
            }
            Ok(Incoming::HangUp) => {
                let _ = self.calls.hang_up(&self.call, self.side).await;
                Flow::Close(CloseCode::Normal)
            }
            Ok(Incoming::Relay { kind, payload }) => {
                let anon = self.side.anon(&self.call);
                let frame = signal::relayed(kind, anon, payload);
                let fingerprint = (kind != "ice-candidate")
                    .then(|| signal::fingerprint(payload))
                    .flatten();
                // Recorded before the signal leaves, so that only the side whose fingerprint
                // completes the pair announces it.
                if let Some(fingerprint) = fingerprint {
                    self.calls
                        .fingerprint(&self.call, self.side, &fingerprint)
                        .await;
                }
                let other = self.side.other();
                if !self.calls.tell_side(&self.call, other, frame).await {
                    let detail = "the other participant is not connected";
                    return self.refuse("peer_not_connected", detail).await;
                }
                Flow::Go
            }
        }
    }

    async fn refuse(&mut self, code: &'static str, detail: &str) -> Flow {
        let refusal = Refusal {
            code,
            detail: detail.to_owned(),
        };
        self.send(signal::error(&refusal)).await;
        Flow::Go
    }

    async fn send(&mut self, text: String) {
        let _ = self.socket.send(Message::Text(text.into())).await;
    }

    /// Sends the close frame, then reads (and drops) what the client still sends until its own
    /// close, for a moment: a socket dropped with unread data is reset, and the client may then
    /// never see the close code.
    async fn close(mut self, code: CloseCode) {
        let frame = CloseFrame {
            code: code.code(),
            reason: code.reason().into(),
        };
        let sent =
            tokio::time::timeout(CLOSE_LINGER, self.socket.send(Message::Close(Some(frame)))).await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(frame)) = self.socket.recv().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}
