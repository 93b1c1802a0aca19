//! The sending half: scheduled signals out, and what happens after a reconnect.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use super::{Client, Step, nanos, record};
use crate::clock::ns_of;
use crate::conn::{self, Ws};
use crate::payload::Stamp;
use crate::stats::bump;

const RECONNECT_TRIES: u32 = 40;
const RESUME_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    pub(super) async fn send_due(&mut self, ws: &mut Ws) -> Step {
        let (Some(plan), Some(send)) = (self.shared.schedule.get(), &self.spec.send) else {
            return Step::Go;
        };
        let id = send.sender as usize;
        let total = plan.count_for(id);
        let now = Instant::now();
        let mut fed = 0;
        while self.next < total {
            let due = plan.due(id, self.next);
            if due > now {
                break;
            }
            let stamp = Stamp {
                sender: send.sender,
                seq: self.next,
                sched_ns: ns_of(due),
            };
            if let Err(e) = ws.feed(Message::text(send.frames.build(&stamp))).await {
                return Step::Lost(conn::ws_error_key(&e));
            }
            record(&mut self.out.send_lag, nanos(now - due));
            self.next += 1;
            fed += 1;
        }
        self.out.counters.sent += fed;
        self.shared.sent.fetch_add(fed, Ordering::Relaxed);
        if self.next >= total {
            self.mark_done();
        }
        match ws.flush().await {
            Ok(()) => Step::Go,
            Err(e) => Step::Lost(conn::ws_error_key(&e)),
        }
    }

    pub(super) async fn reconnect(&mut self) -> Option<Ws> {
        if !self.shared.reconnect {
            return None;
        }
        let lost_at = Instant::now();
        if crate::trace::on() {
            let what = format_args!("connection lost; next signal {}", self.next);
            crate::trace::event(&self.spec.client_id, what);
        }
        let ws = match self.resume().await {
            Some(ws) => ws,
            None => self.dial_again().await?,
        };
        let since = self
            .shared
            .kill_at
            .get()
            .copied()
            .filter(|k| *k <= lost_at)
            .unwrap_or(lost_at);
        record(&mut self.out.rejoin, nanos(since.elapsed()));
        self.skip_overdue();
        Some(ws)
    }

    /// Connects afresh, with backoff, until it works, the run ends or the tries run out.
    async fn dial_again(&mut self) -> Option<Ws> {
        for attempt in 0..RECONNECT_TRIES {
            if self.shared.cancel.is_cancelled() {
                return None;
            }
            if let Some(ws) = self.dial().await {
                return Some(ws);
            }
            let backoff = Duration::from_millis(25 << attempt.min(5));
            tokio::select! {
                () = self.shared.cancel.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
        }
        None
    }

    /// Resumes the session (when resuming is on and the server offered it): the first answer
    /// decides, and a refusal (or a failed connection) leaves the client to connect afresh.
    async fn resume(&mut self) -> Option<Ws> {
        if !self.shared.resume {
            return None;
        }
        let grant = self.grant.take()?;
        let target = self.shared.target_for(self.spec.slot).clone();
        let room = Some(self.spec.room.as_str());
        match conn::resume(&target, room, &grant, self.last_seq, RESUME_TIMEOUT).await {
            Ok(ws) => {
                bump(&mut self.out.counters.resumes, "resumed");
                self.grant = Some(grant);
                Some(ws)
            }
            Err(e) => {
                bump(&mut self.out.counters.resumes, &e.0);
                None
            }
        }
    }

    /// After a reconnect, messages that fell due while disconnected are skipped, not sent late.
    fn skip_overdue(&mut self) {
        let (Some(plan), Some(send)) = (self.shared.schedule.get(), &self.spec.send) else {
            return;
        };
        let id = send.sender as usize;
        let resume = plan
            .first_due_from(id, Instant::now())
            .min(plan.count_for(id));
        if resume > self.next {
            self.out.counters.skipped += resume - self.next;
            self.next = resume;
        }
        if self.next >= plan.count_for(id) {
            self.mark_done();
        }
    }

    /// The client is leaving: whatever it has not sent is skipped, and it is done.
    pub(super) fn give_up_sending(&mut self) {
        if let (Some(plan), Some(send)) = (self.shared.schedule.get(), &self.spec.send) {
            let total = plan.count_for(send.sender as usize);
            self.out.counters.skipped += total.saturating_sub(self.next);
            self.next = self.next.max(total);
        }
        self.mark_done();
    }

    /// Count this sender in `senders_done`, once (senders with nothing to send never count).
    fn mark_done(&mut self) {
        let Some(send) = &self.spec.send else { return };
        let plan = self.shared.schedule.get();
        if !self.done && plan.is_none_or(|p| p.count_for(send.sender as usize) > 0) {
            self.done = true;
            self.shared.senders_done.fetch_add(1, Ordering::Relaxed);
        }
    }
}
