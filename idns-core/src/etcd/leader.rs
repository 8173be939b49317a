//! [`Leadership`]: a controller campaigns for a leader key bound to its lease, and tracks its
//! right to act with a deadline of its own.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use super::client::{Client, show_key};
use super::kv::{Compare, CompareOp, KeyValue, LeaseId, Op, OpResponse};
use super::require_non_empty;
use super::store::EtcdStore;
use crate::error::{BackendError, ConfigError, Problems};

/// The shortest lease TTL accepted (etcd's own minimum with a fast election timeout).
pub(super) const MIN_TTL: Duration = Duration::from_secs(1);
/// The longest lease TTL accepted.
pub(super) const MAX_TTL: Duration = Duration::from_secs(3600);

/// Records a problem when a lease TTL is outside 1s..=1h.
pub(super) fn check_ttl(problems: &mut Problems, path: &str, ttl: Duration) {
    problems.duration(path, ttl, MIN_TTL, MAX_TTL);
}

/// How a [`Leadership`] holds its lease.
///
/// ```
/// use std::time::Duration;
/// use idns_core::etcd::LeadershipConfig;
///
/// let bad = LeadershipConfig { ttl: Duration::ZERO, margin: Duration::from_secs(3) };
/// let err = bad.validate().unwrap_err().to_string();
/// assert!(err.contains("ttl = 0s: must be at least 1s"), "{err}");
/// assert!(err.contains("margin = 3s"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeadershipConfig {
    /// The TTL of the lease the leader key is bound to (1s..=1h; default 10s). The lease is
    /// kept alive every third of it; a controller that cannot reach etcd for about this long
    /// loses the key.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long before the lease could expire in etcd the holder stops considering itself
    /// leader (less than `ttl`; default 2s): it covers clock-rate drift and the time an
    /// action takes once decided.
    #[serde(with = "humantime_serde")]
    pub margin: Duration,
}

impl Default for LeadershipConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            margin: Duration::from_secs(2),
        }
    }
}

impl LeadershipConfig {
    /// Checks the TTL (1s..=1h) and that the margin is below it; the error names each field
    /// and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::new();
        self.check(&mut problems);
        problems.finish()
    }

    fn check(&self, problems: &mut Problems) {
        check_ttl(problems, "ttl", self.ttl);
        if self.margin >= self.ttl {
            problems.push(
                "margin",
                humantime::format_duration(self.margin),
                format!(
                    "must be less than ttl ({}): the holder would never be leader",
                    humantime::format_duration(self.ttl)
                ),
            );
        }
    }

    /// How often the lease is kept alive and a follower looks at the key: a third of the TTL.
    fn interval(&self) -> Duration {
        self.ttl / 3
    }

    /// How soon a failed keep-alive is tried again: a tenth of the TTL.
    fn retry(&self) -> Duration {
        self.ttl / 10
    }
}

/// What a controller knows of the leadership, as a [`Leadership`] publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderState {
    /// This controller holds the leader key, and may act until `deadline`.
    Leader {
        /// When it became leader.
        since: Instant,
        /// The revision that created the leader key: what
        /// [`EtcdStore::guarded_by`] needs (see [`Leadership::guarded_store`]).
        create_revision: u64,
        /// The lease the key is bound to.
        lease: LeaseId,
        /// When its right to act ends unless a keep-alive succeeds first: the time the last
        /// successful keep-alive (or the grant) was sent, plus the granted TTL, minus the
        /// margin. Before acting, check it with [`is_leader_at`](LeaderState::is_leader_at):
        /// a state read late may already be past it.
        deadline: Instant,
    },
    /// Another controller holds the key, or nobody does and this one is about to campaign.
    Follower {
        /// The holder's id, as its key says (`None`: the key was gone when last read).
        leader: Option<String>,
    },
    /// etcd could not be reached (or the leadership was lost and not yet sorted out): this
    /// controller knows nothing of who leads, and must not act.
    Unknown {
        /// Why, in words a person can act on.
        why: String,
    },
}

impl LeaderState {
    /// Whether this state gives the right to act at `now`: a leader before its deadline.
    pub fn is_leader_at(&self, now: Instant) -> bool {
        matches!(self, Self::Leader { deadline, .. } if now < *deadline)
    }

