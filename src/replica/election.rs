//! The election timer (`spec/replication.md`, "Elections").
//!
//! openraft 0.9 draws a replica's election timeout once, when the process
//! starts, and checks it on a tick every 1.5 heartbeats. Two survivors whose
//! draws are close then stand in the same instant after every failed round:
//! the slowest kills of a 20-kill failover run took 1.0–1.3 s, going through
//! two or three terms without a leader. Raft draws a new timeout for every
//! wait, so that a split vote is not repeated; this timer does that, and
//! wakes at the instant the timeout passes instead of on the next tick.
//!
//! openraft's own timer is turned off (`Config::enable_elect = false`);
//! [`run`] asks openraft to stand (`Trigger::elect`) when the time has come.
//! The rest of the election — the lease a follower grants its leader, the
//! votes, who wins — stays openraft's, so the timer decides only *when* a
//! replica stands, never whether it may win.
//!
//! When a replica last heard from a leader it is told by the replica
//! transport ([`ElectionClock::heard`]: an append or snapshot accepted, a vote
//! granted) and by openraft's own view (its vote changed); that it lost a
//! vote to a longer log by the vote's response
//! ([`ElectionClock::refused_for_log`]).

use crate::codec::Encode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::{LogId, Raft, Vote};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::sync::Notify;

use super::codec::RaftRequest;
use super::network::Network;
use super::{LogStore, ReplicaId, Replication};

/// The most terms a replica skips to stand above a candidate it refused
/// (each is a vote written to disk).
pub const STAND_ABOVE_TERMS_MAX: u64 = 4;

/// When this replica last heard from a leader (or stood itself), whether a
/// voter has since refused it for having the shorter log, and the highest
/// term of a candidate it refused for having the shorter log.
#[derive(Debug, Default)]
pub struct ElectionClock {
    state: Mutex<Option<Heard>>,
    /// When a leader's append or snapshot was last accepted.
    led_at: Mutex<Option<Instant>>,
    wake: Notify,
}

/// What the transport told the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    /// When a leader was last heard from, a vote granted or changed, or
    /// this replica stood.
    pub at: Instant,
    /// A voter refused this replica's vote for having the shorter log.
    pub behind: bool,
    /// The highest term of a candidate this replica refused for having the
    /// shorter log.
    pub outranked: Option<u64>,
}

impl Heard {
    fn new(at: Instant) -> Heard {
        Heard {
            at,
            behind: false,
            outranked: None,
        }
    }
}

impl ElectionClock {
    /// A clock that last heard from a leader now.
    #[must_use]
    pub fn new() -> ElectionClock {
        ElectionClock::default()
    }

    /// A candidate was granted this replica's vote, or its vote changed:
    /// the next election waits from now.
    pub fn heard(&self) {
        self.update(|heard| heard.at = Instant::now());
    }

    /// A leader's append or snapshot was accepted: the next election waits
    /// from now, and what this replica learnt in the last election is
    /// forgotten.
    pub fn led(&self) {
        let now = Instant::now();
        self.update(|heard| *heard = Heard::new(now));
        *self.led_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
    }

    /// When a leader's append or snapshot was last accepted here.
    #[must_use]
    pub fn led_at(&self) -> Option<Instant> {
        *self.led_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A voter refused this replica's vote because its own log is longer:
    /// the next election waits longer, so that a replica with the longer
    /// log stands first.
    pub fn refused_for_log(&self) {
        self.update(|heard| heard.behind = true);
    }

    /// This replica refused a candidate of `term` because the candidate's
    /// log is shorter: if no leader has been heard from within the lease,
    /// it stands at once, above that term.
    pub fn outranked(&self, term: u64) {
        self.update(|heard| heard.outranked = heard.outranked.max(Some(term)));
        self.wake.notify_one();
    }

    /// openraft saw a leader or changed its vote at `at`, later than the
    /// clock knew.
    fn heard_at(&self, at: Instant) {
        self.update(|heard| heard.at = heard.at.max(at));
    }

    /// This replica stood at `at`: the next election waits from then, with
    /// no handicap.
    fn stood(&self, at: Instant) {
        self.update(|heard| *heard = Heard::new(at));
    }

    /// What the clock holds; the candidate it outranked is taken (acted on
    /// now or never).
    fn take(&self) -> Heard {
        let mut heard = Heard::new(Instant::now());
        self.update(|state| {
            heard = *state;
            state.outranked = None;
        });
        heard
    }

    fn update(&self, change: impl FnOnce(&mut Heard)) {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        change(state.get_or_insert_with(|| Heard::new(Instant::now())));
    }
}

/// How long a replica waits before it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionTiming {
    /// The range each wait is drawn from, `[min, max)`.
    pub timeout: (Duration, Duration),
    /// How long a follower keeps to its leader after last hearing from it
    /// (openraft's leader lease: a voter refuses other candidates as long).
    pub lease: Duration,
    /// What a replica refused for its shorter log waits more.
    pub behind: Duration,
}

