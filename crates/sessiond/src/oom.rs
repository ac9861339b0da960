//! Out-of-memory kills inside the session, counted by the kernel in the
//! container's memory cgroup and put in the journal as they happen.
//!
//! Docker reports such kills itself (its `oom` events); the Kubernetes API
//! shows only the container's own end. The orchestrator takes these
//! reports where its runtime has none. They come from inside the container
//! and count only towards this session's own incidents.

use crate::journal::Journal;
use cc_wire::sessiond::AgentEvent;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the counter is read.
const POLL: Duration = Duration::from_millis(500);

/// Where the kernel counts the cgroup's OOM kills: cgroup v2's
/// `memory.events`, then v1's `memory.oom_control` (both `oom_kill N`,
/// v1 since Linux 4.13).
const COUNTERS: &[&str] = &[
    "/sys/fs/cgroup/memory.events",
    "/sys/fs/cgroup/memory/memory.oom_control",
];

/// The `oom_kill` count in a counter file's text.
pub fn parse_kills(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

fn read(path: &Path) -> Option<u64> {
    parse_kills(&std::fs::read_to_string(path).ok()?)
}

/// Follows the first counter this container has; nothing when it has none
/// (a sandbox such as gVisor shows no cgroup files).
pub fn spawn_watch(journal: Arc<Journal>) {
    spawn_watch_at(COUNTERS.iter().map(PathBuf::from).collect(), journal);
}

fn spawn_watch_at(candidates: Vec<PathBuf>, journal: Arc<Journal>) {
    let Some((path, mut seen)) = candidates
        .into_iter()
        .find_map(|p| read(&p).map(|n| (p, n)))
    else {
        tracing::info!("no memory cgroup counter: out-of-memory kills are not reported from here");
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            let Some(now) = read(&path) else { continue };
            if now > seen {
                tracing::warn!(kills = now - seen, "out-of-memory kill in the session");
                journal.append(AgentEvent::OomKill { kills: now - seen });
            }
            seen = now;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_cgroup_versions_count_kills() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_kills(v2), Some(2));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
        assert_eq!(parse_kills(v1), Some(7));
        assert_eq!(parse_kills("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[tokio::test]
    async fn a_new_kill_is_journalled_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.events");
        std::fs::write(&file, "oom 1\noom_kill 1\n").unwrap();
        let journal = Arc::new(Journal::new());
        spawn_watch_at(
            vec![dir.path().join("absent"), file.clone()],
            journal.clone(),
        );
        // The count at start is history, not news.
        tokio::time::sleep(POLL * 3).await;
        assert_eq!(journal.last_seq(), 0);
        std::fs::write(&file, "oom 3\noom_kill 3\n").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while journal.last_seq() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no report");
            tokio::time::sleep(POLL).await;
        }
        tokio::time::sleep(POLL * 3).await;
        assert_eq!(journal.last_seq(), 1, "one report for one change");
        let entries = journal.since(0).0;
        assert_eq!(entries[0].event, AgentEvent::OomKill { kills: 2 });
    }
}
