//! The node's one inbound task: decodes the batches the subscriber connection receives, drops
//! this node's own envelopes, and queues the rest for the hub without ever blocking — a full
//! queue drops the envelope and counts it.

use bytes::Bytes;
use fred::prelude::Value;
use fred::types::Message;
use tokio::sync::{broadcast, mpsc};

use super::codec;
use crate::bus::{BusError, Inbound};
use crate::metrics as m;
use crate::protocol::NodeId;

/// Decodes what the subscriber connection receives and queues it for the hub.
pub async fn run(
    node: NodeId,
    mut messages: broadcast::Receiver<Message>,
    tx: mpsc::Sender<Inbound>,
) {
    use broadcast::error::RecvError;
    loop {
        let message = match messages.recv().await {
            Ok(message) => message,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    dropped = n,
                    "bus inbound lagged behind the subscriber connection"
                );
                metrics::counter!(m::BUS_DROPPED).increment(n);
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let envelopes = match payload(message.value).and_then(codec::decode) {
            Ok(envelopes) => envelopes,
            Err(e) => {
                tracing::warn!(error = %e, channel = %message.channel, "undecodable bus message");
                metrics::counter!(m::BUS_DROPPED).increment(1);
                continue;
            }
        };
        for envelope in envelopes {
            if envelope.origin == node {
                continue;
            }
            match tx.try_send(Inbound::Envelope(envelope)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!(m::BUS_DROPPED).increment(1);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
    tracing::debug!("bus inbound task ended");
}

fn payload(value: Value) -> Result<Bytes, BusError> {
    match value {
        Value::Bytes(bytes) => Ok(bytes),
        Value::String(s) => Ok(s.into_inner()),
        other => Err(BusError::Malformed(format!(
            "unexpected {:?} message",
            other.kind()
        ))),
    }
}
