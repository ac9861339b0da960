//! What the machine and the processes cost: this process's CPU time and
//! memory from `/proc/self` (the orchestrator runs in-process in the bench,
//! so these figures are the orchestrator's plus the bench's own clients),
//! a container's memory from its cgroup, the machine's description, and a
//! small `docker` CLI helper.

use serde::Serialize;
use std::time::Duration;
use tokio::process::Command;

/// CPU time and memory of this process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Resident set size now (`VmRSS`).
    pub rss_bytes: u64,
    /// Peak resident set size so far (`VmHWM`).
    pub peak_rss_bytes: u64,
}

/// Clock ticks per second of `/proc/*/stat` times. Linux fixes USER_HZ at
/// 100 on every architecture the project targets; `getconf` confirms it.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn proc_self() -> Option<ProcSample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(ProcSample {
        cpu_secs: (utime + stime) / clock_ticks(),
        rss_bytes: status_kib(&status, "VmRSS:")? * 1024,
        peak_rss_bytes: status_kib(&status, "VmHWM:")? * 1024,
    })
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A container's memory use in bytes from its cgroup, without the inactive
/// page cache (what `docker stats` shows). cgroup v1 and v2, both drivers.
pub fn container_memory(container_id: &str) -> Option<u64> {
    let v1 = format!("/sys/fs/cgroup/memory/docker/{container_id}");
    if let Ok(usage) = std::fs::read_to_string(format!("{v1}/memory.usage_in_bytes")) {
        let usage: u64 = usage.trim().parse().ok()?;
        let inactive = stat_value(&format!("{v1}/memory.stat"), "total_inactive_file");
        return Some(usage.saturating_sub(inactive.unwrap_or(0)));
    }
    for dir in [
        format!("/sys/fs/cgroup/system.slice/docker-{container_id}.scope"),
        format!("/sys/fs/cgroup/docker/{container_id}"),
    ] {
        if let Ok(cur) = std::fs::read_to_string(format!("{dir}/memory.current")) {
            let cur: u64 = cur.trim().parse().ok()?;
            let inactive = stat_value(&format!("{dir}/memory.stat"), "inactive_file");
            return Some(cur.saturating_sub(inactive.unwrap_or(0)));
        }
    }
    None
}

fn stat_value(path: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The machine the figures came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub docker_version: String,
    /// 1-minute load average when the run started: other work on the machine.
    pub load_at_start: f64,
    pub cgroup: String,
}

pub async fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let docker_version = docker(&["version", "--format", "{{.Server.Version}}"])
        .await
        .unwrap_or_else(|e| format!("unknown ({e})"));
    Machine {
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into()),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_bytes: status_kib(&meminfo, "MemTotal:").unwrap_or(0) * 1024,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        docker_version,
        load_at_start: load_average(),
        cgroup: if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "v2".into()
        } else {
            "v1".into()
        },
    }
}

pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Runs `docker ARGS`, returning trimmed stdout, or stderr as the error.
pub async fn docker(args: &[&str]) -> Result<String, String> {
    let out = tokio::time::timeout(
        DOCKER_CLI_TIMEOUT,
        Command::new("docker")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("`docker {}` timed out", args.first().unwrap_or(&"")))?
    .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "`docker {}` failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A loaded 2-core machine can take tens of seconds for one Docker call.
const DOCKER_CLI_TIMEOUT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let s = proc_self().expect("/proc/self is readable on Linux");
        assert!(s.rss_bytes > 0);
        assert!(s.peak_rss_bytes >= s.rss_bytes);
        assert!(s.cpu_secs >= 0.0);
    }

    #[test]
    fn status_fields_parse_in_kib() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }
}
