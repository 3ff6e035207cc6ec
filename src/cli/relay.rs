//! `sealbatch relay`: a user-space WAN emulator for UDP (and so for QUIC),
//! where the kernel offers no `netem`.
//!
//! A relay listens on one address and forwards every datagram from any
//! sender to one target, through a socket of its own per sender (a *flow*),
//! so the target's replies come back to that socket and are sent on to the
//! sender from the listening socket. Each datagram, in each direction, is
//! held for the link's one-way delay ± a uniform jitter and lost with the
//! link's probability, both
//! drawn from a seeded ChaCha20 stream per flow direction, so a run can be
//! repeated. A [`RelayControl`] shared with the relay cuts it (every
//! datagram, or those to or from one port) while set and counts what
//! happened to the datagrams.
//!
//! Jitter keeps the datagrams in order by default: a datagram is never due
//! before the one sent ahead of it, as on a real path, whose delay varies
//! with the queues it crosses but which rarely reorders. With `reorder`
//! each datagram's delay is drawn on its own, as `netem`'s jitter does, and
//! a fast sender's datagrams arrive shuffled; QUIC takes a datagram three
//! places late for a lost one (RFC 9002 §6.1.1), so that shape measures
//! the transport's loss recovery more than the link.
//!
//! The delay is a [`DelayLine`], a pure queue that takes the time as an
//! argument (`handle_*` for datagrams coming in, `poll_*` for what is due);
//! one task per flow direction holds one and sleeps until its earliest
//! datagram is due.
//!
//! ```text
//! sender ──▶ listen ══ delay line ══▶ flow socket ──▶ target
//! sender ◀── listen ◀══ delay line ══ flow socket ◀── target
//! ```

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::CommandResult;
use super::run::{runtime, shutdown_on_signals};

/// The longest one-way delay or jitter a link may have, ms (a minute).
pub const DELAY_MS_MAX: u64 = 60_000;

/// Datagrams one direction of a flow holds at once; more are dropped (and
/// counted as overflowed), as a router's full buffer would.
pub const QUEUED_MAX: usize = 16_384;

/// Senders a relay keeps a flow for at once; a datagram from one more is
/// dropped (counted as overflowed) until a flow ends.
pub const FLOWS_MAX: usize = 1_024;

/// The largest UDP payload.
const DATAGRAM_MAX: usize = 65_535;

/// Datagrams waiting between a relay's listening socket and a flow's
/// forward delay line.
const HANDOFF_MAX: usize = 1_024;

/// Parts per million in 100 percent.
const PPM_PER_PERCENT: f64 = 10_000.0;

const _: () = assert!(QUEUED_MAX >= HANDOFF_MAX);

/// A link's shape, the same in both directions: one-way delay, jitter and
/// loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkShape {
    /// Each datagram is held this long, ms (before jitter).
    pub delay_ms: u64,
    /// Plus or minus up to this much, drawn uniformly per datagram, ms
    /// (a datagram is never held less than not at all).
    pub jitter_ms: u64,
    /// Each datagram is lost with this probability, in parts per million.
    pub loss_ppm: u32,
    /// Whether jitter may reorder datagrams (each delay drawn on its own);
    /// else a datagram is never due before the one ahead of it.
    pub reorder: bool,
}

/// A link shape that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShapeError {
    /// The delay or the jitter is over [`DELAY_MS_MAX`].
    #[error("a delay or jitter of {0} ms: at most {DELAY_MS_MAX} ms")]
    Delay(u64),
    /// The loss is not a percentage from 0 to 100.
    #[error("a loss of {0} %: from 0 to 100")]
    Loss(f64),
}

