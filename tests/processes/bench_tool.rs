//! `sealbatch bench clearing` as a tool: its JSON report, a comparison that
//! catches a slowed run, thread sweeps and a replayed batch from a file.

// A test reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

fn bench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .args(["bench", "clearing"])
        .args(args)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("written")).expect("JSON")
}

/// A saved run, the same command again with 20 ms of busy waiting added to
/// every timed run (the engine needs well under a millisecond here, even on
/// a loaded machine): the comparison calls every row slower. The report carries every row's
/// distribution, the machine and the command line.
#[test]
fn a_comparison_flags_a_slowed_run_and_the_report_says_what_ran() {
    let dir = tempfile::tempdir().expect("a directory");
    let old = dir.path().join("old.json");
    let new = dir.path().join("new.json");
    let svg = dir.path().join("chart.svg");
    let common = [
        "--threads",
        "1,2",
        "--shape",
        "uniform",
        "--shape",
        "bundles:markets=4",
        "--orders",
        "1e3",
        "--runs",
        "5",
    ];
    let out = bench(&[&common[..], &["--json", old.to_str().unwrap()]].concat());
    assert!(out.contains("speed-up"), "{out}");
    let saved = report(&old);
    assert_eq!(saved["schema"], 1);
    assert_eq!(saved["rows"].as_array().expect("rows").len(), 4);
    let row = &saved["rows"][0];
    for field in [
        "median_ns",
        "min_ns",
        "max_ns",
        "runs",
        "orders_per_s",
        "threads",
        "busy",
    ] {
        assert!(!row[field].is_null(), "{field} missing");
    }
    assert!(row["min_ns"].as_u64() <= row["median_ns"].as_u64());
    assert!(row["median_ns"].as_u64() <= row["max_ns"].as_u64());
    assert!(saved["machine"]["logical_cpus"].as_u64().expect("cpus") >= 1);
    assert!(saved["command_line"].as_array().expect("argv").len() > 3);
    assert!(
        saved["includes"]
            .as_str()
            .expect("includes")
            .contains("allocation")
    );

    let out = bench(
        &[
            &common[..],
            &[
                "--inject-delay-us",
                "20000",
                "--compare",
                old.to_str().unwrap(),
                "--json",
                new.to_str().unwrap(),
                "--svg",
                svg.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    let verdicts: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("compared with"))
        .skip(2)
        .collect();
    assert_eq!(verdicts.len(), 4, "{out}");
    assert!(verdicts.iter().all(|l| l.ends_with("slower")), "{out}");
    let chart = std::fs::read_to_string(&svg).expect("a chart");
    assert!(chart.starts_with("<svg") && chart.contains("polyline"));
    assert_eq!(
        chart.matches("<polyline").count(),
        4,
        "one line per shape and thread count"
    );
}

/// A batch from a `clear` CSV, replicated with fresh ids.
#[test]
fn a_batch_from_a_file_is_replayed_and_scaled() {
    let dir = tempfile::tempdir().expect("a directory");
    let csv = dir.path().join("batch.csv");
    let mut text = String::from("id,market,side,price,qty\n");
    for i in 0..300u64 {
        let side = if i % 2 == 0 { "buy" } else { "sell" };
        let price = if i % 17 == 0 {
            String::new()
        } else {
            (95 + i % 11).to_string()
        };
        text.push_str(&format!("{i},{},{side},{price},{}\n", i % 3, 1 + i % 5));
    }
    std::fs::write(&csv, text).expect("written");
    let json = dir.path().join("run.json");
    bench(&[
        "--input",
        csv.to_str().unwrap(),
        "--scale",
        "4",
        "--threads",
        "1",
        "--runs",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    let rows = report(&json)["rows"].as_array().expect("rows").clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["orders"], 1_200);
    assert_eq!(rows[0]["markets"], 3);
    assert_eq!(rows[0]["shape"], "batch.csv ×4");

    // A scale or a size past the bound is a clear error, not an abort.
    for args in [
        &[
            "--input",
            csv.to_str().unwrap(),
            "--scale",
            "18446744073709551615",
        ][..],
        &["--input", csv.to_str().unwrap(), "--scale", "0"][..],
        &["--orders", "1e30"][..],
        &["--threads", "0"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sealbatch"))
            .args(["bench", "clearing"])
            .args(args)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("sealbatch:"));
    }
}
