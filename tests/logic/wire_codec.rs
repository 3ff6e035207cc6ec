//! The wire codec against `spec/wire.md`: golden bytes, round trips of every
//! message, and every kind of bad input giving a typed error, never a panic.

use proptest::prelude::*;
use sealbatch::codec::DecodeError;
use sealbatch::types::{BatchId, Tick};
use sealbatch::wire::{
    self, ACCOUNT_BALANCES_MAX, ALPN, BatchCleared, BatchSealed, CLIENT_FRAME_LEN_MAX,
    ClientMessage, Direction, ENVELOPE_LEN_MAX, EncodeError, FILLS_MAX, FRAME_LEN_MAX,
    FrameDecoder, FrameError, MarketInfo, MarketLine, Message, OwnEnvelope, PROOF_LEN_MAX,
    PROTOCOL_VERSION, REPLICA_ADDRESS_LEN_MAX, ReasonCode, ReplicaInfo, SCHEDULE_BATCH_KEYS_MAX,
    SCHEDULE_REPLICAS_MAX, SUBSCRIBER_ENVELOPES_MAX, Schedule, ServerMessage, TEXT_LEN_MAX,
    WIRE_MARKETS_MAX,
};
use strum::IntoEnumIterator;

fn encoded<M: Message>(message: &M) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode(message, &mut out).unwrap();
    out
}

fn market(id: u32) -> MarketInfo {
    MarketInfo {
        id,
        base_asset: 1,
        quote_asset: 2,
        tick_size: 1,
        lot_size: 1,
        band_min: Tick(1),
        band_max: Tick(1000),
        reference_price: Tick(500),
        fee_bps: 10,
    }
}

fn small_schedule() -> Schedule {
    Schedule {
        request_id: 3,
        genesis_ms: 1_700_000_000_000,
        batch_length_ms: 100,
        open_batch: BatchId(9),
        sequencer_key: [0x11; 32],
        batch_keys: vec![(BatchId(10), [0x22; 32])],
        markets: vec![market(1)],
        replicas: vec![ReplicaInfo {
            id: 2,
            address: "127.0.0.1:7001".into(),
            fingerprint: [0x44; 32],
        }],
        signature: [0x33; 64],
    }
}

fn small_cleared() -> BatchCleared {
    BatchCleared {
        e: BatchId(5),
        root: [1; 32],
        batch_secret: [2; 32],
        release: vec![sealbatch::envelope::ReleaseAttestation {
            keyper: 2,
            signature: [0xab; 64],
        }],
        envelopes: 3,
        accepted: 2,
        markets: vec![
            MarketLine {
                market: 1,
                price: Some(Tick(100)),
                volume: 10,
                imbalance: -3,
            },
            MarketLine {
                market: 2,
                price: None,
                volume: 0,
                imbalance: 0,
            },
        ],
        own: vec![OwnEnvelope {
            commitment: [3; 32],
            status: 0,
            detail: 0,
            fills: vec![(1, 10)],
        }],
    }
}

/// One of each client message.
fn client_samples() -> Vec<ClientMessage> {
    vec![
        ClientMessage::GetSchedule { request_id: 1 },
        ClientMessage::Submit {
            request_id: 2,
            envelope: vec![0x5a; 313],
        },
        ClientMessage::Subscribe { request_id: 3 },
        get_account(),
        withdraw(),
        operator_deposit(8, [0xbb; 32], 3, 5_000, b"tx:0xfeed".to_vec(), [0xcc; 64]),
        ClientMessage::GetPayouts {
            request_id: 9,
            after: 5,
            requester: [0x0d; 32],
            signature: [0xcc; 64],
        },
        acknowledge_payout(),
        ClientMessage::Deposit {
            request_id: 7,
            account: [0xaa; 32],
            asset: 2,
            amount: 1000,
        },
        ClientMessage::GetKeyCertificates { request_id: 11 },
    ]
}

fn get_account() -> ClientMessage {
    ClientMessage::GetAccount {
        request_id: 4,
        account: [9; 32],
        requester: [9; 32],
        signature: [0xcc; 64],
    }
}

fn signed_withdrawal() -> sealbatch::signed::SignedWithdrawal {
    sealbatch::signed::SignedWithdrawal {
        statement: sealbatch::signed::WithdrawalStatement {
            account: sealbatch::market::AccountId([0xaa; 32]),
            asset: sealbatch::market::AssetId(2),
            amount: 1000,
            sequence: 1,
            destination: b"bc1qexample".to_vec(),
        },
        signature: [0xcc; 64],
    }
}

fn withdraw() -> ClientMessage {
    ClientMessage::Withdraw {
        request_id: 7,
        withdrawal: signed_withdrawal(),
    }
}

fn acknowledge_payout() -> ClientMessage {
    ClientMessage::AcknowledgePayout {
        request_id: 10,
        payout: sealbatch::signed::SignedPayout {
            statement: sealbatch::signed::PayoutStatement {
                operator: [0x0d; 32],
                withdrawal: 6,
                reference: b"tx:0xbeef".to_vec(),
            },
            signature: [0xcc; 64],
        },
    }
}

fn operator_deposit(
    request_id: u64,
    account: [u8; 32],
    asset: u32,
    amount: u64,
    reference: Vec<u8>,
    signature: [u8; 64],
) -> ClientMessage {
    ClientMessage::OperatorDeposit {
        request_id,
        deposit: sealbatch::signed::SignedDeposit {
            statement: sealbatch::signed::DepositStatement {
                operator: [0x0d; 32],
                account: sealbatch::market::AccountId(account),
                asset: sealbatch::market::AssetId(asset),
                amount,
                reference,
            },
            signature,
        },
    }
}

