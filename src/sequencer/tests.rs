//! The void path, which only a bug can reach: driven here by handing the
//! sequencer an opening that failed.

use crate::codec::{Decode, Encode};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::envelope::{BatchSchedule, EmbeddedCustodian, MasterSecret, seal_bundle};
use crate::order::OrderSpec;
use crate::signed::Statement as _;
use crate::types::{Side, Tick};

const GENESIS_MS: u64 = 1_700_000_000_000;

fn genesis(key: &SequencerKey) -> Genesis {
    Genesis {
        sequencer: key.public_key(),
        schedule: BatchSchedule {
            genesis_ms: GENESIS_MS,
            batch_length_ms: 100,
        },
        fee_account: AccountId([0xfe; 32]),
        orders_per_account_per_batch_max: super::ORDERS_PER_ACCOUNT_PER_BATCH_DEFAULT,
        markets: vec![MarketConfig {
            id: MarketId(1),
            base: AssetId(1),
            quote: AssetId(0),
            tick_size: 1,
            lot_size: 10,
            band_min: Tick(50),
            band_max: Tick(150),
            initial_price: Tick(100),
            fee_bps: 5,
        }],
    }
}

fn boot(records: Vec<(Lsn, u8, Vec<u8>)>, now_ms: u64) -> Sequencer {
    let key = SequencerKey::from_seed(&[7; 32]);
    boot_with(genesis(&key), records, now_ms)
}

/// The embedded custodian the tests' sequencers (key seed `[7; 32]`) hold:
/// master secret `[9; 32]`, `genesis`'s batch clock.
fn embedded(genesis: &Genesis) -> Box<EmbeddedCustodian> {
    Box::new(EmbeddedCustodian::new(
        MasterSecret::from_bytes([9; 32]),
        SequencerKey::from_seed(&[7; 32]).public_key(),
        genesis.schedule,
    ))
}

fn boot_with(genesis: Genesis, records: Vec<(Lsn, u8, Vec<u8>)>, now_ms: u64) -> Sequencer {
    let key = SequencerKey::from_seed(&[7; 32]);
    let custodian = embedded(&genesis);
    let next_lsn = records.last().map_or(Lsn::FIRST, |r| r.0 + 1);
    Sequencer::recover(
        genesis,
        Limits::default(),
        key,
        custodian,
        Journaled {
            checkpoint: None,
            records,
            next_lsn,
        },
        now_ms,
    )
    .expect("recovers")
}

/// Appends everything the sequencer asks for to `journal` and reports it
/// durable; returns the events.
fn flush(
    sequencer: &mut Sequencer,
    journal: &mut Vec<(Lsn, u8, Vec<u8>)>,
    now_ms: u64,
) -> Vec<Event> {
    while let Some(write) = sequencer.poll_journal() {
        journal.push((write.lsn, write.kind.to_byte(), write.payload));
    }
    if let Some(&(lsn, _, _)) = journal.last() {
        sequencer
            .handle_journal_durable(now_ms, lsn)
            .expect("durable");
    }
    std::iter::from_fn(|| sequencer.poll_event()).collect()
}

/// A fresh sequencer with a buyer (1,000,000 of asset 0) and a seller
/// (1,000 of asset 1) funded, batch 0 announced; its journal so far, and
/// the rng (`seed`) that made the two traders.
fn funded_pair(seed: u64) -> Funded {
    let mut journal = Vec::new();
    let mut sequencer = boot(Vec::new(), GENESIS_MS);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let buyer = crate::envelope::generate_account_key(&mut rng);
    let seller = crate::envelope::generate_account_key(&mut rng);
    let id = |k: &ed25519_dalek::SigningKey| AccountId(k.verifying_key().to_bytes());
    sequencer
        .handle_deposit(OpToken(1), id(&buyer), AssetId(0), 1_000_000)
        .expect("deposit");
    sequencer
        .handle_deposit(OpToken(2), id(&seller), AssetId(1), 1_000)
        .expect("deposit");
    sequencer.handle_timeout(GENESIS_MS).expect("timeout");
    flush(&mut sequencer, &mut journal, GENESIS_MS);
    Funded {
        sequencer,
        journal,
        rng,
        buyer,
        seller,
    }
}

/// What [`funded_pair`] sets up.
struct Funded {
    sequencer: Sequencer,
    journal: Vec<(Lsn, u8, Vec<u8>)>,
    rng: ChaCha20Rng,
    buyer: ed25519_dalek::SigningKey,
    seller: ed25519_dalek::SigningKey,
}

#[test]
fn a_batch_that_cannot_be_processed_is_voided_and_never_processed_again() {
    let Funded {
        mut sequencer,
        mut journal,
        mut rng,
        buyer,
        seller,
    } = funded_pair(1);
    let public = sequencer.batch_public_key(BatchId(0)).expect("announced");
    for (nonce, (trader, side)) in [(&buyer, Side::Buy), (&seller, Side::Sell)]
        .into_iter()
        .enumerate()
    {
        let orders = [OrderSpec {
            market: MarketId(1),
            side,
            limit: Some(Tick(100)),
            qty: 5,
            client_order_id: 0,
        }];
        let envelope = seal_bundle(
            &mut rng,
            trader,
            &sequencer.deployment(),
            BatchId(0),
            &public,
            nonce as u64,
            &orders,
        )
        .expect("seals");
        sequencer
            .handle_submit(GENESIS_MS, SubmitToken(nonce as u64), envelope.into_bytes())
            .expect("accepted");
    }
    flush(&mut sequencer, &mut journal, GENESIS_MS);
    let closed = GENESIS_MS + 100;
    sequencer.handle_timeout(closed).expect("seals");
    flush(&mut sequencer, &mut journal, closed);
    let job = sequencer.poll_job().expect("an open job");
    let ledger = sequencer.ledger().clone();
    let references = sequencer.references().clone();

    // The opening fails (as a panic in it would).
    let mut opened = job.run();
    opened.result = Err("opening panicked: injected".into());
    sequencer
        .handle_opened(closed, opened)
        .expect("no error: voided");
    let events = flush(&mut sequencer, &mut journal, closed);
    let voided = events
        .iter()
        .find_map(|event| match event {
            Event::BatchVoided { e, reason } => Some((*e, reason.clone())),
            _ => None,
        })
        .expect("reported");
    assert_eq!(
        voided,
        (BatchId(0), "opening panicked: injected".to_string())
    );
    let outcome = events
        .iter()
        .find_map(|event| match event {
            Event::BatchCleared { outcome, .. } => Some(Arc::clone(outcome)),
            _ => None,
        })
        .expect("published");
    assert!(outcome.is_void());
    assert_eq!(outcome.envelopes.len(), 2);
    assert!(
        outcome
            .markets
            .iter()
            .all(|m| m.price.is_none() && m.volume == 0)
    );
    assert_eq!(sequencer.ledger(), &ledger, "nothing settled");
    assert_eq!(sequencer.references(), &references);

    // The void outcome is journaled: a restart replays it and opens nothing.
    let mut again = boot(journal.clone(), closed + 1_000);
    assert!(
        again.poll_job().is_none(),
        "the voided batch is not reopened"
    );
    assert_eq!(again.ledger(), &ledger);

    // The batch re-derives normally elsewhere, so verify flags the void
    // outcome; a batch that does not re-derive would have been accepted.
    let report = verify_journal(journal).expect("verify reads it");
    assert_eq!(report.batches.len(), 1);
    assert!(report.batches[0].verdict.is_err());
}

#[test]
fn input_the_engine_refuses_is_a_typed_error_not_a_panic() {
    let key = SequencerKey::from_seed(&[7; 32]);
    let genesis = genesis(&key);
    let opened = OpenedBatch {
        e: BatchId(3),
        root: crate::envelope::MerkleRoot([1; 32]),
        envelopes: Vec::new(),
    };
    // A reference price outside the band (the sequencer never has one).
    let references = BTreeMap::from([(MarketId(1), Tick(10_000))]);
    let result = process_batch(
        &opened,
        [0; 32],
        &Ledger::new(genesis.fee_account),
        &genesis.market_map(),
        &references,
        genesis.orders_per_account_per_batch_max,
    );
    assert!(
        matches!(result, Err(ProcessError::Clearing { e: BatchId(3), .. })),
        "{result:?}"
    );
}

