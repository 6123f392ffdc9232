//! The follower's side of an incremental fetch session (KIP-227), as Kafka's
//! `FetchSessionHandler`: after a full request that opens a session on the leader, each
//! request names only the partitions whose fetch state changed since they were last sent
//! (added or altered) plus those no longer wanted (forgotten), and the leader answers only
//! the partitions with news. With a thousand followed partitions a round then carries the
//! few that moved instead of all of them, both ways.
//!
//! Pure: [`FetchSession::build`] turns the partitions wanted this round into a request's
//! parts ([`FetchSession::build_changed`] does it from only those whose data may have
//! changed, when every other partition of the session is still wanted),
//! [`FetchSession::handle_response`] checks the answer against the session and says
//! which partitions it answers (with what the session last sent for them), and
//! [`FetchSession::handle_error`] is told when a request got no answer. The fetcher
//! (`super::fetcher`) does the I/O.
//!
//! A leader that declines sessions answers session id 0: the follower then sends a full
//! request every round, which is what it did before sessions.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use thiserror::Error;
use uuid::Uuid;

/// No session (Kafka's `INVALID_SESSION_ID`).
pub const INVALID_SESSION_ID: i32 = 0;
/// The epoch of a full request that asks for a new session.
pub const INITIAL_EPOCH: i32 = 0;
/// The epoch of a full request that wants no session (and closes the one named).
pub const FINAL_EPOCH: i32 = -1;

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;

/// A partition as the session knows it: by topic id, so a topic deleted and created again
/// under the same name is a different partition (forgotten, then added), as Kafka's
/// "replaced" partitions from Fetch v13.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionPartition {
    pub topic_id: Uuid,
    pub partition: i32,
}

/// Session partitions by key, hashed by [`KeyHasher`]: for this broker's own session keys
/// only, never for keys taken from a request.
pub type KeyMap<V> = HashMap<SessionPartition, V, BuildHasherDefault<KeyHasher>>;
type KeySet = HashSet<SessionPartition, BuildHasherDefault<KeyHasher>>;

/// A multiply-mix hash of a session key's words. Every partition of a round is hashed
/// twice in [`FetchSession::build`], and SipHash was a few percent of a follower's CPU at
/// a thousand partitions. Its defence against chosen keys is not needed here: the keys
/// are topic ids the controller drew at random and partition numbers, from this broker's
/// own metadata image, not from a peer. Never use it for keys taken from a request: its
/// constants are fixed, so colliding keys are easy to choose.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        // FxHash's step: rotate, mix the word in, multiply by an odd constant.
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, word: u32) {
        self.write_u64(u64::from(word));
    }

    fn write_i32(&mut self, word: i32) {
        self.write_u32(word as u32);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        // The table picks buckets by the low bits and tags by the high ones: fold the
        // well-mixed high half down.
        self.0 ^ (self.0 >> 32)
    }
}

/// What a request says about one partition (Kafka's `FetchRequest.PartitionData`): a
/// partition whose data differs from what the session last sent is "altered".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchData {
    pub fetch_offset: i64,
    pub log_start_offset: i64,
    pub current_leader_epoch: i32,
    pub last_fetched_epoch: i32,
    pub partition_max_bytes: i32,
}

/// A request's session id and epoch (Kafka's `FetchMetadata`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchMetadata {
    pub session_id: i32,
    pub epoch: i32,
}

impl FetchMetadata {
    /// A full request asking for a new session.
    pub const INITIAL: FetchMetadata = FetchMetadata {
        session_id: INVALID_SESSION_ID,
        epoch: INITIAL_EPOCH,
    };

    /// Full requests name every wanted partition; incremental ones only the changes.
    pub fn is_full(&self) -> bool {
        self.epoch == INITIAL_EPOCH || self.epoch == FINAL_EPOCH
    }

    /// A full request that closes this session and asks for a new one.
    fn next_close_existing(self) -> FetchMetadata {
        FetchMetadata {
            session_id: self.session_id,
            epoch: INITIAL_EPOCH,
        }
    }

