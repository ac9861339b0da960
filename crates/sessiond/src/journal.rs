//! The event journal: every state change, command, Claude Code output line
//! and exit, numbered from 1 without gaps, plus the NDJSON streams that
//! replay it (`since=N`) and follow it live.
//!
//! Entries live in memory only. Every entry goes through [`Journal::append`],
//! the single place where persistence (e.g. appending NDJSON to a file) can
//! be added later without touching the callers or the followers.
//!
//! Followers never lose or duplicate an entry between the backlog and the
//! live part: they do not receive entries through a channel at all. They keep
//! a cursor (the last `seq` they sent), copy everything after it out of the
//! journal, and wait on a [`watch`] channel that only says "something new
//! was appended" (or "closed"). Because the wake-up is subscribed to before
//! the first read and the data always comes from the journal itself, an
//! append that races with a read is either seen by the read or wakes the
//! follower up afterwards; the cursor makes re-reads harmless.

use bytes::Bytes;
use cc_wire::sessiond::{AgentEvent, JournalEntry};
use futures_util::Stream;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often a following stream sends an empty line when nothing happens.
/// The orchestrator's read times out without traffic, so this lets it tell a
/// quiet session from a dead connection (and makes a proxy or NAT in between
/// keep the connection open).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// The in-memory journal, shared by the API, the setup task and the agent.
pub struct Journal {
    inner: Mutex<Inner>,
    /// Carries the newest `seq`; followers only use it as a wake-up.
    notify: watch::Sender<u64>,
}

struct Inner {
    /// `entries[i].seq == i + 1`.
    entries: Vec<JournalEntry>,
    /// Set on shutdown: followers drain what is left and end their stream.
    closed: bool,
}

impl Default for Journal {
    fn default() -> Self {
        Self::new()
    }
}

impl Journal {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: Vec::new(),
                closed: false,
            }),
            notify: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `entries` half-written
        // (a push either happened or not), so poisoning is safe to ignore.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Journals `event` and returns its `seq`.
    pub fn append(&self, event: AgentEvent) -> u64 {
        let seq = {
            let mut inner = self.lock();
            let seq = inner.entries.len() as u64 + 1;
            let entry = JournalEntry {
                seq,
                ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                event,
            };
            // Persistence hook: write `entry` out here, before it becomes
            // visible, so a restarted daemon could reload it.
            inner.entries.push(entry);
            seq
        };
        self.notify.send_replace(seq);
        seq
    }

    /// Sequence number of the newest entry (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.lock().entries.len() as u64
    }

    /// Ends every following stream once it has sent what is journaled.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.send_modify(|_| {});
    }

    /// Copies of the entries with `seq > since`, in order, and whether the
    /// journal is closed.
    pub(crate) fn since(&self, since: u64) -> (Vec<JournalEntry>, bool) {
        let inner = self.lock();
        let start = usize::try_from(since)
            .unwrap_or(usize::MAX)
            .min(inner.entries.len());
        (inner.entries[start..].to_vec(), inner.closed)
    }

    /// The NDJSON body for `GET /v1/events`: every entry with `seq > since`,
    /// one JSON object per line; with `follow`, the stream then stays open,
    /// carries new entries as they are journaled and sends an empty line
    /// after `heartbeat` without news.
    pub fn stream(
        self: &Arc<Self>,
        since: u64,
        follow: bool,
        heartbeat: Duration,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        let state = Follower {
            journal: Arc::clone(self),
            // Subscribed before the first read (see the module docs).
            wake: self.notify.subscribe(),
            cursor: since,
            follow,
            heartbeat,
            done: false,
        };
        futures_util::stream::unfold(state, |mut f| async move {
            let chunk = f.next_chunk().await?;
            Some((Ok(chunk), f))
        })
    }
}

struct Follower {
    journal: Arc<Journal>,
    wake: watch::Receiver<u64>,
    cursor: u64,
    follow: bool,
    heartbeat: Duration,
    done: bool,
}