#[test]
fn submissions_are_refused_as_busy_while_opening_lags() {
    let mut journal = Vec::new();
    let mut sequencer = boot(Vec::new(), GENESIS_MS);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let trader = crate::envelope::generate_account_key(&mut rng);
    let mut nonce = 0;
    let mut submit = |sequencer: &mut Sequencer, now: u64| {
        let e = sequencer.open_batch_at(now);
        let public = sequencer.batch_public_key(e).expect("announced");
        let orders = [OrderSpec {
            market: MarketId(1),
            side: Side::Buy,
            limit: Some(Tick(100)),
            qty: 1,
            client_order_id: 0,
        }];
        nonce += 1;
        let envelope = seal_bundle(
            &mut rng,
            &trader,
            &sequencer.deployment(),
            e,
            &public,
            nonce,
            &orders,
        )
        .expect("seals");
        sequencer.handle_submit(now, SubmitToken(nonce), envelope.into_bytes())
    };
    // Batches sealed whose open jobs never come back: opening lags. The
    // oldest closed at GENESIS + 100; the bound is three batch lengths.
    assert_eq!(sequencer.clear_lag_max_ms(), 300);
    for b in 0..4 {
        let now = GENESIS_MS + b * 100;
        sequencer.handle_timeout(now).expect("timeout");
        submit(&mut sequencer, now).expect("accepted");
        flush(&mut sequencer, &mut journal, now);
    }
    // At GENESIS + 400 the lag is exactly 300 ms: still taken.
    let now = GENESIS_MS + 400;
    sequencer.handle_timeout(now).expect("seals");
    flush(&mut sequencer, &mut journal, now);
    assert_eq!(sequencer.clear_lag_ms(now), 300);
    submit(&mut sequencer, now).expect("at the bound");
    flush(&mut sequencer, &mut journal, now);
    // 1 ms later the backlog is too old: refused, nothing journaled; the
    // retry-after is at least a batch length.
    let now = GENESIS_MS + 401;
    let records = journal.len();
    assert_eq!(
        submit(&mut sequencer, now),
        Err(SubmitError::Busy {
            retry_after_ms: 100
        })
    );
    assert!(sequencer.poll_journal().is_none(), "nothing journaled");
    assert_eq!(journal.len(), records);
    // Far behind, the retry-after is how far past the bound.
    let now = GENESIS_MS + 1_000;
    sequencer.handle_timeout(now).expect("seals");
    flush(&mut sequencer, &mut journal, now);
    assert_eq!(
        submit(&mut sequencer, now),
        Err(SubmitError::Busy {
            retry_after_ms: 600
        })
    );
    // A sequencer that takes the work over now (a restart, a new leader)
    // inherits the backlog but has not lagged behind it: the lag counts
    // from its resumption, so it takes envelopes at once, and refuses again
    // only once it has itself been behind past the bound.
    let mut taken_over = boot(journal.clone(), now);
    assert!(taken_over.batches_in_flight() > 0);
    assert_eq!(taken_over.clear_lag_ms(now), 0);
    submit(&mut taken_over, now).expect("taken at once after a takeover");
    assert_eq!(taken_over.clear_lag_ms(now + 300), 300);
    assert!(matches!(
        submit(&mut taken_over, now + 301),
        Err(SubmitError::Busy { .. })
    ));
    // Once the backlog clears, envelopes are taken again.
    while let Some(job) = sequencer.poll_job() {
        sequencer.handle_opened(now, job.run()).expect("processed");
    }
    flush(&mut sequencer, &mut journal, now);
    assert_eq!(sequencer.batches_in_flight(), 0);
    assert_eq!(sequencer.clear_lag_ms(now), 0);
    submit(&mut sequencer, now).expect("accepted again");
}

#[test]
fn an_account_cannot_have_more_orders_in_a_batch_than_the_genesis_allows() {
    let key = SequencerKey::from_seed(&[7; 32]);
    let genesis = Genesis {
        orders_per_account_per_batch_max: 256,
        ..genesis(&key)
    };
    let mut journal = Vec::new();
    let mut sequencer = boot_with(genesis, Vec::new(), GENESIS_MS);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let whale = crate::envelope::generate_account_key(&mut rng);
    let other = crate::envelope::generate_account_key(&mut rng);
    let id = |k: &ed25519_dalek::SigningKey| AccountId(k.verifying_key().to_bytes());
    for trader in [&whale, &other] {
        sequencer
            .handle_deposit(OpToken(1), id(trader), AssetId(0), 1_000_000_000)
            .expect("deposit");
    }
    sequencer.handle_timeout(GENESIS_MS).expect("timeout");
    flush(&mut sequencer, &mut journal, GENESIS_MS);
    let public = sequencer.batch_public_key(BatchId(0)).expect("announced");
    let orders = |n: usize| -> Vec<OrderSpec> {
        (0..n)
            .map(|i| OrderSpec {
                market: MarketId(1),
                side: Side::Buy,
                limit: Some(Tick(100)),
                qty: 1,
                client_order_id: i as u64,
            })
            .collect()
    };
    // Two bundles of 200 orders from one account, one of 200 from another.
    let mut commitments = Vec::new();
    for (nonce, trader) in [(1u64, &whale), (2, &whale), (3, &other)] {
        let envelope = seal_bundle(
            &mut rng,
            trader,
            &sequencer.deployment(),
            BatchId(0),
            &public,
            nonce,
            &orders(200),
        )
        .expect("seals");
        let commitment = sequencer
            .handle_submit(GENESIS_MS, SubmitToken(nonce), envelope.into_bytes())
            .expect("accepted");
        commitments.push(commitment);
    }
    flush(&mut sequencer, &mut journal, GENESIS_MS);
    let closed = GENESIS_MS + 100;
    sequencer.handle_timeout(closed).expect("seals");
    flush(&mut sequencer, &mut journal, closed);
    while let Some(job) = sequencer.poll_job() {
        sequencer
            .handle_opened(closed, job.run())
            .expect("processed");
    }
    let events = flush(&mut sequencer, &mut journal, closed);
    let outcome = events
        .iter()
        .find_map(|event| match event {
            Event::BatchCleared { outcome, .. } => Some(Arc::clone(outcome)),
            _ => None,
        })
        .expect("published");
    let status = |c: &Commitment| {
        outcome
            .envelopes
            .iter()
            .find(|o| o.commitment == *c)
            .map(|o| o.status)
            .expect("in the outcome")
    };
    // The whale's bundle with the lower commitment is taken, the other is
    // over the bound; the other account is untouched.
    let (first, second) = if commitments[0] < commitments[1] {
        (commitments[0], commitments[1])
    } else {
        (commitments[1], commitments[0])
    };
    assert!(matches!(
        status(&first),
        EnvelopeStatus::Accepted { orders: 200, .. }
    ));
    assert_eq!(
        status(&second),
        EnvelopeStatus::Rejected {
            code: status::ACCOUNT_ORDER_LIMIT,
            detail: 200
        }
    );
    assert!(matches!(
        status(&commitments[2]),
        EnvelopeStatus::Accepted { .. }
    ));
    let report = verify_journal(journal).expect("verify reads it");
    assert!(report.all_ok(), "{report:?}");
}

/// A node started and stopped with no traffic journals only its genesis
/// and checkpoints at LSN 2; `verify` must accept that checkpoint (it said
/// the journal ended at 0; found by the `sequencer_drive` fuzz target).
#[test]
fn a_checkpoint_right_after_the_genesis_verifies() {
    let mut journal = Vec::new();
    let mut sequencer = boot(Vec::new(), GENESIS_MS);
    flush(&mut sequencer, &mut journal, GENESIS_MS);
    assert_eq!(journal.len(), 1);
    let checkpoint = sequencer.checkpoint();
    assert_eq!(checkpoint.lsn, 2);
    let report = verify_journal_with(journal, &[checkpoint]).expect("verify reads it");
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.checkpoints.len(), 1);
}

