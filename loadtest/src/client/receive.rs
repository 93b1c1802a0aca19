//! The receiving half: frames in, stamps checked, latency recorded.

use std::sync::atomic::Ordering;

use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{Client, Step, record};
use crate::clock::now_ns;
use crate::conn;
use crate::inbound::{Event, parse_numbered};
use crate::payload::Stamp;
use crate::seq::Arrival;
use crate::stats::bump;

impl Client {
    pub(super) fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) -> Step {
        match frame {
            None => Step::Lost("eof".into()),
            Some(Err(e)) => Step::Lost(conn::ws_error_key(&e)),
            Some(Ok(Message::Text(text))) => self.on_text(&text),
            Some(Ok(Message::Close(f))) => {
                Step::Lost(f.map_or(1005, |f| u16::from(f.code)).to_string())
            }
            Some(Ok(_)) => Step::Go,
        }
    }

    /// A `reconnect` notice (the node drains and is about to close) loses the connection at
    /// once: the client goes elsewhere without waiting for the close.
    fn on_text(&mut self, text: &str) -> Step {
        let Some((event, seq)) = parse_numbered(text) else {
            self.out.counters.unreadable += 1;
            return Step::Go;
        };
        if let Some(seq) = seq {
            self.last_seq = seq;
        }
        match event {
            Event::Reconnect(grant) => {
                self.grant = grant.or(self.grant.take());
                return Step::Lost("reconnect".into());
            }
            Event::Signal(Some(stamp)) => self.on_signal(stamp),
            Event::Signal(None) => self.out.counters.unreadable += 1,
            Event::Error(code) => {
                if crate::trace::on() {
                    crate::trace::event(&self.spec.client_id, format_args!("error {text}"));
                }
                bump(&mut self.out.counters.errors, &code);
            }
            Event::UsersInRoom(users) => self.peers = users.into_iter().collect(),
            Event::UserJoined(id) => {
                self.peers.insert(id);
            }
            Event::UserLeft(id) => {
                self.peers.remove(&id);
            }
            _ => {}
        }
        Step::Go
    }

    fn on_signal(&mut self, stamp: Stamp) {
        let now = now_ns();
        if crate::trace::on() {
            self.trace_gap(&stamp);
        }
        let c = &mut self.out.counters;
        match self
            .seqs
            .entry(stamp.sender)
            .or_default()
            .observe(stamp.seq)
        {
            Arrival::Duplicate => c.duplicates += 1,
            Arrival::OutOfRange => c.unreadable += 1,
            arrival => {
                c.reordered += u64::from(arrival == Arrival::Reordered);
                c.delivered += 1;
                self.shared.delivered.fetch_add(1, Ordering::Relaxed);
                record(&mut self.out.latency, now.saturating_sub(stamp.sched_ns));
            }
        }
    }

    /// Traces the numbers of `stamp`'s sender skipped before it (lost, or not sent while the
    /// sender was between connections).
    fn trace_gap(&self, stamp: &Stamp) {
        let highest = self.seqs.get(&stamp.sender).and_then(|t| t.highest());
        if let Some(h) = highest
            && stamp.seq > h + 1
        {
            let (from, to) = (h + 1, stamp.seq - 1);
            let what = format_args!("gap from sender {} {from}..={to}", stamp.sender);
            crate::trace::event(&self.spec.client_id, what);
        }
    }
}
