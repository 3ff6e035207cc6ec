//! A client of a replicated sequencer (`spec/replication.md`, "Clients"):
//! [`ClusterClient`] knows the replicas (those it was given, and those the
//! leader's signed schedule lists), talks to the leader, follows a
//! follower's `NotLeader` redirect, and after a failover finds the new
//! leader and submits an unacknowledged envelope again — the same bytes,
//! so the same commitment, which a batch that already holds it receipts
//! again instead of counting twice.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::envelope::Receipt;
use crate::net::parse_fingerprint;
use crate::wire::{ReasonCode, Schedule};

use super::{Client, ClientError, KeyTrust};

/// How long a request keeps looking for a leader before it fails.
pub const FAILOVER_WAIT_MAX: Duration = Duration::from_secs(10);

/// A pause between rounds over the replicas while none leads.
const ROUND_PAUSE: Duration = Duration::from_millis(25);

/// How long one attempt waits: to connect to a replica and read its
/// schedule, or for a receipt. A leader killed without closing its
/// connections is noticed this way; a slow one is asked again, which is
/// harmless (the same envelope is receipted again, never counted twice).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long connecting to one replica may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long one round over the replicas waits for their answers.
const ROUND_MAX: Duration = Duration::from_millis(100);

/// A replica a client may connect to: its clients' address and its
/// certificate's fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaAddr {
    /// Where its clients connect.
    pub addr: SocketAddr,
    /// Its certificate's SHA-256.
    pub fingerprint: [u8; 32],
}

/// Where a `NotLeader` answer says the leader is, if it names one: the
/// message `not the leader; leader <id> <address> <fingerprint hex>`.
#[must_use]
pub fn parse_redirect(message: &str) -> Option<ReplicaAddr> {
    let rest = message.split_once("leader; leader ")?.1;
    let mut words = rest.split_whitespace();
    let _id: u64 = words.next()?.parse().ok()?;
    let addr: SocketAddr = words.next()?.parse().ok()?;
    let fingerprint = parse_fingerprint(words.next()?).ok()?;
    Some(ReplicaAddr { addr, fingerprint })
}

/// Whether `error` means "ask another replica": this one does not lead, or
/// is gone.
fn is_failover(error: &ClientError) -> bool {
    match error {
        ClientError::Connection(_) | ClientError::Timeout | ClientError::Net(_) => true,
        ClientError::Refused { code, .. } | ClientError::Rejected { code, .. } => {
            *code == ReasonCode::NotLeader
        }
        _ => false,
    }
}

fn redirect_of(error: &ClientError) -> Option<ReplicaAddr> {
    match error {
        ClientError::Refused {
            code: ReasonCode::NotLeader,
            message,
        }
        | ClientError::Rejected {
            code: ReasonCode::NotLeader,
            message,
            ..
        } => parse_redirect(message),
        _ => None,
    }
}

/// A client of a replicated sequencer.
pub struct ClusterClient {
    /// The replicas it was given, then those verified schedules listed.
    replicas: RwLock<Vec<ReplicaAddr>>,
    /// The sequencer key of the first leader's schedule: every later
    /// leader's must be the same.
    sequencer: RwLock<Option<[u8; 32]>>,
    trust: KeyTrust,
    /// The leader's connection, once found.
    current: Mutex<Option<(ReplicaAddr, Arc<Client>)>>,
    /// The replica whose connection failed last: a follower that has not
    /// yet heard of the election still names it, and a redirect to it is
    /// not followed (it is still asked directly, in every round).
    failed: RwLock<Option<ReplicaAddr>>,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("replicas", &self.replicas())
            .finish_non_exhaustive()
    }
}

impl ClusterClient {
    /// A client of the cluster of `replicas` (one is enough: the leader's
    /// schedule lists the others); connects to its leader.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connection`] if no replica leads within
    /// [`FAILOVER_WAIT_MAX`].
    pub async fn connect(
        replicas: Vec<ReplicaAddr>,
        trust: KeyTrust,
    ) -> Result<ClusterClient, ClientError> {
        let client = ClusterClient {
            replicas: RwLock::new(replicas),
            sequencer: RwLock::new(None),
            trust,
            current: Mutex::new(None),
            failed: RwLock::new(None),
        };
        client.leader().await?;
        Ok(client)
    }

