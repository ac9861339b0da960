//! The report: JSON (every raw summary) and the table a person reads, with
//! the ratios against the baselines.

use crate::api::ApiResult;
use crate::audit::AuditReport;
use crate::command::CommandResult;
use crate::concurrency::ConcurrencyResult;
use crate::coverage::CoverageReport;
use crate::fanout::FanoutResult;
use crate::image::ImageReport;
use crate::push::PushResult;
use crate::spawn::SpawnResult;
use crate::stats::Summary;
use crate::system::Machine;
use crate::{BenchError, BenchOptions};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

/// Version of the JSON layout.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub schema: u32,
    pub profile: String,
    pub started_at: String,
    pub duration_secs: f64,
    pub machine: Machine,
    pub image: String,
    /// The OCI runtime sessions ran under (`None`: Docker's default).
    pub container_runtime: Option<String>,
    pub caveat: String,
    pub spawn: Option<SpawnResult>,
    pub command: Option<CommandResult>,
    pub concurrency: Option<ConcurrencyResult>,
    pub pooled_burst: Option<crate::concurrency::PooledBurstResult>,
    pub fanout: Option<FanoutResult>,
    pub api: Option<ApiResult>,
    pub push: Option<PushResult>,
    pub sleep: Option<crate::sleep::SleepResult>,
    pub replicas: Option<crate::replicas::ReplicasResult>,
    pub kubernetes: Option<crate::kubernetes::KubernetesResult>,
    pub audit: Option<AuditReport>,
    #[serde(rename = "imageSize")]
    pub image_report: Option<ImageReport>,
    pub coverage: CoverageReport,
    /// Real errors of the run (never slowness); non-empty fails the command.
    pub failures: Vec<String>,
}

