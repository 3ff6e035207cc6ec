//! Money in and out of the venue: operator deposits (credited once per
//! external reference), trader withdrawals (each account's next sequence
//! number only, debited at once, kept until paid out) and the operator's
//! payout acknowledgements (once per withdrawal). The live sequencer, its
//! recovery and `verify` apply them with the same code, so that all three
//! agree on every balance and every refusal (`spec/ledger.md`, "Deposits
//! and withdrawals").

use std::collections::BTreeMap;

use super::record::SequencerRecord;
use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::envelope::SequencerPublicKey;
use crate::ledger::{Ledger, LedgerError};
use crate::market::{AccountId, AssetId};
use crate::signed::{
    DepositStatement, PayoutStatement, REFERENCE_LEN_MAX, SignedDeposit, SignedError, SignedPayout,
    SignedWithdrawal, Withdrawal, put_short, read_short,
};

/// Most operator deposits a checkpoint may list.
pub const CHECKPOINT_DEPOSITS_MAX: usize = 1 << 26;

/// Most accounts with a withdrawal sequence, pending withdrawals, or paid
/// withdrawals a checkpoint may list (each).
pub const CHECKPOINT_WITHDRAWALS_MAX: usize = 1 << 26;

/// Whether a request did something or repeats one already done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// It changed the state (and must be journaled).
    New,
    /// The same statement was applied before: nothing changes, and the
    /// answer is the first one's.
    Again,
}

/// Why a deposit, withdrawal or payout acknowledgement is refused; nothing
/// changes then.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FundsError {
    /// The signature or a field's length is wrong.
    #[error(transparent)]
    Signed(#[from] SignedError),
    /// A deposit's reference was credited before with another statement.
    #[error("reference {} was credited with another deposit", show(.0))]
    ReferenceReused(Vec<u8>),
    /// A withdrawal's sequence number is not the account's next: a replay
    /// of a request taken before, or one that skips a number.
    #[error("withdrawal sequence {got} refused: the account's next is {expected}")]
    Sequence {
        /// The request's.
        got: u64,
        /// The account's next.
        expected: u64,
    },
    /// A withdrawal of nothing.
    #[error("a withdrawal moves at least one unit")]
    ZeroAmount,
    /// The ledger refuses: a withdrawal beyond the balance, a deposit past
    /// the asset's supply limit.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A payout acknowledgement names a withdrawal that does not exist.
    #[error("no withdrawal {0}")]
    UnknownWithdrawal(u64),
    /// A payout acknowledgement names a withdrawal acknowledged before with
    /// another reference.
    #[error("withdrawal {withdrawal} was paid out as {}", show(.reference))]
    PaidOtherwise {
        /// The withdrawal.
        withdrawal: u64,
        /// The first acknowledgement's reference.
        reference: Vec<u8>,
    },
}

/// A reference as an error message shows it: as text if it is printable
/// ASCII, else in hex.
fn show(reference: &[u8]) -> String {
    if reference.iter().all(|b| b.is_ascii_graphic()) {
        format!("{:?}", String::from_utf8_lossy(reference))
    } else {
        hex::encode(reference)
    }
}

/// What deposits, withdrawals and payouts left behind; part of every
/// checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Funds {
    /// Every operator deposit credited, by its external reference.
    deposits: BTreeMap<Vec<u8>, DepositStatement>,
    /// Each account's last withdrawal sequence number (accounts that never
    /// withdrew are absent: their last is 0).
    sequences: BTreeMap<AccountId, u64>,
    /// Withdrawals taken and not yet acknowledged as paid out, by id.
    pending: BTreeMap<u64, SignedWithdrawal>,
    /// Payout acknowledgements, by withdrawal id.
    paid: BTreeMap<u64, PayoutStatement>,
    /// Withdrawals taken so far (the next one's id is one more).
    withdrawals: u64,
}

impl Funds {
    /// An operator deposit: its signature for this deployment, then its
    /// reference (the same statement again is [`Effect::Again`]), then the
    /// credit.
    ///
    /// # Errors
    ///
    /// [`FundsError::Signed`], [`FundsError::ReferenceReused`],
    /// [`FundsError::Ledger`]; nothing changes then.
    pub fn deposit(
        &mut self,
        ledger: &mut Ledger,
        sequencer: &SequencerPublicKey,
        deposit: &SignedDeposit,
    ) -> Result<Effect, FundsError> {
        deposit.verify(sequencer)?;
        let s = &deposit.statement;
        if let Some(first) = self.deposits.get(&s.reference) {
            return if first == s {
                Ok(Effect::Again)
            } else {
                Err(FundsError::ReferenceReused(s.reference.clone()))
            };
        }
        ledger.deposit(s.account, s.asset, s.amount)?;
        self.deposits.insert(s.reference.clone(), s.clone());
        Ok(Effect::New)
    }

