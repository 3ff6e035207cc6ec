//! The fault campaign's plan: which fault `sealbatch cluster demo
//! --faults N` injects when, drawn from a seed so that a run can be
//! repeated.
//!
//! Pure: [`plan`] takes the seed, the count, the trading time and the kinds
//! to draw from, and returns the faults in time order; the demo carries
//! them out on the replica processes (`src/cli/cluster.rs`) and reports,
//! per kind, the time from each fault to the next receipt.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use strum::IntoEnumIterator;

/// The most faults one campaign plans (one every 6 ms over a minute; more
/// would only queue up behind each other's holds).
pub const FAULTS_MAX: u32 = 10_000;

/// A fault the campaign injects into the three replica processes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, strum::EnumIter, strum::IntoStaticStr,
)]
#[strum(serialize_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the leader; it restarts after the hold.
    KillLeader,
    /// SIGKILL a follower; it restarts after the hold.
    KillFollower,
    /// SIGSTOP the leader for the hold, then SIGCONT.
    PauseLeader,
    /// SIGSTOP a follower for the hold, then SIGCONT.
    PauseFollower,
    /// SIGKILL the leader and a follower at once (no majority); both
    /// restart after the hold.
    KillTwo,
    /// SIGKILL all three; all restart after the hold.
    KillAll,
    /// SIGTERM the leader (a graceful stop); it restarts after the hold.
    StopLeader,
}

impl FaultKind {
    /// Its name on the command line and in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The range its hold is drawn from, ms: how long a process stays
    /// paused, or down before it restarts.
    #[must_use]
    pub fn hold_ms(self) -> (u64, u64) {
        match self {
            FaultKind::PauseLeader | FaultKind::PauseFollower => (300, 3_000),
            FaultKind::KillLeader | FaultKind::KillFollower | FaultKind::StopLeader => (0, 1_000),
            FaultKind::KillTwo | FaultKind::KillAll => (500, 2_000),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault kind the command line names that does not exist.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "no fault kind {0:?}: one of kill-leader, kill-follower, pause-leader, pause-follower, kill-two, kill-all, stop-leader"
)]
pub struct UnknownFault(pub String);

impl FromStr for FaultKind {
    type Err = UnknownFault;

    fn from_str(name: &str) -> Result<FaultKind, UnknownFault> {
        FaultKind::iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| UnknownFault(name.to_string()))
    }
}

/// One fault of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// When, from the start of trading.
    pub at: Duration,
    /// What.
    pub kind: FaultKind,
    /// How long the processes stay paused or down.
    pub hold: Duration,
}

/// `count` faults over `duration`, one every `duration / (count + 1)`
/// (never two at once), each of a kind drawn uniformly from `kinds` and
/// its hold from the kind's range, all from `seed`. No kind: no fault.
#[must_use]
pub fn plan(seed: u64, count: u32, duration: Duration, kinds: &[FaultKind]) -> Vec<Fault> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let Some(kinds_len) = u64::try_from(kinds.len()).ok().filter(|n| *n > 0) else {
        return Vec::new();
    };
    (0..count)
        .map(|k| {
            let at = duration.mul_f64(f64::from(k + 1) / (f64::from(count) + 1.0));
            // In 0..kinds.len(): the remainder of a division by it.
            let kind = kinds[(rng.next_u64() % kinds_len) as usize];
            let (low, high) = kind.hold_ms();
            let hold = low + rng.next_u64() % (high - low + 1);
            Fault {
                at,
                kind,
                hold: Duration::from_millis(hold),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_the_same_for_a_seed_in_time_order_and_within_the_holds() {
        let duration = Duration::from_secs(600);
        let all: Vec<FaultKind> = FaultKind::iter().collect();
        let a = plan(7, 60, duration, &all);
        assert_eq!(a, plan(7, 60, duration, &all));
        assert_ne!(a, plan(8, 60, duration, &all));
        assert_eq!(a.len(), 60);
        assert!(a.windows(2).all(|w| w[0].at < w[1].at));
        assert!(a.iter().all(|f| f.at > Duration::ZERO && f.at < duration));
        for fault in &a {
            let (low, high) = fault.kind.hold_ms();
            let hold = u64::try_from(fault.hold.as_millis()).expect("ms");
            assert!((low..=high).contains(&hold), "{fault:?}");
        }
        // Sixty draws from seven kinds reach every one.
        for kind in FaultKind::iter() {
            assert!(a.iter().any(|f| f.kind == kind), "no {kind}");
        }
    }

    #[test]
    fn a_plan_draws_only_the_kinds_given() {
        let only = [FaultKind::PauseFollower];
        let faults = plan(1, 10, Duration::from_secs(10), &only);
        assert!(faults.iter().all(|f| f.kind == FaultKind::PauseFollower));
        assert!(plan(1, 10, Duration::from_secs(10), &[]).is_empty());
    }

    #[test]
    fn kinds_read_back_from_their_names() {
        for kind in FaultKind::iter() {
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
        }
        assert_eq!(
            "kill-everything".parse::<FaultKind>(),
            Err(UnknownFault("kill-everything".into()))
        );
    }
}
