//! Following the Sentinels while a connection stays up. A primary that dies or hangs
//! breaks or silences the shared connection, and the next one is asked of the
//! Sentinels; but an operator's `SENTINEL FAILOVER` promotes the replica at once while
//! the old primary goes on answering as a primary until the Sentinels next look at it
//! (about 10 s): every write of those seconds would land where the resync then wipes
//! it (a state step's change told twice, or swallowed). So, with Sentinels, one task
//! per pool asks a Sentinel every [`LOOK_EVERY`] which primary it names, and drops the
//! shared connection when that is not the one it was made to.

use std::sync::{Mutex, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::connect::{certificates_now, connection_config, sentinel_client, Primary, Server};
use super::Shared;

/// How often a Sentinel is asked which primary it names: the longest a switch can go
/// unseen. One small command each time, on a connection kept open.
pub(super) const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Watches the Sentinels for the pool of `server`, whose shared connection is in
/// `shared`, until the pool is dropped.
pub(super) async fn watch(
    server: deadpool::managed::Pool<Server>,
    shared: Weak<Mutex<Option<Shared>>>,
) {
    let mut sentinel: Option<MultiplexedConnection> = None;
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let Some(slot) = shared.upgrade() else {
            return;
        };
        let Some(made_to) = server.manager().primary() else {
            continue;
        };
        let named = match named_primary(&mut sentinel, server.manager()).await {
            Ok(Some(named)) => named,
            // A Sentinel away says nothing: the connection is asked again next time.
            Ok(None) | Err(_) => {
                sentinel = None;
                continue;
            }
        };
        if named == made_to {
            continue;
        }
        let mut slot = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.take().is_some() {
            tracing::warn!(
                old = %format!("{}:{}", made_to.0, made_to.1),
                new = %format!("{}:{}", named.0, named.1),
                "the Sentinels name another Redis primary: leaving the old one"
            );
        }
    }
}

/// The primary a Sentinel names now, on `sentinel` (made when there is none).
async fn named_primary(
    sentinel: &mut Option<MultiplexedConnection>,
    server: &Server,
) -> redis::RedisResult<Option<Primary>> {
    let settings = server.settings();
    if sentinel.is_none() {
        let certs = certificates_now(settings)?;
        let client = sentinel_client(settings, certs)?
            .async_get_sentinel_client()
            .await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&connection_config(settings))
            .await?;
        *sentinel = Some(conn);
    }
    let Some(conn) = sentinel.as_mut() else {
        return Ok(None);
    };
    let named: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(&settings.sentinel_master)
        .query_async(conn)
        .await?;
    Ok(named.and_then(|(host, port)| Some((host, port.parse().ok()?))))
}
