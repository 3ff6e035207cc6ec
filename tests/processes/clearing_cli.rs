//! The `sealbatch clear` command, end to end through the binary.

// A test (or bench) reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use std::process::{Command, Output};

use tempfile::TempPath;

/// A CSV file holding `text`, with an unpredictable name ending in `name`,
/// removed when the returned path is dropped.
fn csv(name: &str, text: &str) -> TempPath {
    let file = tempfile::Builder::new()
        .prefix("sealbatch-clear-")
        .suffix(&format!("-{name}"))
        .tempfile()
        .expect("a temporary file");
    std::fs::write(file.path(), text).expect("write csv");
    file.into_temp_path()
}

fn clear(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .arg("clear")
        .args(args)
        .output()
        .expect("run sealbatch")
}

const X2: &str = "id,market,side,price,qty
1,7,buy,202,400
2,7,buy,201,200
3,7,sell,199,300
4,7,sell,198,200
";

#[test]
fn clears_a_csv_to_json() {
    let path = csv("x2.csv", X2);
    let out = clear(&[
        path.to_str().expect("utf-8 path"),
        "--reference-price",
        "200",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let market = &json["markets"][0];
    assert_eq!(market["market"], 7);
    assert_eq!(market["price"], 201);
    assert_eq!(market["volume"], 500);
    assert_eq!(market["imbalance"], 100);
    assert_eq!(market["fills"][1]["id"], 2);
    assert_eq!(market["fills"][1]["filled"], 100);
    assert_eq!(json["seed"], "00".repeat(32));
}

#[test]
fn market_orders_and_configured_markets() {
    let path = csv(
        "market.csv",
        "id,market,side,price,qty\n5,1,buy,,10\n6,1,sell,,4\n",
    );
    let out = clear(&[
        path.to_str().expect("utf-8 path"),
        "--market",
        "1:50:1:100",
        "--seed",
        &"ab".repeat(32),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["markets"][0]["price"], 50);
    assert_eq!(json["markets"][0]["volume"], 4);
    assert_eq!(json["markets"][0]["imbalance"], 6);
}

fn stderr_of(name: &str, text: &str, extra: &[&str]) -> String {
    let path = csv(name, text);
    let mut args = vec![path.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    let out = clear(&args);
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn errors_name_the_line() {
    let header = "id,market,side,price,qty\n";
    let e = stderr_of(
        "bad-side.csv",
        &format!("{header}1,1,buy,10,5\n2,1,hold,10,5\n"),
        &[],
    );
    assert!(e.contains("line 3") && e.contains("hold"), "{e}");
    let e = stderr_of("bad-qty.csv", &format!("{header}1,1,buy,10,x\n"), &[]);
    assert!(e.contains("line 2") && e.contains("qty"), "{e}");
    let e = stderr_of("fields.csv", &format!("{header}1,1,buy,10\n"), &[]);
    assert!(e.contains("line 2") && e.contains("5 fields"), "{e}");
    let e = stderr_of("header.csv", "id,side\n", &[]);
    assert!(e.contains("line 1") && e.contains("header"), "{e}");
    let e = stderr_of(
        "zero.csv",
        &format!("{header}1,1,buy,10,5\n\n2,1,sell,10,0\n"),
        &[],
    );
    assert!(
        e.contains("line 4") && e.contains("order 2") && e.contains("zero"),
        "{e}"
    );
    let e = stderr_of(
        "dup.csv",
        &format!("{header}1,1,buy,10,5\n1,1,sell,10,5\n"),
        &[],
    );
    assert!(e.contains("line 3") && e.contains("duplicate"), "{e}");
    let e = stderr_of(
        "unknown.csv",
        &format!("{header}1,1,buy,10,5\n2,9,sell,10,5\n"),
        &["--market", "1:10:1:100"],
    );
    assert!(
        e.contains("line 3") && e.contains("unknown market 9"),
        "{e}"
    );
    let e = stderr_of(
        "band.csv",
        &format!("{header}1,1,buy,500,5\n"),
        &["--market", "1:10:1:100"],
    );
    assert!(
        e.contains("line 2") && e.contains("outside the price band"),
        "{e}"
    );
}

fn sealbatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .args(args)
        .output()
        .expect("run sealbatch")
}

#[test]
fn demo_runs_and_is_deterministic() {
    let args = ["clear-demo", "--orders", "2000", "--batches", "2"];
    let first = sealbatch(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        text.contains("batch 1") && text.contains("ETH/USDC"),
        "{text}"
    );
    // Same seed, same table (timings aside).
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("cleared in"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let second = sealbatch(&args);
    assert_eq!(
        strip(&text),
        strip(&String::from_utf8_lossy(&second.stdout))
    );
}

#[test]
fn bench_clearing_prints_a_table() {
    let out = sealbatch(&["bench", "clearing", "--quick", "--max-orders", "1000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("M ord/s") && text.contains("speed-up") && text.contains("uniform"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("uniform") && l.contains(" 1000 ")),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("[1/2]"));
}
