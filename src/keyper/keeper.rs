//! The log keeper (the sequencer's part of key generation): it opens a
//! generation for the next window in time, takes the keypers' messages
//! into the committee's log — only those that count, so the log cannot be
//! spammed — ends each phase by its clock, and hands out the certified
//! windows. A generation that fails (fewer than `t` qualified dealers, or no
//! certificate in time) is opened again under a new id for the same
//! batches: the keypers at fault cannot stall key generation for good.
//!
//! Sans-IO: time is an argument; the caller relays messages and the log.

use std::collections::{BTreeMap, VecDeque};

use super::committee::{Committee, WINDOW_BATCHES_MAX, Window};
use super::generation::{Generation, WindowKeys};
use super::log::{Ignored, LogEntry, Phase, WindowCertificate, WindowLog};
use super::message::SignedKeyperMessage;
use crate::types::BatchId;

/// When and how the keeper runs generations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerationParams {
    /// Batches per window.
    pub window_batches: u32,
    /// A window's generation opens when the open batch is this many batches
    /// before its first (so it is certified before it is needed).
    pub lead_batches: u64,
    /// How long each phase stays open: dealing, accusing, apologizing,
    /// approving (a generation not certified by then is opened again).
    pub phase_ms: [u64; 4],
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams {
            window_batches: 256,
            lead_batches: 128,
            phase_ms: [2_000, 1_000, 1_000, 1_000],
        }
    }
}

/// Why a message is not taken into the log.
pub type Refused = Ignored;

struct Running {
    log: WindowLog,
    /// When the open phase began.
    phase_since_ms: u64,
}

/// The log keeper.
pub struct LogKeeper {
    committee: Committee,
    params: GenerationParams,
    log: Vec<LogEntry>,
    /// Generations under way, by window id.
    running: BTreeMap<u64, Running>,
    /// The first batch after the windows opened so far.
    dealt_below: BatchId,
    next_id: u64,
    certified: VecDeque<(WindowCertificate, WindowKeys)>,
}

impl std::fmt::Debug for LogKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKeeper")
            .field("log", &self.log.len())
            .field("running", &self.running.keys().collect::<Vec<_>>())
            .field("dealt_below", &self.dealt_below)
            .finish_non_exhaustive()
    }
}

impl LogKeeper {
    /// A keeper with an empty log, dealing windows from `first_batch` on.
    #[must_use]
    pub fn new(committee: Committee, params: GenerationParams, first_batch: BatchId) -> LogKeeper {
        LogKeeper {
            committee,
            params: GenerationParams {
                window_batches: params.window_batches.clamp(1, WINDOW_BATCHES_MAX),
                ..params
            },
            log: Vec::new(),
            running: BTreeMap::new(),
            dealt_below: first_batch,
            next_id: 1,
            certified: VecDeque::new(),
        }
    }

    /// The log from position `from` on.
    #[must_use]
    pub fn log_from(&self, from: usize) -> &[LogEntry] {
        self.log.get(from..).unwrap_or(&[])
    }

    /// The log's length.
    #[must_use]
    pub fn len(&self) -> usize {
        self.log.len()
    }

    /// Whether the log is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// Opens the generations due at `now_ms` (with `open_batch` the batch
    /// open now) and ends the phases whose time is up.
    pub fn handle_timeout(&mut self, now_ms: u64, open_batch: BatchId) {
        while open_batch.saturating_add(self.params.lead_batches) >= self.dealt_below {
            let window = Window {
                id: 0,
                first_batch: self.dealt_below,
                batches: self.params.window_batches,
            };
            if window.check().is_err() {
                break;
            }
            self.dealt_below = window.first_batch + u64::from(window.batches);
            self.open(window, now_ms);
        }
        let ids: Vec<u64> = self.running.keys().copied().collect();
        for id in ids {
            self.advance(id, now_ms);
        }
    }

    fn open(&mut self, mut window: Window, now_ms: u64) {
        window.id = self.next_id;
        self.next_id += 1;
        self.log.push(LogEntry::Open { window });
        self.running.insert(
            window.id,
            Running {
                log: WindowLog::new(
                    self.committee.clone(),
                    Generation::observer(self.committee.clone(), window),
                ),
                phase_since_ms: now_ms,
            },
        );
    }

    fn advance(&mut self, id: u64, now_ms: u64) {
        let Some(running) = self.running.get_mut(&id) else {
            return;
        };
        let window = *running.log.generation().window();
        let phase = running.log.phase();
        let due = running
            .phase_since_ms
            .saturating_add(self.params.phase_ms[phase as usize - 1]);
        if phase == Phase::Approve {
            if let Some(certificate) = running.log.certificate() {
                let keys = match running.log.outcome() {
                    Some(Ok(result)) => result.keys.clone(),
                    _ => return,
                };
                self.running.remove(&id);
                self.certified.push_back((certificate, keys));
                return;
            }
            let failed = !matches!(running.log.outcome(), Some(Ok(_)));
            if failed || now_ms >= due {
                // No keys, or no certificate in time: again, under a new id.
                self.running.remove(&id);
                self.open(window, now_ms);
            }
            return;
        }
        if now_ms < due {
            return;
        }
        let entry = LogEntry::PhaseEnd { window, phase };
        if running.log.apply(&entry).is_ok() {
            running.phase_since_ms = now_ms;
            self.log.push(entry);
            // A failed generation is reopened at once.
            self.advance(id, now_ms);
        }
    }

    /// A keyper's message: taken into the log if it counts now.
    ///
    /// # Errors
    ///
    /// [`Ignored`] (nothing is logged): no generation of its window under
    /// way, or the reason its generation would ignore it.
    pub fn handle_message(&mut self, message: SignedKeyperMessage) -> Result<(), Refused> {
        let Some(running) = self.running.get_mut(&message.message.window.id) else {
            return Err(Ignored::OtherWindow);
        };
        let entry = LogEntry::Message(message);
        running.log.apply(&entry)?;
        self.log.push(entry);
        Ok(())
    }

    /// The next window certified: its certificate and the keys an observer
    /// of its log derived (for the committee custodian).
    pub fn poll_certified(&mut self) -> Option<(WindowCertificate, WindowKeys)> {
        self.certified.pop_front()
    }
}