    /// The replicas this client knows now.
    #[must_use]
    pub fn replicas(&self) -> Vec<ReplicaAddr> {
        self.replicas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `schedule` is signed by the sequencer this client has seen
    /// (the first schedule's key is kept).
    fn same_sequencer(&self, schedule: &Schedule) -> bool {
        let mut known = self.sequencer.write().unwrap_or_else(|p| p.into_inner());
        *known.get_or_insert(schedule.sequencer_key) == schedule.sequencer_key
    }

    /// Adds the replicas a verified schedule lists (`spec/wire.md`,
    /// "Schedule") to those this client knows.
    fn learn(&self, schedule: &Schedule) {
        let mut known = self.replicas.write().unwrap_or_else(|p| p.into_inner());
        for listed in &schedule.replicas {
            let Ok(addr) = listed.address.parse::<SocketAddr>() else {
                continue;
            };
            let replica = ReplicaAddr {
                addr,
                fingerprint: listed.fingerprint,
            };
            if !known.contains(&replica) {
                known.push(replica);
            }
        }
    }

    /// The leader's connection: the current one, or the first replica that
    /// answers a schedule (following redirects), tried in rounds until
    /// [`FAILOVER_WAIT_MAX`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Connection`] if none leads in time.
    pub async fn leader(&self) -> Result<Arc<Client>, ClientError> {
        let deadline = Instant::now() + FAILOVER_WAIT_MAX;
        // Waiting behind another caller's search counts against this
        // caller's wait: many submissions waiting on one dead leader end
        // within the wait, not one wait after another.
        let Ok(mut current) = tokio::time::timeout_at(deadline.into(), self.current.lock()).await
        else {
            return Err(ClientError::Connection(format!(
                "no replica leads after {} s (waited for another search)",
                FAILOVER_WAIT_MAX.as_secs()
            )));
        };
        if let Some((_, client)) = current.as_ref()
            && client.connection().close_reason().is_none()
        {
            return Ok(Arc::clone(client));
        }
        *current = None;
        let mut hint: Option<ReplicaAddr> = None;
        let mut last = String::from("no replica tried");
        while Instant::now() < deadline {
            // Every replica at once (a dead one costs its connect timeout,
            // not everyone's), or the one a redirect named.
            let candidates: Vec<ReplicaAddr> = match hint.take() {
                Some(leader) => vec![leader],
                None => self.replicas(),
            };
            let mut attempts = tokio::task::JoinSet::new();
            for replica in candidates {
                let trust = self.trust;
                attempts.spawn(async move { (replica, try_replica(replica, trust).await) });
            }
            // A round waits for the replicas that answer; one that does not
            // (dead, its packets unanswered) is not waited for past
            // ROUND_MAX.
            let round_end = tokio::time::Instant::now() + ROUND_MAX;
            while let Ok(Some(joined)) =
                tokio::time::timeout_at(round_end, attempts.join_next()).await
            {
                let Ok((replica, outcome)) = joined else {
                    continue;
                };
                match outcome {
                    Ok((client, schedule)) => {
                        if !self.same_sequencer(&schedule) {
                            last = format!("{}: another sequencer key", replica.addr);
                            continue;
                        }
                        attempts.abort_all();
                        self.learn(&schedule);
                        *self.failed.write().unwrap_or_else(|p| p.into_inner()) = None;
                        *current = Some((replica, Arc::clone(&client)));
                        return Ok(client);
                    }
                    Err(error) => {
                        last = format!("{}: {error}", replica.addr);
                        // Named by a follower: go there at once — only if
                        // it is a replica this client was given or a signed
                        // schedule listed (a follower cannot send it to a
                        // server of its choosing, with a certificate of its
                        // choosing).
                        let failed = *self.failed.read().unwrap_or_else(|p| p.into_inner());
                        if let Some(leader) = redirect_of(&error)
                            .filter(|l| self.replicas().contains(l) && Some(*l) != failed)
                        {
                            hint = Some(leader);
                            attempts.abort_all();
                            break;
                        }
                    }
                }
            }
            if hint.is_none() {
                tokio::time::sleep(ROUND_PAUSE).await;
            }
        }
        Err(ClientError::Connection(format!(
            "no replica leads after {} s ({last})",
            FAILOVER_WAIT_MAX.as_secs()
        )))
    }

    /// The address of the replica this client takes for the leader now.
    pub async fn leader_addr(&self) -> Option<SocketAddr> {
        self.current
            .lock()
            .await
            .as_ref()
            .map(|(replica, _)| replica.addr)
    }

    /// Forgets the leader's connection if it is still `client`, closing
    /// it unless `keep_open`: a connection that only answered slowly keeps
    /// serving the submissions already on it.
    async fn drop_leader(&self, client: &Arc<Client>, keep_open: bool) {
        let mut current = self.current.lock().await;
        if let Some((replica, c)) = current.as_ref()
            && Arc::ptr_eq(c, client)
        {
            *self.failed.write().unwrap_or_else(|p| p.into_inner()) = Some(*replica);
            if !keep_open {
                client.close();
            }
            *current = None;
        }
    }

    /// The leader's schedule, across failovers.
    ///
    /// # Errors
    ///
    /// As [`Client::schedule`], or no leader in time.
    pub async fn schedule(&self) -> Result<Schedule, ClientError> {
        let deadline = Instant::now() + FAILOVER_WAIT_MAX;
        loop {
            let client = self.leader().await?;
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, client.schedule())
                .await
                .unwrap_or(Err(ClientError::Timeout));
            match attempt {
                Err(error) if is_failover(&error) && Instant::now() < deadline => {
                    self.drop_leader(&client, matches!(error, ClientError::Timeout))
                        .await;
                }
                other => return other,
            }
        }
    }