    fn new_incremental(session_id: i32) -> FetchMetadata {
        FetchMetadata {
            session_id,
            epoch: next_epoch(INITIAL_EPOCH),
        }
    }

    fn next_incremental(self) -> FetchMetadata {
        FetchMetadata {
            session_id: self.session_id,
            epoch: next_epoch(self.epoch),
        }
    }
}

/// Kafka's `FetchMetadata.nextEpoch`: the epoch after i32::MAX is 1 (0 means "new
/// session"), and nothing follows the final epoch but itself.
fn next_epoch(epoch: i32) -> i32 {
    match epoch {
        epoch if epoch < 0 => FINAL_EPOCH,
        i32::MAX => 1,
        epoch => epoch + 1,
    }
}

/// What to put in one request.
#[derive(Debug, PartialEq, Eq)]
pub struct FetchRequestParts {
    pub metadata: FetchMetadata,
    /// Full: every wanted partition, in the order given. Incremental: the added ones, then
    /// the altered ones.
    pub to_send: Vec<(SessionPartition, FetchData)>,
    /// Partitions in the session no longer wanted (`forgotten_topics_data`); always empty
    /// in a full request, which replaces the session's partitions as a whole.
    pub forgotten: Vec<SessionPartition>,
}

/// The top level of a fetch response.
#[derive(Clone, Copy, Debug)]
pub struct ResponseHeader {
    pub error_code: i16,
    pub session_id: i32,
    pub throttle_time_ms: i32,
}

/// Why a response was not used: its partitions are not processed (Kafka's fetcher takes
/// an empty answer) and the next request is full.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("the leader refused the fetch with error code {0}")]
    Error(i16),
    #[error("an empty full response throttled for {0} ms")]
    Throttled(i32),
    #[error("the response answers {0:?}, which is not in the session")]
    Extra(SessionPartition),
    #[error("the full response leaves out {0:?}")]
    Omitted(SessionPartition),
}

/// One follower's session with one leader.
#[derive(Debug)]
pub struct FetchSession {
    /// The metadata of the next request (and, once built, of the one in flight).
    next: FetchMetadata,
    /// What was last sent for each partition in the session.
    partitions: KeyMap<FetchData>,
}

impl Default for FetchSession {
    fn default() -> Self {
        FetchSession::new()
    }
}

impl FetchSession {
    pub fn new() -> FetchSession {
        FetchSession {
            next: FetchMetadata::INITIAL,
            partitions: KeyMap::default(),
        }
    }

    /// The metadata the next request will carry.
    pub fn next_metadata(&self) -> FetchMetadata {
        self.next
    }

    /// The partitions in the session, with what was last sent for each.
    pub fn partitions(&self) -> &KeyMap<FetchData> {
        &self.partitions
    }

    /// The request for this round, given every partition wanted now (a partition listed
    /// twice counts once, its first entry). The session takes on what is sent.
    pub fn build(&mut self, wanted: Vec<(SessionPartition, FetchData)>) -> FetchRequestParts {
        let mut seen = KeySet::with_capacity_and_hasher(wanted.len(), Default::default());
        let wanted: Vec<_> = (wanted.into_iter())
            .filter(|(key, _)| seen.insert(*key))
            .collect();
        if self.next.is_full() {
            self.partitions = wanted.iter().copied().collect();
            return FetchRequestParts {
                metadata: self.next,
                to_send: wanted,
                forgotten: Vec::new(),
            };
        }
        let forgotten: Vec<SessionPartition> = (self.partitions.keys())
            .filter(|key| !seen.contains(*key))
            .copied()
            .collect();
        for key in &forgotten {
            self.partitions.remove(key);
        }
        FetchRequestParts {
            metadata: self.next,
            to_send: self.take_on(wanted),
            forgotten,
        }
    }