/// One of each server message.
fn server_samples() -> Vec<ServerMessage> {
    vec![
        ServerMessage::Schedule(small_schedule()),
        ServerMessage::Receipt {
            request_id: 2,
            // A receipt of a group of one: its path has no sibling.
            receipt: {
                let mut receipt = vec![4; 145];
                receipt[144] = 0;
                receipt
            },
        },
        ServerMessage::Rejected {
            request_id: 0x0102_0304_0506_0708,
            code: ReasonCode::BatchClosed,
            next_open: BatchId(42),
            retry_after_ms: 0,
            message: "late".into(),
        },
        ServerMessage::BatchOpened {
            e: BatchId(11),
            public_key: [5; 32],
            close_ms: 1_700_000_001_100,
        },
        ServerMessage::BatchSealed(BatchSealed {
            seal: [6; 108],
            proofs: vec![([7; 32], vec![8; 4 + 1 + 2 * 32]), ([9; 32], vec![])],
        }),
        ServerMessage::BatchCleared(small_cleared()),
        ServerMessage::Account {
            request_id: 4,
            account: [9; 32],
            next_withdrawal: 3,
            balances: vec![(1, 10), (2, u64::MAX)],
        },
        ServerMessage::Ack { request_id: 7 },
        ServerMessage::Error {
            request_id: 7,
            code: ReasonCode::OperatorOnly,
            message: "deposits are disabled ✗".into(),
        },
        ServerMessage::Withdrawn {
            request_id: 7,
            id: 6,
        },
        ServerMessage::Payouts {
            request_id: 9,
            withdrawals: vec![sealbatch::signed::Withdrawal {
                id: 6,
                signed: signed_withdrawal(),
            }],
            more: false,
        },
        ServerMessage::KeyCertificates {
            request_id: 10,
            committee: None,
            certificates: Vec::new(),
        },
    ]
}

// ---------------------------------------------------------------- golden bytes

// These hex strings are the examples of spec/wire.md §7, byte for byte.
const GOLDEN_DEPOSIT: &str = "35000000050700000000000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa02000000e803000000000000";
const GOLDEN_WITHDRAW: &str = "89000000060700000000000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa02000000e80300000000000001000000000000000b626331716578616d706c65cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const GOLDEN_GET_ACCOUNT: &str = "8900000004040000000000000009090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const GOLDEN_ACKNOWLEDGE_PAYOUT: &str = "7b000000090a000000000000000d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d06000000000000000974783a307862656566cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const GOLDEN_RECEIPT: &str = "de000000820200000000000000d10000002a000000000000003232323232323232323232323232323232323232323232323232323232323232030000004ad83a99fd4f2835cf0a8ed3d9900bf7cd13663f3091b2eaa62fc40329d2bcb3329920dcb09f6b2f7c7d6613d1fa0c568173691eadc2a98f384ddd7a97227cc72979cd5a352baae546d20768f12dd87b4d90f7d59ed7165777ef4df8d1e7a10a0100000002eb9e3a71f7cb795406bfd5122bcbff92727c4d73a3e2fcb4aae9e786bd8522db0c1314cf01e5e88cd150ad02cebb5c9262d928d5bad7663591e1a25320908102";

/// The golden `Receipt` (`spec/wire.md` §7): request 2, the second of three
/// receipts `(42, [0x31; 32])`, `(42, [0x32; 32])`, `(43, [0x33; 32])`
/// signed as one group by the envelope vectors' sequencer key.
fn golden_receipt() -> ServerMessage {
    let key = sealbatch::envelope::SequencerKey::from_seed(
        blake3::hash(b"sealbatch test vector sequencer").as_bytes(),
    );
    let group = key
        .sign_receipts(&[
            (BatchId(42), sealbatch::envelope::Commitment([0x31; 32])),
            (BatchId(42), sealbatch::envelope::Commitment([0x32; 32])),
            (BatchId(43), sealbatch::envelope::Commitment([0x33; 32])),
        ])
        .unwrap();
    ServerMessage::Receipt {
        request_id: 2,
        receipt: group.receipt(1).unwrap().to_bytes(),
    }
}

const GOLDEN_REJECTED: &str =
    "1e000000830807060504030201022a0000000000000000000000040000006c617465";
const GOLDEN_OPERATOR_DEPOSIT: &str = "9f0000000708000000000000000d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0dbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb0300000088130000000000000974783a307866656564cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const GOLDEN_CLEARED: &str = "120100008605000000000000000101010101010101010101010101010101010101010101010101010101010101020202020202020202020202020202020202020202020202020202020202020201000200abababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababab030000000200000002000000010000000164000000000000000a00000000000000fdffffffffffffffffffffffffffffff020000000000000000000000000000000000000000000000000000000001000000030303030303030303030303030303030303030303030303030303030303030300000000000100000001000a00000000000000";
const GOLDEN_SCHEDULE_SIGNING: &str = "157365616c6261746368207631207363686564756c650068e5cf8b010000640000000000000009000000000000001111111111111111111111111111111111111111111111111111111111111111010000000a00000000000000222222222222222222222222222222222222222222222222222222222222222201000000010000000100000002000000010000000000000001000000000000000100000000000000e803000000000000f4010000000000000a000100000002000000000000000e3132372e302e302e313a373030314444444444444444444444444444444444444444444444444444444444444444";

#[test]
fn golden_encodings_match_the_spec() {
    let clients = client_samples();
    for (message, golden) in [
        (clients[8].clone(), GOLDEN_DEPOSIT),
        (clients[5].clone(), GOLDEN_OPERATOR_DEPOSIT),
        (withdraw(), GOLDEN_WITHDRAW),
        (get_account(), GOLDEN_GET_ACCOUNT),
        (acknowledge_payout(), GOLDEN_ACKNOWLEDGE_PAYOUT),
    ] {
        assert_eq!(hex::encode(encoded(&message)), golden, "{message:?}");
        assert_eq!(
            wire::parse::<ClientMessage>(&hex::decode(golden).unwrap()),
            Ok(message)
        );
    }

    let rejected = server_samples().swap_remove(2);
    assert_eq!(hex::encode(encoded(&rejected)), GOLDEN_REJECTED);
    assert_eq!(
        wire::parse::<ServerMessage>(&hex::decode(GOLDEN_REJECTED).unwrap()),
        Ok(rejected)
    );

    let receipt = golden_receipt();
    assert_eq!(hex::encode(encoded(&receipt)), GOLDEN_RECEIPT);
    assert_eq!(
        wire::parse::<ServerMessage>(&hex::decode(GOLDEN_RECEIPT).unwrap()),
        Ok(receipt)
    );

    let cleared = ServerMessage::BatchCleared(small_cleared());
    assert_eq!(hex::encode(encoded(&cleared)), GOLDEN_CLEARED);
    assert_eq!(
        wire::parse::<ServerMessage>(&hex::decode(GOLDEN_CLEARED).unwrap()),
        Ok(cleared)
    );

    assert_eq!(
        hex::encode(wire::schedule_signing_message(&small_schedule())),
        GOLDEN_SCHEDULE_SIGNING
    );
}

