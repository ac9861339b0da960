//! The event feed: every store keeps one connection of its own (outside
//! the pool) listening on channel `cc_events`, where every append of
//! events notifies the session's ID at commit (see `append_rows`), and
//! hands each ID to a broadcast channel that [`Leases::event_feed`]
//! subscribes to.
//!
//! Invariants: the feed lives exactly as long as the store (its task is
//! aborted when the last clone goes); the broadcast sender never changes,
//! so receivers keep working when the listening connection breaks and is
//! opened again after [`RELISTEN_AFTER`]. A wake-up is a hint, not a
//! record: notifications sent while the connection is down are lost, and a
//! slow receiver may lag, so readers still read the log itself.
//!
//! [`Leases::event_feed`]: cc_core::Leases::event_feed

use crate::pool::CONNECT_TIMEOUT;
use cc_core::{SessionId, StoreError};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};
use tokio::task::AbortHandle;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, NoTls, Socket};

/// The notification channel every append notifies.
pub(crate) const CHANNEL: &str = "cc_events";
/// Wake-ups a receiver may fall behind by before it lags (and skips to
/// the newest): a burst of appends across the cluster, not a backlog.
const FEED_CAPACITY: usize = 1024;
/// Pause before opening the listening connection again after it broke,
/// so a database that is down is not hammered.
const RELISTEN_AFTER: Duration = Duration::from_millis(500);
/// How often the idle listening connection is checked: a cut that no
/// packet reports (a dead peer behind a firewall) is found within
/// [`PING_EVERY`] + [`PING_TIMEOUT`].
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A store's feed; stops listening when dropped.
pub(crate) struct Feed {
    sender: broadcast::Sender<SessionId>,
    task: AbortHandle,
}

impl Feed {
    /// Opens the listening connection, and returns once it listens (so an
    /// append after `connect` returns is never missed); a first connection
    /// that fails is the store's failure to connect.
    pub(crate) async fn start(mut config: Config) -> Result<Self, StoreError> {
        config.connect_timeout(CONNECT_TIMEOUT);
        let (sender, _) = broadcast::channel(FEED_CAPACITY);
        let (ready, listening) = oneshot::channel();
        let task = tokio::spawn(listen(config, sender.clone(), ready));
        match listening.await {
            Ok(Ok(())) => Ok(Self {
                sender,
                task: task.abort_handle(),
            }),
            Ok(Err(e)) => {
                task.abort();
                Err(e)
            }
            Err(_) => {
                task.abort();
                Err(StoreError::Backend("the event listener stopped".into()))
            }
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<SessionId> {
        self.sender.subscribe()
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens until aborted, opening the connection again whenever it
/// breaks; `ready` hears how the first attempt went.
async fn listen(
    config: Config,
    sender: broadcast::Sender<SessionId>,
    ready: oneshot::Sender<Result<(), StoreError>>,
) {
    let mut ready = Some(ready);
    loop {
        let ended = listen_once(&config, &sender, &mut ready).await;
        if let Some(first) = ready.take() {
            let _ = first.send(ended);
            return;
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
}

/// One listening connection, until it breaks (the reason): drives it
/// (forwarding each notification) while issuing `LISTEN` and then a
/// periodic ping on it.
async fn listen_once(
    config: &Config,
    sender: &broadcast::Sender<SessionId>,
    ready: &mut Option<oneshot::Sender<Result<(), StoreError>>>,
) -> Result<(), StoreError> {
    let (client, mut connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| StoreError::Unavailable(format!("connecting to PostgreSQL to listen: {e}")))?;
    let ended = tokio::select! {
        ended = forward(&mut connection, sender) => ended,
        ended = watch(&client, ready) => ended,
    };
    Err(ended)
}

/// Drives the connection, handing each notification on `cc_events` to the
/// feed, until the connection ends.
async fn forward(
    connection: &mut Connection<Socket, NoTlsStream>,
    sender: &broadcast::Sender<SessionId>,
) -> StoreError {
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                // Another program's payload on our channel is ignored.
                if let Some(id) = SessionId::parse(n.payload()) {
                    // No receiver is not an error.
                    let _ = sender.send(id);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return StoreError::Unavailable(format!("event listener: {e}")),
            None => return StoreError::Unavailable("event listener: connection closed".into()),
        }
    }
}

/// Listens, says so through `ready`, then pings until a ping fails.
async fn watch(
    client: &Client,
    ready: &mut Option<oneshot::Sender<Result<(), StoreError>>>,
) -> StoreError {
    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        return crate::classify("listen for events", &e);
    }
    if let Some(first) = ready.take() {
        let _ = first.send(Ok(()));
    }
    loop {
        tokio::time::sleep(PING_EVERY).await;
        match tokio::time::timeout(PING_TIMEOUT, client.batch_execute("SELECT 1")).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return crate::classify("event listener ping", &e),
            Err(_) => {
                return StoreError::Unavailable(
                    "event listener: the database did not answer a ping".into(),
                )
            }
        }
    }
}
