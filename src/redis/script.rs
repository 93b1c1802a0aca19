//! A Lua script run by its SHA-1, loaded once per node.

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, LuaInterface};
use fred::prelude::{Error as RedisError, FromValue, Options};

/// How long a script call may take before it fails (a frozen Redis must not stall callers).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(2);

/// One script: its source and the SHA-1 the server gave it.
pub struct Script {
    lua: &'static str,
    sha: String,
}

impl Script {
    /// Loads `lua` once to learn its SHA-1.
    pub async fn load(client: &Client, lua: &'static str) -> Result<Self, RedisError> {
        let sha: String = client.script_load(lua).await?;
        Ok(Self { lua, sha })
    }

    /// EVALSHA, falling back to EVAL where the server lost its script cache (a restart, a new
    /// shard); EVAL caches the script there again. Fails fast while Redis is unreachable.
    pub async fn run<R: FromValue>(
        &self,
        client: &Client,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, RedisError> {
        let options = Options {
            fail_fast: true,
            timeout: Some(SCRIPT_TIMEOUT),
            ..Options::default()
        };
        let client = client.with_options(&options);
        match client
            .evalsha(self.sha.as_str(), keys.clone(), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                client.eval(self.lua, keys, args).await
            }
            result => result,
        }
    }
}