    /// A trader withdrawal: its signature by the account for this
    /// deployment, the account's next sequence number, a non-zero amount
    /// within the balance; then the debit. Returns the withdrawal's id.
    ///
    /// # Errors
    ///
    /// [`FundsError::Signed`], [`FundsError::Sequence`],
    /// [`FundsError::ZeroAmount`], [`FundsError::Ledger`]; nothing changes
    /// then.
    pub fn withdraw(
        &mut self,
        ledger: &mut Ledger,
        sequencer: &SequencerPublicKey,
        withdrawal: &SignedWithdrawal,
    ) -> Result<u64, FundsError> {
        withdrawal.verify(sequencer)?;
        let s = &withdrawal.statement;
        let expected = self.next_sequence(&s.account);
        if s.sequence != expected {
            return Err(FundsError::Sequence {
                got: s.sequence,
                expected,
            });
        }
        if s.amount == 0 {
            return Err(FundsError::ZeroAmount);
        }
        ledger.withdraw(s.account, s.asset, s.amount)?;
        self.sequences.insert(s.account, s.sequence);
        // At most one per journal record: never near u64::MAX.
        self.withdrawals = self.withdrawals.saturating_add(1);
        self.pending.insert(self.withdrawals, withdrawal.clone());
        Ok(self.withdrawals)
    }

    /// A payout acknowledgement: its signature for this deployment, a
    /// withdrawal that exists; the same reference again is
    /// [`Effect::Again`]. The withdrawal leaves the pending ones.
    ///
    /// # Errors
    ///
    /// [`FundsError::Signed`], [`FundsError::UnknownWithdrawal`],
    /// [`FundsError::PaidOtherwise`]; nothing changes then.
    pub fn pay(
        &mut self,
        sequencer: &SequencerPublicKey,
        payout: &SignedPayout,
    ) -> Result<Effect, FundsError> {
        payout.verify(sequencer)?;
        let s = &payout.statement;
        if let Some(first) = self.paid.get(&s.withdrawal) {
            return if first.reference == s.reference {
                Ok(Effect::Again)
            } else {
                Err(FundsError::PaidOtherwise {
                    withdrawal: s.withdrawal,
                    reference: first.reference.clone(),
                })
            };
        }
        if self.pending.remove(&s.withdrawal).is_none() {
            return Err(FundsError::UnknownWithdrawal(s.withdrawal));
        }
        self.paid.insert(s.withdrawal, s.clone());
        Ok(Effect::New)
    }

    /// The sequence number the account's next withdrawal must carry.
    #[must_use]
    pub fn next_sequence(&self, account: &AccountId) -> u64 {
        self.sequences
            .get(account)
            .map_or(1, |last| last.saturating_add(1))
    }

    /// The id the next withdrawal taken gets.
    #[must_use]
    pub fn next_withdrawal_id(&self) -> u64 {
        self.withdrawals.saturating_add(1)
    }