    /// Submits a sealed envelope to the leader and waits for its receipt;
    /// if the leader stops leading or dies first, submits the same bytes to
    /// the next leader (`spec/replication.md`, "Clients").
    ///
    /// # Errors
    ///
    /// As [`Client::submit`] (a batch that closed during the failover is
    /// [`ClientError::Rejected`] with `BatchClosed`), or no leader in time.
    pub async fn submit(&self, envelope: Vec<u8>) -> Result<Receipt, ClientError> {
        let deadline = Instant::now() + FAILOVER_WAIT_MAX;
        loop {
            let client = self.leader().await?;
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, client.submit(envelope.clone()))
                .await
                .unwrap_or(Err(ClientError::Timeout));
            match attempt {
                Err(error) if is_failover(&error) && Instant::now() < deadline => {
                    tracing::debug!(%error, "submitting again after a failover");
                    // A submission not answered in time may only be slow
                    // (a leader across a WAN, a burst): its connection
                    // stays open for the others on it, and the same bytes
                    // go to whichever replica leads now — the same one, if
                    // it still does, which receipts a duplicate once it is
                    // durable (`spec/wire.md` §5).
                    self.drop_leader(&client, matches!(error, ClientError::Timeout))
                        .await;
                }
                other => return other,
            }
        }
    }
}

/// Connects to `replica` and asks its schedule (verified): `Ok` only from
/// the leader.
async fn try_replica(
    replica: ReplicaAddr,
    trust: KeyTrust,
) -> Result<(Arc<Client>, Schedule), ClientError> {
    let client = tokio::time::timeout(
        CONNECT_TIMEOUT,
        Client::connect(replica.addr, replica.fingerprint),
    )
    .await
    .map_err(|_| ClientError::Timeout)??;
    client.set_trust(trust);
    let schedule = tokio::time::timeout(ATTEMPT_TIMEOUT, client.schedule())
        .await
        .map_err(|_| ClientError::Timeout)??;
    Ok((Arc::new(client), schedule))
}