/// What the timer does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Stand for election `times` times in a row (each a term higher),
    /// ending at `term`.
    Stand {
        /// How many elections are started.
        times: u64,
        /// The term of the last.
        term: u64,
    },
    /// Nothing to do before then.
    WaitUntil(Instant),
}

impl ElectionTiming {
    /// The timing openraft would use with `config`: the lease is
    /// `election_timeout_max`, a replica behind waits twice that more.
    #[must_use]
    pub fn of(config: &openraft::Config) -> ElectionTiming {
        let max = Duration::from_millis(config.election_timeout_max);
        ElectionTiming {
            timeout: (Duration::from_millis(config.election_timeout_min), max),
            lease: max,
            behind: max * 2,
        }
    }

    /// A wait drawn from `rng`, uniform over `timeout` (the whole of `min`
    /// if the range is empty).
    pub fn draw(&self, rng: &mut impl RngCore) -> Duration {
        let (min, max) = self.timeout;
        let span = u64::try_from(max.saturating_sub(min).as_micros()).unwrap_or(u64::MAX);
        if span == 0 {
            return min;
        }
        min.saturating_add(Duration::from_micros(rng.next_u64() % span))
    }

    /// What a replica whose vote is `vote` and whose clock says `heard`
    /// does at `now`, with the drawn `wait`:
    ///
    /// - it refused a candidate for its shorter log and has heard from no
    ///   leader within the lease: it stands at once, a term above that
    ///   candidate (whose own vote would otherwise split this term), if
    ///   that is at most [`STAND_ABOVE_TERMS_MAX`] terms away;
    /// - otherwise it stands once the drawn wait has passed since `heard.at`;
    ///   if it follows a leader (its vote is committed), once the lease and
    ///   the draw's excess over the timeout's minimum have — the lease
    ///   already is a silence of more than the minimum, and what is drawn
    ///   above it spreads the survivors apart as well (standing at
    ///   lease + draw cost a WAN failover three round trips for nothing);
    ///   [`ElectionTiming::behind`] later if a voter refused it for its
    ///   shorter log.
    #[must_use]
    pub fn next(
        &self,
        vote: &Vote<ReplicaId>,
        heard: &Heard,
        wait: Duration,
        now: Instant,
    ) -> Next {
        let term = vote.leader_id().term;
        // A term is a peer's number: no arithmetic on it may overflow.
        if let Some(above) = heard.outranked.and_then(|c| c.checked_add(1)) {
            let unled = heard
                .at
                .checked_add(self.lease)
                .is_some_and(|end| now >= end);
            let times = above.saturating_sub(term);
            if unled && (1..=STAND_ABOVE_TERMS_MAX).contains(&times) {
                return Next::Stand { times, term: above };
            }
        }
        let mut wait = wait;
        if vote.is_committed() {
            wait = wait
                .saturating_sub(self.timeout.0)
                .saturating_add(self.lease);
        }
        if heard.behind {
            wait = wait.saturating_add(self.behind);
        }
        // Beyond what an `Instant` can hold: a year is as good as never.
        let at = heard
            .at
            .checked_add(wait)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        if now >= at {
            Next::Stand {
                times: 1,
                term: term.saturating_add(1),
            }
        } else {
            Next::WaitUntil(at)
        }
    }
}

/// What a replica whose pre-vote a majority granted does, once it has read
/// its vote again in openraft's core ([`ElectionTiming::after_pre_vote`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterPreVote {
    /// Stand for election as decided.
    Stand,
    /// Its vote changed while the pre-vote was out (it granted another
    /// candidate, or heard a leader of a higher term): do not stand; the
    /// wait starts again from now.
    Restart,
    /// Its vote was renewed at this instant (a leader heard) after the
    /// moment the decision counted from, and the wait from it has not
    /// passed: do not stand yet.
    HeardAt(Instant),
}