/// The same envelope twice is the same statement twice: journaled once,
/// its receipt issued to both submissions, the second only once the first's
/// record is durable; the batch holds it once.
#[test]
fn a_duplicate_envelope_is_receipted_again_and_journaled_once() {
    let mut journal = Vec::new();
    let mut sequencer = boot(Vec::new(), GENESIS_MS);
    sequencer.handle_timeout(GENESIS_MS).expect("timeout");
    flush(&mut sequencer, &mut journal, GENESIS_MS);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let trader = crate::envelope::generate_account_key(&mut rng);
    let public = sequencer.batch_public_key(BatchId(0)).expect("announced");
    let orders = [OrderSpec {
        market: MarketId(1),
        side: Side::Buy,
        limit: Some(Tick(100)),
        qty: 1,
        client_order_id: 0,
    }];
    let bytes = seal_bundle(
        &mut rng,
        &trader,
        &sequencer.deployment(),
        BatchId(0),
        &public,
        0,
        &orders,
    )
    .expect("seals")
    .into_bytes();
    let receipts = |events: &[Event]| -> Vec<(u64, Commitment)> {
        events
            .iter()
            .filter_map(|event| match event {
                Event::Receipt {
                    token, commitment, ..
                } => Some((token.0, *commitment)),
                _ => None,
            })
            .collect()
    };

    // Both before the record is durable: no receipt yet, one record.
    let first = sequencer
        .handle_submit(GENESIS_MS, SubmitToken(1), bytes.clone())
        .expect("accepted");
    let again = sequencer
        .handle_submit(GENESIS_MS, SubmitToken(2), bytes.clone())
        .expect("receipted again");
    assert_eq!(first, again);
    assert!(
        receipts(&std::iter::from_fn(|| sequencer.poll_event()).collect::<Vec<_>>()).is_empty()
    );
    let before = journal.len();
    let events = flush(&mut sequencer, &mut journal, GENESIS_MS);
    assert_eq!(journal.len(), before + 1, "journaled once");
    assert_eq!(receipts(&events), vec![(1, first), (2, first)]);

    // Once durable, a third submission is receipted at once.
    sequencer
        .handle_submit(GENESIS_MS + 1, SubmitToken(3), bytes)
        .expect("receipted again");
    assert!(sequencer.poll_journal().is_none(), "nothing journaled");
    let events: Vec<Event> = std::iter::from_fn(|| sequencer.poll_event()).collect();
    assert_eq!(receipts(&events), vec![(3, first)]);

    // The batch holds it once.
    sequencer.handle_timeout(GENESIS_MS + 100).expect("seals");
    let events = flush(&mut sequencer, &mut journal, GENESIS_MS + 100);
    let sealed = events.iter().find_map(|event| match event {
        Event::BatchSealed { seal, .. } => Some(seal.count),
        _ => None,
    });
    assert_eq!(sealed, Some(1));
}

/// An operator deposit credits once per reference — also after a recovery
/// from a checkpoint, which carries the references — and a reference reused
/// for another statement, or a signature for another deployment, changes
/// nothing.
#[test]
fn operator_deposits_credit_once_per_reference_across_checkpoints() {
    use crate::signed::{DepositStatement, SignedError};

    let mut journal = Vec::new();
    let mut sequencer = boot(Vec::new(), GENESIS_MS);
    flush(&mut sequencer, &mut journal, GENESIS_MS);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let operator = crate::envelope::generate_account_key(&mut rng);
    let deployment = SequencerKey::from_seed(&[7; 32]).public_key();
    let account = AccountId([4; 32]);
    let deposit =
        |amount: u64, reference: &[u8], sequencer: &crate::envelope::SequencerPublicKey| {
            DepositStatement {
                operator: [0; 32],
                account,
                asset: AssetId(0),
                amount,
                reference: reference.to_vec(),
            }
            .sign(&operator, sequencer)
            .expect("signs")
        };
    sequencer
        .handle_operator_deposit(OpToken(1), deposit(70, b"a", &deployment))
        .expect("credited");
    sequencer
        .handle_operator_deposit(OpToken(2), deposit(70, b"a", &deployment))
        .expect("acknowledged again");
    assert!(matches!(
        sequencer.handle_operator_deposit(OpToken(3), deposit(71, b"a", &deployment)),
        Err(SequencerError::Funds(FundsError::ReferenceReused(_)))
    ));
    let elsewhere = SequencerKey::from_seed(&[8; 32]).public_key();
    assert!(matches!(
        sequencer.handle_operator_deposit(OpToken(4), deposit(5, b"b", &elsewhere)),
        Err(SequencerError::Funds(FundsError::Signed(
            SignedError::BadSignature
        )))
    ));
    let events = flush(&mut sequencer, &mut journal, GENESIS_MS);
    let acked: Vec<u64> = events
        .iter()
        .filter_map(|event| match event {
            Event::OperationDurable { token } => Some(token.0),
            _ => None,
        })
        .collect();
    assert_eq!(acked, vec![1, 2]);
    assert_eq!(sequencer.ledger().balance(&account, AssetId(0)), 70);
    assert_eq!(journal.len(), 2, "the genesis and one deposit");

    // Through a checkpoint's bytes: the reference is remembered.
    let checkpoint = Checkpoint::from_bytes(&sequencer.checkpoint().to_bytes()).expect("decodes");
    assert_eq!(checkpoint.funds, *sequencer.funds());
    let key = SequencerKey::from_seed(&[7; 32]);
    let mut recovered = Sequencer::recover(
        genesis(&key),
        Limits::default(),
        key,
        Box::new(EmbeddedCustodian::new(
            MasterSecret::from_bytes([9; 32]),
            deployment,
            genesis(&SequencerKey::from_seed(&[7; 32])).schedule,
        )),
        Journaled {
            checkpoint: Some(checkpoint),
            records: Vec::new(),
            next_lsn: Lsn(journal.len() as u64 + 1),
        },
        GENESIS_MS,
    )
    .expect("recovers");
    recovered
        .handle_operator_deposit(OpToken(5), deposit(70, b"a", &deployment))
        .expect("acknowledged, not credited");
    assert!(recovered.poll_journal().is_none(), "nothing journaled");
    assert_eq!(recovered.ledger().balance(&account, AssetId(0)), 70);
}

/// A withdrawal is taken once, only with the account's next sequence
/// number, its signature and a balance that covers it; a refused one
/// changes nothing. Its payout is acknowledged once (again with the same
/// reference, never with another), and recovery — from the journal alone or
/// from a checkpoint — rebuilds the same withdrawals, sequences and balances.
#[test]
fn withdrawals_are_taken_once_in_sequence_and_paid_out_once() {
    use crate::signed::{PayoutStatement, SignedError, WithdrawalStatement};

    let mut journal = Vec::new();
    let mut sequencer = boot(Vec::new(), GENESIS_MS);
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let trader = crate::envelope::generate_account_key(&mut rng);
    let thief = crate::envelope::generate_account_key(&mut rng);
    let operator = crate::envelope::generate_account_key(&mut rng);
    let deployment = SequencerKey::from_seed(&[7; 32]).public_key();
    let account = AccountId(trader.verifying_key().to_bytes());
    sequencer
        .handle_deposit(OpToken(1), account, AssetId(0), 100)
        .expect("deposit");
    flush(&mut sequencer, &mut journal, GENESIS_MS);
    let withdrawal = |amount: u64, sequence: u64| {
        WithdrawalStatement {
            account,
            asset: AssetId(0),
            amount,
            sequence,
            destination: b"bc1qdest".to_vec(),
        }
        .sign(&trader, &deployment)
        .expect("signs")
    };

    assert_eq!(
        sequencer
            .handle_withdrawal(OpToken(2), withdrawal(30, 1))
            .expect("taken"),
        1
    );
    let refusals = [
        // The same request again: a replay.
        withdrawal(30, 1),
        // A number skipped.
        withdrawal(30, 3),
        // More than the balance left.
        withdrawal(71, 2),
        withdrawal(0, 2),
    ];
    let written = journal.len();
    for request in refusals {
        let error = sequencer
            .handle_withdrawal(OpToken(9), request.clone())
            .expect_err("refused");
        assert!(
            matches!(
                error,
                SequencerError::Funds(
                    FundsError::Sequence { .. } | FundsError::Ledger(_) | FundsError::ZeroAmount
                )
            ),
            "{request:?}: {error}"
        );
    }
    // Signed by another key for this account.
    let mut forged = withdrawal(10, 2);
    forged.signature = WithdrawalStatement {
        account: AccountId(thief.verifying_key().to_bytes()),
        ..forged.statement.clone()
    }
    .sign(&thief, &deployment)
    .expect("signs")
    .signature;
    assert!(matches!(
        sequencer.handle_withdrawal(OpToken(9), forged),
        Err(SequencerError::Funds(FundsError::Signed(
            SignedError::BadSignature
        )))
    ));
    let events = flush(&mut sequencer, &mut journal, GENESIS_MS);
    assert_eq!(journal.len(), written + 1, "only the first withdrawal");
    assert!(
        matches!(events[..], [Event::OperationDurable { token: OpToken(2) }]),
        "{events:?}"
    );
    assert_eq!(sequencer.ledger().balance(&account, AssetId(0)), 70);
    assert_eq!(sequencer.funds().next_sequence(&account), 2);
    assert_eq!(
        sequencer
            .handle_withdrawal(OpToken(3), withdrawal(70, 2))
            .expect("taken"),
        2
    );
    assert_eq!(sequencer.ledger().balance(&account, AssetId(0)), 0);

    let payout = |id: u64, reference: &[u8]| {
        PayoutStatement {
            operator: [0; 32],
            withdrawal: id,
            reference: reference.to_vec(),
        }
        .sign(&operator, &deployment)
        .expect("signs")
    };
    assert!(matches!(
        sequencer.handle_payout(OpToken(4), payout(3, b"tx")),
        Err(SequencerError::Funds(FundsError::UnknownWithdrawal(3)))
    ));
    sequencer
        .handle_payout(OpToken(5), payout(1, b"tx:1"))
        .expect("paid");
    sequencer
        .handle_payout(OpToken(6), payout(1, b"tx:1"))
        .expect("acknowledged again");
    assert!(matches!(
        sequencer.handle_payout(OpToken(7), payout(1, b"tx:other")),
        Err(SequencerError::Funds(FundsError::PaidOtherwise {
            withdrawal: 1,
            ..
        }))
    ));
    let events = flush(&mut sequencer, &mut journal, GENESIS_MS);
    let acked: Vec<u64> = events
        .iter()
        .filter_map(|event| match event {
            Event::OperationDurable { token } => Some(token.0),
            _ => None,
        })
        .collect();
    assert_eq!(acked, vec![3, 5, 6]);
    let pending: Vec<u64> = sequencer.funds().pending_after(0).map(|w| w.id).collect();
    assert_eq!(pending, vec![2]);

    // The journal alone rebuilds the same state, and so does a checkpoint.
    let replayed = boot(journal.clone(), GENESIS_MS);
    assert_eq!(replayed.funds(), sequencer.funds());
    assert_eq!(
        replayed.ledger().iter().collect::<Vec<_>>(),
        sequencer.ledger().iter().collect::<Vec<_>>()
    );
    let checkpoint = Checkpoint::from_bytes(&sequencer.checkpoint().to_bytes()).expect("decodes");
    assert_eq!(checkpoint.funds, *sequencer.funds());
    let report = verify_journal_with(journal.clone(), &[checkpoint]).expect("verifies");
    assert!(report.checkpoints.iter().all(|c| c.verdict.is_ok()));

    // A journal holding a replayed withdrawal is refused by recovery and
    // by verify.
    let mut tampered = journal.clone();
    let (lsn, kind, payload) = tampered
        .iter()
        .find(|(_, kind, _)| RecordKind::Withdrawal.is(*kind))
        .cloned()
        .expect("a withdrawal record");
    let mut again = payload.clone();
    again[..8].copy_from_slice(&3u64.to_le_bytes());
    tampered.push((Lsn(tampered.len() as u64 + 1), kind, again));
    assert!(verify_journal(tampered).is_err(), "record {lsn} replayed");
}

