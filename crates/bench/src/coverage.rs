//! Test coverage, read from the summary `cargo llvm-cov --json
//! --summary-only` writes (`scripts/coverage.sh` makes it). The bench does
//! not run the instrumented test suite itself: that is a full rebuild of the
//! workspace, longer than the whole bench.

use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoverageReport {
    /// Line coverage of the workspace, percent.
    pub lines_percent: Option<f64>,
    pub functions_percent: Option<f64>,
    pub regions_percent: Option<f64>,
    pub source: String,
}

pub fn read(path: Option<&Path>) -> CoverageReport {
    let Some(path) = path else {
        return not_measured(
            "not measured in this run: pass --coverage <summary.json> from scripts/coverage.sh"
                .into(),
        );
    };
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()));
    match parsed {
        Ok(v) => {
            let totals = &v["data"][0]["totals"];
            let pct = |k: &str| totals[k]["percent"].as_f64();
            CoverageReport {
                lines_percent: pct("lines"),
                functions_percent: pct("functions"),
                regions_percent: pct("regions"),
                source: path.display().to_string(),
            }
        }
        Err(e) => not_measured(format!("cannot read {}: {e}", path.display())),
    }
}

fn not_measured(source: String) -> CoverageReport {
    CoverageReport {
        lines_percent: None,
        functions_percent: None,
        regions_percent: None,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llvm_cov_summaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cov.json");
        std::fs::write(
            &p,
            r#"{"data":[{"totals":{"lines":{"count":10,"covered":9,"percent":90.0},"functions":{"percent":80.5},"regions":{"percent":70.0}}}],"type":"llvm.coverage.json.export"}"#,
        )
        .unwrap();
        let r = read(Some(&p));
        assert_eq!(r.lines_percent, Some(90.0));
        assert_eq!(r.functions_percent, Some(80.5));
        assert!(read(None).lines_percent.is_none());
        assert!(read(Some(&dir.path().join("none")))
            .source
            .contains("cannot read"));
    }
}
