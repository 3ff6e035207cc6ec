//! What each client request does: submissions (shutdown, admission and
//! quota checks, then the sequencer), the schedule, subscriptions, signed
//! balance and payout queries, operator deposits and payout
//! acknowledgements, trader withdrawals, and demo-mode deposits.

use std::time::Instant;

use crate::envelope::{Rejection, ShapedEnvelope};
use crate::market::{AccountId, AssetId};
use crate::sequencer::{FundsError, OpToken, SequencerError, SubmitError, SubmitToken, Transfer};
use crate::signed::{Query, SignedDeposit, SignedPayout, SignedQuery, SignedWithdrawal};
use crate::wire::{self, ClientMessage, ReasonCode, ServerMessage};

use super::super::handle::{Request, RequestBody, SessionId};
use super::super::now_ms;
use super::Driver;
use super::publish::submit_code;
use super::sessions::{OverQuota, Pending};

impl Driver {
    /// A submission: shutdown and quota checks, then the sequencer.
    pub(super) fn submit(
        &mut self,
        session: SessionId,
        request_id: u64,
        envelope: Result<ShapedEnvelope, Rejection>,
        received: Instant,
        now: u64,
    ) {
        let open = self.sequencer.open_batch_at(now);
        if self.shutting_down {
            // A replica stopping is no leader any more: its clients go to
            // the next one.
            let code = if self.is_replica() {
                ReasonCode::NotLeader
            } else {
                ReasonCode::Busy
            };
            self.refuse(
                session,
                request_id,
                (code, open, 0),
                "the sequencer is shutting down".into(),
            );
            return;
        }
        // Admission control: a request that waited too long in the queue is
        // refused before it costs a journal write, with the wait as the
        // retry-after, so that traders back off until the queue drains.
        let waited = received.elapsed();
        if waited > self.intake_delay_max {
            let retry_after_ms = u32::try_from(waited.as_millis()).unwrap_or(u32::MAX);
            self.refuse(
                session,
                request_id,
                (ReasonCode::Busy, open, retry_after_ms),
                format!(
                    "the sequencer is behind: this envelope waited {} ms to be read",
                    waited.as_millis()
                ),
            );
            return;
        }
        let Some((conn, ip)) = self.sessions.get(&session).map(|s| (s.conn, s.ip)) else {
            return;
        };
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err(rejection) => {
                let error = SubmitError::Malformed(rejection);
                self.refuse(
                    session,
                    request_id,
                    submit_code(&error, open),
                    error.to_string(),
                );
                return;
            }
        };
        let e = envelope.batch();
        // An envelope the batch already holds is receipted again whatever
        // the quotas (a client resubmitting one whose receipt it lost), and
        // counts against them once.
        let held = self.sequencer.holds(e, &envelope.commitment());
        if !held && let Some(over) = self.over_quota(e, conn, ip) {
            let message = match over {
                OverQuota::Connection(used) => {
                    format!("this connection submitted {used} envelopes to batch {e}")
                }
                OverQuota::Address(used) => {
                    format!("this address submitted {used} envelopes to batch {e}")
                }
            };
            self.refuse(
                session,
                request_id,
                (ReasonCode::ConnectionQuota, open, 0),
                message,
            );
            return;
        }
        self.next_token += 1;
        let token = self.next_token;
        match self
            .sequencer
            .handle_submit_shaped(now, SubmitToken(token), envelope)
        {
            Ok(commitment) => {
                self.count_submission(session, e, commitment, !held);
                self.pending.insert(
                    token,
                    Pending {
                        session,
                        request_id,
                        received,
                        reply: None,
                    },
                );
                self.waiting(session, true);
            }
            Err(error) => {
                self.refuse(
                    session,
                    request_id,
                    submit_code(&error, open),
                    error.to_string(),
                );
            }
        }
    }

    /// A request taken from the queue: answered now, or once the journal
    /// makes what it asked durable.
    pub(super) fn request(&mut self, request: Request) {
        let session = request.session;
        self.handled(session);
        self.answer(request);
        self.drop_if_done(session);
    }

    fn answer(&mut self, request: Request) {
        let Request {
            session,
            body,
            received,
        } = request;
        let now = now_ms();
        let message = match body {
            RequestBody::Submit {
                request_id,
                envelope,
            } => {
                self.submit(session, request_id, envelope, received, now);
                return;
            }
            RequestBody::Message(ClientMessage::Submit {
                request_id,
                envelope,
            }) => {
                let envelope = ShapedEnvelope::for_header_batch(envelope);
                self.submit(session, request_id, envelope, received, now);
                return;
            }
            RequestBody::Query { request_id, query } => {
                let request = Pending {
                    session,
                    request_id,
                    received,
                    reply: None,
                };
                self.query(request, query);
                return;
            }
            RequestBody::Message(message) => message,
        };
        let request_id = message.request_id();
        let pending = |reply| Pending {
            session,
            request_id,
            received,
            reply,
        };
        match message {
            ClientMessage::Submit { .. } => {}
            ClientMessage::GetSchedule { request_id } => {
                let reply = match self.refresh_schedule(now) {
                    Ok(()) => self
                        .schedules
                        .answer(request_id)
                        .map(ServerMessage::Schedule),
                    Err(error) => Some(ServerMessage::Error {
                        request_id,
                        code: ReasonCode::Internal,
                        message: error.to_string(),
                    }),
                };
                if let Some(reply) = reply {
                    self.send(session, reply);
                }
            }
            ClientMessage::GetKeyCertificates { request_id } => {
                let reply = match self.refresh_schedule(now) {
                    Ok(()) => self.schedules.answer_certificates(request_id),
                    Err(error) => Some(ServerMessage::Error {
                        request_id,
                        code: ReasonCode::Internal,
                        message: error.to_string(),
                    }),
                };
                if let Some(reply) = reply {
                    self.send(session, reply);
                }
            }
            ClientMessage::Subscribe { request_id } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.subscribed = true;
                }
                self.send(session, ServerMessage::Ack { request_id });
            }
            // A query's signature is for its connection: only the
            // connection's task can check it, and hands it over as
            // `RequestBody::Query`.
            ClientMessage::GetAccount { .. } | ClientMessage::GetPayouts { .. } => {
                self.refuse_request(
                    pending(None),
                    ReasonCode::Unauthorized,
                    "a query must be verified for its connection".into(),
                );
            }
            ClientMessage::Deposit {
                account,
                asset,
                amount,
                ..
            } => self.demo_deposit(
                pending(None),
                Transfer {
                    account: AccountId(account),
                    asset: AssetId(asset),
                    amount,
                },
            ),
            ClientMessage::OperatorDeposit { deposit, .. } => {
                self.operator_deposit(pending(None), deposit);
            }
            ClientMessage::Withdraw { withdrawal, .. } => self.withdraw(pending(None), withdrawal),
            ClientMessage::AcknowledgePayout { payout, .. } => self.payout(pending(None), payout),
        }
    }

    /// A balance or payouts query whose signature the connection's task
    /// verified for its connection (the sequencer checks every other
    /// signed request itself): an account's balances for the account or an operator,
    /// pending withdrawals for an operator; read now and answered once
    /// everything journaled so far is durable.
    fn query(&mut self, mut request: Pending, query: SignedQuery) {
        let request_id = request.request_id;
        let operator = self.operators.contains(&query.requester);
        let funds = self.sequencer.funds();
        let reply = match query.query {
            Query::Account(account) if operator || account.0 == query.requester => {
                ServerMessage::Account {
                    request_id,
                    account: account.0,
                    next_withdrawal: funds.next_sequence(&account),
                    balances: self
                        .sequencer
                        .ledger()
                        .balances_of(&account)
                        .into_iter()
                        .take(wire::ACCOUNT_BALANCES_MAX)
                        .map(|(asset, amount)| (asset.0, amount))
                        .collect(),
                }
            }
            Query::Payouts { after } if operator => {
                let mut withdrawals: Vec<_> = funds
                    .pending_after(after)
                    .take(wire::PAYOUTS_MAX + 1)
                    .collect();
                let more = withdrawals.len() > wire::PAYOUTS_MAX;
                withdrawals.truncate(wire::PAYOUTS_MAX);
                ServerMessage::Payouts {
                    request_id,
                    withdrawals,
                    more,
                }
            }
            Query::Account(_) => {
                return self.refuse_request(
                    request,
                    ReasonCode::Unauthorized,
                    "an account's balances are the account's or an operator's to read".into(),
                );
            }
            Query::Payouts { .. } => {
                return self.refuse_request(
                    request,
                    ReasonCode::Unauthorized,
                    "pending withdrawals are an operator's to read".into(),
                );
            }
        };
        request.reply = Some(reply);
        self.next_token += 1;
        let token = OpToken(self.next_token);
        self.sequencer.handle_barrier(token);
        self.await_durable(token, request);
    }

    /// A deposit signed by an operator: a configured key, within the amount
    /// bound, within the rate bound, then the sequencer (which checks the
    /// signature and the reference); answered `Ack` once durable, and again
    /// for the same reference.
    fn operator_deposit(&mut self, request: Pending, deposit: SignedDeposit) {
        let statement = &deposit.statement;
        if !self.operators.contains(&statement.operator) {
            return self.refuse_request(
                request,
                ReasonCode::Unauthorized,
                "the key is not a configured operator key".into(),
            );
        }
        if statement.amount > self.deposit_amount_max {
            let message = format!(
                "a deposit credits at most {} units",
                self.deposit_amount_max
            );
            return self.refuse_request(request, ReasonCode::InvalidRequest, message);
        }
        if !self.deposit_budget.take(Instant::now()) {
            return self.refuse_request(
                request,
                ReasonCode::Busy,
                "too many operator deposits per second".into(),
            );
        }
        self.next_token += 1;
        let token = OpToken(self.next_token);
        match self.sequencer.handle_operator_deposit(token, deposit) {
            Ok(()) => self.await_durable(token, request),
            Err(error) => self.refuse_funds(request, &error),
        }
    }

    /// A trader's withdrawal: within the rate bound, then the sequencer
    /// (signature, sequence number, balance); answered `Withdrawn` with its
    /// id once durable.
    fn withdraw(&mut self, mut request: Pending, withdrawal: SignedWithdrawal) {
        if !self.withdrawal_budget.take(Instant::now()) {
            return self.refuse_request(
                request,
                ReasonCode::Busy,
                "too many withdrawals per second".into(),
            );
        }
        self.next_token += 1;
        let token = OpToken(self.next_token);
        match self.sequencer.handle_withdrawal(token, withdrawal) {
            Ok(id) => {
                request.reply = Some(ServerMessage::Withdrawn {
                    request_id: request.request_id,
                    id,
                });
                self.await_durable(token, request);
            }
            Err(error) => self.refuse_funds(request, &error),
        }
    }

    /// An operator's payout acknowledgement: a configured key, then the
    /// sequencer; answered `Ack` once durable, and again for the same one.
    fn payout(&mut self, request: Pending, payout: SignedPayout) {
        if !self.operators.contains(&payout.statement.operator) {
            return self.refuse_request(
                request,
                ReasonCode::Unauthorized,
                "the key is not a configured operator key".into(),
            );
        }
        self.next_token += 1;
        let token = OpToken(self.next_token);
        match self.sequencer.handle_payout(token, payout) {
            Ok(()) => self.await_durable(token, request),
            Err(error) => self.refuse_funds(request, &error),
        }
    }

    /// An unsigned deposit over the wire: demo mode only; answered once
    /// durable.
    fn demo_deposit(&mut self, request: Pending, transfer: Transfer) {
        if !self.demo {
            return self.refuse_request(
                request,
                ReasonCode::OperatorOnly,
                "unsigned deposits are for demo mode only; an operator signs an OperatorDeposit"
                    .into(),
            );
        }
        self.next_token += 1;
        let token = OpToken(self.next_token);
        let Transfer {
            account,
            asset,
            amount,
        } = transfer;
        match self.sequencer.handle_deposit(token, account, asset, amount) {
            Ok(()) => self.await_durable(token, request),
            Err(error) => {
                self.refuse_request(request, ReasonCode::InvalidRequest, error.to_string());
            }
        }
    }

    /// Holds `request`'s answer until the sequencer says `token` is durable.
    fn await_durable(&mut self, token: OpToken, request: Pending) {
        let session = request.session;
        self.pending.insert(token.0, request);
        self.waiting(session, true);
    }

    /// Answers `request` with an `Error` of `code`, and counts it.
    fn refuse_request(&mut self, request: Pending, code: ReasonCode, message: String) {
        self.metrics.reject(code.to_byte());
        self.send(
            request.session,
            ServerMessage::Error {
                request_id: request.request_id,
                code,
                message,
            },
        );
    }

    /// Answers a request the sequencer refused with the code of its error.
    fn refuse_funds(&mut self, request: Pending, error: &SequencerError) {
        let code = match error {
            SequencerError::Funds(FundsError::Signed(crate::signed::SignedError::Length {
                ..
            })) => ReasonCode::InvalidRequest,
            SequencerError::Funds(FundsError::Signed(_)) => ReasonCode::Unauthorized,
            SequencerError::Funds(FundsError::Sequence { .. }) => ReasonCode::Replayed,
            _ => ReasonCode::InvalidRequest,
        };
        self.refuse_request(request, code, error.to_string());
    }

    /// Makes the cached schedule the one for `now`, signing a new one only
    /// when a batch opened or cleared since the last.
    pub(super) fn refresh_schedule(
        &mut self,
        now: u64,
    ) -> Result<(), crate::sequencer::SequencerError> {
        let open = self.sequencer.open_batch_at(now);
        if !self.schedules.is_current(open, self.cleared_total) {
            let schedule = self.schedule(0, now)?;
            let last = schedule.batch_keys.last().map_or(open, |(e, _)| *e);
            self.schedules
                .store_certificates(super::super::schedule::KeyCertificates {
                    committee: self.sequencer.committee().cloned(),
                    certificates: self.sequencer.key_certificates(open, last),
                });
            self.schedules.store(schedule, self.cleared_total);
        }
        Ok(())
    }
}