    /// Withdrawals awaiting payout with an id above `after`, ascending.
    pub fn pending_after(&self, after: u64) -> impl Iterator<Item = Withdrawal> + '_ {
        self.pending
            .range(after.saturating_add(1)..)
            .map(|(&id, signed)| Withdrawal {
                id,
                signed: signed.clone(),
            })
    }

    /// Whether a checkpoint holding this can be read back (every list
    /// within its decoder's bound).
    #[must_use]
    pub fn fits(&self) -> bool {
        self.deposits.len() <= CHECKPOINT_DEPOSITS_MAX
            && self.sequences.len() <= CHECKPOINT_WITHDRAWALS_MAX
            && self.pending.len() <= CHECKPOINT_WITHDRAWALS_MAX
            && self.paid.len() <= CHECKPOINT_WITHDRAWALS_MAX
    }

    /// Appends the deposits part of a checkpoint: `u32` count, then per
    /// deposit, ascending by reference, `u8(len) ‖ reference ‖ operator (32)
    /// ‖ account (32) ‖ u32le(asset) ‖ u64le(amount)`.
    pub(crate) fn encode_deposits(&self, out: &mut Vec<u8>) {
        // Counts are bounded by the decoders' maxima (`fits`).
        out.put_u32(self.deposits.len() as u32);
        for d in self.deposits.values() {
            put_short(out, &d.reference);
            out.extend_from_slice(&d.operator);
            out.extend_from_slice(&d.account.0);
            out.put_u32(d.asset.0);
            out.put_u64(d.amount);
        }
    }

    /// Appends the withdrawals part of a checkpoint: `u64le(withdrawals
    /// taken)`; `u32` count of sequences, then (account (32) ‖
    /// u64le(last)) ascending; `u32` count of pending, then (u64le(id) ‖
    /// signed withdrawal) ascending; `u32` count of paid, then (u64le(id) ‖
    /// operator (32) ‖ u8(len) ‖ reference) ascending.
    pub(crate) fn encode_withdrawals(&self, out: &mut Vec<u8>) {
        out.put_u64(self.withdrawals);
        out.put_u32(self.sequences.len() as u32);
        for (account, last) in &self.sequences {
            out.extend_from_slice(&account.0);
            out.put_u64(*last);
        }
        out.put_u32(self.pending.len() as u32);
        for (id, signed) in &self.pending {
            out.put_u64(*id);
            signed.encode_into(out);
        }
        out.put_u32(self.paid.len() as u32);
        for (id, p) in &self.paid {
            out.put_u64(*id);
            out.extend_from_slice(&p.operator);
            put_short(out, &p.reference);
        }
    }

    /// Decodes [`encode_deposits`](Self::encode_deposits), then, if
    /// `withdrawals`, [`encode_withdrawals`](Self::encode_withdrawals) (a
    /// checkpoint of an earlier layout has neither or only deposits), and
    /// checks the orderings and that every id is at most the number taken.
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        deposits: bool,
        withdrawals: bool,
    ) -> Result<Funds, DecodeError> {
        let mut funds = Funds::default();
        if deposits {
            let count = r.count("deposit count", CHECKPOINT_DEPOSITS_MAX)?;
            for _ in 0..count {
                let offset = r.offset();
                let reference = read_short(r, "reference", REFERENCE_LEN_MAX)?;
                let statement = DepositStatement {
                    reference,
                    operator: r.array("operator")?,
                    account: AccountId(r.array("account")?),
                    asset: AssetId(r.u32("asset")?),
                    amount: r.u64("amount")?,
                };
                if funds
                    .deposits
                    .last_key_value()
                    .is_some_and(|(last, _)| *last >= statement.reference)
                {
                    return Err(r.invalid("deposits", offset));
                }
                funds
                    .deposits
                    .insert(statement.reference.clone(), statement);
            }
        }
        if withdrawals {
            funds.withdrawals = r.u64("withdrawals taken")?;
            let count = r.count("sequence count", CHECKPOINT_WITHDRAWALS_MAX)?;
            for _ in 0..count {
                let offset = r.offset();
                let account = AccountId(r.array("account")?);
                let last = r.u64("sequence")?;
                let ascending = funds
                    .sequences
                    .last_key_value()
                    .is_none_or(|(a, _)| *a < account);
                if !ascending || last == 0 {
                    return Err(r.invalid("sequences", offset));
                }
                funds.sequences.insert(account, last);
            }
            let count = r.count("pending count", CHECKPOINT_WITHDRAWALS_MAX)?;
            for _ in 0..count {
                let offset = r.offset();
                let id = r.u64("withdrawal id")?;
                let signed = SignedWithdrawal::decode_from(r)?;
                if !funds.is_next_listed(id, &funds.pending) {
                    return Err(r.invalid("pending withdrawals", offset));
                }
                funds.pending.insert(id, signed);
            }
            let count = r.count("paid count", CHECKPOINT_WITHDRAWALS_MAX)?;
            for _ in 0..count {
                let offset = r.offset();
                let id = r.u64("withdrawal id")?;
                let operator = r.array("operator")?;
                let reference = read_short(r, "reference", REFERENCE_LEN_MAX)?;
                if !funds.is_next_listed(id, &funds.paid) || funds.pending.contains_key(&id) {
                    return Err(r.invalid("paid withdrawals", offset));
                }
                funds.paid.insert(
                    id,
                    PayoutStatement {
                        operator,
                        withdrawal: id,
                        reference,
                    },
                );
            }
        }
        Ok(funds)
    }

    /// Whether `id` may follow the ids listed in `map`: 1 to the number of
    /// withdrawals taken, above the last.
    fn is_next_listed<V>(&self, id: u64, map: &BTreeMap<u64, V>) -> bool {
        (1..=self.withdrawals).contains(&id) && map.last_key_value().is_none_or(|(&l, _)| l < id)
    }
}

/// Applies a journaled deposit, withdrawal or payout record as recovery and
/// `verify` do: it must apply as new (a journal never holds a refused or
/// repeated request), and a withdrawal must carry the id it gets. Other
/// records are not this module's and change nothing.
///
/// # Errors
///
/// Why the record cannot be in a journal the sequencer wrote.
pub(crate) fn replay_funds(
    funds: &mut Funds,
    ledger: &mut Ledger,
    sequencer: &SequencerPublicKey,
    record: &SequencerRecord,
) -> Result<(), String> {
    let applied = match record {
        SequencerRecord::OperatorDeposit(deposit) => funds.deposit(ledger, sequencer, deposit),
        SequencerRecord::Withdrawal(w) => {
            if w.id != funds.next_withdrawal_id() {
                return Err(format!(
                    "withdrawal {} where the next is {}",
                    w.id,
                    funds.next_withdrawal_id()
                ));
            }
            funds
                .withdraw(ledger, sequencer, &w.signed)
                .map(|_| Effect::New)
        }
        SequencerRecord::Payout(payout) => funds.pay(sequencer, payout),
        _ => return Ok(()),
    };
    match applied {
        Ok(Effect::New) => Ok(()),
        Ok(Effect::Again) => Err("a deposit or payout journaled twice".into()),
        Err(error) => Err(error.to_string()),
    }
}
