//! A keyper committee as the configurations name it — the sequencer's
//! `[committee]` section, copied verbatim into each keyper's — and the
//! committee and generation parameters it makes.

use serde::{Deserialize, Serialize};

/// Why a committee configuration cannot be used (it names the key).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommitteeConfigError(pub String);

/// A keyper committee: its members (each made by `sealbatch keyper init`),
/// its threshold and how its key generations run.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CommitteeConfig {
    /// How many keypers release a key. Default a majority, `⌊n/2⌋ + 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<usize>,
    /// Batches per key generation window. Default 256.
    #[serde(default = "default_window_batches")]
    pub window_batches: u32,
    /// A window's generation starts this many batches before its first.
    /// Default 128.
    #[serde(default = "default_lead_batches")]
    pub lead_batches: u64,
    /// How long each phase stays open, in ms: dealing, accusing,
    /// apologizing, approving. Default `[2000, 1000, 1000, 1000]`.
    #[serde(default = "default_phase_ms")]
    pub phase_ms: [u64; 4],
    /// The members.
    pub members: Vec<CommitteeMember>,
}

/// One keyper's public keys, as `sealbatch keyper init` prints them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CommitteeMember {
    /// Its Ed25519 signing key (64 hex digits).
    pub signing: String,
    /// Its ristretto255 encryption key (64 hex digits).
    pub encryption: String,
}

fn default_window_batches() -> u32 {
    crate::keyper::GenerationParams::default().window_batches
}

fn default_lead_batches() -> u64 {
    crate::keyper::GenerationParams::default().lead_batches
}

fn default_phase_ms() -> [u64; 4] {
    crate::keyper::GenerationParams::default().phase_ms
}

impl CommitteeConfig {
    /// The committee, bound to `deployment` (the sequencer's key and batch
    /// clock, `spec/keyper.md` §2), and its generation parameters.
    ///
    /// # Errors
    ///
    /// [`CommitteeConfigError`]: a key that is not 64 hex digits of a
    /// valid key, a duplicate member, a threshold outside `1..=n`, a window
    /// outside `1..=1024` batches, a phase outside 1 ms to a day.
    pub fn committee(
        &self,
        deployment: crate::envelope::DeploymentId,
    ) -> Result<(crate::keyper::Committee, crate::keyper::GenerationParams), CommitteeConfigError>
    {
        let invalid = |what: String| CommitteeConfigError(format!("committee: {what}"));
        let hex32 = |text: &str, what: &str| -> Result<[u8; 32], CommitteeConfigError> {
            let mut key = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut key)
                .map_err(|_| invalid(format!("{what} {text:?} is not 64 hex digits")))?;
            Ok(key)
        };
        let members = self
            .members
            .iter()
            .map(|m| {
                Ok(crate::keyper::Member {
                    signing_key: hex32(&m.signing, "signing key")?,
                    encryption_key: hex32(&m.encryption, "encryption key")?,
                })
            })
            .collect::<Result<Vec<_>, CommitteeConfigError>>()?;
        let n = members.len();
        let threshold = self
            .threshold
            .unwrap_or(crate::keyper::Committee::default_threshold(n));
        let committee = crate::keyper::Committee::new(threshold, members, deployment)
            .map_err(|error| invalid(error.to_string()))?;
        if !(1..=crate::keyper::WINDOW_BATCHES_MAX).contains(&self.window_batches) {
            return Err(invalid("window_batches must be 1 to 1024".into()));
        }
        if self
            .phase_ms
            .iter()
            .any(|&ms| ms == 0 || ms > crate::keyper::log_keeper::PHASE_MS_MAX)
        {
            return Err(invalid(
                "each phase_ms must be 1 to 86400000 (a day)".into(),
            ));
        }
        Ok((
            committee,
            crate::keyper::GenerationParams {
                window_batches: self.window_batches,
                lead_batches: self.lead_batches,
                phase_ms: self.phase_ms,
            },
        ))
    }
}
