//! The log keeper (the sequencer's part of key generation): it opens a
//! generation for the next window in time, takes the keypers' messages
//! into the committee's log — only those that count, so the log cannot be
//! spammed — ends each phase by its clock, and hands out the certified
//! windows. A generation that fails (fewer than `t` qualified dealers, or no
//! certificate in time) is opened again under a new id for the same
//! batches: the keypers at fault cannot stall key generation for good.
//!
//! Every entry has a **position**: positions only grow, and survive
//! pruning, so a reader asks for "the entries from position `p` on" and
//! misses only entries nobody needs any more. The log keeps the entries of
//! generations under way and of certified windows not yet past
//! ([`prune`](LogKeeper::prune)), so it stays bounded, and a keyper that
//! lost everything but its keys rebuilds its shares of every window in use
//! from it (its sealed shares are in the dealings).
//!
//! Sans-IO: time is an argument; the caller journals the new entries
//! ([`poll_entry`](LogKeeper::poll_entry)), relays messages and serves the
//! log; a restarted caller gives the journaled entries back to
//! [`replay`](LogKeeper::replay).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::committee::{Committee, WINDOW_BATCHES_MAX, Window};
use super::generation::{Generation, WindowKeys};
use super::log::{Ignored, LogEntry, Phase, Prechecked, WindowCertificate, WindowLog};
use super::message::SignedKeyperMessage;
use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
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

impl Decode for GenerationParams {
    /// Reads [`encode_into`](Encode::encode_into): a window of `1..=`[`WINDOW_BATCHES_MAX`]
    /// batches, phases of at least 1 ms and at most a day.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    fn decode_from(r: &mut Reader<'_>) -> Result<GenerationParams, DecodeError> {
        let offset = r.offset();
        let window_batches = r.u32("window batches")?;
        if window_batches == 0 || window_batches > WINDOW_BATCHES_MAX {
            return Err(r.invalid("window batches", offset));
        }
        let lead_batches = r.u64("lead batches")?;
        let mut phase_ms = [0; 4];
        for ms in &mut phase_ms {
            let offset = r.offset();
            *ms = r.u64("phase ms")?;
            if *ms == 0 || *ms > PHASE_MS_MAX {
                return Err(r.invalid("phase ms", offset));
            }
        }
        Ok(GenerationParams {
            window_batches,
            lead_batches,
            phase_ms,
        })
    }
}

impl Encode for GenerationParams {
    /// `u32le(window_batches) ‖ u64le(lead_batches) ‖ 4 × u64le(phase_ms)`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.put_u32(self.window_batches);
        out.put_u64(self.lead_batches);
        for ms in self.phase_ms {
            out.put_u64(ms);
        }
    }
}

/// The longest a phase may be configured to stay open: a day.
pub const PHASE_MS_MAX: u64 = 86_400_000;

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

/// Why a journaled entry does not replay: the journal is not a log this
/// keeper wrote.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Positions must grow.
    #[error("log entry at position {position} after position {last}")]
    Position {
        /// The entry's position.
        position: u64,
        /// The last position replayed.
        last: u64,
    },
    /// The entry would not have been logged.
    #[error("log entry at position {position} does not count: {reason}")]
    Ignored {
        /// The entry's position.
        position: u64,
        /// Why.
        reason: Ignored,
    },
}

struct Running {
    log: WindowLog,
    /// When the open phase began.
    phase_since_ms: u64,
}

/// What a checkpoint keeps of the keeper: the retained entries and the
/// counters; [`LogKeeper::restore`] rebuilds the keeper from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeeperSnapshot {
    /// The position the next entry gets.
    pub next_position: u64,
    /// The id the next generation gets.
    pub next_id: u64,
    /// The first batch after the windows opened so far.
    pub dealt_below: BatchId,
    /// The retained entries, by ascending position.
    pub entries: Vec<(u64, LogEntry)>,
}

/// Most entries a snapshot may hold.
pub const SNAPSHOT_ENTRIES_MAX: usize = 1 << 20;