    /// The leader key's `create_revision`, when this controller leads.
    pub fn create_revision(&self) -> Option<u64> {
        match self {
            Self::Leader {
                create_revision, ..
            } => Some(*create_revision),
            _ => None,
        }
    }
}

/// A controller's campaign for a leader key, run by a background task.
///
/// # How it works
/// - **Campaign**: grant a lease of the configured TTL, then one transaction: if the key does
///   not exist (`create_revision == 0`), put this controller's id in it bound to the lease;
///   otherwise read who holds it. The loser revokes the lease it did not need.
/// - **Holding**: the lease is kept alive every third of the TTL, and the key is read after
///   each keep-alive to check it is still this lease's. The right to act ends at a deadline
///   tracked here, on this controller's clock: the time the last successful keep-alive was
///   *sent*, plus the granted TTL, minus the margin. etcd's own view cannot be trusted alone:
///   it renews every lease to its full TTL when its own leader changes, and never expires a
///   lease while it has no quorum. When the deadline passes without a successful keep-alive
///   (every request is cut off at the deadline), the state leaves [`LeaderState::Leader`] at
///   once, whether or not the key still exists; the lease is then revoked as soon as etcd
///   answers again, before anything else, and the controller campaigns or follows anew.
/// - **Following**: the key is read every third of the TTL; when it is gone, the controller
///   campaigns. No watch (the gateway's watch is a chunked stream). A key naming this
///   controller's own id but bound to a lease it did not grant (left by an earlier run of it,
///   which may still be alive) is followed like any other until that lease lapses.
/// - **Unreachable**: a controller that cannot reach etcd publishes
///   [`LeaderState::Unknown`].
///
/// Another controller can take the key only after this one's lease is revoked or has
/// expired in etcd, which is no earlier than the last keep-alive etcd received plus the TTL:
/// after this controller's deadline. So two controllers never both hold a
/// [`LeaderState::Leader`] whose deadline has not passed (clocks running at the same rate).
///
/// Every write a leader makes should still be fenced in etcd: use
/// [`guarded_store`](Self::guarded_store) (the key's `create_revision` in each transaction).
///
/// The task stops when the handle is dropped (the lease then expires by itself after its TTL)
/// or [`resign`](Self::resign)s (the lease is revoked, the key goes with it); either way the
/// state becomes [`LeaderState::Unknown`], so a watcher never keeps a stale `Leader`.
///
/// ```no_run
/// # async fn run(client: idns_core::etcd::Client, store: idns_core::etcd::EtcdStore)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// use idns_core::etcd::{Leadership, LeadershipConfig};
///
/// let leadership = Leadership::start(
///     client,
///     "/idns/app.example.com/leader",
///     "site-a",
///     LeadershipConfig::default(),
/// )?;
/// let mut state = leadership.state();
/// state.wait_for(|s| s.create_revision().is_some()).await?;
/// if let Some(guarded) = leadership.guarded_store(store) {
///     // Load the journal and drive the election with `guarded` as its store.
///     # let _ = guarded;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Leadership {
    client: Client,
    key: String,
    id: String,
    shared: Arc<Shared>,
    state: watch::Receiver<LeaderState>,
    task: JoinHandle<()>,
}

/// What the handle and its task share.
#[derive(Debug)]
struct Shared {
    state: watch::Sender<LeaderState>,
    /// Set (with the state's lock held) when the handle stops the task: no state is published
    /// after it.
    stopped: std::sync::atomic::AtomicBool,
    /// The lease this controller granted and has not yet revoked or seen expire.
    lease: Mutex<Option<LeaseId>>,
}

impl Shared {
    fn publish(&self, new: LeaderState) {
        use std::sync::atomic::Ordering;
        self.state.send_if_modified(|current| {
            if self.stopped.load(Ordering::SeqCst) || *current == new {
                return false;
            }
            *current = new;
            true
        });
    }

