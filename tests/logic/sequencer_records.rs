//! Journal record payloads: exact round trips, and every truncation,
//! extension or bad field is a typed error naming the field, never a panic.

use proptest::prelude::*;
use sealbatch::codec::DecodeError;
use sealbatch::envelope::{BatchSchedule, Commitment, MerkleRoot, SequencerKey, SignedSeal};
use sealbatch::market::{AccountId, AssetId, MarketConfig};
use sealbatch::sequencer::{
    AssembleError, BatchOutcome, EnvelopeOutcome, EnvelopeStatus, Genesis, MarketOutcome,
    OrderFill, RESULT_PART_BYTES_MAX, RecordError, RecordKind, ResultAssembler, ResultPart,
    SequencerRecord, Transfer,
};
use sealbatch::signed::Statement as _;
use sealbatch::types::{BatchId, MarketId, OrderId, Side, Tick};

fn genesis() -> Genesis {
    Genesis {
        sequencer: SequencerKey::from_seed(&[3; 32]).public_key(),
        schedule: BatchSchedule {
            genesis_ms: 1_700_000_000_000,
            batch_length_ms: 100,
        },
        fee_account: AccountId([9; 32]),
        orders_per_account_per_batch_max:
            sealbatch::sequencer::ORDERS_PER_ACCOUNT_PER_BATCH_DEFAULT,
        markets: vec![MarketConfig {
            id: MarketId(1),
            base: AssetId(1),
            quote: AssetId(0),
            tick_size: 1,
            lot_size: 10,
            band_min: Tick(10),
            band_max: Tick(1_000),
            initial_price: Tick(100),
            fee_bps: 3,
        }],
    }
}

fn outcome(envelopes: u8, fills: u8, price: Option<u64>) -> BatchOutcome {
    BatchOutcome {
        e: BatchId(77),
        root: MerkleRoot([5; 32]),
        batch_secret: [6; 32],
        release: vec![
            sealbatch::envelope::ReleaseAttestation {
                keyper: 1,
                signature: [7; 64],
            },
            sealbatch::envelope::ReleaseAttestation {
                keyper: 4,
                signature: [8; 64],
            },
        ],
        envelopes: (0..envelopes)
            .map(|i| EnvelopeOutcome {
                commitment: Commitment([i; 32]),
                status: if i % 3 == 0 {
                    EnvelopeStatus::Rejected {
                        code: 35,
                        detail: u32::from(i),
                    }
                } else {
                    EnvelopeStatus::Accepted {
                        account: AccountId([i; 32]),
                        first_order: OrderId(u64::from(i) * 4),
                        orders: 4,
                    }
                },
            })
            .collect(),
        markets: vec![MarketOutcome {
            market: MarketId(1),
            price: price.map(Tick),
            volume: if price.is_some() { 12 } else { 0 },
            imbalance: -3,
        }],
        fills: (0..fills)
            .map(|i| OrderFill {
                envelope: u32::from(i),
                index: 1,
                market: MarketId(1),
                side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
                filled: 3,
            })
            .collect(),
    }
}

fn only_part(outcome: &BatchOutcome) -> ResultPart {
    let mut parts = ResultPart::split(outcome, RESULT_PART_BYTES_MAX);
    assert_eq!(parts.len(), 1);
    parts.remove(0)
}

/// An outcome whose encoding spans `parts` parts.
fn large_outcome(parts: usize) -> BatchOutcome {
    let mut o = outcome(3, 0, Some(100));
    let fills = (parts - 1) * RESULT_PART_BYTES_MAX / 19 + 1_000;
    o.fills = (0..fills)
        .map(|i| OrderFill {
            envelope: 1 + (i / 60_000) as u32 % 2,
            index: (i % 60_000) as u16,
            market: MarketId(1),
            side: Side::Buy,
            filled: 1,
        })
        .collect();
    o
}