impl ElectionTiming {
    /// The decision to stand was taken on a view a round trip old (the
    /// pre-vote's): whether it still holds now that the core says its vote
    /// is `current`, last modified at `touched`, where the decision was
    /// taken on `decided_on` and `heard`, with the drawn `wait`.
    ///
    /// Two followers whose timers run out together both ask; the first to
    /// stand wins the other's vote while that one's pre-vote is still out,
    /// and standing then would depose the leader it just voted for.
    #[must_use]
    pub fn after_pre_vote(
        &self,
        decided_on: &Vote<ReplicaId>,
        heard: &Heard,
        wait: Duration,
        current: &Vote<ReplicaId>,
        touched: Option<Instant>,
        now: Instant,
    ) -> AfterPreVote {
        if current != decided_on {
            return AfterPreVote::Restart;
        }
        if let Some(touched) = touched
            && touched > heard.at
        {
            let heard = Heard {
                at: touched,
                ..*heard
            };
            if !matches!(self.next(current, &heard, wait, now), Next::Stand { .. }) {
                return AfterPreVote::HeardAt(touched);
            }
        }
        AfterPreVote::Stand
    }
}

impl ElectionTiming {
    /// Whether a replica grants a pre-vote (`spec/replication.md` §7.1):
    /// not while it leads, nor while it follows a leader it heard from
    /// within the lease (`led_at`: its last append or snapshot accepted),
    /// and only to a candidate whose log (`theirs`) is at least as up to
    /// date as its own (`mine`) — the vote it would give, without giving
    /// it or raising its term.
    #[must_use]
    pub fn pre_vote(
        &self,
        leading: bool,
        led_at: Option<Instant>,
        mine: Option<LogId<ReplicaId>>,
        theirs: Option<LogId<ReplicaId>>,
        now: Instant,
    ) -> bool {
        let led = led_at
            .and_then(|at| at.checked_add(self.lease))
            .is_some_and(|end| now < end);
        !leading && !led && theirs >= mine
    }
}

/// Asks every other voter whether it would vote for this replica at
/// `term` (a pre-vote, `spec/replication.md` §7.1): true if a majority of
/// the voters, this one included, would. Each answer is awaited within
/// `within`; no answer is a refusal.
async fn pre_vote(
    raft: &Raft<Replication>,
    network: &Network,
    log: &LogStore,
    term: u64,
    within: Duration,
) -> bool {
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let voters: Vec<ReplicaId> = membership.voter_ids().collect();
    let needed = voters.len() / 2 + 1;
    let mut granted = usize::from(voters.contains(&metrics.id));
    if granted >= needed {
        return true;
    }
    let request = RaftRequest::PreVote {
        term,
        last_log_id: log.last_log_id(),
    };
    let mut asks = tokio::task::JoinSet::new();
    for id in voters.into_iter().filter(|id| *id != metrics.id) {
        let Some(node) = membership.get_node(&id) else {
            continue;
        };
        let mut peer = network.peer(id, node);
        let request = request.to_bytes();
        asks.spawn(async move { peer.call_raw(&request, within).await });
    }
    while let Some(answer) = asks.join_next().await {
        match &answer {
            Ok(Ok(body)) => {
                tracing::debug!(term, granted = body.as_slice() == [1], "pre-vote answered")
            }
            Ok(Err(error)) => tracing::debug!(term, %error, "pre-vote not answered"),
            Err(_) => {}
        }
        if let Ok(Ok(body)) = answer
            && body.as_slice() == [1]
        {
            granted += 1;
            if granted >= needed {
                asks.abort_all();
                return true;
            }
        }
    }
    false
}

