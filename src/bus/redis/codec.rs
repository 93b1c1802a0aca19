//! The binary form of an [`Envelope`] on a Redis channel: a version byte, a route tag, the
//! origin node, the route's fields (length-prefixed ids, big-endian connection ids), then the
//! payload bytes as they are. Ids are validated again on decode.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::bus::{BusError, Envelope, Route};
use crate::protocol::{ClientId, ConnId, NodeId, RoomId, UserId};

const VERSION: u8 = 1;

pub fn encode(envelope: &Envelope) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + envelope.payload.len());
    out.put_u8(VERSION);
    let (tag, id, conn) = match &envelope.route {
        Route::Room { room, except } => (b'R', room.as_str(), Some(*except)),
        Route::Client { client } => (b'C', client.as_str(), None),
        Route::Member { room, .. } => (b'M', room.as_str(), None),
        Route::User { user, except } => (b'U', user.as_str(), Some(*except)),
        Route::Kick { client, conn } => (b'K', client.as_str(), Some(*conn)),
    };
    out.put_u8(tag);
    put_str(&mut out, envelope.origin.as_str());
    put_str(&mut out, id);
    if let Route::Member { client, .. } = &envelope.route {
        put_str(&mut out, client.as_str());
    }
    if let Some(conn) = conn {
        out.put_u64(conn.0);
    }
    out.put_slice(&envelope.payload);
    out.freeze()
}

pub fn decode(mut buf: Bytes) -> Result<Envelope, BusError> {
    if take_u8(&mut buf)? != VERSION {
        return Err(malformed("unknown version"));
    }
    let tag = take_u8(&mut buf)?;
    let origin = NodeId::parse(&take_str(&mut buf)?).map_err(invalid)?;
    let id = take_str(&mut buf)?;
    let route = match tag {
        b'R' => Route::Room {
            room: RoomId::parse(&id).map_err(invalid)?,
            except: take_conn(&mut buf)?,
        },
        b'C' => Route::Client {
            client: ClientId::parse(&id).map_err(invalid)?,
        },
        b'M' => Route::Member {
            room: RoomId::parse(&id).map_err(invalid)?,
            client: ClientId::parse(&take_str(&mut buf)?).map_err(invalid)?,
        },
        b'U' => Route::User {
            user: UserId::parse(&id).map_err(invalid)?,
            except: take_conn(&mut buf)?,
        },
        b'K' => Route::Kick {
            client: ClientId::parse(&id).map_err(invalid)?,
            conn: take_conn(&mut buf)?,
        },
        _ => return Err(malformed("unknown route")),
    };
    Ok(Envelope {
        origin,
        route,
        payload: buf,
    })
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

fn take_conn(buf: &mut Bytes) -> Result<ConnId, BusError> {
    if buf.remaining() < 8 {
        return Err(malformed("truncated"));
    }
    Ok(ConnId(buf.get_u64()))
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

    #[test]
    fn round_trips_and_rejects_garbage() {
        let envelope = Envelope {
            origin: NodeId::parse("node-1").unwrap(),
            route: Route::User {
                user: UserId::parse("ü:x@y").unwrap(),
                except: ConnId(u64::MAX),
            },
            payload: Bytes::from_static(b"{\"type\":\"x\"}"),
        };
        assert_eq!(decode(encode(&envelope)).unwrap(), envelope);
        let bytes = encode(&envelope);
        for cut in 0..bytes.len() - envelope.payload.len() {
            assert!(decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
        assert!(decode(Bytes::from_static(b"\x02R")).is_err());
    }
}