impl Decode for KeeperSnapshot {
    /// Reads [`encode_into`](Encode::encode_into): positions strictly ascending and
    /// below `next_position`.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    fn decode_from(r: &mut Reader<'_>) -> Result<KeeperSnapshot, DecodeError> {
        let next_position = r.u64("next position")?;
        let next_id = r.u64("next id")?;
        let dealt_below = BatchId(r.u64("dealt below")?);
        let count = r.count("log entries", SNAPSHOT_ENTRIES_MAX)?;
        let mut entries = Vec::with_capacity(count.min(1024));
        let mut last = None;
        for _ in 0..count {
            let offset = r.offset();
            let position = r.u64("position")?;
            if last.is_some_and(|l| position <= l) || position >= next_position {
                return Err(r.invalid("position", offset));
            }
            last = Some(position);
            let bytes = r.blob("log entry", super::message::KEYPER_MESSAGE_LEN_MAX + 64)?;
            let mut inner = Reader::new(bytes);
            let entry = LogEntry::decode_from(&mut inner)?;
            inner.finish()?;
            entries.push((position, entry));
        }
        Ok(KeeperSnapshot {
            next_position,
            next_id,
            dealt_below,
            entries,
        })
    }
}

impl Encode for KeeperSnapshot {
    /// `u64le(next_position) ‖ u64le(next_id) ‖ u64le(dealt_below) ‖
    /// u32le(count) ‖ count × (u64le(position) ‖ u32le(len) ‖ entry)`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.put_u64(self.next_position);
        out.put_u64(self.next_id);
        out.put_u64(self.dealt_below.get());
        // Bounded by SNAPSHOT_ENTRIES_MAX (the keeper prunes far below it).
        out.put_u32(self.entries.len() as u32);
        for (position, entry) in &self.entries {
            out.put_u64(*position);
            out.put_blob(&entry.to_bytes());
        }
    }
}

/// Most windows a log keeper deals ahead of the first batch its sequencer
/// still needs (the last [`LogKeeper::prune`]): no window opens further.
/// Windows are pruned only once no batch needs them, so a batch whose key
/// does not come holds every later window back while the clock runs on;
/// this bounds what is dealt meanwhile, below what a keyper keeps
/// ([`KEYPER_WINDOWS_KEPT_MAX`](super::node::KEYPER_WINDOWS_KEPT_MAX)) and
/// what a custodian keeps
/// ([`WINDOWS_KEPT_MAX`](super::custodian::WINDOWS_KEPT_MAX)), so that
/// neither ever drops a window a sealed batch still needs.
pub const WINDOWS_AHEAD_MAX: u64 = 32;

/// The log keeper.
pub struct LogKeeper {
    committee: Committee,
    params: GenerationParams,
    /// The retained entries, by position.
    log: BTreeMap<u64, LogEntry>,
    next_position: u64,
    /// New entries for the caller to journal.
    fresh: VecDeque<(u64, LogEntry)>,
    /// Generations under way, by window id.
    running: BTreeMap<u64, Running>,
    /// Certified windows whose entries are kept, by window id.
    kept: BTreeMap<u64, Window>,
    /// The first batch after the windows opened so far.
    dealt_below: BatchId,
    next_id: u64,
    certified: VecDeque<(WindowCertificate, WindowKeys)>,
    /// How many keypers are linked to the log keeper, as its caller last
    /// said (`None`: not known, as in a replay or a test).
    linked: Option<usize>,
    /// The first batch still needed, as the last prune said (`None`: never
    /// pruned, no bound on dealing ahead).
    needed: Option<BatchId>,
}