    fn lease(&self) -> Option<LeaseId> {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_lease(&self, lease: Option<LeaseId>) {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = lease;
    }
}

impl Leadership {
    /// Starts campaigning for `key` (e.g. `/idns/app.example.com/leader`) as `id` (the name of
    /// this controller or its site, written as the key's value) on a background task.
    ///
    /// Fails, listing every problem, when the key or the id is empty or the config is invalid
    /// ([`LeadershipConfig::validate`]).
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn start(
        client: Client,
        key: impl Into<String>,
        id: impl Into<String>,
        config: LeadershipConfig,
    ) -> Result<Self, ConfigError> {
        let (key, id) = (key.into(), id.into());
        let mut problems = Problems::new();
        require_non_empty(
            &mut problems,
            "key",
            &key,
            "e.g. /idns/app.example.com/leader",
        );
        require_non_empty(&mut problems, "id", &id, "the controller's or site's name");
        config.check(&mut problems);
        problems.finish()?;
        let (tx, state) = watch::channel(LeaderState::Unknown {
            why: "no answer from etcd yet".to_owned(),
        });
        let shared = Arc::new(Shared {
            state: tx,
            stopped: std::sync::atomic::AtomicBool::new(false),
            lease: Mutex::new(None),
        });
        let campaign = Campaign {
            client: client.clone(),
            key: key.clone(),
            id: id.clone(),
            config,
            shared: shared.clone(),
        };
        let task = tokio::spawn(campaign.run());
        Ok(Self {
            client,
            key,
            id,
            shared,
            state,
            task,
        })
    }

    /// The leader key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// This controller's id, the value it writes in the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A receiver of the state, to wait for changes (`changed`, `wait_for`).
    pub fn state(&self) -> watch::Receiver<LeaderState> {
        self.state.clone()
    }

    /// The state now.
    pub fn current(&self) -> LeaderState {
        self.state.borrow().clone()
    }

    /// `store` guarded by the leader key's `create_revision` (see [`EtcdStore::guarded_by`]),
    /// when this controller leads now; `None` otherwise. Every save through it fails with a
    /// conflict once the key is gone or was created again, whatever this handle believes.
    pub fn guarded_store(&self, store: EtcdStore) -> Option<EtcdStore> {
        let state = self.state.borrow();
        if !state.is_leader_at(Instant::now()) {
            return None;
        }
        let revision = state.create_revision()?;
        Some(store.guarded_by(self.key.clone(), revision))
    }

