//! The binary form of envelopes on a Redis channel. One Redis message carries a *batch*: the
//! envelopes one node published on one channel in one round, in order, sharing their origin.
//!
//! `batch := version(u8 = 3) origin:str entry*`,
//! `entry := tag:u8 fields stamp:u64 payload_len:u32 payload`, where `str` is a u16 length and
//! UTF-8 bytes, connection ids and stamps are big-endian u64 and the fields are the route's, in
//! the order of [`Route`]'s declaration. Ids are validated again on decode; the payload bytes
//! are shared with the received message, not copied. Version 2 (the same without stamps) is
//! still read, so that a cluster can be upgraded node by node.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::bus::{BusError, Envelope, Route};
use crate::protocol::{ClientId, ConnId, NodeId, RoomId, Stamp, UserId};

const VERSION: u8 = 3;
/// The version before stamps.
const VERSION_UNSTAMPED: u8 = 2;

/// Builds one batch.
pub struct BatchWriter {
    buf: BytesMut,
    count: usize,
}

impl BatchWriter {
    pub fn new(origin: &NodeId) -> Self {
        let mut buf = BytesMut::with_capacity(512);
        buf.put_u8(VERSION);
        put_str(&mut buf, origin.as_str());
        Self { buf, count: 0 }
    }

    /// Appends one envelope's route, stamp and payload.
    pub fn push(&mut self, route: &Route, stamp: Stamp, payload: &[u8]) {
        let out = &mut self.buf;
        out.reserve(64 + payload.len());
        match route {
            Route::Room { room, except } => {
                put_tag(out, b'R', room.as_str());
                out.put_u64(except.0);
            }
            Route::Joined {
                room,
                client,
                conn,
                node,
            } => {
                put_tag(out, b'J', room.as_str());
                put_str(out, client.as_str());
                out.put_u64(conn.0);
                put_str(out, node.as_str());
            }
            Route::Left { room, client, conn } => {
                put_tag(out, b'L', room.as_str());
                put_str(out, client.as_str());
                out.put_u64(conn.0);
            }
            Route::Member { room, client, from } => {
                put_tag(out, b'M', room.as_str());
                put_str(out, client.as_str());
                out.put_u64(from.0);
            }
            Route::Bounce { room, client, conn } => {
                put_tag(out, b'B', room.as_str());
                put_str(out, client.as_str());
                out.put_u64(conn.0);
            }
            Route::User { user, except } => {
                put_tag(out, b'U', user.as_str());
                out.put_u64(except.0);
            }
            Route::Kick { client, conn } => {
                put_tag(out, b'K', client.as_str());
                out.put_u64(conn.0);
            }
            Route::Revoke => put_tag(out, b'V', ""),
            Route::Handoff => put_tag(out, b'H', ""),
            Route::Probe => put_tag(out, b'P', ""),
            Route::Conn { conn } => {
                put_tag(out, b'C', "");
                out.put_u64(conn.0);
            }
        }
        out.put_u64(stamp.to_bits());
        // Frames are at most `max_message_bytes`, far below 4 GiB.
        out.put_u32(payload.len() as u32);
        out.put_slice(payload);
        self.count += 1;
    }