/// Stands for election whenever `timing` says this replica has waited long
/// enough without hearing from a leader, with a wait drawn afresh each
/// time; returns when Raft stops. Needs openraft's own election timer off
/// (`Config::enable_elect = false`).
pub async fn run(
    raft: Raft<Replication>,
    clock: Arc<ElectionClock>,
    timing: ElectionTiming,
    network: Network,
    log: LogStore,
) {
    let mut rng = ChaCha20Rng::from_entropy();
    let mut metrics = raft.metrics();
    let mut vote = metrics.borrow().vote;
    let mut wait = timing.draw(&mut rng);
    loop {
        let now = metrics.borrow_and_update().clone();
        if now.running_state.is_err() {
            return;
        }
        if now.vote != vote {
            // openraft restarts its own wait whenever its vote changes.
            vote = now.vote;
            clock.heard();
        }
        let voter = now
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == now.id);
        if now.state.is_leader() || !voter {
            // A leader holds its lease; a replica that is not a voter (a
            // learner, or one whose log has no membership yet: a new
            // cluster's other members before the first leader reached
            // them) only restarts its own wait. Taking no lease for it:
            // it would refuse every pre-vote, and a new cluster whose
            // first vote went unanswered would never elect (seen with
            // `rtt_ms = 80`, whose 800 ms lease outlasts the gaps between
            // the metrics changes that woke this loop).
            if now.state.is_leader() {
                clock.led();
            } else {
                clock.heard();
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                () = clock.wake.notified() => {}
            }
            continue;
        }
        let heard = clock.take();
        let instant = Instant::now();
        match timing.next(&vote, &heard, wait, instant) {
            Next::Stand { times, term } => {
                // A pre-vote first: a replica cut off (paused, partitioned,
                // catching up) whose peers still hear a healthy leader
                // must not raise their term and depose it.
                if !pre_vote(&raft, &network, &log, term, timing.timeout.0).await {
                    tracing::info!(
                        term,
                        "no majority would vote for this replica (a leader is heard, or its log is behind): not standing"
                    );
                    clock.stood(Instant::now());
                    wait = timing.draw(&mut rng);
                    continue;
                }
                // Decided on a view a round trip old (the pre-vote's):
                // openraft may have granted another candidate its vote (or
                // heard a leader) meanwhile, and standing now would depose
                // the leader it just voted for — two followers whose
                // timers ran out together did so after every third leader
                // kill across a 20 ms round trip, costing a second
                // election. Read its vote, and when that last changed, in
                // its core; the election command follows right behind on
                // the same queue.
                let Ok((current, touched)) = raft
                    .with_raft_state(|state| (*state.vote_ref(), state.vote_last_modified()))
                    .await
                else {
                    return;
                };
                let touched = touched.map(tokio::time::Instant::into_std);
                match timing.after_pre_vote(&vote, &heard, wait, &current, touched, Instant::now())
                {
                    AfterPreVote::Stand => {}
                    AfterPreVote::Restart => {
                        // The wait starts again from now (as openraft's own
                        // would), and the metrics catch up meanwhile.
                        clock.heard();
                        continue;
                    }
                    AfterPreVote::HeardAt(at) => {
                        clock.heard_at(at);
                        continue;
                    }
                }
                tracing::info!(
                    term,
                    waited_ms = u64::try_from(instant.duration_since(heard.at).as_millis())
                        .unwrap_or(u64::MAX),
                    outranked = heard.outranked,
                    "no leader heard from: standing for election"
                );
                for _ in 0..times {
                    if raft.trigger().elect().await.is_err() {
                        return;
                    }
                }
                clock.stood(instant);
                wait = timing.draw(&mut rng);
            }
            Next::WaitUntil(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                    changed = metrics.changed() => if changed.is_err() { return },
                    () = clock.wake.notified() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> ElectionTiming {
        ElectionTiming::of(&openraft::Config {
            election_timeout_min: 100,
            election_timeout_max: 200,
            heartbeat_interval: 30,
            ..Default::default()
        })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_timing_is_openrafts() {
        let timing = timing();
        assert_eq!(timing.timeout, (ms(100), ms(200)));
        assert_eq!(timing.lease, ms(200));
        assert_eq!(timing.behind, ms(400));
    }

    #[test]
    fn a_follower_waits_out_the_lease_and_a_replica_behind_waits_more() {
        let timing = timing();
        let t0 = Instant::now();
        let wait = ms(130);
        let follower = Vote::new_committed(8, 3);
        let candidate = Vote::new(9, 1);
        let heard = Heard::new(t0);
        let behind = Heard {
            behind: true,
            ..heard
        };
        for (vote, heard, at) in [
            (candidate, heard, t0 + ms(130)),
            (follower, heard, t0 + ms(230)),
            (follower, behind, t0 + ms(630)),
            (candidate, behind, t0 + ms(530)),
        ] {
            assert_eq!(timing.next(&vote, &heard, wait, t0), Next::WaitUntil(at));
            assert_eq!(
                timing.next(&vote, &heard, wait, at - Duration::from_micros(1)),
                Next::WaitUntil(at)
            );
            assert_eq!(
                timing.next(&vote, &heard, wait, at),
                Next::Stand {
                    times: 1,
                    term: vote.leader_id().term + 1
                }
            );
        }
    }

    /// The race of two followers whose timers run out together (term 8,
    /// leader 3 killed): both decide to stand for term 9 and ask for
    /// pre-votes; replica 1 stands first and replica 2 grants it its vote
    /// while its own pre-vote is still out. Replica 2's pre-vote comes back
    /// granted (replica 3's answer predates the election), but the vote it
    /// decided on is gone: it must not stand, which would depose the
    /// leader it just voted for. A vote renewed by a leader heard meanwhile
    /// holds it back until a wait from then has passed.
    #[test]
    fn a_follower_that_voted_while_its_pre_vote_was_out_does_not_stand() {
        let timing = timing();
        let t0 = Instant::now();
        let wait = ms(130);
        let followed = Vote::new_committed(8, 3);
        let heard = Heard::new(t0);
        // The timer's decision, on the view before the pre-vote.
        let decided = t0 + ms(230);
        assert_eq!(
            timing.next(&followed, &heard, wait, decided),
            Next::Stand { times: 1, term: 9 }
        );
        let answered = decided + ms(20);
        // Meanwhile it granted replica 1's vote for term 9.
        let granted = Vote::new(9, 1);
        assert_eq!(
            timing.after_pre_vote(
                &followed,
                &heard,
                wait,
                &granted,
                Some(decided + ms(5)),
                answered
            ),
            AfterPreVote::Restart
        );
        // The same vote, renewed by the leader heard again at +10 ms: not
        // yet (a wait and the lease from then).
        assert_eq!(
            timing.after_pre_vote(
                &followed,
                &heard,
                wait,
                &followed,
                Some(decided + ms(10)),
                answered
            ),
            AfterPreVote::HeardAt(decided + ms(10))
        );
        // Nothing changed while it asked: it stands.
        assert_eq!(
            timing.after_pre_vote(&followed, &heard, wait, &followed, Some(t0), answered),
            AfterPreVote::Stand
        );
        assert_eq!(
            timing.after_pre_vote(&followed, &heard, wait, &followed, None, answered),
            AfterPreVote::Stand
        );
    }

    #[test]
    fn a_replica_that_refused_a_shorter_log_stands_above_it_once_its_lease_is_out() {
        let timing = timing();
        let t0 = Instant::now();
        let follower = Vote::new_committed(8, 3);
        let heard = Heard {
            outranked: Some(9),
            ..Heard::new(t0)
        };
        // Within the lease a leader may still be there: the usual wait.
        assert_eq!(
            timing.next(&follower, &heard, ms(150), t0 + ms(199)),
            Next::WaitUntil(t0 + ms(250))
        );
        // After it: two elections in a row, to term 10, above the
        // candidate's own vote in term 9.
        assert_eq!(
            timing.next(&follower, &heard, ms(150), t0 + ms(200)),
            Next::Stand { times: 2, term: 10 }
        );
        // A candidate of a term this replica has passed: nothing to do.
        let ahead = Vote::new(12, 1);
        assert_eq!(
            timing.next(&ahead, &heard, ms(250), t0 + ms(200)),
            Next::WaitUntil(t0 + ms(250))
        );
        // Too many terms away: the usual wait.
        let far = Heard {
            outranked: Some(8 + STAND_ABOVE_TERMS_MAX),
            ..heard
        };
        assert_eq!(
            timing.next(&follower, &far, ms(150), t0 + ms(240)),
            Next::WaitUntil(t0 + ms(250))
        );
        let near = Heard {
            outranked: Some(7 + STAND_ABOVE_TERMS_MAX),
            ..heard
        };
        assert_eq!(
            timing.next(&follower, &near, ms(150), t0 + ms(300)),
            Next::Stand {
                times: STAND_ABOVE_TERMS_MAX,
                term: 8 + STAND_ABOVE_TERMS_MAX
            }
        );
    }

    #[test]
    fn extreme_terms_and_timeouts_do_not_overflow() {
        let t0 = Instant::now();
        let huge = ElectionTiming {
            timeout: (ms(1), Duration::MAX),
            lease: Duration::MAX,
            behind: Duration::MAX,
        };
        let heard = Heard {
            outranked: Some(u64::MAX),
            behind: true,
            ..Heard::new(t0)
        };
        let vote = Vote::new_committed(u64::MAX, 1);
        assert!(matches!(
            huge.next(&vote, &heard, Duration::MAX, t0),
            Next::WaitUntil(at) if at > t0
        ));
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        assert!(huge.draw(&mut rng) >= ms(1));
        // A peer's term at the top of the range: nothing to stand above.
        let heard = Heard {
            outranked: Some(u64::MAX),
            ..Heard::new(t0)
        };
        assert_eq!(
            timing().next(&Vote::new_committed(7, 1), &heard, ms(100), t0 + ms(150)),
            Next::WaitUntil(t0 + ms(200))
        );
    }

    #[test]
    fn every_wait_is_drawn_afresh_over_the_whole_range() {
        let timing = timing();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let draws: Vec<Duration> = (0..2000).map(|_| timing.draw(&mut rng)).collect();
        assert!(draws.iter().all(|d| *d >= ms(100) && *d < ms(200)));
        // Spread over the range: each tenth of it is drawn.
        let mut tenths = [0u32; 10];
        for draw in &draws {
            let tenth = (draw.as_micros() - 100_000) / 10_000;
            tenths[usize::try_from(tenth).unwrap_or(9)] += 1;
        }
        assert!(tenths.iter().all(|n| *n > 100), "{tenths:?}");
    }

    #[test]
    fn an_empty_range_draws_its_minimum() {
        let timing = ElectionTiming {
            timeout: (ms(100), ms(100)),
            lease: Duration::ZERO,
            behind: Duration::ZERO,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        assert_eq!(timing.draw(&mut rng), ms(100));
    }

    #[test]
    fn the_clock_forgets_the_last_election_when_a_leader_is_heard_from() {
        let clock = ElectionClock::new();
        let before = clock.take().at;
        clock.refused_for_log();
        clock.outranked(9);
        clock.outranked(7);
        let heard = clock.take();
        assert!(heard.behind);
        assert_eq!(heard.outranked, Some(9));
        assert_eq!(clock.take().outranked, None, "taken once");
        // A vote granted or changed keeps the handicap …
        clock.heard();
        assert!(clock.take().at >= before);
        assert!(clock.take().behind);
        // … a leader heard from clears it.
        clock.led();
        assert!(!clock.take().behind);
        clock.refused_for_log();
        let later = Instant::now() + ms(5);
        clock.stood(later);
        assert_eq!(clock.take(), Heard::new(later));
    }

    #[test]
    fn a_pre_vote_is_refused_by_a_leader_and_by_a_follower_that_hears_one() {
        let timing = timing();
        let t0 = Instant::now();
        let log = |term, index| Some(LogId::new(openraft::CommittedLeaderId::new(term, 1), index));
        // Heard a leader 199 ms ago, lease 200 ms: refused, even to a
        // longer log.
        assert!(!timing.pre_vote(false, Some(t0), log(3, 10), log(4, 20), t0 + ms(199)));
        // The lease out: granted to a log at least as up to date …
        assert!(timing.pre_vote(false, Some(t0), log(3, 10), log(3, 10), t0 + ms(200)));
        assert!(timing.pre_vote(false, Some(t0), log(3, 10), log(4, 2), t0 + ms(200)));
        // … never to a shorter one, or an older last term.
        assert!(!timing.pre_vote(false, Some(t0), log(3, 10), log(3, 9), t0 + ms(200)));
        assert!(!timing.pre_vote(false, Some(t0), log(3, 10), log(2, 99), t0 + ms(200)));
        // Never heard a leader (a cluster starting): granted.
        assert!(timing.pre_vote(false, None, None, None, t0));
        assert!(timing.pre_vote(false, None, log(1, 1), log(1, 1), t0));
        // A leader refuses whatever the log.
        assert!(!timing.pre_vote(true, None, log(3, 10), log(9, 99), t0));
    }

    #[test]
    fn the_clock_remembers_when_a_leader_was_last_heard_from() {
        let clock = ElectionClock::new();
        assert_eq!(clock.led_at(), None);
        clock.heard();
        assert_eq!(clock.led_at(), None, "a vote is not a leader");
        let before = Instant::now();
        clock.led();
        let at = clock.led_at().expect("led");
        assert!(at >= before);
        // Standing forgets the election's handicaps, not the leader.
        clock.stood(Instant::now());
        assert_eq!(clock.led_at(), Some(at));
    }
}