/// A committee of five keypers (threshold 3) bound to `genesis`'s
/// deployment, each a [`KeyperNode`](crate::keyper::KeyperNode) with a
/// 10 ms skew.
fn five_keypers(
    rng: &mut ChaCha20Rng,
    genesis: &Genesis,
) -> (crate::keyper::Committee, Vec<crate::keyper::KeyperNode>) {
    use crate::keyper::{Committee, KeyperIdentity, KeyperNode, Member, sharing::random_scalar};
    use curve25519_dalek::ristretto::RistrettoPoint;

    let mut members = Vec::new();
    let mut secrets = Vec::new();
    for _ in 0..5 {
        let signing = crate::envelope::generate_account_key(rng);
        let decryption = random_scalar(rng);
        members.push(Member {
            signing_key: signing.verifying_key().to_bytes(),
            encryption_key: RistrettoPoint::mul_base(&decryption).compress().to_bytes(),
        });
        secrets.push((signing, decryption));
    }
    let committee = Committee::new(3, members, genesis.deployment()).expect("a committee");
    let keypers = secrets
        .iter()
        .map(|(signing, decryption)| {
            KeyperNode::new(
                KeyperIdentity {
                    committee: committee.clone(),
                    signing: signing.clone(),
                    decryption: zeroize::Zeroizing::new(*decryption),
                    sequencer: genesis.sequencer,
                    schedule: genesis.schedule,
                    skew_ms: 10,
                    replicas: None,
                },
                [],
            )
            .expect("a member")
        })
        .collect();
    (committee, keypers)
}

/// Each keyper reads the sequencer's durable log, journals (instantly) and
/// posts what it calls for.
fn pump_keypers(
    rng: &mut ChaCha20Rng,
    keypers: &mut [crate::keyper::KeyperNode],
    sequencer: &mut Sequencer,
    now: u64,
) {
    for k in keypers {
        loop {
            let entries = sequencer.committee_log(k.read());
            if entries.is_empty() {
                break;
            }
            assert!(
                entries
                    .iter()
                    .all(|(p, _)| *p < sequencer.committee_log_durable()),
                "only durable entries are served"
            );
            k.handle_log(rng, now, entries.iter().map(|(p, e)| (*p, e)));
        }
        while let Some((number, _)) = k.poll_record() {
            k.handle_durable(number);
        }
        while let Some(message) = k.poll_message() {
            let _ = sequencer.handle_keyper_message(now, message);
        }
    }
}

/// Each keyper answers `seals` at `now` (those past close + skew), and
/// its share and attestation go to the sequencer.
fn release_keys<'a>(
    keypers: &mut [crate::keyper::KeyperNode],
    sequencer: &mut Sequencer,
    seals: impl IntoIterator<Item = &'a SignedSeal>,
    now: u64,
) {
    for seal in seals {
        for k in keypers.iter_mut() {
            if let Ok(answer) = k.handle_seal(seal, None, now) {
                k.record_release(*seal);
                let _ = sequencer.handle_key_share(
                    now,
                    seal.e,
                    k.index(),
                    &answer.share,
                    &answer.attestation,
                );
            }
        }
    }
}

