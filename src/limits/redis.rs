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

/// `KEYS[1]` the bucket; `ARGV` the interval and the burst tolerance, µs. Returns 0 when the
/// hit is counted, else the µs to wait.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return wait end
local next = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000) + 1)
return 0
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
    async fn hit(&self, rate: Rate, key: &str) -> Result<(), Duration> {
        if rate.is_off() {
            return Ok(());
        }
        let interval = rate.interval().as_micros();
        let tolerance = interval * u128::from(rate.burst.saturating_sub(1));
        let keys = vec![self.keys.rate(rate.name, key)];
        let args = vec![interval.to_string(), tolerance.to_string()];
        match self.gcra.run::<i64>(&self.client, keys, args).await {
            Ok(0) => Ok(()),
            Ok(wait) => Err(Duration::from_micros(u64::try_from(wait).unwrap_or(0))),
            Err(e) => {
                // Limits fail open: an outage of Redis must not lock everybody out.
                metrics::counter!(m::RATE_LIMIT_ERRORS, "limit" => rate.name).increment(1);
                tracing::debug!(error = %e, limit = rate.name, "rate limit unchecked");
                Ok(())
            }
        }
    }
}
