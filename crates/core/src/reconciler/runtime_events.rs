//! Follows the runtime's container events and hands exits to the session
//! actors, so a killed or OOM-killed container ends its session (`error`
//! with the reason, resources removed) within moments instead of at the
//! next command.

use crate::seams::{Agent, Runtime, Store};
use crate::session::Manager;
use futures_util::StreamExt;
use std::time::Duration;

/// Pause before subscribing again after the feed broke.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

pub async fn run<R: Runtime, A: Agent, S: Store>(manager: Manager<R, A, S>) {
    loop {
        match manager.runtime().events().await {
            Ok(mut feed) => {
                // Whatever happened while we were not subscribed.
                manager.check_live_containers().await;
                while let Some(ev) = feed.next().await {
                    match ev {
                        Ok(ev) => {
                            let m = manager.clone();
                            // An actor busy with a slow call must not stall
                            // the feed for every other session.
                            tokio::spawn(async move { m.on_runtime_event(ev).await });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "runtime event feed broke");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "subscribing to runtime events"),
        }
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}