impl LinkShape {
    /// A link that delays by `delay_ms` ± `jitter_ms` and loses
    /// `loss_percent` percent of the datagrams (to a millionth).
    ///
    /// # Errors
    ///
    /// [`ShapeError`] for a delay or jitter over [`DELAY_MS_MAX`] or a loss
    /// outside 0 to 100 percent.
    pub fn new(delay_ms: u64, jitter_ms: u64, loss_percent: f64) -> Result<LinkShape, ShapeError> {
        for ms in [delay_ms, jitter_ms] {
            if ms > DELAY_MS_MAX {
                return Err(ShapeError::Delay(ms));
            }
        }
        if !(0.0..=100.0).contains(&loss_percent) {
            return Err(ShapeError::Loss(loss_percent));
        }
        Ok(LinkShape {
            delay_ms,
            jitter_ms,
            // In 0..=1_000_000: the range was checked.
            loss_ppm: (loss_percent * PPM_PER_PERCENT).round() as u32,
            reorder: false,
        })
    }

    /// The same link, its jitter reordering datagrams (`reorder`) or not.
    #[must_use]
    pub fn reordering(self, reorder: bool) -> LinkShape {
        LinkShape { reorder, ..self }
    }

    /// Whether the link passes every datagram at once (no delay, jitter or
    /// loss).
    #[must_use]
    pub fn is_transparent(&self) -> bool {
        *self == LinkShape::default()
    }
}

impl std::fmt::Display for LinkShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "one-way delay {} ± {} ms{}, loss {} %",
            self.delay_ms,
            self.jitter_ms,
            if self.reorder { " (reordering)" } else { "" },
            f64::from(self.loss_ppm) / PPM_PER_PERCENT
        )
    }
}

/// A datagram held in a [`DelayLine`]: ordered by when it is due, then by
/// arrival (equal due times keep their order).
#[derive(Debug)]
struct Queued {
    due: Instant,
    sequence: u64,
    bytes: Vec<u8>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.due, self.sequence).cmp(&(other.due, other.sequence))
    }
}

/// What a [`DelayLine`] did with a datagram handed to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Held until it is due.
    Queued,
    /// Lost, by the link's loss.
    Lost,
    /// Dropped: the line already held [`QUEUED_MAX`] datagrams.
    Overflowed,
}

/// One direction of a link: datagrams in, each due after the link's delay
/// and jitter unless lost. Pure: the time is an argument, the randomness a
/// seeded stream.
#[derive(Debug)]
pub struct DelayLine {
    shape: LinkShape,
    rng: ChaCha20Rng,
    queue: BinaryHeap<Reverse<Queued>>,
    sequence: u64,
    /// When the datagram queued last is due (a datagram of a link that
    /// does not reorder is not due before it).
    last_due: Option<Instant>,
}

impl DelayLine {
    /// An empty line of `shape`, drawing from `rng`.
    #[must_use]
    pub fn new(shape: LinkShape, rng: ChaCha20Rng) -> DelayLine {
        DelayLine {
            shape,
            rng,
            queue: BinaryHeap::new(),
            sequence: 0,
            last_due: None,
        }
    }

    /// A datagram arrived at `now`: lost, or held until `now` + delay ±
    /// jitter (and, unless the link reorders, not before the datagram
    /// ahead of it).
    pub fn handle_datagram(&mut self, now: Instant, bytes: Vec<u8>) -> Admitted {
        // Both draws are made for every datagram, so what happens to one
        // does not depend on what happened to those before it.
        let loss = self.rng.next_u32() % 1_000_000;
        let jitter_us = self.shape.jitter_ms.saturating_mul(1_000);
        let span = jitter_us.saturating_mul(2).saturating_add(1);
        let offset = self.rng.next_u64() % span;
        if loss < self.shape.loss_ppm {
            return Admitted::Lost;
        }
        if self.queue.len() >= QUEUED_MAX {
            return Admitted::Overflowed;
        }
        // delay - jitter + offset, never below zero.
        let held_us =
            (self.shape.delay_ms.saturating_mul(1_000) + offset).saturating_sub(jitter_us);
        let mut due = now + Duration::from_micros(held_us);
        if !self.shape.reorder {
            due = self.last_due.map_or(due, |last| due.max(last));
        }
        self.last_due = Some(due);
        self.sequence += 1;
        self.queue.push(Reverse(Queued {
            due,
            sequence: self.sequence,
            bytes,
        }));
        Admitted::Queued
    }

