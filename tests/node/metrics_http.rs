//! The `/metrics` HTTP server over real TCP: the exposition and its content
//! type, a 404 elsewhere, connections bounded in number and in lifetime,
//! and a prompt stop.

// A test (or bench) reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sealbatch::node::metrics::{CONTENT_TYPE, HttpLimits, Metrics, router, serve};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::common;
use common::http_get as get;

const LIMITS: HttpLimits = HttpLimits {
    connections_max: 4,
    connection_lifetime: Duration::from_secs(1),
};

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_server_answers_bounds_its_connections_and_stops() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let metrics = Arc::new(Metrics::default());
        metrics.envelopes_accepted.inc_by(7);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("an address");
        let (stop, shutdown) = watch::channel(false);
        let server = tokio::spawn(serve(
            listener,
            router(Arc::clone(&metrics)),
            LIMITS,
            shutdown,
        ));

        // The exposition, with its content type.
        let (status, headers, body) = get(addr, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        let content_type = headers.iter().find(|(k, _)| k == "content-type");
        assert_eq!(
            content_type.map(|(_, v)| v.as_str()),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
        assert!(
            body.contains("\nsealbatch_envelopes_accepted_total 7\n"),
            "{body}"
        );
        assert!(body.contains("sealbatch_rejected_total{reason=\"busy\"} 0\n"));

        // Any other path is a 404.
        let (status, _, _) = get(addr, "/").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let (status, _, _) = get(addr, "/metrics/more").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");

        // Four times the bound of silent connections: only the bound is
        // accepted, so the server's tasks grow by at most that many.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = alive_tasks();
        let mut silent = Vec::new();
        for _ in 0..4 * LIMITS.connections_max {
            silent.push(TcpStream::connect(addr).await.expect("connects (backlog)"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = alive_tasks();
        assert!(
            during <= before + LIMITS.connections_max,
            "{during} tasks alive with {} silent connections, {before} before",
            silent.len()
        );
        assert!(
            during >= before + LIMITS.connections_max,
            "the bound's worth of connections is served: {during} tasks, {before} before"
        );

        // The silent connections are cut at the end of their lifetime, and
        // the ones waiting in the backlog are served in turn: a scrape queued
        // behind all of them is answered within a few lifetimes.
        let queued = Instant::now();
        let (status, _, _) = get(addr, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(queued.elapsed() < LIMITS.connection_lifetime * 6);
        let mut first = silent.remove(0);
        let mut byte = [0u8; 1];
        let read = first.read(&mut byte).await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "a silent connection is closed by the server: {read:?}"
        );
        drop(silent);

        // Stop: the server returns promptly.
        stop.send(true).expect("the server listens");
        let stopped = Instant::now();
        server
            .await
            .expect("the server task ends")
            .expect("serve returns Ok");
        assert!(stopped.elapsed() <= LIMITS.connection_lifetime + Duration::from_secs(1));
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    })
    .await
    .expect("the test finishes within 30 s");
}