impl Follower {
    /// The next piece of the body, or `None` at its end.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.done {
                return None;
            }
            // Mark the current version seen *before* reading: an append after
            // this point changes the version again and wakes us below.
            self.wake.borrow_and_update();
            let (entries, closed) = self.journal.since(self.cursor);
            if !entries.is_empty() {
                let mut buf = Vec::new();
                for entry in &entries {
                    // Serializing these plain types cannot fail.
                    if serde_json::to_writer(&mut buf, entry).is_ok() {
                        buf.push(b'\n');
                    }
                    self.cursor = entry.seq;
                }
                return Some(Bytes::from(buf));
            }
            if !self.follow || closed {
                self.done = true;
                return None;
            }
            match tokio::time::timeout(self.heartbeat, self.wake.changed()).await {
                Ok(Ok(())) => continue,
                // The journal (and its sender) is gone: nothing more will come.
                Ok(Err(_)) => {
                    self.done = true;
                    return None;
                }
                Err(_elapsed) => return Some(Bytes::from_static(b"\n")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_wire::sessiond::AgentState;
    use futures_util::StreamExt;

    fn stderr(n: u64) -> AgentEvent {
        AgentEvent::Stderr {
            line: format!("line {n}"),
        }
    }

    /// Splits received chunks into entries; counts heartbeats.
    fn parse(chunks: &[Bytes]) -> (Vec<JournalEntry>, usize) {
        let mut entries = Vec::new();
        let mut heartbeats = 0;
        for chunk in chunks {
            for line in chunk.split(|b| *b == b'\n') {
                if line.is_empty() {
                    continue;
                }
                entries.push(serde_json::from_slice(line).expect("entry json"));
            }
            if chunk.as_ref() == b"\n" {
                heartbeats += 1;
            }
        }
        (entries, heartbeats)
    }

    #[test]
    fn seq_starts_at_one_and_has_no_gaps() {
        let j = Journal::new();
        assert_eq!(j.last_seq(), 0);
        assert_eq!(
            j.append(AgentEvent::State {
                state: AgentState::Cloning,
                message: None
            }),
            1
        );
        assert_eq!(j.append(stderr(2)), 2);
        assert_eq!(j.last_seq(), 2);
        let all = j.since(0).0;
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(j.since(1).0.len(), 1);
        assert!(j.since(2).0.is_empty());
        assert!(j.since(99).0.is_empty());
        // RFC 3339 with milliseconds, UTC.
        let ts = &all[0].ts;
        assert_eq!(ts.len(), "2024-01-01T00:00:00.000Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[tokio::test]
    async fn non_following_stream_ends_after_backlog() {
        let j = Arc::new(Journal::new());
        for n in 1..=3 {
            j.append(stderr(n));
        }
        let chunks: Vec<Bytes> = j
            .stream(1, false, HEARTBEAT_INTERVAL)
            .map(|c| c.unwrap())
            .collect()
            .await;
        let (entries, _) = parse(&chunks);
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn backlog_then_live_without_loss_or_duplicates() {
        const TOTAL: u64 = 2000;
        let j = Arc::new(Journal::new());
        for n in 1..=10 {
            j.append(stderr(n));
        }
        // Followers start while a writer is appending concurrently, at
        // different points of the backlog.
        let writer = {
            let j = Arc::clone(&j);
            tokio::spawn(async move {
                for n in 11..=TOTAL {
                    j.append(stderr(n));
                    if n % 97 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        let mut followers = Vec::new();
        for since in [0, 5, 10] {
            let j = Arc::clone(&j);
            followers.push(tokio::spawn(async move {
                let mut stream = Box::pin(j.stream(since, true, HEARTBEAT_INTERVAL));
                let mut chunks = Vec::new();
                let mut seen = since;
                while seen < TOTAL {
                    let chunk = stream.next().await.unwrap().unwrap();
                    let (entries, _) = parse(std::slice::from_ref(&chunk));
                    if let Some(last) = entries.last() {
                        seen = last.seq;
                    }
                    chunks.push(chunk);
                }
                (since, parse(&chunks).0)
            }));
        }
        writer.await.unwrap();
        for f in followers {
            let (since, entries) = f.await.unwrap();
            let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
            let expected: Vec<u64> = (since + 1..=TOTAL).collect();
            assert_eq!(seqs, expected, "follower since={since}");
            for e in entries {
                assert_eq!(e.event, stderr(e.seq));
            }
        }
    }

    #[tokio::test]
    async fn heartbeat_when_idle_and_end_on_close() {
        let j = Arc::new(Journal::new());
        j.append(stderr(1));
        let mut stream = Box::pin(j.stream(0, true, Duration::from_millis(30)));
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(parse(&[first]).0.len(), 1);
        // Nothing new: a heartbeat (an empty line) arrives.
        let hb = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("heartbeat in time")
            .unwrap()
            .unwrap();
        assert_eq!(hb.as_ref(), b"\n");
        // Live entry after the heartbeat.
        j.append(stderr(2));
        let live = stream.next().await.unwrap().unwrap();
        let (entries, heartbeats) = parse(&[live]);
        assert_eq!(heartbeats, 0);
        assert_eq!(entries[0].seq, 2);
        // Closing drains what is left, then ends the stream.
        j.append(stderr(3));
        j.close();
        let rest: Vec<Bytes> = stream.map(|c| c.unwrap()).collect().await;
        let (entries, _) = parse(&rest);
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    }
}
