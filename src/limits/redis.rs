//! The cluster's [`Throttle`]: GCRA on Redis, one key per limit and address
//! (`{P:rate:NAME:KEY}`, a string holding the theoretical arrival time), one script call per
//! hit, on Redis's clock so that nodes' clocks do not matter.

use std::time::Duration;

use async_trait::async_trait;
use fred::clients::Client;
use fred::prelude::Error as RedisError;

use super::throttle::{Rate, Throttle};
use crate::metrics as m;
use crate::redis::{Keys, Script};

/// `KEYS[1]` the bucket; `ARGV` the interval and the burst tolerance, µs, and how many hits
/// are wanted. Counts as many as fit now, up to that: returns `{counted, 0}`, or `{0, µs to
/// wait}` when none fits.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return {0, wait} end
local n = math.min(tonumber(ARGV[3]), math.floor((now + tolerance - tat) / interval) + 1)
local next = tat + n * interval
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000) + 1)
return {n, 0}
"#;

pub struct RedisThrottle {
    client: Client,
    keys: Keys,
    gcra: Script,
}

impl RedisThrottle {
    pub async fn start(client: Client, keys: Keys) -> Result<Self, RedisError> {
        let gcra = Script::load(&client, GCRA).await?;
        Ok(Self { client, keys, gcra })
    }
}

#[async_trait]
impl Throttle for RedisThrottle {
    async fn take(&self, rate: Rate, key: &str, want: u32) -> Result<u32, Duration> {
        let want = want.max(1);
        if rate.is_off() {
            return Ok(want);
        }
        let interval = rate.interval().as_micros().max(1);
        let tolerance = interval * u128::from(rate.burst.saturating_sub(1));
        let keys = vec![self.keys.rate(rate.name, key)];
        let args = vec![
            interval.to_string(),
            tolerance.to_string(),
            want.to_string(),
        ];
        match self.gcra.run::<(i64, i64)>(&self.client, keys, args).await {
            Ok((0, wait)) => Err(Duration::from_micros(u64::try_from(wait).unwrap_or(0))),
            Ok((counted, _)) => Ok(u32::try_from(counted).unwrap_or(1).clamp(1, want)),
            Err(e) => {
                // Limits fail open: an outage of Redis must not lock everybody out.
                metrics::counter!(m::RATE_LIMIT_ERRORS, "limit" => rate.name).increment(1);
                tracing::debug!(error = %e, limit = rate.name, "rate limit unchecked");
                Ok(want)
            }
        }
    }
}
