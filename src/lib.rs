//! sealbatch: an MEV-resistant sealed batch auction sequencer.
//!
//! Traders seal bundles of orders to a batch's public key and submit them over
//! QUIC. The sequencer journals each envelope before acknowledging it, seals
//! the batch (a signed Merkle root over the sorted commitments) before anyone
//! can read it, and only then has the batch key released, opens every
//! envelope, and clears each market at one uniform price. Arrival order inside
//! a batch is worth nothing.
//!
//! The normative byte layouts and rules live in the repository's `spec/`
//! folder; the code matches it.
//!
//! # Layout
//!
//! The **core** is pure and deterministic: it does no I/O and reads no
//! clock; time and randomness are arguments, and the same inputs give the
//! same bytes. `tests/logic/architecture.rs` checks that no core module names
//! the runtime, the network, Raft, HTTP, files, clocks or a shell module, and
//! clippy's `disallowed-methods` (`clippy.toml`) refuses clocks and files in
//! it. The **shell** does the I/O around it, as quinn's async crate does
//! around `quinn-proto`.
//!
//! Core:
//! - [`types`]: ids, ticks, lots, sides and the named limits.
//! - [`order`]: orders as traders write them and as the clearing engine sees them.
//! - [`codec`]: the one codec of the layouts in `spec/`: `Encode`/`Decode` over a bounds-checked byte reader and little-endian writers.
//! - [`clearing`]: the uniform-price clearing rule, multi-market, rayon-parallel.
//! - [`envelope`]: batch keys, sealing and opening bundles, commitments, receipts, seals, the deployment id.
//! - [`curves`]: a cleared market's demand and supply step curves, as data and as SVG.
//! - [`market`]: assets, accounts, and what a market's tick and lot are worth.
//! - [`ledger`]: balances, funding checks and settlement.
//! - [`keyper`]: the keyper committee's cryptography and state machines: per-batch keys dealt by a `t`-of-`n` committee (Feldman VSS, proofs of knowledge, accusations), the log keeper, a keyper, the release rule and its attestations, combining shares.
//! - [`role`]: a replica's role as a sans-IO machine: proposals out, committed entries in, promotion when caught up, demotion and rebuild.
//! - [`commit`]: commit certificates: a majority of a cluster's replicas' signatures over a seal.
//! - [`signed`]: signed requests: operator deposits and payout acknowledgements, trader withdrawals, balance queries bound to their connection.
//! - [`sequencer`]: the batch life cycle as a sans-IO state machine, recovery (from a checkpoint or the whole journal), `verify` and batch transcripts.
//! - [`wire`]: the client/server and keyper-link message codec, length-prefixed frames, pure over byte buffers.
//!
//! Shell:
//! - [`clock`]: the wall clock the processes hand the core.
//! - [`journal`]: the append-only, checksummed, fsynced log, its recovery, and checkpoint files beside it.
//! - [`net`]: QUIC endpoints (quinn, rustls), the server's certificate and clients' pinning.
//! - [`http`]: the bounded loopback HTTP server of metrics and pages.
//! - [`replica`]: the replicated log (openraft): the Raft log on disk, the state machine over the journal, the replica transport, a replica's attestations.
//! - [`node`]: the sequencer process: the driver thread around the sequencer, the journal writer, QUIC server, keyper link, metrics, explorer, shutdown.
//! - [`keyper_process`]: the keyper process: its keys, its journal, its QUIC link to the sequencer.
//! - [`secret_file`]: the one rule for secrets on disk (0600, `O_EXCL`, fsynced, zeroized).
//! - [`client`]: the client library: schedule, submit, subscribe (every pushed result checked), accounts.
//! - [`cli`]: the `sealbatch` command line.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod clearing;
#[allow(clippy::disallowed_methods)] // the shell: clock, files, threads
pub mod cli;
#[allow(clippy::disallowed_methods)] // the shell: clock, files, threads
pub mod client;
#[allow(clippy::disallowed_methods)] // the shell: the wall clock
pub mod clock;
pub mod codec;
pub mod commit;
pub mod curves;
pub mod envelope;
#[allow(clippy::disallowed_methods)] // the shell: sockets
pub mod http;
#[allow(clippy::disallowed_methods)] // the shell: clock, files, threads
pub mod journal;
pub mod keyper;
#[allow(clippy::disallowed_methods)] // the shell: clock, files, threads
pub mod keyper_process;
pub mod ledger;
pub mod market;
#[allow(clippy::disallowed_methods)] // the shell: clock, files, threads
pub mod net;
#[allow(clippy::disallowed_methods)] // the shell: clock, files, threads
pub mod node;
pub mod order;
#[allow(clippy::disallowed_methods)] // the shell: clock, files, threads
pub mod replica;
pub mod role;
#[allow(clippy::disallowed_methods)] // the shell: clock, files, threads
pub mod secret_file;
pub mod sequencer;
pub mod signed;
pub mod types;
pub mod wire;