/// A keyper committee takes over a fresh journal: the sequencer keeps the
/// committee's key generation log in its own journal, serves only durable
/// entries, announces only certified keys, opens each batch with the key
/// `t` keypers released — and a restart from the journal alone, or from a
/// checkpoint of a pruned journal, carries on with the same log and keys.
/// `verify` checks every certificate and every published `s_e` against it.
#[test]
fn a_committee_keeps_its_log_in_the_journal_and_keys_every_batch() {
    use crate::keyper::{Committee, GenerationParams};

    let mut rng = ChaCha20Rng::seed_from_u64(77);
    let key = SequencerKey::from_seed(&[7; 32]);
    let genesis = genesis(&key);
    let (committee, mut keypers) = five_keypers(&mut rng, &genesis);
    let params = GenerationParams {
        window_batches: 8,
        lead_batches: 4,
        phase_ms: [60, 30, 30, 60],
    };
    let trader = crate::envelope::generate_account_key(&mut rng);

    let mut journal = Vec::new();
    let mut sequencer = boot(Vec::new(), GENESIS_MS);
    sequencer
        .start_committee(committee.clone(), params)
        .expect("a fresh journal");
    flush(&mut sequencer, &mut journal, GENESIS_MS);
    // Not before a window is certified: fail closed.
    sequencer.handle_timeout(GENESIS_MS).expect("timeout");
    assert!(sequencer.batch_public_key(BatchId(0)).is_err());
    let another = Committee::new(
        2,
        committee
            .indices()
            .filter_map(|j| committee.member(j).copied())
            .take(3)
            .collect(),
        genesis.deployment(),
    )
    .expect("a committee");
    assert!(sequencer.start_committee(another, params).is_err());

    let mut announced = BTreeMap::new();
    let mut early = BTreeMap::new();
    let mut cleared = Vec::new();
    let mut checkpoint = None;
    let mut submitted = 0;
    for step in 0..400u64 {
        let now = GENESIS_MS + step * 10;
        // A restart from the journal alone at 1.5 s, and from a checkpoint
        // (with the journal below its replay point gone) at 3 s.
        if step == 150 {
            sequencer = boot(journal.clone(), now);
        }
        if step == 300 {
            let c: Checkpoint = checkpoint.take().expect("a checkpoint");
            let records: Vec<_> = journal
                .iter()
                .filter(|r| r.0 >= c.replay_from)
                .cloned()
                .collect();
            let next_lsn = journal.last().map_or(Lsn::FIRST, |r| r.0 + 1);
            sequencer = Sequencer::recover(
                genesis.clone(),
                Limits::default(),
                SequencerKey::from_seed(&[7; 32]),
                embedded(&genesis),
                Journaled {
                    checkpoint: Some(c),
                    records,
                    next_lsn,
                },
                now,
            )
            .expect("recovers from the checkpoint");
        }
        sequencer.handle_timeout(now).expect("timeout");
        pump_keypers(&mut rng, &mut keypers, &mut sequencer, now);
        release_keys(&mut keypers, &mut sequencer, early.values(), now);
        early.retain(|e, _| sequencer.batches.contains_key(e));
        let open = sequencer.open_batch_at(now);
        if let Ok(public) = sequencer.batch_public_key(open)
            && step % 3 == 0
            && step < 370
        {
            let orders = [OrderSpec {
                market: MarketId(1),
                side: Side::Buy,
                limit: Some(Tick(100)),
                qty: 10,
                client_order_id: step,
            }];
            let bytes = seal_bundle(
                &mut rng,
                &trader,
                &sequencer.deployment(),
                open,
                &public,
                step,
                &orders,
            )
            .expect("seals")
            .into_bytes();
            if sequencer
                .handle_submit(now, SubmitToken(step), bytes)
                .is_ok()
            {
                submitted += 1;
            }
        }
        let mut events = flush(&mut sequencer, &mut journal, now);
        while !events.is_empty() {
            for event in std::mem::take(&mut events) {
                match event {
                    Event::BatchOpened { e, public_key, .. } => {
                        announced.insert(e, public_key.to_bytes());
                    }
                    // Keypers hold a seal that comes before their clock
                    // passed its close plus the skew, and answer it then.
                    Event::KeyRequested { seal } => {
                        early.insert(seal.e, seal);
                    }
                    Event::BatchCleared { outcome, .. } => cleared.push(outcome.e),
                    _ => {}
                }
            }
            while let Some(job) = sequencer.poll_job() {
                sequencer.handle_opened(now, job.run()).expect("opened");
            }
            events = flush(&mut sequencer, &mut journal, now);
        }
        if step == 250 {
            checkpoint = Some(sequencer.checkpoint());
        }
    }
    assert!(submitted >= 30, "{submitted} envelopes");
    assert!(cleared.len() >= 15, "{} batches cleared", cleared.len());
    assert!(
        cleared.iter().any(|&e| e > 32),
        "batches clear after the restart from the checkpoint: {cleared:?}"
    );
    // Every announced key is a key the committee certified, and no key was
    // released before its batch closed plus the skew (the keypers refuse).
    let report = verify_journal(journal.clone()).expect("verify reads it");
    assert!(report.all_ok(), "{report:?}");
    let verdict = report.committee.expect("a committee");
    assert!(verdict.windows >= 4, "{verdict:?}");
    assert_eq!(verdict.keys_checked, report.batches.len());
    assert!(
        journal
            .iter()
            .any(|r| r.1 == RecordKind::KeyperLog.to_byte())
    );
    // The log stays bounded: the windows behind are pruned.
    let state = sequencer.checkpoint().committee.expect("a committee");
    assert!(
        state
            .snapshot
            .entries
            .iter()
            .all(|(_, e)| e.window().first_batch + 8 > cleared[0]),
        "old windows pruned"
    );
    // A checkpoint with a committee round-trips.
    let c = sequencer.checkpoint();
    assert_eq!(Checkpoint::from_bytes(&c.to_bytes()).expect("decodes"), c);
}

