//! A small connection pool: at most `size` connections, opened on demand,
//! handed out one task at a time and put back when the task is done.
//!
//! A connection that broke (the server went away, a network error) is
//! dropped instead of put back, so the next checkout opens a fresh one;
//! the pool never holds a connection across requests it cannot use.

use cc_core::StoreError;
use std::sync::Mutex;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Config, NoTls};

/// How long opening one connection may take before the store reports the
/// database unreachable (a request waits at most this long for it).
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) struct Pool {
    config: Config,
    idle: Mutex<Vec<Client>>,
    slots: Semaphore,
}

/// A checked-out connection; returns to the pool when dropped.
pub(crate) struct Conn<'a> {
    client: Option<Client>,
    pool: &'a Pool,
    _slot: SemaphorePermit<'a>,
}

impl Pool {
    pub(crate) fn new(mut config: Config, size: usize) -> Self {
        config.connect_timeout(CONNECT_TIMEOUT);
        Self {
            config,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(size.max(1)),
        }
    }

    pub(crate) async fn get(&self) -> Result<Conn<'_>, StoreError> {
        let slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the connection pool is closed".into()))?;
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            std::iter::from_fn(|| idle.pop()).find(|c| !c.is_closed())
        };
        let client = match idle {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Conn {
            client: Some(client),
            pool: self,
            _slot: slot,
        })
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| StoreError::Unavailable(format!("connecting to PostgreSQL: {e}")))?;
        // The connection task drives the socket; it ends when the client
        // is dropped or the server goes away. Its error also surfaces, with
        // context, on the next query made through the client (which is
        // then closed and never put back), so it is not reported here.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(c);
            }
        }
    }
}