    /// Stops campaigning and revokes this controller's lease, if it holds one: the key goes
    /// with it, and another controller can take it at once. The state becomes
    /// [`LeaderState::Unknown`] first.
    ///
    /// Fails when etcd does not answer the revocation (the lease then expires by itself after
    /// its TTL); a lease that is already gone is not an error.
    pub async fn resign(mut self) -> Result<(), BackendError> {
        self.stop("this controller resigned and no longer campaigns");
        // The task is aborted; wait for it so that nothing it sent is still in flight.
        let _ = (&mut self.task).await;
        let Some(lease) = self.shared.lease() else {
            return Ok(());
        };
        match self.client.lease_revoke(lease).await {
            Ok(_) | Err(BackendError::NotFound(_)) => {
                self.shared.set_lease(None);
                tracing::info!(key = %self.key, id = %self.id, %lease, "resigned the leadership");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn stop(&self, why: &str) {
        use std::sync::atomic::Ordering;
        self.task.abort();
        // Under the state's lock, so that the task cannot publish after this.
        self.shared.state.send_modify(|state| {
            self.shared.stopped.store(true, Ordering::SeqCst);
            *state = LeaderState::Unknown {
                why: why.to_owned(),
            };
        });
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if !self
            .shared
            .stopped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.stop("the leadership handle was dropped; this controller no longer campaigns");
        }
    }
}

/// The leadership as the task holds it.
#[derive(Debug, Clone, Copy)]
struct Held {
    since: Instant,
    create_revision: u64,
    lease: LeaseId,
    ttl: Duration,
    deadline: Instant,
}

impl Held {
    fn state(&self) -> LeaderState {
        LeaderState::Leader {
            since: self.since,
            create_revision: self.create_revision,
            lease: self.lease,
            deadline: self.deadline,
        }
    }
}

/// The background task's side.
struct Campaign {
    client: Client,
    key: String,
    id: String,
    config: LeadershipConfig,
    shared: Arc<Shared>,
}

impl Campaign {
    async fn run(self) {
        loop {
            match self.round().await {
                Some(held) => self.hold(held).await,
                None => sleep(self.config.interval()).await,
            }
        }
    }

    fn unknown(&self, why: String) {
        tracing::debug!(key = %self.key, id = %self.id, %why, "leadership unknown");
        self.shared.publish(LeaderState::Unknown { why });
    }

    /// The deadline of a lease whose keep-alive (or grant) was sent at `sent` and granted
    /// `ttl`; `None` when the TTL does not exceed the margin.
    fn deadline(&self, sent: Instant, ttl: Duration) -> Option<Instant> {
        ttl.checked_sub(self.config.margin)
            .filter(|d| !d.is_zero())
            .map(|d| sent + d)
    }

    /// One look at the key while not leading: revoke a lease left from a lost leadership,
    /// then follow the holder or campaign. Returns the leadership when it was won.
    async fn round(&self) -> Option<Held> {
        if let Some(lease) = self.shared.lease() {
            match self.client.lease_revoke(lease).await {
                Ok(_) | Err(BackendError::NotFound(_)) => self.shared.set_lease(None),
                Err(e) if e.is_transient() => {
                    self.unknown(format!(
                        "cannot revoke lease {lease} of a lost leadership yet: {e}"
                    ));
                    return None;
                }
                Err(e) => {
                    tracing::warn!(key = %self.key, %lease, error = %e,
                        "cannot revoke the lease of a lost leadership; it expires by itself");
                    self.shared.set_lease(None);
                }
            }
        }
        match self.client.get(&self.key).await {
            Err(e) => {
                self.unknown(e.to_string());
                None
            }
            Ok(range) => match range.first() {
                Some(kv) => {
                    self.follow(kv);
                    None
                }
                None => self.campaign().await,
            },
        }
    }

    fn follow(&self, kv: &KeyValue) {
        self.shared.publish(LeaderState::Follower {
            leader: Some(String::from_utf8_lossy(&kv.value).into_owned()),
        });
    }

    /// Grants a lease and creates the key bound to it if the key does not exist.
    async fn campaign(&self) -> Option<Held> {
        let sent = Instant::now();
        let lease = match self.client.lease_grant(self.config.ttl).await {
            Ok(lease) => lease,
            Err(e) => {
                self.unknown(format!("cannot campaign: {e}"));
                return None;
            }
        };
        self.shared.set_lease(Some(lease.id));
        let ttl = Duration::from_secs(lease.ttl);
        let Some(deadline) = self.deadline(sent, ttl) else {
            self.unknown(format!(
                "etcd granted lease {} a TTL of {}, not more than the margin of {}",
                lease.id,
                humantime::format_duration(ttl),
                humantime::format_duration(self.config.margin)
            ));
            return None;
        };
        let key = self.key.as_bytes();
        let txn = timeout_at(
            deadline,
            self.client.txn(
                &[Compare::create_revision(key, CompareOp::Equal, 0)],
                &[Op::put(key, self.id.as_bytes(), Some(lease.id))],
                &[Op::get(key)],
            ),
        )
        .await;
        let txn = match txn {
            Ok(Ok(txn)) => txn,
            // The lease is revoked next round: if the put was applied, the key goes with it.
            Ok(Err(e)) => {
                self.unknown(format!("cannot campaign: {e}"));
                return None;
            }
            Err(_) => {
                self.unknown(format!(
                    "the campaign for leader key {} got no answer before its lease's deadline",
                    show_key(key)
                ));
                return None;
            }
        };
        if !txn.succeeded {
            if let Ok(_) | Err(BackendError::NotFound(_)) = self.client.lease_revoke(lease.id).await
            {
                self.shared.set_lease(None);
            }
            let holder = match txn.responses.first() {
                Some(OpResponse::Get(range)) => range.first(),
                _ => None,
            };
            match holder {
                Some(kv) => self.follow(kv),
                // Deleted between the comparison and the read: campaign next round.
                None => self.shared.publish(LeaderState::Follower { leader: None }),
            }
            return None;
        }
        let now = Instant::now();
        if now >= deadline {
            self.unknown(format!(
                "won leader key {} only after the lease's deadline had passed",
                show_key(key)
            ));
            return None;
        }
        let held = Held {
            since: now,
            create_revision: txn.header.revision,
            lease: lease.id,
            ttl,
            deadline,
        };
        tracing::info!(key = %self.key, id = %self.id, create_revision = held.create_revision,
            lease = %held.lease, "became leader");
        self.shared.publish(held.state());
        Some(held)
    }

    /// Keeps the lease alive until the leadership is lost; the lease is left in
    /// `shared.lease` for the next round to revoke, unless it is known to be gone.
    async fn hold(&self, mut held: Held) {
        let mut next = Instant::now() + self.config.interval();
        let why = loop {
            sleep_until(next.min(held.deadline)).await;
            if Instant::now() >= held.deadline {
                break "the deadline passed without a successful keep-alive".to_owned();
            }
            let sent = Instant::now();
            let renewed =
                match timeout_at(held.deadline, self.client.lease_keepalive(held.lease)).await {
                    Err(_) => break "no keep-alive was answered before the deadline".to_owned(),
                    Ok(Err(BackendError::NotFound(e))) => {
                        self.shared.set_lease(None);
                        break format!("the lease is gone: {e}");
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(key = %self.key, lease = %held.lease, error = %e,
                        deadline_in = ?held.deadline.saturating_duration_since(sent),
                        "keep-alive failed; still leader until the deadline");
                        next = sent + self.config.retry();
                        continue;
                    }
                    Ok(Ok(renewed)) => renewed,
                };
            let ttl = Duration::from_secs(renewed.ttl);
            if let Some(deadline) = self.deadline(sent, ttl) {
                held.deadline = held.deadline.max(deadline);
                held.ttl = ttl;
            }
            match timeout_at(held.deadline, self.client.get(&self.key)).await {
                Err(_) => break "the leader key could not be read before the deadline".to_owned(),
                Ok(Ok(range)) => match range.first() {
                    Some(kv)
                        if kv.create_revision == held.create_revision
                            && kv.lease == Some(held.lease) => {}
                    Some(kv) => {
                        break format!(
                            "leader key {} was created again at revision {} (this controller's \
                             was created at {})",
                            show_key(self.key.as_bytes()),
                            kv.create_revision,
                            held.create_revision
                        );
                    }
                    None => {
                        break format!(
                            "leader key {} was deleted although its lease lives",
                            show_key(self.key.as_bytes())
                        );
                    }
                },
                // The lease was renewed, and the key lives with it.
                Ok(Err(e)) => tracing::debug!(key = %self.key, error = %e,
                    "cannot read the leader key after a keep-alive"),
            }
            self.shared.publish(held.state());
            next = sent + self.config.interval();
        };
        tracing::warn!(key = %self.key, id = %self.id, create_revision = held.create_revision,
            lease = %held.lease, ttl = ?held.ttl, %why, "no longer leader");
        self.unknown(format!("leadership lost: {why}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_checked_with_its_numbers() {
        let s = Duration::from_secs;
        let err = |ttl, margin| {
            LeadershipConfig { ttl, margin }
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert!(LeadershipConfig::default().validate().is_ok());
        assert!(err(Duration::ZERO, Duration::ZERO).contains("ttl = 0s: must be at least 1s"));
        assert!(err(s(7200), s(1)).contains("ttl = 2h: must be at most 1h"));
        let margin = err(s(5), s(5));
        assert!(
            margin.contains("margin = 5s: must be less than ttl (5s)"),
            "{margin}"
        );
        let parsed: LeadershipConfig = serde_json::from_str(r#"{"ttl": "3s"}"#).unwrap();
        assert_eq!((parsed.ttl, parsed.margin), (s(3), s(2)));
    }

    #[test]
    fn only_a_leader_before_its_deadline_may_act() {
        let now = Instant::now();
        let leader = LeaderState::Leader {
            since: now,
            create_revision: 7,
            lease: LeaseId::new(1),
            deadline: now + Duration::from_secs(1),
        };
        assert!(leader.is_leader_at(now));
        assert!(!leader.is_leader_at(now + Duration::from_secs(1)));
        assert_eq!(leader.create_revision(), Some(7));
        let follower = LeaderState::Follower { leader: None };
        assert!(!follower.is_leader_at(now));
        assert_eq!(follower.create_revision(), None);
    }
}