    /// When the earliest datagram held is due, if any is held.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(queued)| queued.due)
    }

    /// The earliest datagram due by `now`, taken out of the line; call
    /// again until `None`.
    pub fn poll_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.poll_timeout()? > now {
            return None;
        }
        self.queue.pop().map(|Reverse(queued)| queued.bytes)
    }

    /// How many datagrams are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// The value of [`RelayControl`]'s cut that cuts every datagram.
const CUT_ALL: u32 = u32::MAX;

/// A relay's switch and counters, shared with whoever controls it (one may
/// serve several relays: a cut port then partitions that port's replica
/// from all of them).
#[derive(Debug, Default)]
pub struct RelayControl {
    /// 0: nothing cut; [`CUT_ALL`]: every datagram; else a port.
    cut: AtomicU32,
    forwarded: AtomicU64,
    lost: AtomicU64,
    cut_off: AtomicU64,
    overflowed: AtomicU64,
}

/// What a relay (or the relays sharing a [`RelayControl`]) did with the
/// datagrams it received, in both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayCounts {
    /// Delivered after the delay.
    pub forwarded: u64,
    /// Lost by the link's loss.
    pub lost: u64,
    /// Dropped while cut (on arrival, or due while cut).
    pub cut: u64,
    /// Dropped for want of room ([`QUEUED_MAX`], [`FLOWS_MAX`]) or of a
    /// socket for a new flow.
    pub overflowed: u64,
}

impl RelayControl {
    /// Nothing cut, nothing counted.
    #[must_use]
    pub fn new() -> RelayControl {
        RelayControl::default()
    }

    /// Drops every datagram, in both directions, until [`heal`](Self::heal).
    pub fn cut_all(&self) {
        self.cut.store(CUT_ALL, Ordering::Relaxed);
    }

    /// Drops every datagram sent from or to `port` (the relay's target's,
    /// or a sender's): a relay in front of each replica, all sharing this
    /// control, then partition the replica at `port` from the others.
    /// Port 0 heals.
    pub fn cut_port(&self, port: u16) {
        self.cut.store(u32::from(port), Ordering::Relaxed);
    }

    /// Cuts nothing any more.
    pub fn heal(&self) {
        self.cut.store(0, Ordering::Relaxed);
    }

    /// Whether a datagram between the sender at port `sender` and the
    /// target at port `target`, either way, is cut now.
    #[must_use]
    pub fn is_cut(&self, sender: u16, target: u16) -> bool {
        match self.cut.load(Ordering::Relaxed) {
            0 => false,
            CUT_ALL => true,
            port => port == u32::from(sender) || port == u32::from(target),
        }
    }

    /// The counts so far.
    #[must_use]
    pub fn counts(&self) -> RelayCounts {
        RelayCounts {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            cut: self.cut_off.load(Ordering::Relaxed),
            overflowed: self.overflowed.load(Ordering::Relaxed),
        }
    }

