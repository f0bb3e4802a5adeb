//! Broker liveness as the active controller sees it ([`SessionTracker`]):
//! when each broker last heartbeated, which brokers to fence because their
//! session expired, when a fenced broker may be unfenced, and whether a
//! new incarnation may take over a broker id. It is the
//! leader's own memory, not replicated, rebuilt when a controller becomes
//! leader; it never changes the image, it returns the commands to propose.
//! Pure: time is the `now_ms` the caller passes.

use std::collections::BTreeMap;

use crate::command::MetadataCommand;
use crate::error::ClusterError;
use crate::ids::{BrokerEpoch, BrokerId};
use crate::image::{BrokerState, MetadataImage};
use crate::registration::BrokerRegistration;

/// The sessions of the registered brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTracker {
    session_timeout_ms: u64,
    sessions: BTreeMap<BrokerId, Session>,
}

/// One broker incarnation's session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    /// The epoch it belongs to: a new registration starts a new session.
    epoch: BrokerEpoch,
    /// When it was last heard from (or when this tracker started watching).
    last_heartbeat_ms: u64,
    /// A FenceBroker has been proposed for this expiry: not again until
    /// the broker heartbeats.
    fence_proposed: bool,
}

impl Session {
    fn new(epoch: BrokerEpoch, now_ms: u64) -> Session {
        Session {
            epoch,
            last_heartbeat_ms: now_ms,
            fence_proposed: false,
        }
    }
}

/// The answer to a broker's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatAnswer {
    /// The broker is unfenced; its session is refreshed.
    Ok,
    /// The broker is fenced and has not yet applied the image's version of
    /// its own registration: it stays fenced until it has.
    CatchingUp {
        /// The version it must have applied.
        registered_at_version: u64,
    },
    /// The broker is fenced, heartbeats with its current epoch and has
    /// caught up: propose this command (an `UnfenceBroker`). Until it
    /// commits the broker is still fenced, and each heartbeat proposes it
    /// again (applying it twice changes nothing).
    Unfence(MetadataCommand),
    /// This incarnation has shut down: it is never unfenced again.
    ShutDown,
    /// The heartbeat's epoch is not the broker's current one (an earlier
    /// incarnation): refused, the session is not refreshed.
    StaleEpoch {
        /// The broker's current epoch.
        current: BrokerEpoch,
    },
    /// No broker with this id is registered: it must register first.
    UnknownBroker,
}

impl SessionTracker {
    /// A tracker that fences a broker not heard from for more than
    /// `session_timeout_ms`.
    pub fn new(session_timeout_ms: u64) -> SessionTracker {
        SessionTracker {
            session_timeout_ms,
            sessions: BTreeMap::new(),
        }
    }

    /// This controller became the leader at `now_ms`: every registered
    /// broker gets a fresh session starting now. A new leader has not seen
    /// the heartbeats the old one received, so it never fences a broker
    /// for time it did not observe.
    pub fn on_became_leader(&mut self, image: &MetadataImage, now_ms: u64) {
        self.sessions = image
            .brokers()
            .iter()
            .map(|(&id, record)| (id, Session::new(record.epoch, now_ms)))
            .collect();
    }

    /// A heartbeat at `now_ms` from broker `id` with `epoch`, having
    /// applied the image up to `applied_version`.
    pub fn heartbeat(
        &mut self,
        image: &MetadataImage,
        id: BrokerId,
        epoch: BrokerEpoch,
        applied_version: u64,
        now_ms: u64,
    ) -> HeartbeatAnswer {
        let Some(record) = image.broker(id) else {
            return HeartbeatAnswer::UnknownBroker;
        };
        if record.epoch != epoch {
            return HeartbeatAnswer::StaleEpoch {
                current: record.epoch,
            };
        }
        let session = self.session(id, epoch, now_ms);
        // A clock read that went backwards does not shorten the session.
        session.last_heartbeat_ms = session.last_heartbeat_ms.max(now_ms);
        session.fence_proposed = false;
        match record.state {
            BrokerState::Unfenced => HeartbeatAnswer::Ok,
            BrokerState::ShutDown => HeartbeatAnswer::ShutDown,
            BrokerState::Fenced if applied_version < record.registered_at_version => {
                HeartbeatAnswer::CatchingUp {
                    registered_at_version: record.registered_at_version,
                }
            }
            BrokerState::Fenced => {
                HeartbeatAnswer::Unfence(MetadataCommand::UnfenceBroker { id, epoch })
            }
        }
    }

    /// Whether the leader may propose `registration` at `now_ms`. Refused
    /// while the broker id's current incarnation is another one that has
    /// not shut down and was heard from within the session timeout (Kafka's
    /// DUPLICATE_BROKER_REGISTRATION): two processes configured with one id
    /// would otherwise fence each other in turn, and a late retry from a
    /// dead incarnation would take the id from the live one. A broker that
    /// crashed registers again once its old session expires; one that shut
    /// down, at once.
    pub fn check_registration(
        &mut self,
        image: &MetadataImage,
        registration: &BrokerRegistration,
        now_ms: u64,
    ) -> Result<(), ClusterError> {
        let id = registration.id;
        let Some(record) = image.broker(id) else {
            return Ok(());
        };
        if record.registration.incarnation == registration.incarnation
            || record.state == BrokerState::ShutDown
        {
            return Ok(());
        }
        let timeout_ms = self.session_timeout_ms;
        let session = self.session(id, record.epoch, now_ms);
        if now_ms.saturating_sub(session.last_heartbeat_ms) > timeout_ms {
            return Ok(());
        }
        Err(ClusterError::DuplicateBrokerRegistration { id })
    }

    /// The FenceBroker commands to propose at `now_ms`: one for each
    /// unfenced broker not heard from for more than the session timeout,
    /// once per expiry (again only after it heartbeats and expires anew).
    /// A broker whose epoch the tracker has not seen yet (it registered
    /// since) starts its session now.
    pub fn expired(&mut self, image: &MetadataImage, now_ms: u64) -> Vec<MetadataCommand> {
        let mut fence = Vec::new();
        for (&id, record) in image.brokers() {
            if record.state != BrokerState::Unfenced {
                continue;
            }
            let timeout_ms = self.session_timeout_ms;
            let session = self.session(id, record.epoch, now_ms);
            let silent_ms = now_ms.saturating_sub(session.last_heartbeat_ms);
            if silent_ms > timeout_ms && !session.fence_proposed {
                session.fence_proposed = true;
                fence.push(MetadataCommand::FenceBroker {
                    id,
                    epoch: record.epoch,
                });
            }
        }
        fence
    }

    /// A FenceBroker that [`SessionTracker::expired`] gave did not commit
    /// (a timeout, a lost leadership): the next `expired` gives it again.
    pub fn fence_failed(&mut self, id: BrokerId, epoch: BrokerEpoch) {
        if let Some(session) = self.sessions.get_mut(&id) {
            if session.epoch == epoch {
                session.fence_proposed = false;
            }
        }
    }

    /// The session of `id`'s incarnation `epoch`, started at `now_ms` if
    /// the tracker has none for that epoch.
    fn session(&mut self, id: BrokerId, epoch: BrokerEpoch, now_ms: u64) -> &mut Session {
        let session = self
            .sessions
            .entry(id)
            .or_insert_with(|| Session::new(epoch, now_ms));
        if session.epoch != epoch {
            *session = Session::new(epoch, now_ms);
        }
        session
    }
}
