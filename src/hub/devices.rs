//! Delivery to a user's connections from outside any connection: what the E2EE relay's REST
//! handlers hand to a device's WebSocket, on this node or any other.

use super::Hub;
use crate::bus::{Envelope, Route, Topic};
use crate::metrics as m;
use crate::protocol::{ConnId, Frame, Stamp, UserId};

/// No connection: what a delivery that comes from no connection skips.
const NO_CONN: ConnId = ConnId(0);

impl Hub {
    /// Queues `frame` for every local connection of `user` and posts it to the other nodes
    /// listening to the user's topic, without waiting (at most once: the bus keeps nothing
    /// for a node that is not listening). Returns how many local connections took it.
    pub fn post_user(&self, user: &UserId, frame: Frame) -> usize {
        let local = self.registry.deliver_user(user, NO_CONN, &frame);
        let envelope = Envelope {
            origin: self.node.clone(),
            route: Route::User {
                user: user.clone(),
                except: NO_CONN,
            },
            payload: frame.into_bytes(),
            stamp: Stamp::NONE,
        };
        if self.bus.post(Topic::User(user.clone()), envelope).is_err() {
            metrics::counter!(m::BUS_ERRORS).increment(1);
        }
        local
    }
}