impl std::fmt::Debug for LogKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKeeper")
            .field("log", &self.log.len())
            .field("next_position", &self.next_position)
            .field("running", &self.running.keys().collect::<Vec<_>>())
            .field("kept", &self.kept.keys().collect::<Vec<_>>())
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
            log: BTreeMap::new(),
            next_position: 0,
            fresh: VecDeque::new(),
            running: BTreeMap::new(),
            kept: BTreeMap::new(),
            dealt_below: first_batch,
            next_id: 1,
            certified: VecDeque::new(),
            linked: None,
            needed: None,
        }
    }

    /// A keeper rebuilt from `snapshot` at `now_ms`: its entries replayed
    /// (the certified windows among them come out of
    /// [`poll_certified`](Self::poll_certified) again), phases under way
    /// timed from `now_ms`.
    ///
    /// # Errors
    ///
    /// [`ReplayError`] for an entry that does not replay.
    pub fn restore(
        committee: Committee,
        params: GenerationParams,
        snapshot: &KeeperSnapshot,
        now_ms: u64,
    ) -> Result<LogKeeper, ReplayError> {
        let mut keeper = LogKeeper::new(committee, params, snapshot.dealt_below);
        for (position, entry) in &snapshot.entries {
            keeper.replay(*position, entry.clone(), now_ms)?;
        }
        keeper.next_position = keeper.next_position.max(snapshot.next_position);
        keeper.next_id = keeper.next_id.max(snapshot.next_id);
        keeper.dealt_below = keeper.dealt_below.max(snapshot.dealt_below);
        Ok(keeper)
    }

    /// The committee.
    #[must_use]
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    /// The generation parameters.
    #[must_use]
    pub fn params(&self) -> &GenerationParams {
        &self.params
    }

    /// What a checkpoint keeps.
    #[must_use]
    pub fn snapshot(&self) -> KeeperSnapshot {
        KeeperSnapshot {
            next_position: self.next_position,
            next_id: self.next_id,
            dealt_below: self.dealt_below,
            entries: self.log.iter().map(|(&p, e)| (p, e.clone())).collect(),
        }
    }

    /// The retained entries from position `from` on, below position
    /// `below`, at most `max` of them.
    pub fn entries(
        &self,
        from: u64,
        below: u64,
        max: usize,
    ) -> impl Iterator<Item = (u64, &LogEntry)> {
        self.log
            .range(from..below.max(from))
            .take(max)
            .map(|(&p, e)| (p, e))
    }

    /// The position the next entry gets.
    #[must_use]
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// How many entries are retained.
    #[must_use]
    pub fn len(&self) -> usize {
        self.log.len()
    }

    /// Whether no entry is retained.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// The next new entry, for the caller to journal.
    pub fn poll_entry(&mut self) -> Option<(u64, LogEntry)> {
        self.fresh.pop_front()
    }

    /// Opens the generations due at `now_ms` (with `open_batch` the batch
    /// open now) and ends the phases whose time is up.
    pub fn handle_timeout(&mut self, now_ms: u64, open_batch: BatchId) {
        // A generation opened while fewer than `t` keypers are linked would
        // fail and be opened again (at start-up: every envelope refused
        // meanwhile): the next window waits for them.
        let quorum = self
            .linked
            .is_none_or(|linked| linked >= self.committee.threshold());
        let limit = self.needed.map_or(BatchId::MAX, |needed| {
            needed.saturating_add(WINDOWS_AHEAD_MAX * u64::from(self.params.window_batches))
        });
        while quorum
            && self.dealt_below < limit
            && open_batch.saturating_add(self.params.lead_batches) >= self.dealt_below
        {
            let window = Window {
                id: 0,
                first_batch: self.dealt_below,
                batches: self.params.window_batches,
            };
            if window.check().is_err() {
                break;
            }
            self.dealt_below = window.first_batch + u64::from(window.batches);
            // A window whose every batch has opened already (the keeper
            // waited, or its sequencer was down) would be dealt for
            // nothing: it is passed over.
            if self.dealt_below <= open_batch {
                continue;
            }
            self.open(window, now_ms);
        }
        let ids: Vec<u64> = self.running.keys().copied().collect();
        for id in ids {
            self.advance(id, now_ms);
        }
    }

    fn push(&mut self, entry: LogEntry) {
        let position = self.next_position;
        self.next_position += 1;
        self.log.insert(position, entry.clone());
        self.fresh.push_back((position, entry));
    }

    /// Starts generation `window` (an attempt under a new id ends every
    /// earlier attempt at the same batches, whose entries are dropped).
    fn start(&mut self, window: Window, now_ms: u64) {
        let superseded: BTreeSet<u64> = self
            .running
            .iter()
            .filter(|(_, r)| r.log.generation().window().first_batch == window.first_batch)
            .map(|(&id, _)| id)
            .collect();
        self.running.retain(|id, _| !superseded.contains(id));
        self.log.retain(|_, e| !superseded.contains(&e.window().id));
        self.next_id = self.next_id.max(window.id.saturating_add(1));
        self.dealt_below = self
            .dealt_below
            .max(window.first_batch.saturating_add(u64::from(window.batches)));
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

    fn open(&mut self, mut window: Window, now_ms: u64) {
        window.id = self.next_id;
        self.start(window, now_ms);
        self.push(LogEntry::Open { window });
    }

    /// How many keypers are linked now: new windows are opened only while
    /// at least `t` are (`spec/keyper.md` §13).
    pub fn set_linked(&mut self, linked: usize) {
        self.linked = Some(linked);
    }

    /// How many keypers its caller last said are linked (`None`: never
    /// said).
    #[must_use]
    pub fn linked(&self) -> Option<usize> {
        self.linked
    }

    /// Moves generation `id` to the certified windows once `t` keypers
    /// approved its result; an earlier attempt's certified window of the
    /// same batches is dropped.
    fn collect(&mut self, id: u64) {
        let Some(running) = self.running.get(&id) else {
            return;
        };
        let Some(certificate) = running.log.certificate() else {
            return;
        };
        let Some(Ok(result)) = running.log.outcome() else {
            return;
        };
        let keys = result.keys.clone();
        let window = certificate.window;
        self.running.remove(&id);
        self.kept.insert(id, window);
        self.certified.push_back((certificate, keys));
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
            let failed = !matches!(running.log.outcome(), Some(Ok(_)));
            if failed || now_ms >= due {
                // No keys, or no certificate in time: again, under a new id.
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
            self.push(entry);
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
        let id = message.message.window.id;
        let Some(running) = self.running.get_mut(&id) else {
            return Err(Ignored::OtherWindow);
        };
        let entry = LogEntry::Message(message);
        running.log.apply(&entry)?;
        self.push(entry);
        self.collect(id);
        Ok(())
    }

    /// [`handle_message`](Self::handle_message) for a message whose
    /// dealing was checked ahead, off this thread ([`Prechecked`]).
    ///
    /// # Errors
    ///
    /// As [`handle_message`](Self::handle_message).
    pub fn handle_prechecked(&mut self, prechecked: Prechecked) -> Result<(), Refused> {
        let (message, checked) = prechecked.into_parts();
        let id = message.message.window.id;
        let Some(running) = self.running.get_mut(&id) else {
            return Err(Ignored::OtherWindow);
        };
        running.log.apply_prechecked(&message, checked)?;
        self.push(LogEntry::Message(message));
        self.collect(id);
        Ok(())
    }

    /// A journaled entry, read back after a restart (or by `verify`): applied
    /// exactly as when it was logged, at its position. Phases under way are
    /// timed from `now_ms`.
    ///
    /// # Errors
    ///
    /// [`ReplayError`]: a position that does not grow, or an entry the
    /// keeper would not have logged.
    pub fn replay(
        &mut self,
        position: u64,
        entry: LogEntry,
        now_ms: u64,
    ) -> Result<(), ReplayError> {
        // The last position cannot be followed by another: an entry there
        // is refused rather than overflow the next position.
        if position < self.next_position || position == u64::MAX {
            return Err(ReplayError::Position {
                position,
                last: self.next_position.saturating_sub(1),
            });
        }
        let ignored = |reason| ReplayError::Ignored { position, reason };
        let window = entry.window();
        match &entry {
            LogEntry::Open { .. } => {
                if self.running.contains_key(&window.id) || self.kept.contains_key(&window.id) {
                    return Err(ignored(Ignored::Repeated("open")));
                }
                self.start(window, now_ms);
            }
            LogEntry::PhaseEnd { .. } | LogEntry::Message(_) => {
                let running = self
                    .running
                    .get_mut(&window.id)
                    .ok_or(ignored(Ignored::OtherWindow))?;
                running.log.apply(&entry).map_err(ignored)?;
                running.phase_since_ms = now_ms;
            }
        }
        self.next_position = position.saturating_add(1);
        self.log.insert(position, entry);
        self.collect(window.id);
        Ok(())
    }

    /// Batch `below` is the first one still needed: forgets the windows
    /// that end at or below it — certified (no batch of theirs will be
    /// released again) or still under way (none of their batches can take
    /// an envelope any more: a generation that kept failing is given up
    /// rather than opened again for ever) — and their entries; and deals
    /// no window more than [`WINDOWS_AHEAD_MAX`] windows beyond it.
    pub fn prune(&mut self, below: BatchId) {
        self.needed = Some(below);
        let over = |w: &Window| w.first_batch.saturating_add(u64::from(w.batches)) <= below;
        let done: BTreeSet<u64> = self
            .kept
            .iter()
            .filter(|(_, w)| over(w))
            .map(|(&id, _)| id)
            .chain(
                self.running
                    .iter()
                    .filter(|(_, r)| over(r.log.generation().window()))
                    .map(|(&id, _)| id),
            )
            .collect();
        if done.is_empty() {
            return;
        }
        self.kept.retain(|id, _| !done.contains(id));
        self.running.retain(|id, _| !done.contains(id));
        self.log.retain(|_, e| !done.contains(&e.window().id));
    }

    /// The next window certified: its certificate and the keys an observer
    /// of its log derived (for the committee custodian).
    pub fn poll_certified(&mut self) -> Option<(WindowCertificate, WindowKeys)> {
        self.certified.pop_front()
    }
}
