//! The whole bench on real Docker with a tiny profile: every phase yields
//! its figures, beside its baseline, with no failures; the report renders
//! and round-trips as JSON. Needs the worker image (`scripts/test.sh`).

use cc_bench::BenchOptions;
use std::time::Duration;

const ADVISORY: &str = "```toml\n[advisory]\nid = \"RUSTSEC-2099-0001\"\npackage = \"fixture-crate\"\n\n[versions]\npatched = [\">= 2.0.0\"]\n```\n\n# Fixture advisory\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_profile_measures_every_phase_beside_its_baseline() -> anyhow::Result<()> {
    let image = std::env::var("CLAUDECLUSTER_TEST_IMAGE")
        .unwrap_or_else(|_| cc_testkit::harness::DEFAULT_TEST_IMAGE.into());
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("advisory-db");
    std::fs::create_dir_all(db.join("crates/fixture-crate"))?;
    std::fs::write(
        db.join("crates/fixture-crate/RUSTSEC-2099-0001.md"),
        ADVISORY,
    )?;
    let lock = dir.path().join("Cargo.lock");
    std::fs::write(
        &lock,
        "version = 4\n\n[[package]]\nname = \"fixture-crate\"\nversion = \"1.0.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
    )?;

    let mut opts = BenchOptions::quick(image);
    opts.spawn_samples = 1;
    opts.command_samples = 2;
    opts.sessions = 2;
    opts.watchers = 3;
    opts.api_clients = 2;
    opts.api_duration = Duration::from_secs(1);
    opts.push_samples = 2;
    opts.lockfile = Some(lock);
    opts.advisory_db = Some(db);
    let report = cc_bench::run(&opts, &|_| {}).await?;
    assert!(report.failures.is_empty(), "{:#?}", report.failures);

    let spawn = report.spawn.as_ref().expect("spawn figures");
    assert_eq!(spawn.cold_ms.as_ref().map(|s| s.n), Some(1));
    assert_eq!(spawn.docker_run_ms.as_ref().map(|s| s.n), Some(1));
    assert!(spawn.ratio_p50.is_some_and(|r| r > 0.0));
    assert!(
        spawn.stages_ms.iter().any(|(s, _)| s == "ready"),
        "{:?}",
        spawn.stages_ms
    );
    assert_eq!(spawn.warm_ms.as_ref().map(|s| s.n), Some(1));

    let cmd = report.command.as_ref().expect("command figures");
    assert_eq!(cmd.ours_ms.as_ref().map(|s| s.n), Some(2));
    assert_eq!(cmd.direct_ms.as_ref().map(|s| s.n), Some(2));
    assert!(cmd.overhead_p50_ms.is_some());

    let conc = report.concurrency.as_ref().expect("concurrency figures");
    assert_eq!((conc.ready, conc.turns_ok, conc.errors), (2, 2, 0));
    assert!(conc.orchestrator.avg_cores.is_some());
    assert_eq!(conc.memory_idle_mib.as_ref().map(|s| s.n), Some(2));
    assert!(conc
        .memory_turn_peak_mib
        .as_ref()
        .is_some_and(|s| s.min > 1.0));

    let fan = report.fanout.as_ref().expect("fan-out figures");
    assert_eq!(fan.incomplete_watchers, 0);
    let per_watcher = fan.events_per_watcher.as_ref().expect("events");
    assert!(per_watcher.min >= 3.0 && per_watcher.min == per_watcher.max);
    assert_eq!(
        fan.lag_ms.as_ref().map(|s| s.n as f64),
        Some(per_watcher.min * 3.0)
    );

    let api = report.api.as_ref().expect("API figures");
    assert!(api.requests > 0 && api.errors == 0, "{api:?}");

    let push = report.push.as_ref().expect("push figures");
    assert!(push.create_ms.is_some() && push.git_create_ms.is_some());
    assert_eq!(push.fast_forward_ms.as_ref().map(|s| s.n), Some(2));
    assert_eq!(push.git_fast_forward_ms.as_ref().map(|s| s.n), Some(2));

    let sleep = report.sleep.as_ref().expect("sleep figures");
    assert_eq!(sleep.sleep_ms.as_ref().map(|s| s.n), Some(2));
    assert_eq!(sleep.wake_ms.as_ref().map(|s| s.n), Some(2));
    assert_eq!(sleep.fork_ms.as_ref().map(|s| s.n), Some(2));
    assert_eq!(sleep.containers_asleep, 0, "asleep: no container");
    assert!(push.overhead_p50_ms.is_some());

    let audit = report.audit.as_ref().expect("a scan");
    assert_eq!(audit.vulnerabilities.len(), 1);
    assert_eq!(audit.vulnerabilities[0].id, "RUSTSEC-2099-0001");
    let img = report.image_report.as_ref().expect("image figures");
    assert!(img.size_bytes > 0 && !img.layers.is_empty());
    assert!(report.coverage.lines_percent.is_none());

    let table = report.table();
    for row in [
        "spawn cold: create → ready",
        "docker run → healthy",
        "Claude Code direct",
        "our overhead",
        "spawn warm: create → ready (pool)",
        "fan-out lag, 3 watchers",
        "requests/s",
        "push fast-forward",
        "plain git push",
        "RUSTSEC-2099-0001",
    ] {
        assert!(table.contains(row), "{row} missing from\n{table}");
    }
    let out = dir.path().join("bench.json");
    report.write_json(&out)?;
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    assert_eq!(json["schema"], 1);
    assert_eq!(json["spawn"]["coldMs"]["n"], 1);
    assert!(json["command"]["overheadP50Ms"].is_number());
    Ok(())
}