    fn count(&self, admitted: Admitted) {
        match admitted {
            Admitted::Queued => {}
            Admitted::Lost => {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
            Admitted::Overflowed => {
                self.overflowed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The two ends of one flow: the sender's address and the target's.
#[derive(Clone, Copy, Debug)]
struct Ends {
    sender: SocketAddr,
    target: SocketAddr,
}

/// One sender's flow: the handoff to its forward delay line and both
/// directions' tasks, stopped when the flow is dropped.
struct Flow {
    forward: mpsc::Sender<(Instant, Vec<u8>)>,
    tasks: [AbortHandle; 2],
}

impl Drop for Flow {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Flow {
    /// A socket for the flow from `ends.sender`, and its two tasks, whose
    /// delay lines draw from streams `2 * number` (forward) and
    /// `2 * number + 1` (back) of the relay's seed.
    async fn open(
        listen: &Arc<UdpSocket>,
        ends: Ends,
        shape: LinkShape,
        seed: u64,
        number: u64,
        control: &Arc<RelayControl>,
    ) -> std::io::Result<Flow> {
        let any = match ends.target.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let socket = Arc::new(UdpSocket::bind(SocketAddr::new(any, 0)).await?);
        let line = |stream: u64| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            rng.set_stream(stream);
            DelayLine::new(shape, rng)
        };
        let (forward, handoff) = mpsc::channel(HANDOFF_MAX);
        let forward_task = tokio::spawn(forward_flow(
            handoff,
            line(number.saturating_mul(2)),
            Arc::clone(&socket),
            ends,
            Arc::clone(control),
        ));
        let back_task = tokio::spawn(back_flow(
            socket,
            Arc::clone(listen),
            line(number.saturating_mul(2).saturating_add(1)),
            ends,
            Arc::clone(control),
        ));
        Ok(Flow {
            forward,
            tasks: [forward_task.abort_handle(), back_task.abort_handle()],
        })
    }

    /// Whether either direction has ended (its socket failed).
    fn is_closed(&self) -> bool {
        self.forward.is_closed() || self.tasks.iter().any(AbortHandle::is_finished)
    }
}

/// Sends what `line` holds that is due, unless cut.
async fn send_due(
    line: &mut DelayLine,
    socket: &UdpSocket,
    to: SocketAddr,
    ends: Ends,
    control: &RelayControl,
) {
    while let Some(bytes) = line.poll_due(Instant::now()) {
        if control.is_cut(ends.sender.port(), ends.target.port()) {
            control.cut_off.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // A datagram the kernel refuses is lost, as on a real link.
        if socket.send_to(&bytes, to).await.is_ok() {
            control.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sleeps until `at`, or forever when nothing is held.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The sender-to-target direction of a flow: datagrams handed over by the
/// relay's listening loop, sent to the target from the flow's socket when
/// due. Ends when the relay drops the flow.
async fn forward_flow(
    mut handoff: mpsc::Receiver<(Instant, Vec<u8>)>,
    mut line: DelayLine,
    socket: Arc<UdpSocket>,
    ends: Ends,
    control: Arc<RelayControl>,
) {
    loop {
        tokio::select! {
            received = handoff.recv() => {
                let Some((at, bytes)) = received else { return };
                if control.is_cut(ends.sender.port(), ends.target.port()) {
                    control.cut_off.fetch_add(1, Ordering::Relaxed);
                } else {
                    control.count(line.handle_datagram(at, bytes));
                }
            }
            () = sleep_until(line.poll_timeout()) => {}
        }
        send_due(&mut line, &socket, ends.target, ends, &control).await;
    }
}

/// The target-to-sender direction of a flow: datagrams received on the
/// flow's socket, sent to the sender from the listening socket when due.
/// Ends when the flow's socket fails.
async fn back_flow(
    socket: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    mut line: DelayLine,
    ends: Ends,
    control: Arc<RelayControl>,
) {
    let mut buf = vec![0u8; DATAGRAM_MAX];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((len, _)) = received else { return };
                if control.is_cut(ends.sender.port(), ends.target.port()) {
                    control.cut_off.fetch_add(1, Ordering::Relaxed);
                } else {
                    let bytes = buf.get(..len).unwrap_or_default().to_vec();
                    control.count(line.handle_datagram(Instant::now(), bytes));
                }
            }
            () = sleep_until(line.poll_timeout()) => {}
        }
        send_due(&mut line, &listen, ends.sender, ends, &control).await;
    }
}

/// Relays datagrams from any sender at `listen` to `target`, and the
/// target's replies back, each way shaped by `shape` (drawn from `seed`)
/// and dropped while `control` cuts them. Runs until the listening socket
/// fails, and returns that error; the flows stop with it (or when the
/// future is dropped).
pub async fn relay(
    listen: UdpSocket,
    target: SocketAddr,
    shape: LinkShape,
    seed: u64,
    control: Arc<RelayControl>,
) -> std::io::Error {
    let listen = Arc::new(listen);
    let mut flows: BTreeMap<SocketAddr, Flow> = BTreeMap::new();
    let mut opened = 0u64;
    let mut buf = vec![0u8; DATAGRAM_MAX];
    loop {
        let (len, sender) = match listen.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => return error,
        };
        let at = Instant::now();
        let bytes = buf.get(..len).unwrap_or_default().to_vec();
        if flows.get(&sender).is_none_or(Flow::is_closed) {
            flows.retain(|_, flow| !flow.is_closed());
            if flows.len() >= FLOWS_MAX {
                control.count(Admitted::Overflowed);
                continue;
            }
            let ends = Ends { sender, target };
            match Flow::open(&listen, ends, shape, seed, opened, &control).await {
                Ok(flow) => {
                    opened += 1;
                    flows.insert(sender, flow);
                }
                Err(_) => {
                    control.count(Admitted::Overflowed);
                    continue;
                }
            }
        }
        if let Some(flow) = flows.get(&sender)
            && flow.forward.try_send((at, bytes)).is_err()
        {
            control.count(Admitted::Overflowed);
        }
    }
}

/// Arguments of `sealbatch relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Where senders send (e.g. `127.0.0.1:7201`; port 0: any free one, printed).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where their datagrams go (e.g. `127.0.0.1:7101`).
    #[arg(long)]
    pub to: SocketAddr,
    /// One-way delay of each datagram, each way, ms.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Plus or minus up to this much per datagram, uniformly, ms (in
    /// order, unless `--reorder`).
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Each datagram's jitter drawn on its own, reordering them (as
    /// `netem`'s jitter does).
    #[arg(long)]
    pub reorder: bool,
    /// Datagrams lost, each way, percent.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// The seed of the delays and losses drawn.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stop after this many seconds (default: at SIGINT or SIGTERM).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
}

/// Runs `sealbatch relay` until its duration is over or a signal comes,
/// then prints what it did with the datagrams.
///
/// # Errors
///
/// A shape out of range, an address that cannot be bound, or a listening
/// socket that fails.
pub fn run(args: &RelayArgs) -> CommandResult {
    let shape = LinkShape::new(args.delay_ms, args.jitter_ms, args.loss)?.reordering(args.reorder);
    let duration = match args.duration {
        Some(seconds) if !(seconds.is_finite() && seconds >= 0.0) => {
            return Err(format!("--duration {seconds}: a number of seconds, at least 0").into());
        }
        Some(seconds) => Some(Duration::from_secs_f64(seconds)),
        None => None,
    };
    runtime()?.block_on(async {
        // Port 0: any free one, printed.
        let socket = crate::net::inherit::udp_socket(args.listen)
            .and_then(|socket| {
                socket.set_nonblocking(true)?;
                UdpSocket::from_std(socket)
            })
            .map_err(|error| format!("binding {}: {error}", args.listen))?;
        let listen = socket.local_addr()?;
        let mut shutdown = shutdown_on_signals()?;
        let control = Arc::new(RelayControl::new());
        println!("relaying {listen} → {}: {shape}", args.to);
        let relaying = relay(socket, args.to, shape, args.seed, Arc::clone(&control));
        let outcome = tokio::select! {
            error = relaying => Err(format!("the listening socket failed: {error}")),
            () = sleep_until(duration.map(|d| Instant::now() + d)) => Ok(()),
            _ = shutdown.wait_for(|stop| *stop) => Ok(()),
        };
        let counts = control.counts();
        println!(
            "datagrams: {} forwarded, {} lost, {} cut, {} overflowed",
            counts.forwarded, counts.lost, counts.cut, counts.overflowed
        );
        Ok(outcome?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(shape: LinkShape, seed: u64) -> DelayLine {
        DelayLine::new(shape, ChaCha20Rng::seed_from_u64(seed))
    }

    #[test]
    fn a_reordering_delay_line_holds_each_datagram_within_the_jitter() {
        let shape = LinkShape::new(40, 5, 0.0)
            .expect("a shape")
            .reordering(true);
        let mut line = line(shape, 7);
        let start = Instant::now();
        for i in 0..1_000u32 {
            let at = start + Duration::from_micros(u64::from(i) * 100);
            assert_eq!(
                line.handle_datagram(at, i.to_be_bytes().to_vec()),
                Admitted::Queued
            );
        }
        assert_eq!(line.poll_due(start + Duration::from_millis(34)), None);
        let mut out = Vec::new();
        let mut now = start;
        while let Some(due) = line.poll_timeout() {
            now = now.max(due);
            let bytes = line.poll_due(now).expect("due");
            let i = u32::from_be_bytes(bytes.try_into().expect("four bytes"));
            let sent = start + Duration::from_micros(u64::from(i) * 100);
            let held = now.duration_since(sent);
            assert!(
                held >= Duration::from_millis(35) && held <= Duration::from_millis(45),
                "datagram {i} held {held:?}"
            );
            out.push(i);
        }
        assert_eq!(out.len(), 1_000);
        assert!(out.windows(2).any(|w| w[0] > w[1]), "jitter reordered none");
        assert!(line.is_empty());
    }

    #[test]
    fn jitter_keeps_the_order_unless_the_link_reorders() {
        let shape = LinkShape::new(20, 10, 0.0).expect("a shape");
        let mut line = line(shape, 9);
        let start = Instant::now();
        for i in 0..1_000u32 {
            let at = start + Duration::from_micros(u64::from(i) * 50);
            line.handle_datagram(at, i.to_be_bytes().to_vec());
        }
        let mut out = Vec::new();
        let mut held_max = Duration::ZERO;
        let mut now = start;
        while let Some(due) = line.poll_timeout() {
            now = now.max(due);
            let bytes = line.poll_due(now).expect("due");
            let i = u32::from_be_bytes(bytes.try_into().expect("four bytes"));
            let sent = start + Duration::from_micros(u64::from(i) * 50);
            held_max = held_max.max(now.duration_since(sent));
            out.push(i);
        }
        assert_eq!(out, (0..1_000).collect::<Vec<u32>>());
        // The one ahead was sent earlier and due by its own delay + jitter,
        // so none is held past delay + jitter.
        assert!(held_max >= Duration::from_millis(25), "{held_max:?}");
        assert!(held_max <= Duration::from_millis(30), "{held_max:?}");
    }

    #[test]
    fn a_delay_line_without_jitter_keeps_the_order() {
        let mut line = line(LinkShape::new(10, 0, 0.0).expect("a shape"), 1);
        let start = Instant::now();
        for i in 0..100u8 {
            line.handle_datagram(start, vec![i]);
        }
        let due = start + Duration::from_millis(10);
        assert_eq!(line.poll_timeout(), Some(due));
        let out: Vec<u8> = std::iter::from_fn(|| line.poll_due(due))
            .map(|b| b[0])
            .collect();
        assert_eq!(out, (0..100).collect::<Vec<u8>>());
    }

    #[test]
    fn a_delay_line_loses_its_share_the_same_way_for_a_seed() {
        let shape = LinkShape::new(0, 0, 1.0).expect("a shape");
        let losses = |seed| {
            let mut line = line(shape, seed);
            let now = Instant::now();
            (0..100_000)
                .map(|_| line.handle_datagram(now, Vec::new()) == Admitted::Lost)
                .collect::<Vec<bool>>()
        };
        let lost = losses(3);
        let count = lost.iter().filter(|l| **l).count();
        assert!(
            (800..1_200).contains(&count),
            "{count} of 100000 lost at 1 %"
        );
        assert_eq!(lost, losses(3));
        assert_ne!(lost, losses(4));
    }

    #[test]
    fn a_shape_out_of_range_is_refused() {
        assert_eq!(LinkShape::new(0, 0, 100.5), Err(ShapeError::Loss(100.5)));
        assert!(LinkShape::new(0, 0, f64::NAN).is_err());
        assert_eq!(
            LinkShape::new(DELAY_MS_MAX + 1, 0, 0.0),
            Err(ShapeError::Delay(DELAY_MS_MAX + 1))
        );
        assert_eq!(LinkShape::new(1, 2, 0.5).map(|s| s.loss_ppm), Ok(5_000));
        assert!(LinkShape::new(0, 0, 0.0).expect("a shape").is_transparent());
    }

    /// An echo server, a relay in front of it, and a client socket.
    async fn echo_through(shape: LinkShape) -> (UdpSocket, SocketAddr, Arc<RelayControl>) {
        let echo = UdpSocket::bind("127.0.0.1:0").await.expect("binds");
        let target = echo.local_addr().expect("an address");
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2_048];
            while let Ok((len, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..len], from).await;
            }
        });
        let listen = UdpSocket::bind("127.0.0.1:0").await.expect("binds");
        let relay_addr = listen.local_addr().expect("an address");
        let control = Arc::new(RelayControl::new());
        tokio::spawn(relay(listen, target, shape, 1, Arc::clone(&control)));
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("binds");
        (client, relay_addr, control)
    }

    /// The datagrams `client` receives until none came for `quiet`.
    async fn receive_all(client: &UdpSocket, quiet: Duration) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 2_048];
        let mut got = Vec::new();
        while let Ok(Ok(len)) = tokio::time::timeout(quiet, client.recv(&mut buf)).await {
            got.push(buf[..len].to_vec());
        }
        got
    }

    #[tokio::test]
    async fn a_round_trip_through_the_relay_takes_twice_the_delay() {
        let shape = LinkShape::new(30, 0, 0.0).expect("a shape");
        let (client, relay_addr, control) = echo_through(shape).await;
        let sent = Instant::now();
        client.send_to(b"ping", relay_addr).await.expect("sent");
        let mut buf = [0u8; 16];
        let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("an echo within 5 s")
            .expect("received");
        let took = sent.elapsed();
        assert_eq!(&buf[..len], b"ping");
        assert!(
            took >= Duration::from_millis(60),
            "a round trip in {took:?}"
        );
        assert_eq!(control.counts().forwarded, 2);
    }

    #[tokio::test]
    async fn without_loss_every_datagram_arrives() {
        let shape = LinkShape::new(1, 1, 0.0).expect("a shape");
        let (client, relay_addr, control) = echo_through(shape).await;
        for i in 0..200u32 {
            client
                .send_to(&i.to_be_bytes(), relay_addr)
                .await
                .expect("sent");
        }
        let mut got = receive_all(&client, Duration::from_millis(300)).await;
        got.sort_unstable();
        let all: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
        assert_eq!(got, all);
        assert_eq!(control.counts().lost, 0);
    }

    #[tokio::test]
    async fn with_all_lost_nothing_arrives() {
        let shape = LinkShape::new(0, 0, 100.0).expect("a shape");
        let (client, relay_addr, control) = echo_through(shape).await;
        for i in 0..50u32 {
            client
                .send_to(&i.to_be_bytes(), relay_addr)
                .await
                .expect("sent");
        }
        assert!(
            receive_all(&client, Duration::from_millis(200))
                .await
                .is_empty()
        );
        assert_eq!(control.counts().lost, 50);
    }

    #[tokio::test]
    async fn a_cut_relay_passes_nothing_until_healed() {
        let (client, relay_addr, control) = echo_through(LinkShape::default()).await;
        control.cut_all();
        for i in 0..50u32 {
            client
                .send_to(&i.to_be_bytes(), relay_addr)
                .await
                .expect("sent");
        }
        assert!(
            receive_all(&client, Duration::from_millis(200))
                .await
                .is_empty()
        );
        assert_eq!(control.counts().cut, 50);
        control.heal();
        client.send_to(b"again", relay_addr).await.expect("sent");
        let got = receive_all(&client, Duration::from_millis(500)).await;
        assert_eq!(got, vec![b"again".to_vec()]);
        // Cutting the sender's port cuts its flow too.
        let port = client.local_addr().expect("an address").port();
        control.cut_port(port);
        client.send_to(b"cut", relay_addr).await.expect("sent");
        assert!(
            receive_all(&client, Duration::from_millis(200))
                .await
                .is_empty()
        );
    }
}