/// Last look, the attack a committee exists to stop: a sequencer's
/// operator seals batch `e` as S1 over the real envelopes, withholds
/// `BatchSealed`, has the keypers release `s_e` for S1, reads every order,
/// then signs S2 — S1 plus an envelope of its own written after seeing the
/// book — and publishes S2 with the key and with the keypers' attestations
/// of S1 (all it holds). Every trader's receipt is in S2 and `s_e·G = S_e`
/// holds, yet every checker refuses it: the client library, `verify` over
/// the journal the operator wrote, a transcript, and the explorer. The
/// honest result of S1 passes all of them.
#[test]
fn a_key_released_for_one_seal_proves_no_other() {
    use crate::client::check::{ResultCheck, ResultError};
    use crate::envelope::{MerkleTree, PublishedKeyCustodian, ReleaseAttestation};
    use crate::keyper::GenerationParams;
    use crate::sequencer::record::ResultPart;
    use crate::wire::{BatchCleared, BatchSealed, MarketLine};

    let mut rng = ChaCha20Rng::seed_from_u64(91);
    let key = SequencerKey::from_seed(&[7; 32]);
    let genesis = genesis(&key);
    let (committee, mut keypers) = five_keypers(&mut rng, &genesis);
    let params = GenerationParams {
        window_batches: 8,
        lead_batches: 4,
        phase_ms: [60, 30, 30, 60],
    };
    let buyer = crate::envelope::generate_account_key(&mut rng);
    let seller = crate::envelope::generate_account_key(&mut rng);
    let operator = crate::envelope::generate_account_key(&mut rng);
    let id = |k: &ed25519_dalek::SigningKey| AccountId(k.verifying_key().to_bytes());
    let mut journal = Vec::new();
    let mut sequencer = boot(Vec::new(), GENESIS_MS);
    sequencer
        .start_committee(committee.clone(), params)
        .expect("a fresh journal");
    for (i, account) in [&buyer, &seller, &operator].into_iter().enumerate() {
        for asset in [AssetId(0), AssetId(1)] {
            sequencer
                .handle_deposit(
                    OpToken(10 + 2 * i as u64 + u64::from(asset.0)),
                    id(account),
                    asset,
                    1_000_000,
                )
                .expect("deposit");
        }
    }
    // Run until one batch holding the buyer's and the seller's bundles
    // clears, its key released by the keypers.
    let mut seals = BTreeMap::new();
    let mut submitted = None;
    let mut honest = None;
    for step in 0..300u64 {
        let now = GENESIS_MS + step * 10;
        sequencer.handle_timeout(now).expect("timeout");
        pump_keypers(&mut rng, &mut keypers, &mut sequencer, now);
        release_keys(&mut keypers, &mut sequencer, seals.values(), now);
        let open = sequencer.open_batch_at(now);
        if submitted.is_none()
            && let Ok(public) = sequencer.batch_public_key(open)
        {
            for (nonce, (trader, side, limit)) in
                [(&buyer, Side::Buy, 110), (&seller, Side::Sell, 90)]
                    .into_iter()
                    .enumerate()
            {
                let orders = [OrderSpec {
                    market: MarketId(1),
                    side,
                    limit: Some(Tick(limit)),
                    qty: 5,
                    client_order_id: 0,
                }];
                let bytes = seal_bundle(
                    &mut rng,
                    trader,
                    &sequencer.deployment(),
                    open,
                    &public,
                    nonce as u64,
                    &orders,
                )
                .expect("seals")
                .into_bytes();
                sequencer
                    .handle_submit(now, SubmitToken(nonce as u64), bytes)
                    .expect("accepted");
            }
            submitted = Some((open, public));
        }
        let mut events = flush(&mut sequencer, &mut journal, now);
        while !events.is_empty() {
            for event in std::mem::take(&mut events) {
                match event {
                    Event::KeyRequested { seal } => {
                        seals.insert(seal.e, seal);
                    }
                    Event::BatchCleared { outcome, .. }
                        if submitted.is_some_and(|(e, _)| e == outcome.e) =>
                    {
                        honest = Some(outcome);
                    }
                    _ => {}
                }
            }
            while let Some(job) = sequencer.poll_job() {
                sequencer.handle_opened(now, job.run()).expect("opened");
            }
            events = flush(&mut sequencer, &mut journal, now);
        }
        if honest.is_some() {
            break;
        }
    }
    let honest = honest.expect("the batch clears");
    let (e, public) = submitted.expect("submitted");
    let s1 = seals[&e];
    assert!(honest.release.len() >= committee.threshold());
    let attested: Vec<ReleaseAttestation> = honest.release.clone();

    // The operator's envelope, written after reading the book, and S2.
    let extra = seal_bundle(
        &mut rng,
        &operator,
        &sequencer.deployment(),
        e,
        &public,
        7,
        &[OrderSpec {
            market: MarketId(1),
            side: Side::Buy,
            limit: Some(Tick(150)),
            qty: 5,
            client_order_id: 1,
        }],
    )
    .expect("seals")
    .into_bytes();
    let mut envelopes2: Vec<Vec<u8>> = journal
        .iter()
        .filter(|r| r.1 == RecordKind::Envelope.to_byte())
        .filter_map(|r| match SequencerRecord::decode(r.1, &r.2) {
            Ok(SequencerRecord::Envelope { e: b, bytes }) if b == e => Some(bytes),
            _ => None,
        })
        .collect();
    envelopes2.push(extra.clone());
    let tree2 = MerkleTree::from_commitments(
        envelopes2
            .iter()
            .map(|b| crate::envelope::Commitment::of(b))
            .collect(),
    )
    .expect("a tree");
    let s2 = key.sign_seal(e, &tree2);
    assert_ne!(s2.root, s1.root);
    // The key opens S2 (it is the batch's, not the seal's).
    let mut published = PublishedKeyCustodian::new(
        e,
        &honest.batch_secret,
        &public,
        genesis.sequencer,
        genesis.schedule,
    )
    .expect("the published key");
    assert!(published.release(&s2, u64::MAX).is_ok());

    // 1. The honest transcript verifies, released by t keypers; the
    // operator's, made from it with S2 and the attestations of S1, does
    // not.
    let (_, transcripts) =
        export_transcripts(journal.clone(), &[], &std::collections::BTreeSet::from([e]))
            .expect("exports");
    let t1 = transcripts.into_iter().next().expect("a transcript");
    let summary = verify_transcript(&t1).expect("the honest batch verifies");
    assert_eq!(
        summary
            .released_by
            .as_ref()
            .map(|(_, t, by)| (*t, by.len())),
        Some((3, 3))
    );
    let mut ledger = crate::ledger::Ledger::new(genesis.fee_account);
    for &(account, asset, amount) in &t1.balances {
        ledger.deposit(account, asset, amount).expect("a balance");
    }
    let mut operator_balances: Vec<_> = [AssetId(0), AssetId(1)]
        .into_iter()
        .map(|asset| (id(&operator), asset, 1_000_000))
        .collect();
    for &(account, asset, amount) in &operator_balances {
        ledger.deposit(account, asset, amount).expect("a balance");
    }
    let references: BTreeMap<_, _> = t1.references.iter().copied().collect();
    let (outcome2, _) = super::rederive::rederive(
        &genesis,
        &s2,
        &envelopes2,
        &honest,
        &ledger,
        &genesis.market_map(),
        &references,
    )
    .expect("S2 re-derives with the key");
    assert_eq!(outcome2.release, attested, "the attestations of S1, copied");
    // The operator's bid at the top of the band takes the buyer's fill.
    let mine = outcome2
        .envelopes
        .iter()
        .position(|o| o.commitment == crate::envelope::Commitment::of(&extra))
        .expect("in S2") as u32;
    assert!(
        outcome2.fills.iter().any(|f| f.envelope == mine),
        "the operator's order trades: {:?}",
        outcome2.fills
    );
    let mut t2 = t1.clone();
    t2.balances.append(&mut operator_balances);
    t2.balances.sort_unstable();
    t2.envelopes = tree2
        .leaves()
        .iter()
        .map(|c| {
            envelopes2
                .iter()
                .find(|b| crate::envelope::Commitment::of(b) == *c)
                .cloned()
                .expect("an envelope")
        })
        .collect();
    t2.seal = s2;
    t2.outcome = outcome2.clone();
    let refused = verify_transcript(&t2).expect_err("S2 is refused");
    assert!(
        refused
            .to_string()
            .contains("did not release its key for this seal"),
        "{refused}"
    );

    // 2. `verify` over the journal the operator wrote: the records up to
    // S1's seal, its own envelope, S2 and the result of S2.
    let cut = journal
        .iter()
        .position(|r| {
            matches!(
                SequencerRecord::decode(r.1, &r.2),
                Ok(SequencerRecord::Seal(seal)) if seal.e == e
            )
        })
        .expect("the seal of e");
    let mut forged: Vec<(Lsn, u8, Vec<u8>)> = journal[..cut].to_vec();
    let mut push = |record: SequencerRecord| {
        let lsn = forged.last().map_or(Lsn::FIRST, |r| r.0 + 1);
        forged.push((lsn, record.kind().to_byte(), record.encode()));
    };
    push(SequencerRecord::Envelope {
        e,
        bytes: extra.clone(),
    });
    push(SequencerRecord::Seal(s2));
    for part in ResultPart::split(&outcome2, RESULT_PART_BYTES_MAX) {
        push(SequencerRecord::ResultPart(part));
    }
    let report = verify_journal(journal.clone()).expect("reads");
    assert!(report.all_ok(), "{report:?}");
    let report = verify_journal(forged).expect("reads");
    let verdict = report
        .batches
        .iter()
        .find(|b| b.e == e)
        .expect("batch e")
        .verdict
        .clone();
    assert!(
        verdict
            .as_ref()
            .is_err_and(|why| why.contains("did not release its key for this seal")),
        "{verdict:?}"
    );

    // 3. A client that saw S2 pushed: the result of S2 is refused, and so
    // is one naming S1's attested root under S2.
    let cleared = |outcome: &BatchOutcome| BatchCleared {
        e,
        root: outcome.root.0,
        batch_secret: outcome.batch_secret,
        release: outcome.release.clone(),
        envelopes: outcome.envelopes.len() as u32,
        accepted: 0,
        markets: outcome
            .markets
            .iter()
            .map(|m| MarketLine {
                market: m.market.0,
                price: m.price,
                volume: m.volume,
                imbalance: m.imbalance,
            })
            .collect(),
        own: Vec::new(),
    };
    let client = |seal: &SignedSeal| {
        let mut check = ResultCheck::default();
        check.set_sequencer(genesis.sequencer);
        check.set_committee(committee.clone());
        check.add_key(e, public.to_bytes());
        check
            .sealed(&BatchSealed {
                seal: seal.to_bytes(),
                proofs: Vec::new(),
            })
            .expect("a signed seal");
        check
    };
    assert_eq!(client(&s1).cleared(&cleared(&honest)), Ok(()));
    assert!(matches!(
        client(&s2).cleared(&cleared(&outcome2)),
        Err(ResultError::NotReleased { e: b, .. }) if b == e
    ));
    assert!(matches!(
        client(&s2).cleared(&cleared(&honest)),
        Err(ResultError::NotTheSeal { .. })
    ));

    // 4. The explorer shows the honest result as released by its keypers,
    // and the operator's as not proven.
    let explorer = crate::node::explorer::Explorer::new(4, genesis.sequencer);
    explorer.record(&honest, None, 0, Some(&committee));
    let by = explorer.batch(e).expect("shown").released_by.clone();
    assert!(matches!(by, Some(Ok(ref k)) if k.len() == 3), "{by:?}");
    explorer.record(&Arc::new(outcome2), None, 0, Some(&committee));
    let check = explorer
        .check(&crate::envelope::Commitment::of(&extra))
        .expect("found");
    assert!(matches!(check.released_by, Some(Err(_))), "{check:?}");
}

/// `verify --receipts` on a journal that lost its start (pruned, or a
/// replica that installed a snapshot): the sequencer's key comes from the
/// checkpoint's genesis, receipts of batches cleared before the journal's
/// first record are counted apart, not missing, and an envelope missing
/// from a batch the journal holds is still found.
#[test]
fn receipts_are_checked_against_a_journal_that_starts_at_a_checkpoint() {
    let key = SequencerKey::from_seed(&[7; 32]);
    let mut journal = Vec::new();
    let mut sequencer = boot(Vec::new(), GENESIS_MS);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let trader = crate::envelope::generate_account_key(&mut rng);
    let mut receipts = Vec::new();
    let mut checkpoint = None;
    for b in 0..6u64 {
        let now = GENESIS_MS + b * 100;
        sequencer.handle_timeout(now).expect("timeout");
        let e = sequencer.open_batch_at(now);
        let public = sequencer.batch_public_key(e).expect("announced");
        let orders = [OrderSpec {
            market: MarketId(1),
            side: Side::Buy,
            limit: Some(Tick(100)),
            qty: 1,
            client_order_id: b,
        }];
        let envelope = seal_bundle(
            &mut rng,
            &trader,
            &sequencer.deployment(),
            e,
            &public,
            b + 1,
            &orders,
        )
        .expect("seals");
        let commitment = sequencer
            .handle_submit(now, SubmitToken(b), envelope.into_bytes())
            .expect("accepted");
        receipts.push(key.sign_receipt(e, &commitment));
        flush(&mut sequencer, &mut journal, now);
        while let Some(job) = sequencer.poll_job() {
            sequencer.handle_opened(now, job.run()).expect("processed");
        }
        flush(&mut sequencer, &mut journal, now);
        if b == 2 {
            checkpoint = Some(sequencer.checkpoint());
        }
    }
    // Every batch before the last is cleared.
    let now = GENESIS_MS + 700;
    sequencer.handle_timeout(now).expect("timeout");
    flush(&mut sequencer, &mut journal, now);
    while let Some(job) = sequencer.poll_job() {
        sequencer.handle_opened(now, job.run()).expect("processed");
    }
    flush(&mut sequencer, &mut journal, now);
    let checkpoint = checkpoint.expect("taken");
    // The whole journal holds all six.
    let whole = check_receipts(journal.clone(), &[], &receipts).expect("reads");
    assert_eq!(
        (whole.held, whole.missing.len(), whole.before_journal),
        (6, 0, 0)
    );
    // Cut before the last batch's result: its receipt's envelope is
    // journaled, its result not yet — not cleared, not missing.
    let last_result = journal
        .iter()
        .rposition(|r| RecordKind::Result.is(r.1))
        .expect("a result");
    let running: Vec<_> = journal[..last_result].to_vec();
    let report = check_receipts(running, &[], &receipts).expect("reads");
    assert_eq!(
        (report.held, report.not_cleared, report.missing.len()),
        (5, 1, 0)
    );
    // From the checkpoint on: the genesis is gone, the checkpoint names the
    // sequencer and the batches cleared before it.
    let pruned: Vec<_> = journal
        .iter()
        .filter(|r| r.0 >= checkpoint.replay_from)
        .cloned()
        .collect();
    assert!(check_receipts(pruned.clone(), &[], &receipts).is_err());
    let report = check_receipts(pruned.clone(), std::slice::from_ref(&checkpoint), &receipts)
        .expect("reads");
    assert_eq!(report.checkable_from, checkpoint.closed_below);
    assert!(report.checkable_from > 0);
    assert_eq!(report.missing, Vec::new());
    assert_eq!(report.held + report.before_journal, 6);
    assert!(report.before_journal > 0 && report.held > 0);
    // A receipt for an envelope the journal never took, in a batch it
    // holds, is missing; one signed by another key is forged.
    let last = receipts.last().expect("receipts").e;
    let never = key.sign_receipt(last, &crate::envelope::Commitment([0x55; 32]));
    let stranger = SequencerKey::from_seed(&[8; 32]).sign_receipt(last, &receipts[5].commitment);
    let report = check_receipts(pruned, &[checkpoint], &[never, stranger]).expect("reads");
    assert_eq!(report.missing.len(), 1);
    assert_eq!(report.forged, vec![last]);
}