    /// The request for a round in which every partition of the session is still wanted
    /// and only those in `changed` may have other fetch data: the same request as
    /// [`Self::build`] given them all, without looking at the others. None when the next
    /// request is full, which names every partition: then call [`Self::build`].
    pub fn build_changed(
        &mut self,
        changed: Vec<(SessionPartition, FetchData)>,
    ) -> Option<FetchRequestParts> {
        if self.next.is_full() {
            return None;
        }
        Some(FetchRequestParts {
            metadata: self.next,
            to_send: self.take_on(changed),
            forgotten: Vec::new(),
        })
    }

    /// Takes `wanted` into the session; what an incremental request sends of it: the
    /// added partitions, then the altered ones.
    fn take_on(
        &mut self,
        wanted: Vec<(SessionPartition, FetchData)>,
    ) -> Vec<(SessionPartition, FetchData)> {
        let (mut added, mut altered) = (Vec::new(), Vec::new());
        for (key, data) in wanted {
            match self.partitions.insert(key, data) {
                None => added.push((key, data)),
                Some(previous) if previous != data => altered.push((key, data)),
                Some(_) => {}
            }
        }
        added.extend(altered);
        added
    }

    /// Takes the answer to the request last built: the partitions it answers, each with
    /// what the session holds for it (its fetch offset is the one the records follow), in
    /// the order given; or why the whole answer is to be ignored.
    pub fn handle_response(
        &mut self,
        header: ResponseHeader,
        answered: impl IntoIterator<Item = SessionPartition>,
    ) -> Result<Vec<(SessionPartition, FetchData)>, Rejection> {
        if header.error_code != 0 {
            self.next = match header.error_code {
                FETCH_SESSION_ID_NOT_FOUND => FetchMetadata::INITIAL,
                _ => self.next.next_close_existing(),
            };
            return Err(Rejection::Error(header.error_code));
        }
        let full = self.next.is_full();
        let answered = match self.in_session(answered) {
            Ok(answered) => answered,
            Err(rejection) => {
                self.next = match full {
                    true => FetchMetadata::INITIAL,
                    false => self.next.next_close_existing(),
                };
                return Err(rejection);
            }
        };
        if full {
            if answered.is_empty() && header.throttle_time_ms > 0 {
                // KIP-219: a throttled client gets an empty response; not a violation,
                // but there is nothing in it to use.
                self.next = FetchMetadata::INITIAL;
                return Err(Rejection::Throttled(header.throttle_time_ms));
            }
            if let Some(omitted) = self.omitted(&answered) {
                self.next = FetchMetadata::INITIAL;
                return Err(Rejection::Omitted(omitted));
            }
        }
        self.next = match (full, header.session_id) {
            // No session given (full), or the leader closed it (incremental).
            (_, INVALID_SESSION_ID) => FetchMetadata::INITIAL,
            (true, session_id) => FetchMetadata::new_incremental(session_id),
            (false, _) => self.next.next_incremental(),
        };
        Ok(answered)
    }

    /// The request got no answer (connection lost, timed out): the next one is full and
    /// closes the session (Kafka's `handleError`), since the leader may or may not have
    /// moved it on.
    pub fn handle_error(&mut self) {
        self.next = self.next.next_close_existing();
    }

    /// The answered partitions with their session data, each once; the first one the
    /// session does not hold is a protocol violation.
    fn in_session(
        &self,
        answered: impl IntoIterator<Item = SessionPartition>,
    ) -> Result<Vec<(SessionPartition, FetchData)>, Rejection> {
        let mut seen = KeySet::default();
        let mut found = Vec::new();
        for key in answered {
            let Some(data) = self.partitions.get(&key) else {
                return Err(Rejection::Extra(key));
            };
            if seen.insert(key) {
                found.push((key, *data));
            }
        }
        Ok(found)
    }

    /// A session partition a full response leaves out, if any.
    fn omitted(&self, answered: &[(SessionPartition, FetchData)]) -> Option<SessionPartition> {
        if answered.len() == self.partitions.len() {
            return None; // each answered one is in the session, once
        }
        let answered: KeySet = answered.iter().map(|(key, _)| *key).collect();
        (self.partitions.keys())
            .find(|key| !answered.contains(*key))
            .copied()
    }
}

#[cfg(test)]
#[path = "fetch_session_tests.rs"]
mod tests;