impl Report {
    pub(crate) fn new(opts: &BenchOptions, machine: Machine, started_at: String) -> Self {
        Self {
            schema: SCHEMA,
            profile: opts.profile.to_owned(),
            started_at,
            duration_secs: 0.0,
            caveat: format!(
                "Measured on a shared machine (1-minute load {:.2} at start, other work running): figures are noisy; compare ratios from the same run.",
                machine.load_at_start
            ),
            machine,
            image: opts.image.clone(),
            container_runtime: opts.container_runtime.clone(),
            spawn: None,
            command: None,
            concurrency: None,
            pooled_burst: None,
            fanout: None,
            api: None,
            push: None,
            sleep: None,
            replicas: None,
            kubernetes: None,
            audit: None,
            image_report: None,
            coverage: crate::coverage::read(None),
            failures: Vec::new(),
        }
    }

    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|source| BenchError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// The table and the facts beside it, for a terminal or the README.
    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "ClaudeCluster bench ({}) — {} × {}, {:.1} GiB, Linux {}, Docker {}, cgroup {}; {:.0} s",
            self.profile,
            m.cpus,
            m.cpu_model,
            m.memory_bytes as f64 / GIB,
            m.kernel,
            m.docker_version,
            m.cgroup,
            self.duration_secs
        );
        let _ = writeln!(t, "image {}", self.image);
        if let Some(r) = &self.container_runtime {
            let _ = writeln!(
                t,
                "sessions and the docker run baseline under the OCI runtime {r}; Claude Code driven directly under Docker's default"
            );
        }
        let _ = writeln!(t, "{}", self.caveat);
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "{:<34} {:>4} {:>9} {:>9} {:>9}   {:<28} {:>7}",
            "latency", "n", "p50", "p95", "p99", "baseline p50", "ratio"
        );
        if let Some(s) = &self.spawn {
            row(
                &mut t,
                "spawn cold: create → ready",
                s.cold_ms.as_ref(),
                s.docker_run_ms
                    .as_ref()
                    .map(|b| format!("docker run → healthy {}", ms(b.p50))),
                s.ratio_p50,
            );
            for (state, st) in &s.stages_ms {
                row(
                    &mut t,
                    &format!("  create → {state} (timestamp)"),
                    Some(st),
                    None,
                    None,
                );
            }
            match &s.warm_ms {
                Some(w) => row(
                    &mut t,
                    "spawn warm: create → ready (pool)",
                    Some(w),
                    s.docker_run_ms
                        .as_ref()
                        .map(|b| format!("docker run → healthy {}", ms(b.p50))),
                    crate::spawn::ratio(Some(w), s.docker_run_ms.as_ref()),
                ),
                None => {
                    let _ = writeln!(t, "{:<34} {}", "spawn warm (pool)", s.warm_note);
                }
            }
        }
        if let Some(c) = &self.command {
            row(
                &mut t,
                "command → first output",
                c.ours_ms.as_ref(),
                c.direct_ms
                    .as_ref()
                    .map(|d| format!("Claude Code direct {}", ms(d.p50))),
                c.ratio_p50,
            );
            if let (Some(p50), Some(p95)) = (c.overhead_p50_ms, c.overhead_p95_ms) {
                let _ = writeln!(
                    t,
                    "{:<34} {:>4} {:>9} {:>9}",
                    "  our overhead (ours − direct)",
                    "",
                    signed_ms(p50),
                    signed_ms(p95)
                );
            }
            for (name, s) in [
                ("  client → sessiond (timestamps)", &c.to_sessiond_ms),
                ("  in the container (timestamps)", &c.in_container_ms),
                ("  sessiond → client (timestamps)", &c.back_ms),
            ] {
                row(&mut t, name, s.as_ref(), None, None);
            }
        }
        if let Some(c) = &self.concurrency {
            row(
                &mut t,
                &format!("{} at once: create → ready", c.sessions),
                c.ready_latency_ms.as_ref(),
                None,
                None,
            );
            row(
                &mut t,
                &format!("{} at once: turn", c.sessions),
                c.turn_latency_ms.as_ref(),
                None,
                None,
            );
        }
        if let Some(b) = &self.pooled_burst {
            row(
                &mut t,
                &format!("{} at once, warm pool: → ready", b.sessions),
                b.ready_latency_ms.as_ref(),
                None,
                None,
            );
        }
        if let Some(f) = &self.fanout {
            row(
                &mut t,
                &format!("fan-out lag, {} watchers", f.watchers),
                f.lag_ms.as_ref(),
                None,
                None,
            );
        }
        if let Some(a) = &self.api {
            row(
                &mut t,
                &format!("GET status, {} clients", a.clients),
                a.latency_ms.as_ref(),
                None,
                None,
            );
        }
        if let Some(p) = &self.push {
            // One sample each: its p50 is the value.
            let create = Summary::of_values(&Vec::from_iter(p.create_ms));
            let git_create = Summary::of_values(&Vec::from_iter(p.git_create_ms));
            row(
                &mut t,
                "push creating the branch",
                create.as_ref(),
                p.git_create_ms.map(|g| format!("plain git push {}", ms(g))),
                crate::spawn::ratio(create.as_ref(), git_create.as_ref()),
            );
            row(
                &mut t,
                "push fast-forward",
                p.fast_forward_ms.as_ref(),
                p.git_fast_forward_ms
                    .as_ref()
                    .map(|g| format!("plain git push {}", ms(g.p50))),
                p.ratio_p50,
            );
            if let (Some(p50), Some(p95)) = (p.overhead_p50_ms, p.overhead_p95_ms) {
                let _ = writeln!(
                    t,
                    "{:<34} {:>4} {:>9} {:>9}",
                    "  our overhead (ours − git push)",
                    "",
                    signed_ms(p50),
                    signed_ms(p95)
                );
            }
        }
        if let Some(z) = &self.sleep {
            let create = z
                .create_ms
                .as_ref()
                .map(|c| format!("create → ready {}", ms(c.p50)));
            row(
                &mut t,
                "sleep: POST sleep → asleep",
                z.sleep_ms.as_ref(),
                None,
                None,
            );
            row(
                &mut t,
                "wake: POST wake → ready",
                z.wake_ms.as_ref(),
                create,
                crate::spawn::ratio(z.wake_ms.as_ref(), z.create_ms.as_ref()),
            );
            row(
                &mut t,
                "fork: POST fork → fork ready",
                z.fork_ms.as_ref(),
                z.create_ms
                    .as_ref()
                    .map(|c| format!("create → ready {}", ms(c.p50))),
                crate::spawn::ratio(z.fork_ms.as_ref(), z.create_ms.as_ref()),
            );
            row(
                &mut t,
                "workspace check: every volume measured",
                z.workspace_check_ms.as_ref(),
                None,
                None,
            );
            let awake = z
                .awake_memory_bytes
                .map_or("?".into(), |b| format!("{:.0} MiB", a_mib(b)));
            let disk = z
                .workspace_bytes
                .as_ref()
                .map_or("?".into(), |d| format!("{:.1} MiB", d.p50 / 1048576.0));
            let _ = writeln!(
                t,
                "  {} sessions: containers' memory awake {awake}, asleep {} containers left (0 bytes); workspace kept per sleeping session {disk}",
                z.sessions, z.containers_asleep
            );
        }
        if let Some(r) = &self.replicas {
            let sqlite = |s: Option<&Summary>, what: &str| {
                s.map(|s| format!("{what} on SQLite {}", ms(s.p50)))
            };
            row(
                &mut t,
                "PostgreSQL: create → ready",
                r.spawn_ms.as_ref(),
                sqlite(
                    self.spawn.as_ref().and_then(|s| s.cold_ms.as_ref()),
                    "the same",
                ),
                crate::spawn::ratio(
                    r.spawn_ms.as_ref(),
                    self.spawn.as_ref().and_then(|s| s.cold_ms.as_ref()),
                ),
            );
            row(
                &mut t,
                "PostgreSQL: command → first output",
                r.command_ms.as_ref(),
                sqlite(
                    self.command.as_ref().and_then(|c| c.ours_ms.as_ref()),
                    "the same",
                ),
                crate::spawn::ratio(
                    r.command_ms.as_ref(),
                    self.command.as_ref().and_then(|c| c.ours_ms.as_ref()),
                ),
            );
            row(
                &mut t,
                "failover: kill -9 → served by B",
                r.failover_ms.as_ref(),
                Some("lease 6 s, renewed every 2 s".into()),
                None,
            );
        }
        if let Some(k) = &self.kubernetes {
            let bare = k
                .bare_pod_ms
                .as_ref()
                .map(|b| format!("bare Pod → Running {}", ms(b.p50)));
            row(
                &mut t,
                "Kubernetes cold: create → ready",
                k.cold_ms.as_ref(),
                bare.clone(),
                crate::spawn::ratio(k.cold_ms.as_ref(), k.bare_pod_ms.as_ref()),
            );
            row(
                &mut t,
                "Kubernetes warm: create → ready",
                k.warm_ms.as_ref(),
                bare,
                crate::spawn::ratio(k.warm_ms.as_ref(), k.bare_pod_ms.as_ref()),
            );
        }
        let _ = writeln!(t);
        if let Some(c) = &self.concurrency {
            let o = &c.orchestrator;
            let _ = writeln!(
                t,
                "concurrency: {} sessions, {} ready in {:.1} s, {} turns done in {:.1} s, {} errors",
                c.sessions, c.ready, c.all_ready_secs, c.turns_ok, c.all_turns_secs, c.errors
            );
            if let (Some(b), Some(a)) = (o.before, o.after) {
                let _ = writeln!(
                    t,
                    "  orchestrator (in-process, bench clients included): {:.1} CPU s over {:.1} s = {:.2} cores; RSS {:.0} → {:.0} MiB, peak {:.0} MiB",
                    o.cpu_secs.unwrap_or(0.0),
                    o.wall_secs,
                    o.avg_cores.unwrap_or(0.0),
                    a_mib(b.rss_bytes),
                    a_mib(a.rss_bytes),
                    a_mib(a.peak_rss_bytes)
                );
            }
            let mem = |s: Option<&Summary>| {
                s.map_or("n/a".to_owned(), |s| {
                    format!("p50 {:.0} MiB, max {:.0} MiB", s.p50, s.max)
                })
            };
            let _ = writeln!(
                t,
                "  per session container: idle {}; during a turn (peak) {}",
                mem(c.memory_idle_mib.as_ref()),
                mem(c.memory_turn_peak_mib.as_ref())
            );
        }
        if let Some(b) = &self.pooled_burst {
            let _ = writeln!(
                t,
                "warm pool burst: {} sessions from a pool of {} (filled in {}), {} ready in {:.1} s, {} errors",
                b.sessions,
                b.sessions,
                b.pool_fill_secs
                    .map_or("n/a".to_owned(), |s| format!("{s:.1} s")),
                b.ready,
                b.all_ready_secs,
                b.errors
            );
        }
        if let Some(f) = &self.fanout {
            let _ = writeln!(
                t,
                "fan-out: {} watchers, {} events each (p50), {} incomplete",
                f.watchers,
                f.events_per_watcher.as_ref().map_or(0.0, |s| s.p50),
                f.incomplete_watchers
            );
        }
        if let Some(a) = &self.api {
            let _ = writeln!(
                t,
                "API: {:.0} requests/s for GET status ({} requests in {:.1} s, {} clients, {} errors)",
                a.requests_per_sec, a.requests, a.seconds, a.clients, a.errors
            );
        }
        let _ = writeln!(t);
        match &self.audit {
            Some(a) => {
                let _ = writeln!(
                    t,
                    "vulnerabilities: {} known in {} locked packages ({} advisories read); {} informational warnings",
                    a.vulnerabilities.len(),
                    a.packages_scanned,
                    a.advisories_read,
                    a.warnings.len()
                );
                for f in a.vulnerabilities.iter().chain(&a.warnings) {
                    let _ = writeln!(
                        t,
                        "  {} {} {} {}: {} (patched: {})",
                        f.id,
                        f.informational.as_deref().unwrap_or("vulnerability"),
                        f.package,
                        f.version,
                        f.title,
                        if f.patched.is_empty() {
                            "none".to_owned()
                        } else {
                            f.patched.join(", ")
                        }
                    );
                }
            }
            None => {
                let _ = writeln!(
                    t,
                    "vulnerabilities: not scanned (no Cargo.lock or advisory database)"
                );
            }
        }
        if let Some(i) = &self.image_report {
            let _ = writeln!(t, "image: {:.0} MB", i.size_bytes as f64 / 1e6);
            for l in i.layers.iter().take(5) {
                let _ = writeln!(
                    t,
                    "  {:>7.1} MB  {}",
                    l.size_bytes as f64 / 1e6,
                    l.created_by
                );
            }
        }
        let c = &self.coverage;
        match c.lines_percent {
            Some(l) => {
                let _ = writeln!(
                    t,
                    "coverage: {:.1} % of lines, {:.1} % of functions ({})",
                    l,
                    c.functions_percent.unwrap_or(0.0),
                    c.source
                );
            }
            None => {
                let _ = writeln!(t, "coverage: {}", c.source);
            }
        }
        if !self.failures.is_empty() {
            let _ = writeln!(t);
            let _ = writeln!(t, "FAILURES ({}):", self.failures.len());
            for f in &self.failures {
                let _ = writeln!(t, "  {f}");
            }
        }
        t
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn a_mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn row(t: &mut String, name: &str, s: Option<&Summary>, base: Option<String>, ratio: Option<f64>) {
    let ratio = ratio.map_or(String::new(), |r| format!("{r:.2}×"));
    let base = base.unwrap_or_default();
    let _ = match s {
        Some(s) => writeln!(
            t,
            "{:<34} {:>4} {:>9} {:>9} {:>9}   {:<28} {:>7}",
            name,
            s.n,
            ms(s.p50),
            ms(s.p95),
            ms(s.p99),
            base,
            ratio
        ),
        None => writeln!(t, "{name:<34} no samples   {base}"),
    };
}

/// Milliseconds as a person reads them: `0.8 ms`, `42 ms`, `1.84 s`.
pub fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn signed_ms(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", ms(v))
    } else {
        format!("−{}", ms(-v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_read_naturally() {
        assert_eq!(ms(0.84), "0.8 ms");
        assert_eq!(ms(42.4), "42 ms");
        assert_eq!(ms(1840.0), "1.84 s");
        assert_eq!(signed_ms(-3.0), "−3.0 ms");
        assert_eq!(signed_ms(12.0), "+12 ms");
    }
}