/// A replica takes over with a clock behind the leader that sealed: the
/// batches it finds sealed have not closed by its clock, so the custodian
/// refuses to release their keys yet. Before, that refusal stopped the
/// replica (exit 70, and again at every restart while the clock lagged);
/// now each batch waits, sealed, in its place, and opens at the first
/// timeout past its close — strictly in order.
#[test]
fn a_replica_whose_clock_is_behind_the_seal_waits_for_the_close() {
    let Funded {
        mut sequencer,
        mut journal,
        mut rng,
        buyer,
        seller,
    } = funded_pair(3);
    // Batches 0 and 1 each get a crossing pair, and are sealed at their
    // close (100 ms each) by this leader's clock.
    let mut nonce = 0;
    for e in 0..2u64 {
        let now = GENESIS_MS + e * 100;
        let public = sequencer.batch_public_key(BatchId(e)).expect("announced");
        for (trader, side) in [(&buyer, Side::Buy), (&seller, Side::Sell)] {
            nonce += 1;
            let orders = [OrderSpec {
                market: MarketId(1),
                side,
                limit: Some(Tick(100)),
                qty: 5,
                client_order_id: nonce,
            }];
            let envelope = seal_bundle(
                &mut rng,
                trader,
                &sequencer.deployment(),
                BatchId(e),
                &public,
                nonce,
                &orders,
            )
            .expect("seals");
            sequencer
                .handle_submit(now, SubmitToken(nonce), envelope.into_bytes())
                .expect("accepted");
        }
        sequencer.handle_timeout(now + 100).expect("seals");
        flush(&mut sequencer, &mut journal, now + 100);
    }
    assert_eq!(
        journal.iter().filter(|r| RecordKind::Seal.is(r.1)).count(),
        2
    );

    // The next leader's clock reads 50 ms after genesis: neither batch has
    // closed by it. It resumes, and stays up.
    let mut next = boot(journal.clone(), GENESIS_MS + 50);
    assert!(next.poll_job().is_none(), "no key before the close");
    let events: Vec<Event> = std::iter::from_fn(|| next.poll_event()).collect();
    let unavailable: Vec<BatchId> = events
        .iter()
        .filter_map(|event| match event {
            Event::KeyUnavailable { e, .. } => Some(*e),
            _ => None,
        })
        .collect();
    assert_eq!(unavailable, [0, 1], "{events:?}");
    // Asked again at each timeout, reported once.
    next.handle_timeout(GENESIS_MS + 90).expect("timeout");
    assert!(next.poll_job().is_none());
    assert!(
        !std::iter::from_fn(|| next.poll_event())
            .any(|event| matches!(event, Event::KeyUnavailable { .. }))
    );
    // Batch 0 closes by this clock at 100 ms: its key comes, batch 1's not.
    next.handle_timeout(GENESIS_MS + 150).expect("timeout");
    let first = next.poll_job().expect("batch 0 opens");
    assert!(next.poll_job().is_none(), "batch 1 has not closed here");
    next.handle_opened(GENESIS_MS + 150, first.run())
        .expect("opened");
    let mut replica_journal = journal.clone();
    let cleared: Vec<BatchId> = flush(&mut next, &mut replica_journal, GENESIS_MS + 150)
        .iter()
        .filter_map(|event| match event {
            Event::BatchCleared { outcome, .. } => Some(outcome.e),
            _ => None,
        })
        .collect();
    assert_eq!(cleared, [0]);
    next.handle_timeout(GENESIS_MS + 210).expect("timeout");
    let second = next.poll_job().expect("batch 1 opens");
    next.handle_opened(GENESIS_MS + 210, second.run())
        .expect("opened");
    let cleared: Vec<BatchId> = flush(&mut next, &mut replica_journal, GENESIS_MS + 210)
        .iter()
        .filter_map(|event| match event {
            Event::BatchCleared { outcome, .. } => Some(outcome.e),
            _ => None,
        })
        .collect();
    assert_eq!(cleared, [1]);
    let report = verify_journal(replica_journal).expect("verify reads it");
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.batches.len(), 2);
}

/// A sequencer under a committee of [`five_keypers`] (windows of
/// `window_batches`, dealt `lead_batches` ahead), its journal so far, and a
/// trader.
struct CommitteeWorld {
    rng: ChaCha20Rng,
    genesis: Genesis,
    keypers: Vec<crate::keyper::KeyperNode>,
    trader: ed25519_dalek::SigningKey,
    journal: Vec<(Lsn, u8, Vec<u8>)>,
    sequencer: Sequencer,
}

fn committee_world(seed: u64, window_batches: u32, lead_batches: u64) -> CommitteeWorld {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let genesis = genesis(&SequencerKey::from_seed(&[7; 32]));
    let (committee, keypers) = five_keypers(&mut rng, &genesis);
    let params = crate::keyper::GenerationParams {
        window_batches,
        lead_batches,
        phase_ms: [60, 30, 30, 60],
    };
    let trader = crate::envelope::generate_account_key(&mut rng);
    let mut journal = Vec::new();
    let mut sequencer = boot(Vec::new(), GENESIS_MS);
    sequencer
        .start_committee(committee, params)
        .expect("a fresh journal");
    flush(&mut sequencer, &mut journal, GENESIS_MS);
    CommitteeWorld {
        rng,
        genesis,
        keypers,
        trader,
        journal,
        sequencer,
    }
}

/// `trader`'s envelope of one buy order (id `id`) for batch `e`, sealed to
/// its announced key; `None` while the batch has none.
fn buy(
    rng: &mut ChaCha20Rng,
    trader: &ed25519_dalek::SigningKey,
    sequencer: &Sequencer,
    e: BatchId,
    id: u64,
) -> Option<Vec<u8>> {
    let public = sequencer.batch_public_key(e).ok()?;
    let orders = [OrderSpec {
        market: MarketId(1),
        side: Side::Buy,
        limit: Some(Tick(100)),
        qty: 10,
        client_order_id: id,
    }];
    let envelope = seal_bundle(
        rng,
        trader,
        &sequencer.deployment(),
        e,
        &public,
        id,
        &orders,
    )
    .expect("seals");
    Some(envelope.into_bytes())
}

