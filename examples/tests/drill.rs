//! Runs the `drill` binary end to end and reads the report it writes.

use std::path::Path;
use std::process::{Command, Output};

fn run_drill(out: &Path, extra: &[&str]) -> Output {
    let result = Command::new(env!("CARGO_BIN_EXE_drill"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .output();
    match result {
        Ok(o) => o,
        Err(e) => panic!("cannot run the drill binary: {e}"),
    }
}

fn read(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    }
}

/// The value of a `| key | value |` row of the Markdown summary table.
fn row<'a>(md: &'a str, key: &str) -> &'a str {
    let prefix = format!("| {key} | ");
    md.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|l| l.strip_suffix(" |"))
        .unwrap_or_else(|| panic!("no {key} row in:\n{md}"))
}

/// Milliseconds from a "**12.3 ms**" cell.
fn millis(cell: &str) -> f64 {
    let v = cell
        .trim_start_matches("**")
        .split(" ms")
        .next()
        .and_then(|n| n.parse::<f64>().ok());
    v.unwrap_or_else(|| panic!("not a duration in ms: {cell}"))
}

#[test]
fn a_drill_rehearses_on_the_drill_name_and_reports_it() {
    let dir = tempdir();
    let out = run_drill(dir.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "drill failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("drill passed: report written to"),
        "{stdout}"
    );

    let md = read(&dir.path().join("drill-report.md"));
    assert!(md.starts_with("# Drill report: www.shop.test\n"), "{md}");
    assert!(md.contains("**PASSED**"), "{md}");
    assert_eq!(row(&md, "Name published"), "`drill.www.shop.test`");
    assert_eq!(row(&md, "Outcome"), "completed");
    assert!(row(&md, "Started by").contains("through the drill program"));

    // The phases of a drill, each with its time, and an RTO that covers them.
    for phase in ["promote", "verify", "switch DNS", "propagate", "cleanup"] {
        assert!(
            md.contains(&format!("\n| {phase} | ")),
            "no {phase} row:\n{md}"
        );
    }
    let rto = millis(row(&md, "RTO"));
    assert!(rto > 0.0, "{md}");
    let rpo = row(&md, "RPO");
    assert!(rpo.contains("replication lag"), "{rpo}");
    // Each step done, on the drill name only.
    for step in [
        "`promote`",
        "`verify_integrity`",
        "`switch_dns`",
        "`verify_dns`",
        "`write_markers`",
        "`cleanup`",
    ] {
        let line = md
            .lines()
            .find(|l| l.contains(&format!("| {step} |")))
            .unwrap_or_else(|| panic!("no {step} step:\n{md}"));
        assert!(line.contains("| done | 1 | 0 |"), "{line}");
    }
    assert!(
        md.contains("point drill.www.shop.test at 127.0.0.2 (epoch 1)"),
        "{md}"
    );
    assert!(
        md.contains("point drill.www.shop.test at (no records)"),
        "{md}"
    );
    assert!(
        !md.contains("point www.shop.test at"),
        "production was switched:\n{md}"
    );

    // Integrity: files checked, markers written into the drill copy and verified.
    let integrity = md
        .lines()
        .find(|l| l.starts_with("| `app-data` | `recovery` |"))
        .unwrap_or_else(|| panic!("no integrity row:\n{md}"));
    assert!(
        integrity.ends_with("| 3 files | 2 | 2 | verified |"),
        "{integrity}"
    );

    // Production untouched, and the drill cleaned up after itself.
    let untouched = md
        .lines()
        .find(|l| {
            l.starts_with("- **PASS** production untouched: www.shop.test answered 127.0.0.1 in ")
        })
        .unwrap_or_else(|| panic!("no production line:\n{md}"));
    let (answered, of) = untouched
        .split(" in ")
        .nth(1)
        .and_then(|s| s.split_once(" of "))
        .map(|(a, b)| (a.to_owned(), b.split(' ').next().unwrap_or("").to_owned()))
        .unwrap_or_else(|| panic!("{untouched}"));
    assert_eq!(answered, of, "{untouched}");
    assert!(answered.parse::<u32>().is_ok_and(|n| n > 0), "{untouched}");
    for check in [
        "- **PASS** production replicas' roles unchanged: app-data before: primary primary, recovery replica; after: primary primary, recovery replica;",
        "- **PASS** active site and epoch unchanged: active primary at epoch 1 before, primary at epoch 1 after",
        "- **PASS** drill name served the recovery site: a client resolving drill.www.shop.test before the cleanup got 127.0.0.2",
        "- **PASS** drill cleaned up: drill.www.shop.test publishes (no records)",
    ] {
        assert!(md.contains(check), "missing {check:?}:\n{md}");
    }
    assert!(!md.contains("**FAIL**"), "{md}");

    // The page: self-contained, with the timeline.
    let html = read(&dir.path().join("drill-report.html"));
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<header class=\"verdict pass\">"));
    assert!(html.contains("<svg"));
    assert!(html.contains(">cleanup</text>"));
    assert!(
        html.contains(&format!("recovered: RTO {rto:.1} ms")),
        "RTO on the timeline"
    );
    assert!(!html.contains("<script"));
}

#[test]
fn a_corrupted_marker_fails_the_drill() {
    let dir = tempdir();
    let out = run_drill(dir.path(), &["--inject-corruption"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("drill FAILED: report written to"),
        "{stdout}"
    );

    let md = read(&dir.path().join("drill-report.md"));
    assert!(md.contains("**FAILED**"), "{md}");
    assert!(md.contains("integrity verification FAILED"), "{md}");
    let integrity = md
        .lines()
        .find(|l| l.starts_with("| `app-data` | `recovery` |"))
        .unwrap_or_else(|| panic!("no integrity row:\n{md}"));
    assert!(
        integrity.ends_with("| 3 files | 2 | 1 | **FAILED** (1 difference(s)) |"),
        "{integrity}"
    );
    assert!(
        md.contains("- marker .idns-markers/drill-"),
        "the changed marker is named:\n{md}"
    );
    // The rehearsal itself still cleaned up and left production alone.
    assert!(md.contains("- **PASS** production untouched"), "{md}");
    assert!(md.contains("- **PASS** drill cleaned up"), "{md}");
    let html = read(&dir.path().join("drill-report.html"));
    assert!(html.contains("<header class=\"verdict fail\">"));
}

#[test]
fn a_bad_argument_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_drill"))
        .arg("--frobnicate")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run the drill binary: {e}"),
    };
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--frobnicate"),
        "the bad argument is named: {err}"
    );
    assert!(err.contains("Usage: drill"), "{err}");
}
