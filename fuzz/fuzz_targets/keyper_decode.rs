//! Keyper messages from arbitrary bytes (what a keyper or the sequencer
//! reads off the network and the log): never a panic; whatever decodes
//! re-encodes to the very same bytes; a decoded dealing goes through a
//! generation's checks (and an apology through its own) without a panic,
//! and its signature check refuses it (nobody here holds a member's key).
//!
//! Smoke run (stable toolchain):
//! `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run keyper_decode -- -max_total_time=30`

#![no_main]

use std::sync::OnceLock;

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use libfuzzer_sys::fuzz_target;
use sealbatch::codec::{Decode, Encode, Reader};
use sealbatch::keyper::{
    Apology, Body, Committee, Generation, KeyperMessage, Member, SignedKeyperMessage,
};

/// A committee of four whose keys are fixed (the decryption key of member
/// 1 is known, so shares addressed to it are opened and checked).
fn committee() -> &'static (Committee, Scalar) {
    static COMMITTEE: OnceLock<(Committee, Scalar)> = OnceLock::new();
    COMMITTEE.get_or_init(|| {
        let decryption = Scalar::from(7u64);
        let members = (1u8..=4)
            .map(|i| Member {
                signing_key: ed25519_dalek::SigningKey::from_bytes(&[i; 32])
                    .verifying_key()
                    .to_bytes(),
                encryption_key: RistrettoPoint::mul_base(&(decryption + Scalar::from(u64::from(i))))
                    .compress()
                    .to_bytes(),
            })
            .collect();
        (
            Committee::new(3, members, sealbatch::envelope::DeploymentId([1; 32]))
                .expect("a committee"),
            decryption,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = KeyperMessage::from_bytes(data) {
        assert_eq!(message.to_bytes(), data, "not canonical: {message:?}");
        let (committee, decryption) = committee();
        let mut generation =
            Generation::keyper(committee.clone(), message.window, 1, *decryption);
        match &message.body {
            Body::Dealing(dealing) => {
                let _ = generation.handle_dealing(dealing);
                let _ = generation.own_accusations();
                let _ = generation.finalize();
            }
            Body::Apology { accuser, shares } => {
                let _ = generation.handle_apology(&Apology {
                    dealer: message.sender,
                    accuser: *accuser,
                    shares: shares.clone(),
                });
            }
            Body::Accusation { .. } | Body::Approval { .. } => {}
        }
        let signed = SignedKeyperMessage {
            message,
            signature: [0; 64],
        };
        assert!(signed.verify(committee).is_err());
    }
    let mut r = Reader::new(data);
    if let Ok(signed) = SignedKeyperMessage::decode_from(&mut r) {
        let consumed = data.len() - r.remaining();
        assert_eq!(signed.to_bytes(), &data[..consumed]);
    }
    // The keyper link's frames, both ways, and the log entries, certificates
    // and checkpoint snapshots they carry: canonical when they decode.
    if let Ok(up) = sealbatch::wire::parse::<sealbatch::wire::keyper::KeyperUp>(data) {
        let mut out = Vec::new();
        sealbatch::wire::encode(&up, &mut out).expect("re-encodes");
        assert_eq!(out, data);
    }
    if let Ok(down) = sealbatch::wire::parse::<sealbatch::wire::keyper::KeyperDown>(data) {
        let mut out = Vec::new();
        sealbatch::wire::encode(&down, &mut out).expect("re-encodes");
        assert_eq!(out, data);
    }
    let mut r = Reader::new(data);
    if let Ok(certificate) = sealbatch::keyper::WindowCertificate::decode_from(&mut r) {
        let consumed = data.len() - r.remaining();
        let mut out = Vec::new();
        certificate.encode_into(&mut out);
        assert_eq!(out, &data[..consumed]);
        assert!(!certificate.verify(&committee().0));
    }
    let mut r = Reader::new(data);
    if let Ok(snapshot) = sealbatch::keyper::KeeperSnapshot::decode_from(&mut r) {
        // Replaying whatever it holds never panics.
        let _ = sealbatch::keyper::LogKeeper::restore(
            committee().0.clone(),
            sealbatch::keyper::GenerationParams::default(),
            &snapshot,
            0,
        );
    }
});