/// A batch whose key does not come for a long while (the keypers are cut
/// off from it) while the committee goes on dealing windows. Before, the
/// log keeper dealt a window every few seconds for as long as the stall
/// lasted and the custodian kept only the newest 64: once 64 more were
/// certified, a replica that restarted or took over no longer held the
/// stalled batch's window and stopped itself at every start (a fault
/// campaign: 16 exits in a row, "holds no key for batch 3200"), and a
/// replica that followed kept every window ever dealt. Now windows are
/// pruned only below the first batch not cleared, on the leader and on a
/// replica that follows, and none is dealt more than [`WINDOWS_AHEAD_MAX`]
/// windows beyond it: the stalled batch's window survives any restart, its key opens it
/// when the keypers answer, and trading goes on after it.
///
/// [`WINDOWS_AHEAD_MAX`]: crate::keyper::log_keeper::WINDOWS_AHEAD_MAX
#[test]
fn a_batch_whose_key_is_late_keeps_its_window_through_restarts() {
    use crate::keyper::log_keeper::WINDOWS_AHEAD_MAX;

    let CommitteeWorld {
        mut rng,
        genesis,
        mut keypers,
        trader,
        mut journal,
        mut sequencer,
    } = committee_world(78, 1, 6);

    let mut stalled = None;
    let mut early = BTreeMap::new();
    let mut cleared = Vec::new();
    let mut live_max = 0;
    // 100 ms batches, one per window: the stall lasts 100 windows.
    for step in 0..300u64 {
        let now = GENESIS_MS + step * 50;
        sequencer.handle_timeout(now).expect("timeout");
        pump_keypers(&mut rng, &mut keypers, &mut sequencer, now);
        // The keypers answer every seal but the stalled one's until step
        // 250; from then on that one too.
        let answered: Vec<SignedSeal> = early
            .values()
            .filter(|s: &&SignedSeal| step >= 250 || Some(s.e) != stalled)
            .copied()
            .collect();
        release_keys(&mut keypers, &mut sequencer, &answered, now);
        let open = sequencer.open_batch_at(now);
        if step % 2 == 0
            && let Some(bytes) = buy(&mut rng, &trader, &sequencer, open, step)
            && sequencer
                .handle_submit(now, SubmitToken(step), bytes)
                .is_ok()
            && stalled.is_none()
            && step >= 20
        {
            stalled = Some(open);
        }
        let mut events = flush(&mut sequencer, &mut journal, now);
        while !events.is_empty() {
            for event in std::mem::take(&mut events) {
                match event {
                    Event::KeyRequested { seal } => {
                        early.insert(seal.e, seal);
                    }
                    Event::BatchCleared { outcome, .. } => {
                        early.remove(&outcome.e);
                        cleared.push(outcome.e);
                    }
                    _ => {}
                }
            }
            while let Some(job) = sequencer.poll_job() {
                sequencer.handle_opened(now, job.run()).expect("opened");
            }
            events = flush(&mut sequencer, &mut journal, now);
        }
        let state = sequencer.checkpoint().committee.expect("a committee");
        let windows: std::collections::BTreeSet<BatchId> = state
            .snapshot
            .entries
            .iter()
            .map(|(_, e)| e.window().first_batch)
            .collect();
        live_max = live_max.max(windows.len());
        // A restart (a replica taking over) every 2 s of the stall, from
        // the journal alone.
        if step % 40 == 39 {
            sequencer = boot(journal.clone(), now);
        }
    }
    let stalled = stalled.expect("an envelope was taken");
    assert!(
        live_max as u64 <= WINDOWS_AHEAD_MAX + 1,
        "{live_max} windows held at once"
    );
    assert!(
        cleared.contains(&stalled),
        "the stalled batch {stalled} clears"
    );
    assert!(
        cleared.iter().any(|&e| e > 130),
        "trading goes on after it: {cleared:?}"
    );
    let report = verify_journal(journal.clone()).expect("verify reads it");
    assert!(report.all_ok(), "{report:?}");

    // A replica that followed the whole run, record by record, holds no
    // more windows than the leader did.
    let mut follower = Sequencer::recover_replica(
        genesis.clone(),
        Limits::default(),
        SequencerKey::from_seed(&[7; 32]),
        embedded(&genesis),
        Journaled {
            checkpoint: None,
            records: journal.iter().take(1).cloned().collect::<Vec<_>>(),
            next_lsn: Lsn(2),
        },
        GENESIS_MS,
    )
    .expect("a replica");
    for (lsn, kind, payload) in journal.iter().skip(1) {
        follower
            .apply_committed(*lsn, *kind, payload)
            .expect("applies");
    }
    let state = follower.checkpoint().committee.expect("a committee");
    let windows: std::collections::BTreeSet<BatchId> = state
        .snapshot
        .entries
        .iter()
        .map(|(_, e)| e.window().first_batch)
        .collect();
    assert!(
        windows.len() as u64 <= WINDOWS_AHEAD_MAX + 1,
        "a follower holds {} windows",
        windows.len()
    );
}

/// Keypers that link (to a new leader, after a restart) are asked for the
/// keys awaited at once, not up to [`KEY_REQUEST_RESEND_MS`] later: after a
/// failover under a committee every request went out while no keyper was
/// linked yet, and the batches closed during the outage waited for the
/// next resend.
#[test]
fn keys_awaited_are_asked_again_as_soon_as_keypers_link() {
    let CommitteeWorld {
        mut rng,
        mut keypers,
        trader,
        mut journal,
        mut sequencer,
        ..
    } = committee_world(79, 8, 4);
    let mut now = GENESIS_MS;
    let mut submitted = None;
    let mut requested = None;
    while requested.is_none() && now < GENESIS_MS + 5_000 {
        now += 10;
        sequencer.handle_timeout(now).expect("timeout");
        pump_keypers(&mut rng, &mut keypers, &mut sequencer, now);
        let open = sequencer.open_batch_at(now);
        if submitted.is_none()
            && let Some(bytes) = buy(&mut rng, &trader, &sequencer, open, 1)
        {
            sequencer
                .handle_submit(now, SubmitToken(1), bytes)
                .expect("accepted");
            submitted = Some(open);
        }
        for event in flush(&mut sequencer, &mut journal, now) {
            if let Event::KeyRequested { seal } = event {
                requested = Some(seal.e);
            }
        }
    }
    assert_eq!(requested, submitted, "the batch's key is asked for");
    let asked = |sequencer: &mut Sequencer, at: u64| {
        sequencer.handle_timeout(at).expect("timeout");
        std::iter::from_fn(|| sequencer.poll_event())
            .any(|event| matches!(event, Event::KeyRequested { .. }))
    };
    // No keyper linked: asked again only after the resend interval.
    sequencer.set_keypers_linked(0);
    assert!(!asked(&mut sequencer, now + 10));
    // Keypers link: asked again at the next timeout.
    sequencer.set_keypers_linked(3);
    assert!(
        asked(&mut sequencer, now + 20),
        "asked as soon as keypers link"
    );
    // The same keypers still linked: not again before the interval.
    sequencer.set_keypers_linked(3);
    assert!(!asked(&mut sequencer, now + 30));
    assert!(asked(&mut sequencer, now + 20 + KEY_REQUEST_RESEND_MS));
}

/// A committee record bound to another deployment is refused alike by
/// recovery and by `verify`: one walk over the journal applies the
/// committee record for both (`verify` took it before).
#[test]
fn a_committee_of_another_deployment_is_refused_by_recovery_and_by_verify() {
    use crate::keyper::Committee;
    let world = committee_world(91, 8, 4);
    let other = crate::envelope::DeploymentId::of(
        &SequencerKey::from_seed(&[8; 32]).public_key(),
        &world.genesis.schedule,
    );
    assert_ne!(other, world.genesis.deployment());
    let mut journal = world.journal.clone();
    let mut rewritten = 0;
    for (_, kind, payload) in &mut journal {
        if let Ok(SequencerRecord::Committee {
            committee,
            params,
            first_batch,
        }) = SequencerRecord::decode(*kind, payload)
        {
            let moved = Committee::new(committee.threshold(), committee.members().to_vec(), other)
                .expect("a committee");
            *payload = SequencerRecord::Committee {
                committee: moved,
                params,
                first_batch,
            }
            .encode();
            rewritten += 1;
        }
    }
    assert_eq!(rewritten, 1);
    let journal_len = journal.len() as u64;
    let refused = verify_journal(journal.iter().cloned());
    assert!(
        matches!(&refused, Err(VerifyError::Ledger { reason, .. }) if reason.contains("bound to deployment")),
        "{refused:?}"
    );
    let recovered = Sequencer::recover(
        world.genesis.clone(),
        Limits::default(),
        SequencerKey::from_seed(&[7; 32]),
        embedded(&world.genesis),
        Journaled {
            checkpoint: None,
            records: journal,
            next_lsn: Lsn(journal_len + 1),
        },
        GENESIS_MS,
    );
    assert!(
        matches!(&recovered, Err(SequencerError::Replay { reason, .. }) if reason.contains("bound to deployment")),
        "{:?}",
        recovered.err()
    );
}