#[test]
fn spec_file_holds_the_golden_bytes() {
    let spec = include_str!("../../spec/wire.md");
    let flat: String = spec.split_whitespace().collect();
    for golden in [
        GOLDEN_DEPOSIT,
        GOLDEN_WITHDRAW,
        GOLDEN_GET_ACCOUNT,
        GOLDEN_ACKNOWLEDGE_PAYOUT,
        GOLDEN_OPERATOR_DEPOSIT,
        GOLDEN_REJECTED,
        GOLDEN_RECEIPT,
        GOLDEN_CLEARED,
        GOLDEN_SCHEDULE_SIGNING,
    ] {
        assert!(flat.contains(golden), "spec/wire.md lacks {golden}");
    }
}

#[test]
fn alpn_names_the_protocol_version() {
    assert_eq!(ALPN, format!("sealbatch/{PROTOCOL_VERSION}").as_bytes());
}

#[test]
fn type_bytes_are_as_specified() {
    let client: Vec<u8> = client_samples().iter().map(|m| encoded(m)[4]).collect();
    assert_eq!(
        client,
        [0x01, 0x02, 0x03, 0x04, 0x06, 0x07, 0x08, 0x09, 0x05, 0x0a]
    );
    let server: Vec<u8> = server_samples().iter().map(|m| encoded(m)[4]).collect();
    assert_eq!(
        server,
        [
            0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c
        ]
    );
}

#[test]
fn reason_codes_round_trip() {
    for (i, code) in ReasonCode::iter().enumerate() {
        assert_eq!(usize::from(code.to_byte()), i + 1);
        assert_eq!(ReasonCode::from_byte(code.to_byte()), Some(code));
        assert!(!code.to_string().is_empty());
    }
    assert_eq!(ReasonCode::from_byte(0), None);
    assert_eq!(ReasonCode::from_byte(15), None);
}

// ------------------------------------------------------------------ signatures

#[test]
fn schedule_signature_verifies_after_the_round_trip() {
    use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
    let key = SigningKey::from_bytes(&[42; 32]);
    let mut schedule = small_schedule();
    schedule.sequencer_key = key.verifying_key().to_bytes();
    schedule.signature = key
        .sign(&wire::schedule_signing_message(&schedule))
        .to_bytes();
    let frame = encoded(&ServerMessage::Schedule(schedule.clone()));
    let Ok(ServerMessage::Schedule(got)) = wire::parse::<ServerMessage>(&frame) else {
        panic!("not a schedule");
    };
    let verifying = VerifyingKey::from_bytes(&got.sequencer_key).unwrap();
    let signature = ed25519_dalek::Signature::from_bytes(&got.signature);
    verifying
        .verify_strict(&wire::schedule_signing_message(&got), &signature)
        .unwrap();
    // The request id is not signed; every other field is.
    let mut other = got.clone();
    other.request_id += 1;
    assert_eq!(
        wire::schedule_signing_message(&other),
        wire::schedule_signing_message(&got)
    );
    other.markets[0].fee_bps += 1;
    assert!(
        verifying
            .verify_strict(&wire::schedule_signing_message(&other), &signature)
            .is_err()
    );
}

// ------------------------------------------------------------------ bounds

fn at_bound_cleared() -> BatchCleared {
    BatchCleared {
        markets: (0..WIRE_MARKETS_MAX as u32)
            .map(|market| MarketLine {
                market,
                price: Some(Tick::MAX),
                volume: u64::MAX,
                imbalance: i128::MIN,
            })
            .collect(),
        own: (0..SUBSCRIBER_ENVELOPES_MAX)
            .map(|i| OwnEnvelope {
                commitment: [i as u8; 32],
                status: 35,
                detail: u32::MAX,
                fills: (0..FILLS_MAX as u16).map(|j| (j, u64::MAX)).collect(),
            })
            .collect(),
        ..small_cleared()
    }
}

#[test]
fn messages_at_every_bound_round_trip() {
    let client = ClientMessage::Submit {
        request_id: u64::MAX,
        envelope: vec![1; ENVELOPE_LEN_MAX],
    };
    let frame = encoded(&client);
    assert!(frame.len() - 4 <= CLIENT_FRAME_LEN_MAX);
    assert_eq!(wire::parse::<ClientMessage>(&frame), Ok(client));

    let server = [
        ServerMessage::Schedule(Schedule {
            batch_keys: vec![(BatchId::MAX, [1; 32]); SCHEDULE_BATCH_KEYS_MAX],
            markets: vec![market(u32::MAX); WIRE_MARKETS_MAX],
            ..small_schedule()
        }),
        ServerMessage::BatchSealed(BatchSealed {
            seal: [1; 108],
            proofs: vec![([2; 32], vec![3; PROOF_LEN_MAX]); SUBSCRIBER_ENVELOPES_MAX],
        }),
        ServerMessage::BatchCleared(at_bound_cleared()),
        ServerMessage::Account {
            request_id: 1,
            account: [1; 32],
            next_withdrawal: u64::MAX,
            balances: vec![(u32::MAX, u64::MAX); ACCOUNT_BALANCES_MAX],
        },
        ServerMessage::Payouts {
            request_id: 1,
            withdrawals: vec![
                sealbatch::signed::Withdrawal {
                    id: u64::MAX,
                    signed: sealbatch::signed::SignedWithdrawal {
                        statement: sealbatch::signed::WithdrawalStatement {
                            destination: vec![0xff; sealbatch::signed::DESTINATION_LEN_MAX],
                            ..signed_withdrawal().statement
                        },
                        ..signed_withdrawal()
                    },
                };
                wire::PAYOUTS_MAX
            ],
            more: true,
        },
        ServerMessage::Error {
            request_id: 1,
            code: ReasonCode::Internal,
            message: "é".repeat(TEXT_LEN_MAX / 2),
        },
    ];
    for message in server {
        let frame = encoded(&message);
        assert!(frame.len() - 4 <= FRAME_LEN_MAX);
        assert_eq!(wire::parse::<ServerMessage>(&frame), Ok(message));
    }
}