fn assemble(parts: Vec<ResultPart>) -> Result<Vec<BatchOutcome>, AssembleError> {
    let mut assembler = ResultAssembler::default();
    let mut out = Vec::new();
    for part in parts {
        out.extend(assembler.push(part)?);
    }
    Ok(out)
}

fn records() -> Vec<SequencerRecord> {
    let key = SequencerKey::from_seed(&[3; 32]);
    let tree =
        sealbatch::envelope::MerkleTree::from_commitments(vec![Commitment([1; 32])]).expect("tree");
    let seal: SignedSeal = key.sign_seal(BatchId(4), &tree);
    vec![
        SequencerRecord::Genesis(genesis()),
        SequencerRecord::Envelope {
            e: BatchId(4),
            bytes: vec![1; 300],
        },
        SequencerRecord::Seal(seal),
        SequencerRecord::ResultPart(only_part(&outcome(5, 3, Some(101)))),
        SequencerRecord::ResultPart(only_part(&outcome(0, 0, None))),
        SequencerRecord::Deposit(Transfer {
            account: AccountId([2; 32]),
            asset: AssetId(7),
            amount: 1_000,
        }),
        SequencerRecord::UnsignedWithdrawal(Transfer {
            account: AccountId([2; 32]),
            asset: AssetId(7),
            amount: 1,
        }),
        SequencerRecord::Withdrawal(sealbatch::signed::Withdrawal {
            id: 3,
            signed: sealbatch::signed::WithdrawalStatement {
                account: AccountId([0; 32]),
                asset: AssetId(7),
                amount: 40,
                sequence: 2,
                destination: b"bc1qexample".to_vec(),
            }
            .sign(
                &ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
                &key.public_key(),
            )
            .expect("signs"),
        }),
        SequencerRecord::Payout(
            sealbatch::signed::PayoutStatement {
                operator: [0; 32],
                withdrawal: 3,
                reference: b"tx:77".to_vec(),
            }
            .sign(
                &ed25519_dalek::SigningKey::from_bytes(&[8; 32]),
                &key.public_key(),
            )
            .expect("signs"),
        ),
        SequencerRecord::OperatorDeposit(
            sealbatch::signed::DepositStatement {
                operator: [0; 32],
                account: AccountId([2; 32]),
                asset: AssetId(7),
                amount: 9_000,
                reference: b"0xfeed".to_vec(),
            }
            .sign(
                &ed25519_dalek::SigningKey::from_bytes(&[8; 32]),
                &key.public_key(),
            )
            .expect("signs"),
        ),
    ]
}

#[test]
fn every_record_round_trips() {
    for record in records() {
        let bytes = record.encode();
        assert_eq!(
            SequencerRecord::decode(record.kind().to_byte(), &bytes),
            Ok(record.clone())
        );
    }
}

#[test]
fn truncation_and_trailing_bytes_are_typed_errors() {
    for record in records() {
        let bytes = record.encode();
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    SequencerRecord::decode(record.kind().to_byte(), &bytes[..cut]),
                    Err(RecordError::Decode { .. })
                ),
                "{:?} cut at {cut}",
                record.kind()
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        match SequencerRecord::decode(record.kind().to_byte(), &longer) {
            // An envelope's length prefix makes the extra byte trailing too.
            Err(RecordError::Decode {
                source: DecodeError::Trailing { extra: 1, .. },
                ..
            }) => {}
            other => panic!("{:?}: {other:?}", record.kind()),
        }
    }
}

