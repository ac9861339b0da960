//! A reader of one session's events: everything after `since`, then live
//! events, each exactly once and in order.
//!
//! Events are stored before they are broadcast, so whatever the broadcast
//! channel drops (a slow reader lagging) or delivered before the reader
//! subscribed is read back from the store. Deduplication is by `seq`.

use super::{Inner, MAX_EVENTS_PAGE};
use crate::error::CoreError;
use crate::ids::SessionId;
use crate::seams::Store;
use cc_wire::api::ServerMessage;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast;

pub struct Subscription<S> {
    store: Arc<dyn StoreRef<S>>,
    id: SessionId,
    last: u64,
    backlog: VecDeque<ServerMessage>,
    live: Option<broadcast::Receiver<ServerMessage>>,
    /// The store may hold events we have not delivered.
    behind: bool,
}

/// Lets a subscription reach the store without naming the runtime and
/// agent types.
trait StoreRef<S>: Send + Sync {
    fn store(&self) -> &S;
}

impl<R: Send + Sync, A: Send + Sync, S: Send + Sync> StoreRef<S> for Inner<R, A, S> {
    fn store(&self) -> &S {
        &self.store
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
        }
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
                        return Ok(None);
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
