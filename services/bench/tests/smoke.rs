//! Smoke test of the benchmark harness: the quick event-log-append and revocation
//! scenarios against SQLite and the real PostgreSQL, run through the binary as documented.
//! Asserts only that the JSON report has its parts and every figure is positive, never
//! a timing.

use std::process::Command;

use serde_json::Value;

#[test]
fn quick_append_and_revocation_write_a_report_with_positive_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_certledger-bench"))
        .args(["append", "revocation", "--quick", "--json"])
        .arg(&json)
        .output()
        .expect("run certledger-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "certledger-bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("median"), "no table on stdout:\n{stdout}");
    assert!(
        stderr.contains("[bench]"),
        "no progress on stderr:\n{stderr}"
    );

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read report")).expect("JSON");
    assert!(
        report["machine"]["cores"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(report["machine"]["kernel"].is_string(), "{report}");
    assert!(
        report["machine"]["calibration"]["loopback_round_trip_us"]
            .as_f64()
            .is_some_and(|us| us > 0.0),
        "{report}"
    );
    assert!(
        report["settings"]["quick"].as_bool().unwrap_or(false),
        "{report}"
    );
    let figures = report["figures"].as_array().expect("figures");
    for backend in ["sqlite", "postgres"] {
        for writers in [1, 8, 64] {
            let name = format!("{backend} single-event appends, {writers} writers");
            assert!(
                figures.iter().any(|f| f["name"] == name.as_str()),
                "no figure {name:?} in {report}"
            );
        }
        assert!(
            figures.iter().any(|f| f["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{backend} batched")))),
            "no batched figure for {backend}"
        );
    }
    for scenario in ["append", "revocation"] {
        assert!(
            figures.iter().any(|f| f["scenario"] == scenario),
            "no {scenario} figures"
        );
    }
    for figure in figures {
        for key in ["min", "median", "max"] {
            let v = figure[key].as_f64().unwrap_or(0.0);
            assert!(
                v > 0.0,
                "{key} of {} is not positive: {figure}",
                figure["name"]
            );
        }
        assert!(!figure["samples"].as_array().expect("samples").is_empty());
    }
}