#[test]
fn encoding_refuses_counts_over_their_bounds_and_leaves_the_buffer() {
    let prefix = b"earlier frames".to_vec();
    let cases: Vec<(ServerMessage, &str, usize)> = vec![
        (
            ServerMessage::Schedule(Schedule {
                batch_keys: vec![(BatchId(0), [0; 32]); SCHEDULE_BATCH_KEYS_MAX + 1],
                ..small_schedule()
            }),
            "batch_keys",
            SCHEDULE_BATCH_KEYS_MAX,
        ),
        (
            ServerMessage::Schedule(Schedule {
                markets: vec![market(1); WIRE_MARKETS_MAX + 1],
                ..small_schedule()
            }),
            "markets",
            WIRE_MARKETS_MAX,
        ),
        (
            ServerMessage::Schedule(Schedule {
                replicas: vec![small_schedule().replicas[0].clone(); SCHEDULE_REPLICAS_MAX + 1],
                ..small_schedule()
            }),
            "replicas",
            SCHEDULE_REPLICAS_MAX,
        ),
        (
            ServerMessage::Schedule(Schedule {
                replicas: vec![ReplicaInfo {
                    address: "a".repeat(REPLICA_ADDRESS_LEN_MAX + 1),
                    ..small_schedule().replicas[0].clone()
                }],
                ..small_schedule()
            }),
            "replica.address",
            REPLICA_ADDRESS_LEN_MAX,
        ),
        (
            ServerMessage::BatchSealed(BatchSealed {
                seal: [0; 108],
                proofs: vec![([0; 32], vec![]); SUBSCRIBER_ENVELOPES_MAX + 1],
            }),
            "proofs",
            SUBSCRIBER_ENVELOPES_MAX,
        ),
        (
            ServerMessage::BatchSealed(BatchSealed {
                seal: [0; 108],
                proofs: vec![([0; 32], vec![0; PROOF_LEN_MAX + 1])],
            }),
            "proof",
            PROOF_LEN_MAX,
        ),
        (
            ServerMessage::BatchCleared(BatchCleared {
                own: vec![
                    OwnEnvelope {
                        commitment: [0; 32],
                        status: 0,
                        detail: 0,
                        fills: vec![(0, 0); FILLS_MAX + 1],
                    };
                    1
                ],
                ..small_cleared()
            }),
            "fills",
            FILLS_MAX,
        ),
        (
            ServerMessage::Error {
                request_id: 0,
                code: ReasonCode::Busy,
                message: "x".repeat(TEXT_LEN_MAX + 1),
            },
            "message",
            TEXT_LEN_MAX,
        ),
        (
            ServerMessage::Account {
                request_id: 0,
                account: [0; 32],
                next_withdrawal: 1,
                balances: vec![(0, 0); ACCOUNT_BALANCES_MAX + 1],
            },
            "balances",
            ACCOUNT_BALANCES_MAX,
        ),
    ];
    for (message, field, max) in cases {
        let mut out = prefix.clone();
        let error = wire::encode(&message, &mut out).unwrap_err();
        assert_eq!(
            error,
            EncodeError::TooLarge {
                field,
                value: max + 1,
                max
            }
        );
        assert_eq!(out, prefix);
    }
    let mut out = prefix.clone();
    let submit = ClientMessage::Submit {
        request_id: 0,
        envelope: vec![0; ENVELOPE_LEN_MAX + 1],
    };
    assert!(matches!(
        wire::encode(&submit, &mut out),
        Err(EncodeError::TooLarge {
            field: "envelope",
            ..
        })
    ));
    assert_eq!(out, prefix);
}

/// Replaces the little-endian `u32` at `at` and returns the frame.
fn patch_u32(mut frame: Vec<u8>, at: usize, value: u32) -> Vec<u8> {
    frame[at..at + 4].copy_from_slice(&value.to_le_bytes());
    frame
}

#[test]
fn decoding_refuses_counts_over_their_bounds() {
    // Offsets of each count in the sample frames (4 length + 1 type + fields).
    let schedule = encoded(&ServerMessage::Schedule(small_schedule()));
    let keys_at = 5 + 8 + 24 + 32;
    let markets_at = keys_at + 4 + 40;
    let sealed = encoded(&server_samples()[4]);
    let cleared = encoded(&ServerMessage::BatchCleared(small_cleared()));
    // After the secret: one release attestation (2 + 66 bytes).
    let cleared_markets_at = 5 + 8 + 32 + 32 + 68 + 8;
    let own_at = cleared_markets_at + 4 + 37 + 29;
    let fills_at = own_at + 4 + 32 + 1 + 4;
    let account = encoded(&server_samples()[6]);
    let error = encoded(&server_samples()[8]);
    let submit = encoded(&client_samples()[1]);
    let server_cases = [
        (
            schedule.clone(),
            keys_at,
            "batch_keys",
            SCHEDULE_BATCH_KEYS_MAX,
        ),
        (schedule, markets_at, "markets", WIRE_MARKETS_MAX),
        (sealed.clone(), 5 + 108, "proofs", SUBSCRIBER_ENVELOPES_MAX),
        (sealed, 5 + 108 + 4 + 32, "proof", PROOF_LEN_MAX),
        (
            cleared.clone(),
            cleared_markets_at,
            "markets",
            WIRE_MARKETS_MAX,
        ),
        (cleared.clone(), own_at, "own", SUBSCRIBER_ENVELOPES_MAX),
        (cleared, fills_at, "own.fills", FILLS_MAX),
        (account, 5 + 8 + 32 + 8, "balances", ACCOUNT_BALANCES_MAX),
        (error, 5 + 8 + 1, "message", TEXT_LEN_MAX),
    ];
    for (frame, at, field, max) in server_cases {
        for value in [max as u32 + 1, u32::MAX] {
            let bad = patch_u32(frame.clone(), at, value);
            assert_eq!(
                wire::parse::<ServerMessage>(&bad),
                Err(FrameError::Body(DecodeError::TooLarge {
                    field,
                    offset: at,
                    value: u64::from(value),
                    max: max as u64
                })),
                "{field}"
            );
        }
    }
    let bad = patch_u32(submit, 5 + 8, ENVELOPE_LEN_MAX as u32 + 1);
    assert!(matches!(
        wire::parse::<ClientMessage>(&bad),
        Err(FrameError::Body(DecodeError::TooLarge {
            field: "envelope",
            offset: 13,
            ..
        }))
    ));
}

// ------------------------------------------------------------ framing errors

#[test]
fn every_truncation_point_is_incomplete() {
    fn all<M: Message + std::fmt::Debug + PartialEq + Clone>(messages: &[M]) {
        for message in messages {
            let frame = encoded(message);
            for cut in 0..frame.len() {
                let short = &frame[..cut];
                let Err(FrameError::Incomplete { needed }) = wire::check::<M>(short) else {
                    panic!("cut {cut} of {message:?}: {:?}", wire::check::<M>(short));
                };
                assert!(needed >= 1 && cut + needed <= frame.len());
                assert!(matches!(
                    wire::parse::<M>(short),
                    Err(FrameError::Incomplete { .. })
                ));
                let mut decoder = FrameDecoder::<M>::new();
                decoder.extend(short);
                assert_eq!(decoder.next_message(), Ok(None));
                assert_eq!(decoder.is_at_boundary(), cut == 0);
                decoder.extend(&frame[cut..]);
                assert_eq!(decoder.next_message(), Ok(Some(message.clone())));
                assert!(decoder.is_at_boundary());
            }
            assert_eq!(wire::check::<M>(&frame), Ok(frame.len()));
        }
    }
    all(&client_samples());
    all(&server_samples());
}

