//! Cluster backends over Redis: the bus and presence a node uses when `redis_url` is set.

use crate::app::Backends;
use crate::protocol::NodeId;

pub async fn connect(
    _url: &str,
    _prefix: &str,
    _node: &NodeId,
    _lease_ttl: std::time::Duration,
) -> anyhow::Result<Backends> {
    anyhow::bail!("redis_url is set, but this build has no Redis backend")
}