    /// Bytes written so far.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Envelopes written so far.
    pub fn count(&self) -> usize {
        self.count
    }

    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// A batch of one envelope.
#[cfg(test)]
pub fn encode(envelope: &Envelope) -> Bytes {
    let mut batch = BatchWriter::new(&envelope.origin);
    batch.push(&envelope.route, envelope.stamp, &envelope.payload);
    batch.finish()
}

/// Decodes a whole batch; a batch with any malformed entry is refused as a whole.
pub fn decode(mut buf: Bytes) -> Result<Vec<Envelope>, BusError> {
    let stamped = match take_u8(&mut buf)? {
        VERSION => true,
        VERSION_UNSTAMPED => false,
        _ => return Err(malformed("unknown version")),
    };
    let origin = NodeId::parse(&take_str(&mut buf)?).map_err(invalid)?;
    let mut envelopes = Vec::new();
    while buf.has_remaining() {
        let route = take_route(&mut buf)?;
        let stamp = match stamped {
            true => Stamp::from_bits(take_u64(&mut buf)?),
            false => Stamp::NONE,
        };
        let len = take_u32(&mut buf)? as usize;
        if buf.remaining() < len {
            return Err(malformed("truncated"));
        }
        envelopes.push(Envelope {
            origin: origin.clone(),
            route,
            payload: buf.split_to(len),
            stamp,
        });
    }
    Ok(envelopes)
}

fn take_route(buf: &mut Bytes) -> Result<Route, BusError> {
    let tag = take_u8(buf)?;
    let id = take_str(buf)?;
    let room = || RoomId::parse(&id).map_err(invalid);
    Ok(match tag {
        b'R' => Route::Room {
            room: room()?,
            except: take_conn(buf)?,
        },
        b'J' => Route::Joined {
            room: room()?,
            client: take_client(buf)?,
            conn: take_conn(buf)?,
            node: NodeId::parse(&take_str(buf)?).map_err(invalid)?,
        },
        b'L' => Route::Left {
            room: room()?,
            client: take_client(buf)?,
            conn: take_conn(buf)?,
        },
        b'M' => Route::Member {
            room: room()?,
            client: take_client(buf)?,
            from: take_conn(buf)?,
        },
        b'B' => Route::Bounce {
            room: room()?,
            client: take_client(buf)?,
            conn: take_conn(buf)?,
        },
        b'U' => Route::User {
            user: UserId::parse(&id).map_err(invalid)?,
            except: take_conn(buf)?,
        },
        b'K' => Route::Kick {
            client: ClientId::parse(&id).map_err(invalid)?,
            conn: take_conn(buf)?,
        },
        b'V' => Route::Revoke,
        b'H' => Route::Handoff,
        b'P' => Route::Probe,
        b'C' => Route::Conn {
            conn: take_conn(buf)?,
        },
        _ => return Err(malformed("unknown route")),
    })
}

fn put_tag(out: &mut BytesMut, tag: u8, id: &str) {
    out.put_u8(tag);
    put_str(out, id);
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Ids are at most 128 characters (512 bytes), so a u16 length always fits.
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

fn take_u8(buf: &mut Bytes) -> Result<u8, BusError> {
    if buf.remaining() < 1 {
        return Err(malformed("truncated"));
    }
    Ok(buf.get_u8())
}

fn take_u32(buf: &mut Bytes) -> Result<u32, BusError> {
    if buf.remaining() < 4 {
        return Err(malformed("truncated"));
    }
    Ok(buf.get_u32())
}

fn take_u64(buf: &mut Bytes) -> Result<u64, BusError> {
    if buf.remaining() < 8 {
        return Err(malformed("truncated"));
    }
    Ok(buf.get_u64())
}

fn take_conn(buf: &mut Bytes) -> Result<ConnId, BusError> {
    take_u64(buf).map(ConnId)
}

fn take_client(buf: &mut Bytes) -> Result<ClientId, BusError> {
    ClientId::parse(&take_str(buf)?).map_err(invalid)
}

fn take_str(buf: &mut Bytes) -> Result<String, BusError> {
    if buf.remaining() < 2 {
        return Err(malformed("truncated"));
    }
    let len = buf.get_u16() as usize;
    if buf.remaining() < len {
        return Err(malformed("truncated"));
    }
    String::from_utf8(buf.split_to(len).to_vec()).map_err(|_| malformed("id is not UTF-8"))
}

fn malformed(what: &str) -> BusError {
    BusError::Malformed(what.to_owned())
}

fn invalid(e: crate::protocol::InvalidId) -> BusError {
    BusError::Malformed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        NodeId::parse("node-1").unwrap()
    }

    fn routes() -> Vec<Route> {
        Route::samples(&node())
    }

    #[test]
    fn a_batch_round_trips_in_order() {
        let mut batch = BatchWriter::new(&node());
        let sent: Vec<Envelope> = routes()
            .into_iter()
            .enumerate()
            .map(|(n, route)| Envelope {
                origin: node(),
                route,
                payload: Bytes::from(format!("{{\"n\":{n},\"s\":\"ü\"}}")),
                stamp: Stamp::new(1_764_900_000_000_000 + n as u64, n as u8),
            })
            .collect();
        for envelope in &sent {
            batch.push(&envelope.route, envelope.stamp, &envelope.payload);
        }
        assert_eq!(batch.count(), sent.len());
        assert_eq!(decode(batch.finish()).unwrap(), sent);
    }

    #[test]
    fn truncated_or_foreign_batches_are_refused() {
        for route in routes() {
            let envelope = Envelope {
                origin: node(),
                route,
                payload: Bytes::from_static(b"{\"type\":\"x\"}"),
                stamp: Stamp::NONE,
            };
            let bytes = encode(&envelope);
            assert_eq!(decode(bytes.clone()).unwrap(), vec![envelope]);
            // The header alone (9 bytes) is an empty batch; any other cut is truncated.
            for cut in (0..bytes.len()).filter(|cut| *cut != 9) {
                assert!(decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
            }
        }
        assert!(decode(Bytes::from_static(b"\x01R")).is_err());
        assert!(decode(Bytes::from_static(b"\x04\x00\x01n")).is_err());
        assert!(decode(Bytes::from_static(b"\x02\x00\x01n\x00\x00")).is_err());
        let mut bad_id = BatchWriter::new(&node());
        bad_id.push(
            &Route::Room {
                room: RoomId::parse("r").unwrap(),
                except: ConnId(1),
            },
            Stamp::NONE,
            b"{}",
        );
        let mut bytes = bad_id.finish().to_vec();
        bytes[12] = b' '; // the room name "r" becomes " "
        assert!(decode(Bytes::from(bytes)).is_err());
    }

    #[test]
    fn batches_of_the_version_before_stamps_are_still_read() {
        let mut old = vec![VERSION_UNSTAMPED, 0, 6];
        old.extend_from_slice(b"node-1");
        old.extend_from_slice(&[b'R', 0, 1, b'r']);
        old.extend_from_slice(&7u64.to_be_bytes());
        old.extend_from_slice(&2u32.to_be_bytes());
        old.extend_from_slice(b"{}");
        let envelopes = decode(Bytes::from(old)).unwrap();
        assert_eq!(
            envelopes,
            vec![Envelope {
                origin: node(),
                route: Route::Room {
                    room: RoomId::parse("r").unwrap(),
                    except: ConnId(7),
                },
                payload: Bytes::from_static(b"{}"),
                stamp: Stamp::NONE,
            }]
        );
    }
}