#[test]
fn oversized_lengths_are_refused_from_the_prefix_alone() {
    let over = (CLIENT_FRAME_LEN_MAX + 1) as u32;
    assert_eq!(
        wire::check::<ClientMessage>(&over.to_le_bytes()),
        Err(FrameError::Oversized {
            len: u64::from(over),
            max: CLIENT_FRAME_LEN_MAX,
            direction: Direction::ClientToServer
        })
    );
    // The same length is fine from the server.
    assert!(matches!(
        wire::check::<ServerMessage>(&over.to_le_bytes()),
        Err(FrameError::Incomplete { .. })
    ));
    for len in [(FRAME_LEN_MAX + 1) as u32, u32::MAX] {
        assert!(matches!(
            wire::check::<ServerMessage>(&len.to_le_bytes()),
            Err(FrameError::Oversized { .. })
        ));
        let mut decoder = FrameDecoder::<ServerMessage>::new();
        decoder.extend(&len.to_le_bytes());
        let error = decoder.next_message().unwrap_err();
        assert!(matches!(error, FrameError::Oversized { .. }));
        // Poisoned: the same error again, even after valid bytes.
        decoder.extend(&encoded(&ServerMessage::Ack { request_id: 1 }));
        assert_eq!(decoder.next_message(), Err(error));
        assert!(!decoder.is_at_boundary());
    }
    assert_eq!(
        wire::check::<ClientMessage>(&[0, 0, 0, 0]),
        Err(FrameError::Empty)
    );
}

#[test]
fn unknown_types_are_refused_from_the_type_byte() {
    for type_byte in (0..=255u8).filter(|t| !(1..=10).contains(t)) {
        assert_eq!(
            wire::check::<ClientMessage>(&[9, 0, 0, 0, type_byte]),
            Err(FrameError::UnknownType {
                type_byte,
                direction: Direction::ClientToServer
            })
        );
    }
    for type_byte in (0..=255u8).filter(|t| !(0x81..=0x8c).contains(t)) {
        assert_eq!(
            wire::check::<ServerMessage>(&[9, 0, 0, 0, type_byte]),
            Err(FrameError::UnknownType {
                type_byte,
                direction: Direction::ServerToClient
            })
        );
    }
}

#[test]
fn bad_field_values_are_typed_errors() {
    // Option tag 2 for the first market line's price.
    let mut cleared = encoded(&ServerMessage::BatchCleared(small_cleared()));
    let tag_at = 5 + 8 + 32 + 32 + 68 + 8 + 4 + 4;
    assert_eq!(cleared[tag_at], 1);
    cleared[tag_at] = 2;
    assert_eq!(
        wire::parse::<ServerMessage>(&cleared),
        Err(FrameError::Body(DecodeError::Invalid {
            field: "market_line.price",
            offset: tag_at
        }))
    );
    // Release attestations: more than a committee's 64, keyper 0, or not
    // strictly ascending.
    let release_at = 5 + 8 + 32 + 32;
    let mut many = encoded(&ServerMessage::BatchCleared(small_cleared()));
    many[release_at..release_at + 2].copy_from_slice(&65u16.to_le_bytes());
    assert_eq!(
        wire::parse::<ServerMessage>(&many),
        Err(FrameError::Body(DecodeError::Invalid {
            field: "attestation count",
            offset: release_at
        }))
    );
    let mut zero = encoded(&ServerMessage::BatchCleared(small_cleared()));
    zero[release_at + 2..release_at + 4].copy_from_slice(&0u16.to_le_bytes());
    assert_eq!(
        wire::parse::<ServerMessage>(&zero),
        Err(FrameError::Body(DecodeError::Invalid {
            field: "attesting keyper",
            offset: release_at + 2
        }))
    );
    let mut twice = small_cleared();
    twice.release.push(twice.release[0]);
    let mut bytes = Vec::new();
    // The encoder writes what it is given; the decoder refuses a repeat.
    wire::encode(&ServerMessage::BatchCleared(twice), &mut bytes).expect("encodes");
    assert_eq!(
        wire::parse::<ServerMessage>(&bytes),
        Err(FrameError::Body(DecodeError::Invalid {
            field: "attesting keyper",
            offset: release_at + 2 + 66
        }))
    );
    // Reason codes 0 and 15 (one past the last).
    for code in [0u8, 15, 255] {
        let mut rejected = encoded(&server_samples()[2]);
        rejected[13] = code;
        assert_eq!(
            wire::parse::<ServerMessage>(&rejected),
            Err(FrameError::Body(DecodeError::Invalid {
                field: "code",
                offset: 13
            }))
        );
    }
    // A replica address that is empty, or not UTF-8.
    let schedule = encoded(&ServerMessage::Schedule(small_schedule()));
    let address_at = schedule
        .windows(14)
        .position(|w| w == b"127.0.0.1:7001")
        .expect("the address")
        - 1;
    assert_eq!(schedule[address_at], 14);
    let mut empty = schedule[..address_at].to_vec();
    empty.push(0);
    empty.extend_from_slice(&schedule[address_at + 15..]);
    let len = u32::try_from(empty.len() - 4).unwrap();
    let empty = patch_u32(empty, 0, len);
    let mut garbled = schedule.clone();
    garbled[address_at + 1] = 0xff;
    for frame in [empty, garbled] {
        assert_eq!(
            wire::parse::<ServerMessage>(&frame),
            Err(FrameError::Body(DecodeError::Invalid {
                field: "replica.address",
                offset: address_at
            }))
        );
    }
    let mut empty_address = small_schedule();
    empty_address.replicas[0].address.clear();
    assert_eq!(
        wire::encode(&ServerMessage::Schedule(empty_address), &mut Vec::new()),
        Err(EncodeError::Empty {
            field: "replica.address"
        })
    );
    // Text that is not UTF-8.
    let mut rejected = encoded(&server_samples()[2]);
    let last = rejected.len() - 1;
    rejected[last] = 0xff;
    assert_eq!(
        wire::parse::<ServerMessage>(&rejected),
        Err(FrameError::Body(DecodeError::Invalid {
            field: "message",
            offset: 5 + 8 + 1 + 8 + 4
        }))
    );
}

