//! A reader of one session's events: everything after `since`, then live
//! events, each exactly once and in order.
//!
//! Events are stored before they are broadcast, so whatever the broadcast
//! channel drops (a slow reader lagging) or delivered before the reader
//! subscribed is read back from the store. Deduplication is by `seq`.
//!
//! A session another replica runs has no broadcast here: its events are
//! followed through the store, woken by the store's event feed (PostgreSQL
//! `NOTIFY`, sent as each batch commits) and, as a backstop for a feed that
//! broke, re-read every [`FOLLOW_BACKSTOP`]. Following ends once the session
//! has ended and its last event was delivered; if the session moves to this
//! replica meanwhile, the subscription switches to its broadcast.

use super::{Inner, MAX_EVENTS_PAGE};
use crate::error::CoreError;
use crate::ids::SessionId;
use crate::seams::Store;
use cc_wire::api::ServerMessage;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Longest wait for news of a session followed through the store: the
/// feed wakes a reader at once; this only bounds the delay when a
/// notification was lost (the feed's connection broke and came back).
const FOLLOW_BACKSTOP: Duration = Duration::from_secs(1);
/// Where the store has no feed (one process owns it), how often a
/// followed session is re-read.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub struct Subscription<S> {
    store: Arc<dyn StoreRef<S>>,
    id: SessionId,
    last: u64,
    backlog: VecDeque<ServerMessage>,
    live: Option<broadcast::Receiver<ServerMessage>>,
    /// The store may hold events we have not delivered.
    behind: bool,
    /// Following a session another replica runs: `Some(feed)`, the feed
    /// being `None` where the store has none.
    follow: Option<Option<broadcast::Receiver<SessionId>>>,
}

/// Lets a subscription reach the store without naming the runtime and
/// agent types.
trait StoreRef<S>: Send + Sync {
    fn store(&self) -> &S;
    /// The session's broadcast, once this replica runs it.
    fn live_events(&self, id: &SessionId) -> Option<broadcast::Receiver<ServerMessage>>;
}

impl<R: Send + Sync, A: Send + Sync, S: Send + Sync> StoreRef<S> for Inner<R, A, S> {
    fn store(&self) -> &S {
        &self.store
    }

    fn live_events(&self, id: &SessionId) -> Option<broadcast::Receiver<ServerMessage>> {
        self.handle(id).map(|h| h.events.subscribe())
    }
}

impl<S: Store> Subscription<S> {
    pub(crate) fn new<R: Send + Sync + 'static, A: Send + Sync + 'static>(
        inner: Arc<Inner<R, A, S>>,
        id: SessionId,
        since: u64,
        live: Option<broadcast::Receiver<ServerMessage>>,
    ) -> Self {
        Self {
            store: inner,
            id,
            last: since,
            backlog: VecDeque::new(),
            live,
            behind: true,
            follow: None,
        }
    }

    /// Follows the session through the store until it ends (it runs on
    /// another replica): `feed` is `Some` to follow, with the store's event
    /// feed when it has one.
    pub(crate) fn following(
        mut self,
        feed: Option<Option<broadcast::Receiver<SessionId>>>,
    ) -> Self {
        self.follow = feed;
        self
    }

    /// Waits until the followed session may have news; `false` when it
    /// ended (one last read of the store follows).
    async fn wait_for_news(&mut self) -> Result<bool, CoreError> {
        if let Some(rx) = self.store.live_events(&self.id) {
            // It runs here now: its broadcast from here on.
            self.live = Some(rx);
            self.behind = true;
            return Ok(true);
        }
        let live = self
            .store
            .store()
            .get_session(&self.id)
            .await?
            .is_some_and(|r| r.state.is_live());
        if !live {
            return Ok(false);
        }
        let id = self.id.clone();
        match self.follow.as_mut() {
            Some(Some(feed)) => {
                let wake = async {
                    loop {
                        match feed.recv().await {
                            Ok(s) if s == id => return,
                            Ok(_) => {}
                            // Missed some: re-read to be sure.
                            Err(broadcast::error::RecvError::Lagged(_)) => return,
                            Err(broadcast::error::RecvError::Closed) => {
                                std::future::pending::<()>().await
                            }
                        }
                    }
                };
                let _ = tokio::time::timeout(FOLLOW_BACKSTOP, wake).await;
            }
            _ => tokio::time::sleep(FOLLOW_POLL).await,
        }
        Ok(true)
    }

    /// Sequence number of the last event delivered.
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// The next event; `None` once the session has ended and everything
    /// was delivered.
    pub async fn next(&mut self) -> Result<Option<ServerMessage>, CoreError> {
        loop {
            if let Some(m) = self.backlog.pop_front() {
                if m.seq() > self.last {
                    self.last = m.seq();
                    return Ok(Some(m));
                }
                continue;
            }
            if self.behind || self.live.is_none() {
                let page = self
                    .store
                    .store()
                    .events(&self.id, self.last, MAX_EVENTS_PAGE)
                    .await?;
                if page.is_empty() {
                    if self.live.is_none() {
                        if self.follow.is_none() {
                            return Ok(None);
                        }
                        if !self.wait_for_news().await? {
                            // Ended: one last read, then done.
                            self.follow = None;
                        }
                        continue;
                    }
                    self.behind = false;
                } else {
                    self.backlog.extend(page);
                }
                continue;
            }
            let Some(rx) = self.live.as_mut() else {
                continue;
            };
            match rx.recv().await {
                Ok(m) if m.seq() == self.last + 1 => {
                    self.last = m.seq();
                    return Ok(Some(m));
                }
                Ok(m) if m.seq() <= self.last => {}
                // A gap: the missing events are in the store.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.behind = true,
                Err(broadcast::error::RecvError::Closed) => self.live = None,
            }
        }
    }
}
