//! The Lua scripts that keep presence consistent. Each touches the keys of one hash tag only, so
//! it runs atomically on a standalone server and on the shard that owns the slot in a cluster.
//!
//! A member record is `conn|client|owner|["user","username"]` (see `record.rs`); the scripts
//! read its first three fields with a pattern and never parse the JSON tail.

use fred::clients::Client;
use fred::prelude::Error as RedisError;

/// `KEYS[1]` room ZSET; `ARGV` record, conn, client, cap. Returns `{status, seq, others...}`:
/// status `joined` or `already`, the member's join sequence number, the other records in join
/// order; or `{full}`.
const JOIN: &str = r#"
local others, mine, already, last = {}, {}, nil, 0
local recs = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #recs, 2 do
  local r = recs[i]
  last = tonumber(recs[i + 1])
  local k, c = string.match(r, '^(%d+)|([^|]+)|')
  if k == ARGV[2] then already = recs[i + 1] end
  if c == ARGV[3] then table.insert(mine, r) else table.insert(others, r) end
end
if already then
  table.insert(others, 1, already)
  table.insert(others, 1, 'already')
  return others
end
if #others >= tonumber(ARGV[4]) then return {'full'} end
for _, r in ipairs(mine) do redis.call('ZREM', KEYS[1], r) end
local seq = string.format('%d', last + 1)
redis.call('ZADD', KEYS[1], seq, ARGV[1])
table.insert(others, 1, seq)
table.insert(others, 1, 'joined')
return others
"#;

/// `KEYS[1]` room ZSET; `ARGV` conn, owner (empty: any). Returns the removed record or nil.
const LEAVE: &str = r#"
for _, r in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local k, _, o = string.match(r, '^(%d+)|([^|]+)|([^|]+)|')
  if k == ARGV[1] and (ARGV[2] == '' or o == ARGV[2]) then
    redis.call('ZREM', KEYS[1], r)
    return r
  end
end
return false
"#;

/// `KEYS[1]` room ZSET; `ARGV` record, conn, seq. Puts a member back: rewrites its record in
/// place and returns its join sequence number; when the room does not hold the connection, adds
/// it at `seq`, its original join sequence number, so join order survives (a live member after a
/// Redis restart or a lost lease: it holds a live socket and was admitted before, so the cap is
/// ignored), or with an empty `seq` adds nothing and returns -1 (a session a survivor takes over
/// keeps only the seats it still has).
const RESTORE_ROOM: &str = r#"
local recs = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #recs, 2 do
  local r = recs[i]
  if string.match(r, '^(%d+)|') == ARGV[2] then
    if r ~= ARGV[1] then
      redis.call('ZREM', KEYS[1], r)
      redis.call('ZADD', KEYS[1], recs[i + 1], ARGV[1])
    end
    return tonumber(recs[i + 1])
  end
end
if ARGV[3] == '' then return -1 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return tonumber(ARGV[3])
"#;

/// `KEYS[1]` conn HASH, `KEYS[2]` its held LIST; `ARGV` dead owner, new owner, record. Takes a
/// dead incarnation's connection over: `{1, overflowed, held frames...}` when it was still the
/// dead one's (it is the caller's now, and the frames held for it are handed over; overflowed
/// is `1` when some could not be held), else `{0}` (another reaper took it, or it is gone).
const TAKE_OVER: &str = r#"
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return {'0'} end
redis.call('HSET', KEYS[1], 'o', ARGV[2], 'm', ARGV[3])
local overflowed = redis.call('HGET', KEYS[1], 'ov') or '0'
redis.call('HDEL', KEYS[1], 'hb', 'ov')
local held = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
table.insert(held, 1, overflowed)
table.insert(held, 1, '1')
return held
"#;

/// `KEYS[1]` conn HASH, `KEYS[2]` its held LIST; `ARGV` owner prefix (`node/`), frame, frame
/// cap, ttl (ms), byte cap. Holds a frame for a resumable session whose node died, while that
/// node still owns it (nobody took it over yet): 1 when held, 0 when not (not resumable, taken
/// over, gone, or over a cap: then the session is marked `ov`, and cannot be resumed whole).
/// `hb` on the hash counts the bytes held.
const HOLD: &str = r#"
local o = redis.call('HGET', KEYS[1], 'o')
if not o or string.sub(o, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 's') == 0 then return 0 end
local bytes = tonumber(redis.call('HGET', KEYS[1], 'hb') or '0')
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[3]) or bytes + #ARGV[2] > tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], 'ov', '1')
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('HINCRBY', KEYS[1], 'hb', #ARGV[2])
return 1
"#;

/// `KEYS[1]` client HASH; `ARGV` user, conn, owner, record, restore (`1`/`0`).
/// Returns `{fresh}`, `{replaced, old record}`, `{taken}`, or `{lost}` (restore only: another
/// connection took the client id meanwhile; nothing changed).
const CLAIM: &str = r#"
local u = redis.call('HGET', KEYS[1], 'u')
if u and u ~= ARGV[1] then return {'taken'} end
local k = redis.call('HGET', KEYS[1], 'k')
local old = redis.call('HGET', KEYS[1], 'm')
if u and k ~= ARGV[2] and ARGV[5] == '1' then return {'lost'} end
redis.call('HSET', KEYS[1], 'u', ARGV[1], 'k', ARGV[2], 'o', ARGV[3], 'm', ARGV[4])
if u and k ~= ARGV[2] then return {'replaced', old} end
return {'fresh'}
"#;

/// `KEYS[1]` client HASH; `ARGV` conn, owner (empty: any). Deletes the claim if that
/// connection (of that owner) still holds it.
const UNCLAIM: &str = r#"
if redis.call('HGET', KEYS[1], 'k') ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'o') ~= ARGV[2] then return 0 end
return redis.call('DEL', KEYS[1])
"#;