#[test]
fn bytes_inside_a_frame_after_its_fields_are_trailing() {
    let mut frame = encoded(&ClientMessage::Subscribe { request_id: 1 });
    frame.push(0);
    let frame = patch_u32(frame.clone(), 0, (frame.len() - 4) as u32);
    assert_eq!(
        wire::parse::<ClientMessage>(&frame),
        Err(FrameError::Body(DecodeError::Trailing {
            offset: 13,
            extra: 1
        }))
    );
    // Bytes after the frame, given to `parse`, are trailing too.
    let mut two = encoded(&ClientMessage::Subscribe { request_id: 1 });
    two.push(0);
    assert_eq!(
        wire::parse::<ClientMessage>(&two),
        Err(FrameError::Body(DecodeError::Trailing {
            offset: 13,
            extra: 1
        }))
    );
}

#[test]
fn a_length_shorter_than_the_fields_truncates_them() {
    let frame = encoded(&client_samples()[3]);
    let short = patch_u32(frame, 0, 20);
    assert_eq!(
        wire::parse::<ClientMessage>(&short[..24]),
        Err(FrameError::Body(DecodeError::Truncated {
            field: "account",
            offset: 13,
            needed: 21
        }))
    );
    // A decoder does not read the next frame's bytes as this one's fields.
    let mut decoder = FrameDecoder::<ClientMessage>::new();
    decoder.extend(&short);
    assert!(matches!(
        decoder.next_message(),
        Err(FrameError::Body(DecodeError::Truncated { .. }))
    ));
}

// ------------------------------------------------------------------ streaming

#[test]
fn decoder_yields_pipelined_frames_across_any_chunking() {
    let mut stream = Vec::new();
    for message in server_samples() {
        wire::encode(&message, &mut stream).unwrap();
    }
    for chunk_len in [1, 2, 3, 7, 64, 1000, stream.len()] {
        let mut decoder = FrameDecoder::<ServerMessage>::default();
        let mut got = Vec::new();
        for chunk in stream.chunks(chunk_len) {
            decoder.extend(chunk);
            while let Some(message) = decoder.next_message().unwrap() {
                got.push(message);
            }
            assert!(decoder.buffered() < chunk_len + 2000);
        }
        assert_eq!(got, server_samples());
        assert!(decoder.is_at_boundary());
    }
}

// ------------------------------------------------------------------ properties

fn bytes32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", "[a-z ]{0,1024}"]
}

fn reason() -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(ReasonCode::iter().collect::<Vec<_>>())
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        any::<u64>().prop_map(|request_id| ClientMessage::GetSchedule { request_id }),
        (
            any::<u64>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                proptest::collection::vec(any::<u8>(), ENVELOPE_LEN_MAX..=ENVELOPE_LEN_MAX),
            ]
        )
            .prop_map(|(request_id, envelope)| ClientMessage::Submit {
                request_id,
                envelope
            }),
        any::<u64>().prop_map(|request_id| ClientMessage::Subscribe { request_id }),
        (any::<u64>(), bytes32(), bytes32(), bytes32()).prop_map(
            |(request_id, account, requester, half)| ClientMessage::GetAccount {
                request_id,
                account,
                requester,
                signature: signature(half),
            }
        ),
        (any::<u64>(), any::<u64>(), bytes32(), bytes32()).prop_map(
            |(request_id, after, requester, half)| ClientMessage::GetPayouts {
                request_id,
                after,
                requester,
                signature: signature(half),
            }
        ),
        (any::<u64>(), signed_withdrawal_strategy()).prop_map(|(request_id, withdrawal)| {
            ClientMessage::Withdraw {
                request_id,
                withdrawal,
            }
        }),
        (
            any::<u64>(),
            bytes32(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 1..=64),
            bytes32()
        )
            .prop_map(|(request_id, operator, withdrawal, reference, half)| {
                ClientMessage::AcknowledgePayout {
                    request_id,
                    payout: sealbatch::signed::SignedPayout {
                        statement: sealbatch::signed::PayoutStatement {
                            operator,
                            withdrawal,
                            reference,
                        },
                        signature: signature(half),
                    },
                }
            }),
        (any::<u64>(), bytes32(), any::<u32>(), any::<u64>()).prop_map(
            |(request_id, account, asset, amount)| ClientMessage::Deposit {
                request_id,
                account,
                asset,
                amount
            }
        ),
        (
            any::<u64>(),
            bytes32(),
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 1..=64),
            bytes32()
        )
            .prop_map(|(request_id, account, asset, amount, reference, half)| {
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&half);
                operator_deposit(request_id, account, asset, amount, reference, signature)
            }),
    ]
}

fn signature(half: [u8; 32]) -> [u8; 64] {
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&half);
    signature[32..].copy_from_slice(&half);
    signature
}

fn signed_withdrawal_strategy() -> impl Strategy<Value = sealbatch::signed::SignedWithdrawal> {
    (
        bytes32(),
        any::<(u32, u64, u64)>(),
        proptest::collection::vec(any::<u8>(), 1..=64),
        bytes32(),
    )
        .prop_map(|(account, (asset, amount, sequence), destination, half)| {
            sealbatch::signed::SignedWithdrawal {
                statement: sealbatch::signed::WithdrawalStatement {
                    account: sealbatch::market::AccountId(account),
                    asset: sealbatch::market::AssetId(asset),
                    amount,
                    sequence,
                    destination,
                },
                signature: signature(half),
            }
        })
}

fn market_info() -> impl Strategy<Value = MarketInfo> {
    (
        any::<(u32, u32, u32)>(),
        any::<(u64, u64, u64, u64, u64)>(),
        any::<u16>(),
    )
        .prop_map(
            |((id, base_asset, quote_asset), (tick, lot, min, max, reference), fee_bps)| {
                MarketInfo {
                    id,
                    base_asset,
                    quote_asset,
                    tick_size: tick,
                    lot_size: lot,
                    band_min: Tick(min),
                    band_max: Tick(max),
                    reference_price: Tick(reference),
                    fee_bps,
                }
            },
        )
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (
        any::<(u64, u64, u64, u64)>(),
        bytes32(),
        proptest::collection::vec((any::<u64>().prop_map(BatchId), bytes32()), 0..5),
        proptest::collection::vec(market_info(), 0..5),
        proptest::collection::vec((any::<u64>(), "[a-z0-9.:]{1,40}", bytes32()), 0..4),
        any::<[u8; 64]>(),
    )
        .prop_map(
            |(
                (request_id, genesis_ms, batch_length_ms, open_batch),
                sequencer_key,
                batch_keys,
                markets,
                replicas,
                signature,
            )| Schedule {
                request_id,
                genesis_ms,
                batch_length_ms,
                open_batch: BatchId(open_batch),
                sequencer_key,
                batch_keys,
                markets,
                replicas: replicas
                    .into_iter()
                    .map(|(id, address, fingerprint)| ReplicaInfo {
                        id,
                        address,
                        fingerprint,
                    })
                    .collect(),
                signature,
            },
        )
}

