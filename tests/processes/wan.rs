//! The replicas across a simulated WAN: `sealbatch relay` on its own, and
//! `sealbatch cluster demo` with a relay in front of each replica's
//! transport (one-way delay, jitter, loss) at an offered rate.
#![allow(clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::loopback_udp;
use sealbatch::net::inherit::spawn_with;

/// The value of `key=` in the demo's `summary:` line.
fn summary_value(text: &str, key: &str) -> Option<f64> {
    let summary = text.lines().find_map(|l| l.strip_prefix("summary: "))?;
    summary
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}

/// `sealbatch relay` in front of an echo socket: a datagram's round trip
/// takes at least twice the one-way delay, and the relay stops after its
/// duration and says what it forwarded.
#[test]
fn the_relay_command_delays_each_way_and_stops_after_its_duration() {
    let echo = UdpSocket::bind("127.0.0.1:0").expect("binds");
    let echo_addr = echo.local_addr().expect("an address");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1_500];
        while let Ok((len, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..len], from);
        }
    });
    // Handed down: the relay serves on the test's socket.
    let (socket, port) = loopback_udp();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sealbatch"));
    command
        .args([
            "relay",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--to",
            &echo_addr.to_string(),
            "--delay-ms",
            "25",
            "--duration",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let relay = spawn_with(command, &[socket.as_fd()]).expect("the relay starts");
    let client = UdpSocket::bind("127.0.0.1:0").expect("binds");
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a timeout");
    let mut buf = [0u8; 16];
    // Asked again until the relay is listening.
    let deadline = Instant::now() + Duration::from_secs(2);
    let took = loop {
        assert!(Instant::now() < deadline, "no echo through the relay");
        let sent = Instant::now();
        client.send_to(b"ping", ("127.0.0.1", port)).expect("sent");
        if let Ok(len) = client.recv(&mut buf) {
            assert_eq!(&buf[..len], b"ping");
            break sent.elapsed();
        }
    };
    assert!(
        took >= Duration::from_millis(50),
        "a round trip in {took:?}"
    );
    let out = relay.wait_with_output().expect("the relay stops");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("one-way delay 25 ± 0 ms, loss 0 %"), "{text}");
    assert!(text.contains("datagrams: "), "{text}");
}

/// A `--cluster-config` the configuration refuses stops the demo before
/// any replica starts, naming the file.
#[test]
fn the_cluster_demo_refuses_a_cluster_config_it_cannot_use() {
    let dir = tempfile::Builder::new()
        .prefix("sealbatch-wan-")
        .tempdir()
        .expect("a temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .args(["cluster", "demo", "--cluster-config", "no_such_key = 1"])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("the demo runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("replica-1.toml"), "{text}");
}

/// A fault campaign of more faults than the demo plans is refused before
/// any replica starts.
#[test]
fn the_cluster_demo_refuses_too_many_faults() {
    let out = Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .args(["cluster", "demo", "--faults", "4000000000"])
        .output()
        .expect("the demo runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("--faults: at most 10000"), "{text}");
}

/// An offered rate whose period per trader overflows is refused, not a
/// panic.
#[test]
fn the_cluster_demo_refuses_a_period_it_cannot_keep() {
    let out = Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .args([
            "cluster",
            "demo",
            "--rate",
            "1",
            "--traders",
            "18446744073709551615",
        ])
        .output()
        .expect("the demo runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("each trader would wait over a day"), "{text}");
}

/// `sealbatch cluster demo` across a relay per replica (5 ± 1 ms each
/// way) at 2,000 orders/s offered, no kill: orders are accepted, the
/// elections are counted, and the journals agree and verify.
#[test]
#[ignore = "slow tier: SEALBATCH_TEST_TIER=slow cargo test -- --include-ignored"]
fn the_cluster_demo_runs_across_a_simulated_wan() {
    let out = Command::new(env!("CARGO_BIN_EXE_sealbatch"))
        .args([
            "cluster",
            "demo",
            "--duration",
            "4",
            "--kills",
            "0",
            "--delay-ms",
            "5",
            "--jitter-ms",
            "1",
            "--rate",
            "2000",
        ])
        .output()
        .expect("the demo runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("one-way delay 5 ± 1 ms, loss 0 % each way"),
        "{text}"
    );
    let accepted = summary_value(&text, "accepted_per_s").expect("a summary");
    assert!(accepted > 0.0, "{text}");
    assert!(summary_value(&text, "elections").is_some(), "{text}");
    assert!(
        text.contains("all equal to the others' at their LSNs"),
        "{text}"
    );
    assert!(text.contains(" batches re-derived, 0 mismatched"), "{text}");
}