/// `KEYS[1]` HASH; `ARGV` field, value. Deletes the field if it holds that value.
const HDEL_IF: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"#;

/// `KEYS[1]` HASH; `ARGV` field, value. Deletes the whole key if the field holds that value.
const DEL_IF: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// `KEYS[1]` rooms ZSET; `ARGV` room. Marks the room as possibly non-empty, now.
const TOUCH_ROOM: &str = r#"
redis.call('ZADD', KEYS[1], redis.call('TIME')[1], ARGV[1])
return 1
"#;

/// `KEYS[1]` rooms ZSET; `ARGV` room, grace (s). Drops an empty room from the index unless a
/// join touched it within the grace period (that join may not have reached the room yet).
const FORGET_ROOM: &str = r#"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(redis.call('TIME')[1]) - tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"#;

/// `KEYS[1]` leases ZSET, `KEYS[2]` reaped ZSET; `ARGV` incarnation, ttl (ms), register
/// (`1`/`0`). Renews the lease and returns 1, or 3 when it had expired but nobody had taken it
/// over yet (the claim and this renewal are atomic, so nothing of it was reaped). Without a
/// lease (unless registering) it renews nothing and returns 2 when a reaper took the
/// incarnation over, 0 when the lease vanished (Redis lost it).
const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local status = 1
if ARGV[3] ~= '1' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not s then
    if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 2 end
    return 0
  end
  if tonumber(s) < now then status = 3 end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return status
"#;

/// `KEYS[1]` leases ZSET, `KEYS[2]` reaping ZSET, `KEYS[3]` reaped ZSET; `ARGV` ttl (ms),
/// limit. Moves expired leases to the reaping set (and records them as reaped, for a day), and
/// takes over reapings whose reaper missed its deadline; returns the incarnations this caller
/// must reap. Atomic, so each is handed to one reaper at a time.
const CLAIM_DEAD: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[1])
local out = {}
local function take(key)
  local expired = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[2]))
  for _, inc in ipairs(expired) do
    redis.call('ZREM', KEYS[1], inc)
    redis.call('ZADD', KEYS[2], deadline, inc)
    redis.call('ZADD', KEYS[3], now, inc)
    table.insert(out, inc)
  end
end
take(KEYS[1])
take(KEYS[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - 86400000))
return out
"#;

pub use crate::redis::Script;

use super::addresses;

pub struct Scripts {
    pub join: Script,
    pub leave: Script,
    pub restore_room: Script,
    pub take_over: Script,
    pub hold_frame: Script,
    pub claim: Script,
    pub unclaim: Script,
    pub hdel_if: Script,
    pub del_if: Script,
    pub touch_room: Script,
    pub forget_room: Script,
    pub renew: Script,
    pub claim_dead: Script,
    pub hold: Script,
    pub release: Script,
}

impl Scripts {
    /// Loads every script once to learn its SHA-1.
    pub async fn load(client: &Client) -> Result<Self, RedisError> {
        let load = |lua: &'static str| Script::load(client, lua);
        Ok(Self {
            join: load(JOIN).await?,
            leave: load(LEAVE).await?,
            restore_room: load(RESTORE_ROOM).await?,
            take_over: load(TAKE_OVER).await?,
            hold_frame: load(HOLD).await?,
            claim: load(CLAIM).await?,
            unclaim: load(UNCLAIM).await?,
            hdel_if: load(HDEL_IF).await?,
            del_if: load(DEL_IF).await?,
            touch_room: load(TOUCH_ROOM).await?,
            forget_room: load(FORGET_ROOM).await?,
            renew: load(RENEW).await?,
            claim_dead: load(CLAIM_DEAD).await?,
            hold: load(addresses::HOLD).await?,
            release: load(addresses::RELEASE).await?,
        })
    }
}