#[test]
fn non_canonical_fields_are_refused() {
    let mut part = only_part(&outcome(0, 0, None));
    // tag 8, e 8, root 32, secret 32, attestations 2 + 2 × 66, envelope
    // count 4, market count 4, market id 4, then has_price (0) and price
    // (must be 0 without a price).
    let price_at = 8 + 8 + 32 + 32 + 2 + 2 * 66 + 4 + 4 + 4 + 1;
    part.bytes[price_at] = 1;
    assert!(matches!(
        assemble(vec![part]),
        Err(AssembleError::Decode { e: BatchId(77), .. })
    ));
    // A part index at or past the count.
    let mut bytes = SequencerRecord::ResultPart(only_part(&outcome(1, 0, None))).encode();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    assert!(SequencerRecord::decode(RecordKind::Result.to_byte(), &bytes).is_err());
    assert_eq!(
        SequencerRecord::decode(RecordKind::KeyRelease.to_byte(), &[]),
        Err(RecordError::UnexpectedKind(RecordKind::KeyRelease))
    );
    assert_eq!(
        SequencerRecord::decode(0, &[]),
        Err(RecordError::UnknownKind(0))
    );
    assert_eq!(
        SequencerRecord::decode(13, &[]),
        Err(RecordError::UnknownKind(13))
    );
    let mut genesis = SequencerRecord::Genesis(genesis()).encode();
    genesis[0] ^= 1;
    assert!(SequencerRecord::decode(RecordKind::Config.to_byte(), &genesis).is_err());
}

#[test]
fn a_large_outcome_is_journaled_in_parts_and_joins_back() {
    let big = large_outcome(3);
    let parts = ResultPart::split(&big, RESULT_PART_BYTES_MAX);
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| p.bytes.len() <= RESULT_PART_BYTES_MAX));
    for part in &parts {
        let record = SequencerRecord::ResultPart(part.clone());
        assert_eq!(
            SequencerRecord::decode(RecordKind::Result.to_byte(), &record.encode()),
            Ok(record)
        );
    }
    assert_eq!(assemble(parts.clone()), Ok(vec![big.clone()]));

    // Cut short, then written again from part 0 (a restart): the unfinished
    // one is dropped and the batch's outcome appears once.
    let mut retried = parts[..2].to_vec();
    retried.extend(parts.clone());
    assert_eq!(assemble(retried), Ok(vec![big.clone()]));
    let mut assembler = ResultAssembler::default();
    assert_eq!(assembler.push(parts[0].clone()), Ok(None));
    assert!(assembler.is_partial());

    // Out of order, or a part without its start: typed errors.
    assert!(matches!(
        assemble(vec![parts[0].clone(), parts[2].clone()]),
        Err(AssembleError::OutOfOrder {
            e: BatchId(77),
            index: 2,
            next: 1,
            ..
        })
    ));
    assert!(matches!(
        assemble(vec![parts[1].clone()]),
        Err(AssembleError::Orphan { index: 1, .. })
    ));
    let mut other_batch = parts[1].clone();
    other_batch.e = BatchId(78);
    assert!(matches!(
        assemble(vec![parts[0].clone(), other_batch]),
        Err(AssembleError::OutOfOrder {
            e: BatchId(78),
            next_e: BatchId(77),
            ..
        })
    ));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(kind in 0u8..=255, bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(record) = SequencerRecord::decode(kind, &bytes) {
            prop_assert_eq!(record.encode(), bytes);
        }
    }

    #[test]
    fn outcomes_round_trip(envelopes in 0u8..40, fills in 0u8..40, price in prop::option::of(1u64..1_000)) {
        let outcome = outcome(envelopes, fills, price);
        let record = SequencerRecord::ResultPart(only_part(&outcome));
        prop_assert_eq!(SequencerRecord::decode(RecordKind::Result.to_byte(), &record.encode()), Ok(record));
        prop_assert_eq!(assemble(ResultPart::split(&outcome, RESULT_PART_BYTES_MAX)), Ok(vec![outcome]));
    }
}