fn cleared() -> impl Strategy<Value = BatchCleared> {
    let line = (
        any::<u32>(),
        any::<Option<u64>>().prop_map(|price| price.map(Tick)),
        any::<u64>(),
        any::<i128>(),
    )
        .prop_map(|(market, price, volume, imbalance)| MarketLine {
            market,
            price,
            volume,
            imbalance,
        });
    let own = (
        bytes32(),
        any::<u8>(),
        any::<u32>(),
        proptest::collection::vec(any::<(u16, u64)>(), 0..5),
    )
        .prop_map(|(commitment, status, detail, fills)| OwnEnvelope {
            commitment,
            status,
            detail,
            fills,
        });
    (
        any::<u64>(),
        bytes32(),
        bytes32(),
        any::<(u32, u32)>(),
        proptest::collection::vec(line, 0..5),
        proptest::collection::vec(own, 0..4),
    )
        .prop_map(
            |(e, root, batch_secret, (envelopes, accepted), markets, own)| BatchCleared {
                e: BatchId(e),
                root,
                batch_secret,
                release: (1..=(e % 4) as u16)
                    .map(|keyper| sealbatch::envelope::ReleaseAttestation {
                        keyper,
                        signature: [keyper as u8; 64],
                    })
                    .collect(),
                envelopes,
                accepted,
                markets,
                own,
            },
        )
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        schedule().prop_map(ServerMessage::Schedule),
        (
            any::<u64>(),
            0usize..=12,
            proptest::collection::vec(any::<u8>(), 145 + 32 * 12)
        )
            .prop_map(|(request_id, k, mut receipt)| {
                receipt.truncate(145 + 32 * k);
                receipt[144] = k as u8;
                ServerMessage::Receipt {
                    request_id,
                    receipt,
                }
            }),
        (any::<u64>(), reason(), any::<u64>(), any::<u32>(), text()).prop_map(
            |(request_id, code, next_open, retry_after_ms, message)| ServerMessage::Rejected {
                request_id,
                code,
                next_open: BatchId(next_open),
                retry_after_ms,
                message
            }
        ),
        (any::<u64>(), bytes32(), any::<u64>()).prop_map(|(e, public_key, close_ms)| {
            ServerMessage::BatchOpened {
                e: BatchId(e),
                public_key,
                close_ms,
            }
        }),
        (
            any::<[u8; 108]>(),
            proptest::collection::vec(
                (
                    bytes32(),
                    proptest::collection::vec(any::<u8>(), 0..=PROOF_LEN_MAX)
                ),
                0..4
            )
        )
            .prop_map(|(seal, proofs)| ServerMessage::BatchSealed(BatchSealed { seal, proofs })),
        cleared().prop_map(ServerMessage::BatchCleared),
        (
            any::<u64>(),
            bytes32(),
            any::<u64>(),
            proptest::collection::vec(any::<(u32, u64)>(), 0..6)
        )
            .prop_map(|(request_id, account, next_withdrawal, balances)| {
                ServerMessage::Account {
                    request_id,
                    account,
                    next_withdrawal,
                    balances,
                }
            }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(request_id, id)| ServerMessage::Withdrawn { request_id, id }),
        (
            any::<u64>(),
            proptest::collection::vec((any::<u64>(), signed_withdrawal_strategy()), 0..4),
            any::<bool>()
        )
            .prop_map(|(request_id, withdrawals, more)| ServerMessage::Payouts {
                request_id,
                withdrawals: withdrawals
                    .into_iter()
                    .map(|(id, signed)| sealbatch::signed::Withdrawal { id, signed })
                    .collect(),
                more,
            }),
        any::<u64>().prop_map(|request_id| ServerMessage::Ack { request_id }),
        (any::<u64>(), reason(), text()).prop_map(|(request_id, code, message)| {
            ServerMessage::Error {
                request_id,
                code,
                message,
            }
        }),
    ]
}

/// Decoding arbitrary bytes never panics; whatever decodes re-encodes to the
/// very same bytes (the encoding is canonical).
fn check_arbitrary<M: Message + std::fmt::Debug + PartialEq>(data: &[u8]) {
    match wire::check::<M>(data) {
        Ok(len) => {
            if let Ok(message) = wire::parse::<M>(&data[..len]) {
                assert_eq!(encoded(&message), &data[..len]);
            }
        }
        Err(FrameError::Incomplete { needed }) => assert!(needed > 0),
        Err(_) => {}
    }
    let mut decoder = FrameDecoder::<M>::new();
    decoder.extend(data);
    while let Ok(Some(_)) = decoder.next_message() {}
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::common::cases(256, 256)))]

    #[test]
    fn client_messages_round_trip(messages in proptest::collection::vec(client_message(), 1..4)) {
        let mut stream = Vec::new();
        for message in &messages {
            let before = stream.len();
            wire::encode(message, &mut stream).unwrap();
            let frame = &stream[before..];
            prop_assert_eq!(wire::check::<ClientMessage>(frame), Ok(frame.len()));
            prop_assert_eq!(&wire::parse::<ClientMessage>(frame).unwrap(), message);
        }
        let mut decoder = FrameDecoder::<ClientMessage>::new();
        decoder.extend(&stream);
        for message in &messages {
            prop_assert_eq!(decoder.next_message(), Ok(Some(message.clone())));
        }
        prop_assert_eq!(decoder.next_message(), Ok(None));
    }

    #[test]
    fn server_messages_round_trip(message in server_message()) {
        let frame = encoded(&message);
        prop_assert_eq!(wire::check::<ServerMessage>(&frame), Ok(frame.len()));
        prop_assert_eq!(wire::parse::<ServerMessage>(&frame), Ok(message));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_arbitrary::<ClientMessage>(&data);
        check_arbitrary::<ServerMessage>(&data);
    }

    #[test]
    fn mutated_frames_never_panic(
        message in server_message(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut frame = encoded(&message);
        for (at, byte) in flips {
            let i = at.index(frame.len());
            frame[i] = byte;
        }
        check_arbitrary::<ServerMessage>(&frame);
        check_arbitrary::<ClientMessage>(&frame);
    }
}

