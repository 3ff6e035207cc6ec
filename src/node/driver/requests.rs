//! What each client request does: submissions (shutdown, admission and
//! quota checks, then the sequencer), schedule and account queries,
//! subscriptions, and demo-mode deposits and withdrawals.

use std::time::Instant;

use crate::envelope::{Rejection, ShapedEnvelope};
use crate::market::{AccountId, AssetId};
use crate::operator::{DepositError, SignedDeposit};
use crate::sequencer::{OpToken, SequencerError, SubmitError, SubmitToken, Transfer};
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
            self.refuse(
                session,
                request_id,
                (ReasonCode::Busy, open, 0),
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
            RequestBody::Message(message) => message,
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
            ClientMessage::Subscribe { request_id } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.subscribed = true;
                }
                self.send(session, ServerMessage::Ack { request_id });
            }
            ClientMessage::GetAccount {
                request_id,
                account,
            } => {
                let balances = self
                    .sequencer
                    .ledger()
                    .balances_of(&AccountId(account))
                    .into_iter()
                    .take(wire::ACCOUNT_BALANCES_MAX)
                    .map(|(asset, amount)| (asset.0, amount))
                    .collect();
                self.send(
                    session,
                    ServerMessage::Account {
                        request_id,
                        account,
                        balances,
                    },
                );
            }
            ClientMessage::Deposit {
                request_id,
                account,
                asset,
                amount,
            }
            | ClientMessage::Withdraw {
                request_id,
                account,
                asset,
                amount,
            } => {
                let credit = matches!(message, ClientMessage::Deposit { .. });
                self.operation(
                    Pending {
                        session,
                        request_id,
                        received,
                    },
                    Transfer {
                        account: AccountId(account),
                        asset: AssetId(asset),
                        amount,
                    },
                    credit,
                );
            }
            ClientMessage::OperatorDeposit {
                request_id,
                deposit,
            } => self.operator_deposit(
                Pending {
                    session,
                    request_id,
                    received,
                },
                deposit,
            ),
        }
    }

    /// A deposit signed by an operator: a configured key, within the amount
    /// bound, a valid signature, within the rate bound, then the sequencer
    /// (which checks the signature again, and the reference); answered `Ack`
    /// once durable, and again for the same reference.
    fn operator_deposit(&mut self, request: Pending, deposit: SignedDeposit) {
        let (session, request_id) = (request.session, request.request_id);
        let refused = |code: ReasonCode, message: String| ServerMessage::Error {
            request_id,
            code,
            message,
        };
        let statement = &deposit.statement;
        let refusal = if !self.operators.contains(&statement.operator) {
            Some(refused(
                ReasonCode::Unauthorized,
                "the key is not a configured operator key".into(),
            ))
        } else if statement.amount > self.deposit_amount_max {
            Some(refused(
                ReasonCode::InvalidRequest,
                format!(
                    "a deposit credits at most {} units",
                    self.deposit_amount_max
                ),
            ))
        } else if let Err(error) = deposit.verify(&self.key.public_key()) {
            // Checked before the budget, so that requests nobody with the
            // operator's key made cannot use it up (their cost is bounded
            // by each stream's request budget).
            Some(refused(ReasonCode::Unauthorized, error.to_string()))
        } else if !self.deposit_budget.take(Instant::now()) {
            Some(refused(
                ReasonCode::Busy,
                "too many operator deposits per second".into(),
            ))
        } else {
            None
        };
        if let Some(reply) = refusal {
            if let ServerMessage::Error { code, .. } = &reply {
                self.metrics.reject(code.to_byte());
            }
            self.send(session, reply);
            return;
        }
        self.next_token += 1;
        let token = OpToken(self.next_token);
        match self.sequencer.handle_operator_deposit(token, deposit) {
            Ok(()) => {
                self.pending.insert(token.0, request);
                self.waiting(session, true);
            }
            Err(error) => {
                let code = match error {
                    SequencerError::Deposit(
                        DepositError::BadSignature | DepositError::BadOperatorKey,
                    ) => ReasonCode::Unauthorized,
                    _ => ReasonCode::InvalidRequest,
                };
                self.metrics.reject(code.to_byte());
                self.send(session, refused(code, error.to_string()));
            }
        }
    }

    /// An operator deposit (`credit`) or withdrawal over the wire: demo mode
    /// only; answered once durable.
    pub(super) fn operation(&mut self, request: Pending, transfer: Transfer, credit: bool) {
        let Pending {
            session,
            request_id,
            ..
        } = request;
        if !self.demo {
            self.metrics.reject(ReasonCode::OperatorOnly.to_byte());
            self.send(
                session,
                ServerMessage::Error {
                    request_id,
                    code: ReasonCode::OperatorOnly,
                    message: "deposits and withdrawals over the wire are for demo mode only".into(),
                },
            );
            return;
        }
        self.next_token += 1;
        let token = OpToken(self.next_token);
        let Transfer {
            account,
            asset,
            amount,
        } = transfer;
        let done = if credit {
            self.sequencer.handle_deposit(token, account, asset, amount)
        } else {
            self.sequencer
                .handle_withdrawal(token, account, asset, amount)
        };
        match done {
            Ok(()) => {
                self.pending.insert(token.0, request);
                self.waiting(session, true);
            }
            Err(error) => self.send(
                session,
                ServerMessage::Error {
                    request_id,
                    code: ReasonCode::InvalidRequest,
                    message: error.to_string(),
                },
            ),
        }
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
            self.schedules.store(schedule, self.cleared_total);
        }
        Ok(())
    }
}