/// The byte size of a field list as `spec/sequencer.md` writes it
/// ("id u32, base asset u32, …" or "market u32 ‖ has price u8 (0/1) ‖ …"):
/// each field's type word, with parenthesised remarks dropped and "(32)" a
/// 32-byte array.
fn field_list_size(list: &str) -> usize {
    let list = list.replace("(32)", "[32]");
    let mut plain = String::new();
    let mut depth = 0usize;
    for c in list.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    plain
        .split([',', '‖'])
        .map(|field| {
            let sizes = field.split_whitespace().filter_map(|word| match word {
                "u8" => Some(1),
                "u16" => Some(2),
                "u32" => Some(4),
                "u64" => Some(8),
                "i128" => Some(16),
                "[32]" => Some(32),
                _ => None,
            });
            let sizes: Vec<usize> = sizes.collect();
            assert_eq!(sizes.len(), 1, "one type in field {field:?}");
            sizes[0]
        })
        .sum()
}

/// The field list that follows `lead` in the spec, up to its period.
fn spec_fields(spec: &str, lead: &str) -> usize {
    let start = spec
        .find(lead)
        .unwrap_or_else(|| panic!("{lead:?} in the spec"))
        + lead.len();
    let end = start + spec[start..].find('.').expect("a period");
    field_list_size(&spec[start..end])
}

/// The "N each" size the spec's table gives the row starting with `row`.
fn spec_table_size(spec: &str, row: &str) -> usize {
    let line = spec
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("a table row {row:?}"));
    let cell = line.rsplit('|').nth(1).expect("a size cell").trim();
    cell.strip_suffix(" each")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a size in {line:?}"))
}

/// Every repeated item's size in `spec/sequencer.md` "Journal records" is the
/// sum of its documented fields and what the encoder writes.
#[test]
fn documented_record_sizes_add_up() {
    let spec = include_str!("../../spec/sequencer.md");

    let market = spec_fields(spec, "A market: ");
    assert_eq!(market, spec_table_size(spec, "| `m` × market |"));
    let mut two = genesis();
    let mut one = genesis();
    one.markets.truncate(1);
    two.markets.truncate(1);
    two.markets.push(MarketConfig {
        id: MarketId(9),
        ..two.markets[0].clone()
    });
    let len = |g: &Genesis| SequencerRecord::Genesis(g.clone()).encode().len();
    assert_eq!(len(&two) - len(&one), market, "a genesis market's bytes");

    let outcome_market = spec_fields(spec, "Market outcome: ");
    assert_eq!(
        outcome_market,
        spec_table_size(spec, "| `m` × market outcome")
    );
    let fill = spec_fields(spec, "lot filled): ");
    assert_eq!(fill, spec_table_size(spec, "| `f` × fill"));
    let base = outcome(3, 2, Some(100));
    let mut more_markets = base.clone();
    more_markets.markets.push(MarketOutcome {
        market: MarketId(2),
        ..base.markets[0]
    });
    let mut more_fills = base.clone();
    more_fills.fills.push(base.fills[0]);
    let bytes = |o: &BatchOutcome| only_part(o).bytes.len();
    assert_eq!(bytes(&more_markets) - bytes(&base), outcome_market);
    assert_eq!(bytes(&more_fills) - bytes(&base), fill);
}

/// Record kinds are the bytes 1 to 12 in order, each read back as itself;
/// 0 and anything above are no kind (`spec/journal.md`).
#[test]
fn record_kinds_are_their_bytes() {
    use strum::IntoEnumIterator;
    for (i, kind) in sealbatch::sequencer::RecordKind::iter().enumerate() {
        assert_eq!(usize::from(kind.to_byte()), i + 1);
        assert_eq!(
            sealbatch::sequencer::RecordKind::from_byte(kind.to_byte()),
            Some(kind)
        );
    }
    assert_eq!(sealbatch::sequencer::RecordKind::iter().count(), 12);
    for byte in [0, 13, 255] {
        assert_eq!(sealbatch::sequencer::RecordKind::from_byte(byte), None);
    }
    assert_eq!(Side::from_byte(Side::Buy.to_byte()), Some(Side::Buy));
    assert_eq!(Side::from_byte(1), Some(Side::Sell));
    assert_eq!(Side::from_byte(2), None);
}