/// A committee and a certificate over a window's keys travel in
/// `KeyCertificates` exactly, and a committee that does not decode (keys
/// out of order, a bad point) or a certificate with one key too few is
/// refused.
#[test]
fn key_certificates_round_trip_and_refuse_bad_committees() {
    use curve25519_dalek::RistrettoPoint;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use sealbatch::keyper::{Committee, Member, Window, WindowCertificate};

    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let members: Vec<Member> = (0..4)
        .map(|_| Member {
            signing_key: sealbatch::envelope::generate_account_key(&mut rng)
                .verifying_key()
                .to_bytes(),
            encryption_key: RistrettoPoint::mul_base(&sealbatch::keyper::sharing::random_scalar(
                &mut rng,
            ))
            .compress()
            .to_bytes(),
        })
        .collect();
    let committee = Committee::new(3, members, sealbatch::envelope::DeploymentId([0x5d; 32]))
        .expect("a committee");
    let certificate = WindowCertificate {
        window: Window {
            id: 7,
            first_batch: BatchId(100),
            batches: 3,
        },
        qualified: vec![1, 2, 4],
        commitments_digest: [9; 32],
        keys: vec![[1; 32], [2; 32], [3; 32]],
        approvals: vec![(1, [5; 64]), (3, [6; 64]), (4, [7; 64])],
    };
    let message = ServerMessage::KeyCertificates {
        request_id: 77,
        committee: Some(committee.clone()),
        certificates: vec![certificate.clone(), certificate.clone()],
    };
    let bytes = encoded(&message);
    assert_eq!(wire::parse::<ServerMessage>(&bytes), Ok(message));
    // The committee's members must come in index order.
    let at = 4 + 1 + 8 + 1 + 4;
    let mut swapped = bytes.clone();
    let (first, second) = (
        swapped[at..at + 64].to_vec(),
        swapped[at + 64..at + 128].to_vec(),
    );
    swapped[at..at + 64].copy_from_slice(&second);
    swapped[at + 64..at + 128].copy_from_slice(&first);
    assert!(wire::parse::<ServerMessage>(&swapped).is_err());
    // One key fewer than the window's batches.
    let short = ServerMessage::KeyCertificates {
        request_id: 77,
        committee: Some(committee),
        certificates: vec![WindowCertificate {
            keys: vec![[1; 32]; 2],
            ..certificate
        }],
    };
    assert!(wire::parse::<ServerMessage>(&encoded(&short)).is_err());
}

/// The `len` column of `spec/wire.md` §4, recomputed from each row's field
/// list — `uN` is N/8 bytes, `[n]` n bytes, `bytes(m)` a `u32le` length and
/// up to m bytes, `short(m)` a `u8` length and 1 to m bytes, plus the type
/// byte — and checked against frames the codec encodes at the shortest and
/// the longest variable field.
#[test]
fn documented_client_message_lengths_add_up() {
    let spec = include_str!("../../spec/wire.md");
    let section = &spec[spec.find("## 4. Client → server messages").expect("§4")..];
    let section = &section[..section.find("## 5.").expect("§5")];
    let mut rows = std::collections::BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `0x")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (name, fields, len) = (cells[2].trim_matches('`'), cells[3], cells[4]);
        // Fixed bytes (the type byte included), the variable field's
        // length prefix counted as fixed; the variable field's bound.
        let mut fixed = 1usize;
        let mut variable = None;
        for field in fields.split('‖').map(|f| f.trim().trim_matches('`')) {
            let kind = field.split_whitespace().nth(1).expect("a field's type");
            let bound = |prefix: &str| {
                kind[prefix.len()..kind.len() - 1]
                    .parse::<usize>()
                    .expect("a bound")
            };
            match kind {
                "u8" => fixed += 1,
                "u16" => fixed += 2,
                "u32" => fixed += 4,
                "u64" => fixed += 8,
                _ if kind.starts_with('[') => fixed += bound("["),
                _ if kind.starts_with("bytes(") => {
                    fixed += 4;
                    variable = Some((0, bound("bytes(")));
                }
                _ if kind.starts_with("short(") => {
                    fixed += 1;
                    variable = Some((1, bound("short(")));
                }
                other => panic!("{name}: unknown field type {other}"),
            }
        }
        let documented = match variable {
            None => format!("{fixed}"),
            Some((_, max)) => {
                let letter = len.split_whitespace().nth(2).expect("a variable's letter");
                format!("{fixed} + {letter} ≤ {}", fixed + max)
            }
        };
        assert_eq!(len, documented, "spec/wire.md §4, {name}");
        rows.insert(name.to_string(), (fixed, variable));
    }
    assert_eq!(rows.len(), 10, "every client message has a row");
    // The codec agrees, at both ends of each variable field.
    let with_reference =
        |n: usize| operator_deposit(8, [0xbb; 32], 3, 5_000, vec![b'r'; n], [0xcc; 64]);
    let withdrawal = |n: usize| {
        let mut w = signed_withdrawal();
        w.statement.destination = vec![b'd'; n];
        ClientMessage::Withdraw {
            request_id: 7,
            withdrawal: w,
        }
    };
    let payout = |n: usize| match acknowledge_payout() {
        ClientMessage::AcknowledgePayout {
            request_id,
            mut payout,
        } => {
            payout.statement.reference = vec![b'p'; n];
            ClientMessage::AcknowledgePayout { request_id, payout }
        }
        other => other,
    };
    let submit = |n: usize| ClientMessage::Submit {
        request_id: 2,
        envelope: vec![0x5a; n],
    };
    for message in client_samples() {
        let name = format!("{message:?}");
        let name = name.split([' ', '{']).next().expect("a name").to_string();
        let (fixed, variable) = rows[&name];
        let sizes: Vec<(usize, ClientMessage)> = match (name.as_str(), variable) {
            (_, None) => vec![(0, message)],
            ("OperatorDeposit", Some((min, max))) => {
                vec![(min, with_reference(min)), (max, with_reference(max))]
            }
            ("Withdraw", Some((min, max))) => vec![(min, withdrawal(min)), (max, withdrawal(max))],
            ("AcknowledgePayout", Some((min, max))) => vec![(min, payout(min)), (max, payout(max))],
            ("Submit", Some((min, max))) => vec![(min, submit(min)), (max, submit(max))],
            (other, _) => panic!("{other} has a variable field this test does not build"),
        };
        for (n, message) in sizes {
            assert_eq!(
                encoded(&message).len(),
                4 + fixed + n,
                "{name} with a variable field of {n} bytes"
            );
        }
    }
}
