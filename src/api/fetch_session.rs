//! Incremental fetch sessions (KIP-227), as Kafka's `FetchManager`, `FetchSession` and
//! `FetchSessionCache`: the broker remembers what a fetcher asks for and what it was last
//! told, so each later request names only what changed and each response carries only the
//! partitions with something to say.
//!
//! A request's `(session_id, epoch)` picks its [`Context`] ([`FetchSessionCache::begin`]):
//! - epoch -1 (final): sessionless; a session it names is closed first.
//! - epoch 0 (initial): a full fetch that makes a session of its partitions when the cache
//!   has (or can free) a slot ([`FetchSessionCache::create`]); a session it names is closed.
//! - epoch > 0: the session's next request. Its partitions are added to or update the
//!   session, its forgotten partitions leave it, and the fetch covers every partition of
//!   the session (visiting those that may have news, see below), in the session's order.
//!   The response lists only partitions with records, an error, or offsets this session
//!   has not yet sent ([`must_respond`]); those move to the end of the order so one busy
//!   partition cannot starve the rest of the byte limit ([`FetchSessionCache::commit`]).
//!
//! Sessions are keyed by id alone (any connection may use one, as in Kafka), by topic id
//! from Fetch v13 and by topic name before; a session never changes between the two.
//!
//! Bounds: `max.incremental.fetch.session.cache.slots` sessions, evicted as Kafka's
//! `tryEvict` does, and [`CACHED_PARTITIONS_MAX`] partitions over all sessions (Kafka has
//! no such bound: a session grows by every partition an incremental request adds, so the
//! request size alone does not bound it). A session that would pass it is closed and its
//! request served sessionless, which clients take as "start a new session".
//!
//! The cache is one `Mutex` held for map updates only, never across an await: the fetch
//! reads, parks and encodes from a copy of the session's partitions ([`Incremental`]).
//!
//! An incremental fetch visits (reads, records a follower's progress for, lists) only the
//! partitions that may have something to say, so a fetch of a session of a thousand idle
//! partitions and one busy one costs about what a session of one would. Each partition of
//! a session has a slot in its [`SessionWatch`], registered with the partition by the
//! first fetch that visits it (again after a lapse, `waits::LAPSE_MS`); the partition marks
//! the slot at every change of its version. A fetch visits:
//! - the partitions the request adds or updates;
//! - those whose last answer was not a quiet read (records, an error, a limit or throttle
//!   held records back): what a read finds depends on more than their version;
//! - those marked since the last fetch (drained before anything is read, so a change
//!   during the fetch marks its slot again);
//! - every partition, in sessions under [`TRACKED_MIN`] partitions (which do not track
//!   changes at all, and park as sessionless fetches do);
//! - every partition, at the first fetch after the session was made, when the fetcher's
//!   read bound changes (a consumer switching isolation level), after a fetch whose visit
//!   was not recorded (throttled, overtaken, failed, dropped; it also hands its marks back
//!   to a fetch of the session parked meanwhile), after the session lapsed, and at the
//!   first fetch `whole_visit_ms` after the last such visit
//!   ([`FetchSessionCache::with_whole_visit_ms`]).
//!
//! A partition left unvisited has the same version, fetch position and read bound as at
//! its last answer, a quiet read: a read would find nothing and the same offsets, so the
//! response would leave it out anyway. What skipping it leaves undone is a follower's
//! fetch time at the leader, and the whole visits keep that within `whole_visit_ms` (plus
//! one fetch interval) of Kafka's: the broker makes it a tenth of
//! `replica.lag.time.max.ms` at most, so an idle follower's last caught-up time is never
//! old enough to count as lag. One check Kafka makes at every fetch waits for a visit, so
//! it comes up to `whole_visit_ms` later: a caught-up follower outside the ISR that became
//! eligible for it (unfenced, out of controlled shutdown) by an image change alone is
//! proposed at the next visit of each idle partition.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::TopicName;
use uuid::Uuid;

use crate::replica::waits::{Drained, SessionWatch};
use crate::replica::{PartitionVersion, ReadBound};
use crate::types::NodeId;

/// How long a session must go unused before any request may evict it, and how old a
/// session must be before a larger one may take its slot: Kafka's hard-coded
/// `FetchSessionCache` eviction age.
pub const EVICTION_MS: u64 = 120_000;

/// Partitions cached over all sessions. A cached partition costs about 400 bytes (its entry
/// in the ordered map, its key in the index, its slot in the session's maps and watch and
/// its registration with the partition; topic names are shared), so this bounds the cache
/// near 400 MB; the default 1,000 slots of fetchers of 1,000 partitions each fit.
pub const CACHED_PARTITIONS_MAX: usize = 1_000_000;

/// The longest an incremental fetch session goes between visits of every partition (see
/// the module's notes), unless the broker asks for less.
pub const WHOLE_VISIT_MS_MAX: u64 = 1_000;

/// Sessions of fewer partitions are not tracked: every fetch visits all of them and parks
/// on each, as sessionless fetches do. Tracking costs a fetch about what visiting a dozen
/// idle partitions does (the drain, the visit's bookkeeping, a registration check), so it
/// pays only for larger sessions: a follower's of a 6-partition topic over 3 brokers
/// (2 partitions a session) cost 4-6% more broker CPU per record with it.
pub const TRACKED_MIN: usize = 16;

/// The session id of "no session" (Kafka's `INVALID_SESSION_ID`).
pub const INVALID_SESSION_ID: i32 = 0;
/// A full fetch that may create a session.
const INITIAL_EPOCH: i32 = 0;
/// A full fetch that closes any session and creates none.
const FINAL_EPOCH: i32 = -1;

/// The epoch after `epoch` (Kafka's `FetchMetadata.nextEpoch`): it wraps to 1, never to the
/// initial or final epoch.
pub fn next_epoch(epoch: i32) -> i32 {
    match epoch {
        epoch if epoch < 0 => FINAL_EPOCH,
        i32::MAX => 1,
        epoch => epoch + 1,
    }
}

/// A session's partition: by topic id in sessions made with topic ids, by name before.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PartitionKey {
    Id(Uuid, i32),
    Name(TopicName, i32),
}

/// One partition as a fetcher asks for it (Kafka's cached request data).
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionFetch {
    /// The name the request resolved to (empty for an unknown topic id; sessions with
    /// topic ids resolve it again at every fetch).
    pub topic: TopicName,
    /// Nil in sessions without topic ids.
    pub topic_id: Uuid,
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: usize,
    /// The fetcher's own log start offset (a follower's; -1 from consumers).
    pub log_start_offset: i64,
    pub current_leader_epoch: i32,
}

impl PartitionFetch {
    pub fn key(&self, uses_topic_ids: bool) -> PartitionKey {
        match uses_topic_ids {
            true => PartitionKey::Id(self.topic_id, self.partition),
            false => PartitionKey::Name(self.topic.clone(), self.partition),
        }
    }
}

/// A read that found nothing past its fetch offset, at the partition's change version
/// (`Partition::version`): while the version holds, a read from the same offset to the
/// same bound finds the same, so the next fetch of the session answers it unread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietRead {
    pub version: PartitionVersion,
    /// What the read was asked: from this offset, under this leader epoch, to this bound.
    pub fetch_offset: i64,
    pub current_leader_epoch: i32,
    pub bound: ReadBound,
    pub log_end_offset: i64,
}

/// What a response says of one partition, as far as a session cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub last_stable_offset: i64,
    pub has_records: bool,
    pub error: bool,
    /// Set when the read found nothing to send (not when a limit held records back).
    pub quiet: Option<QuietRead>,
}

/// What the session last sent for a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub last_stable_offset: i64,
    /// The read those offsets came from, if it was quiet (see [`QuietRead`]).
    pub quiet: Option<QuietRead>,
}

impl Sent {
    /// A partition nothing was sent for yet: its first answer always goes out.
    pub const NOTHING: Sent = Sent {
        high_watermark: -1,
        log_start_offset: -1,
        last_stable_offset: -1,
        quiet: None,
    };

    /// What the session remembers after sending `answer`. An error is remembered as an
    /// unknown high watermark so the partition is sent again once the error clears.
    pub fn after(answer: &Answer) -> Sent {
        Sent {
            high_watermark: if answer.error {
                -1
            } else {
                answer.high_watermark
            },
            log_start_offset: answer.log_start_offset,
            last_stable_offset: answer.last_stable_offset,
            quiet: answer.quiet,
        }
    }
}

/// Kafka's `CachedPartition.maybeUpdateResponseData`: records, an error, or a high
/// watermark or log start offset other than the one last sent. A moved last stable offset
/// counts too (read_committed consumers wait on it; Kafka leaves it out).
pub fn must_respond(sent: &Sent, answer: &Answer) -> bool {
    answer.has_records
        || answer.error
        || sent.high_watermark != answer.high_watermark
        || sent.log_start_offset != answer.log_start_offset
        || sent.last_stable_offset != answer.last_stable_offset
}

/// What a request's session fields make of it (Kafka's `FetchContext` kinds).
#[derive(Debug)]
pub enum Context {
    /// Answer the request's partitions with session id 0.
    Sessionless,
    /// Answer the request's partitions, then try to make a session of them.
    Full,
    /// Answer from a session's partitions, only those with something to say.
    Incremental(Incremental),
    /// A top-level error, no partitions, session id 0.
    Error(ResponseError),
}

/// An incremental fetch: a copy of the session's partitions it visits, taken when the
/// request updated the session, so nothing is held while the fetch reads and parks.
pub struct Incremental {
    pub session_id: i32,
    /// The epoch this request moved the session to: its response stands only while the
    /// session is still at it (a second request with the same epoch would have moved it).
    pub epoch: i32,
    pub uses_topic_ids: bool,
    /// The partitions this fetch visits, in fetch order, with what was last sent of each.
    pub partitions: Vec<(PartitionFetch, Sent)>,
    /// Their slots in the session's watch, in the same order.
    pub slots: Vec<u64>,
    /// The session's watch if the session tracks its partitions' changes
    /// ([`TRACKED_MIN`]): the fetch registers each partition it visits with it, and parks
    /// on it. Untracked, the fetch parks on its partitions themselves.
    pub watch: Option<Arc<SessionWatch>>,
    /// Every partition of the session is visited.
    pub whole: bool,
}

impl std::fmt::Debug for Incremental {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (f.debug_struct("Incremental"))
            .field("session_id", &self.session_id)
            .field("epoch", &self.epoch)
            .field("partitions", &self.partitions.len())
            .field("whole", &self.whole)
            .field("tracked", &self.watch.is_some())
            .finish_non_exhaustive()
    }
}

impl Incremental {
    /// Which partitions the response lists, and what the session should remember of them
    /// (Kafka's `PartitionIterator`). `answers` follows `partitions`. A partition left out
    /// is remembered anew when its quiet read changed (its offsets are the ones sent), so
    /// the next fetch can answer it unread.
    pub fn respond(&self, answers: &[Answer]) -> (Vec<bool>, Vec<Responded>) {
        assert_eq!(answers.len(), self.partitions.len());
        let mut keep = Vec::with_capacity(answers.len());
        let mut responded = Vec::new();
        for ((fetch, sent), answer) in self.partitions.iter().zip(answers) {
            let listed = must_respond(sent, answer);
            if listed || sent.quiet != answer.quiet {
                responded.push(Responded {
                    key: fetch.key(self.uses_topic_ids),
                    sent: Sent::after(answer),
                    had_records: answer.has_records,
                });
            }
            keep.push(listed);
        }
        (keep, responded)
    }
}

/// A partition an incremental response lists, or one left out whose quiet read changed.
#[derive(Debug)]
pub struct Responded {
    pub key: PartitionKey,
    pub sent: Sent,
    /// Only these move to the end of the order (Kafka 4.x's `PartitionIterator`): under
    /// load every partition's high watermark moves every round, and moving those listed
    /// for that alone would keep the order, so the same partitions would fill the byte
    /// limit every time.
    pub had_records: bool,
}

/// The changes an incremental request makes to its session: partitions added or updated
/// (in request order), then partitions forgotten.
#[derive(Debug, Default)]
pub struct SessionChanges {
    pub upserts: Vec<PartitionFetch>,
    pub forgotten: Vec<PartitionKey>,
}

/// Who reads, as far as a quiet read depends on it: the follower fetching (if any) and
/// where its reads stop.
pub type Reader = (Option<NodeId>, ReadBound);

/// A request's session fields.
#[derive(Clone, Copy, Debug)]
pub struct SessionRequest {
    pub session_id: i32,
    pub epoch: i32,
    /// Fetch v13 and later name topics by id.
    pub uses_topic_ids: bool,
    pub reader: Reader,
}

struct CachedPartition {
    fetch: PartitionFetch,
    sent: Sent,
    /// Its slot in the session's watch.
    slot: u64,
}

struct Session {
    /// Made by a follower's fetch: followers may evict consumers' sessions.
    privileged: bool,
    uses_topic_ids: bool,
    /// The epoch the next incremental request must carry.
    epoch: i32,
    created_ms: u64,
    last_used_ms: u64,
    /// The partitions in fetch order: by a sequence number that grows as partitions are
    /// added or moved to the end.
    order: BTreeMap<u64, CachedPartition>,
    index: HashMap<PartitionKey, u64>,
    sequence_next: u64,
    /// Slot -> sequence, for the slots `watch` marks.
    slots: HashMap<u64, u64>,
    slot_next: u64,
    /// The slots whose last answer was not a quiet read: visited at every fetch.
    unsettled: HashSet<u64>,
    watch: Arc<SessionWatch>,
    /// When a fetch next visits every partition (0: the next fetch).
    whole_due_ms: u64,
    /// Who read at the last fetch.
    reader: Option<Reader>,
}

impl Session {
    fn new(privileged: bool, uses_topic_ids: bool, now_ms: u64) -> Session {
        Session {
            privileged,
            uses_topic_ids,
            epoch: next_epoch(INITIAL_EPOCH),
            created_ms: now_ms,
            last_used_ms: now_ms,
            order: BTreeMap::new(),
            index: HashMap::new(),
            sequence_next: 0,
            slots: HashMap::new(),
            slot_next: 0,
            unsettled: HashSet::new(),
            watch: Arc::new(SessionWatch::new(now_ms)),
            // The full fetch that made the session read before any partition stood
            // registered with it: the first incremental fetch visits them all.
            whole_due_ms: 0,
            reader: None,
        }
    }

    fn len(&self) -> usize {
        assert_eq!(self.order.len(), self.index.len());
        self.order.len()
    }

    /// Puts a partition at the end of the order.
    fn push(&mut self, key: PartitionKey, cached: CachedPartition) {
        let sequence = self.sequence_next;
        self.sequence_next += 1;
        self.slots.insert(cached.slot, sequence);
        assert!(self.order.insert(sequence, cached).is_none());
        assert!(self.index.insert(key, sequence).is_none());
    }

    /// Adds a partition at the end, with a new slot.
    fn add(&mut self, key: PartitionKey, fetch: PartitionFetch, sent: Sent) -> u64 {
        let slot = self.slot_next;
        self.slot_next += 1;
        self.watch.add(slot);
        if sent.quiet.is_none() {
            self.unsettled.insert(slot);
        }
        self.push(key, CachedPartition { fetch, sent, slot });
        slot
    }

    /// Adds the partition at the end, or updates its request data in place; its slot.
    fn upsert(&mut self, fetch: PartitionFetch) -> u64 {
        let key = fetch.key(self.uses_topic_ids);
        match self.index.get(&key) {
            Some(sequence) => {
                let cached = self.order.get_mut(sequence).expect("indexed partition");
                cached.fetch = fetch;
                cached.slot
            }
            None => self.add(key, fetch, Sent::NOTHING),
        }
    }

    fn forget(&mut self, key: &PartitionKey) {
        if let Some(sequence) = self.index.remove(key) {
            let cached = self.order.remove(&sequence).expect("indexed partition");
            self.slots.remove(&cached.slot);
            self.unsettled.remove(&cached.slot);
            self.watch.remove(cached.slot);
        }
    }

    /// Records what was sent; a partition that had records moves to the end of the order.
    fn sent(&mut self, responded: Responded) {
        let Responded {
            key,
            sent,
            had_records,
        } = responded;
        let Some(&sequence) = self.index.get(&key) else {
            return;
        };
        let cached = self.order.get_mut(&sequence).expect("indexed partition");
        match sent.quiet {
            Some(_) => self.unsettled.remove(&cached.slot),
            None => self.unsettled.insert(cached.slot),
        };
        cached.sent = sent;
        if !had_records {
            return;
        }
        self.index.remove(&key);
        let cached = self.order.remove(&sequence).expect("indexed partition");
        self.push(key, cached);
    }

    /// The fetch of session `id` at `now_ms`, at the session's (new) epoch, and what it
    /// visits (see the module's notes): every partition, or those of `drained` plus the
    /// unsettled ones, in fetch order.
    fn visit(
        &mut self,
        id: i32,
        drained: Drained,
        (reader, now_ms): (Reader, u64),
        rules: VisitRules,
    ) -> Incremental {
        let Drained { slots, lapsed } = drained;
        let whole = lapsed || now_ms >= self.whole_due_ms || self.reader != Some(reader);
        self.reader = Some(reader);
        let tracked = self.len() >= rules.tracked_min;
        let (partitions, slots) = if whole || !tracked {
            // Untracked, the next tracked fetch starts with a whole visit: nothing stands.
            self.whole_due_ms = match tracked {
                true => now_ms.saturating_add(rules.whole_ms),
                false => 0,
            };
            (self.order.values())
                .map(|cached| ((cached.fetch.clone(), cached.sent), cached.slot))
                .unzip()
        } else {
            let mut sequences: Vec<u64> = (slots.iter().chain(&self.unsettled))
                .filter_map(|slot| self.slots.get(slot).copied())
                .collect();
            sequences.sort_unstable();
            sequences.dedup();
            (sequences.iter())
                .map(|sequence| {
                    let cached = &self.order[sequence];
                    ((cached.fetch.clone(), cached.sent), cached.slot)
                })
                .unzip()
        };
        Incremental {
            session_id: id,
            epoch: self.epoch,
            uses_topic_ids: self.uses_topic_ids,
            partitions,
            slots,
            watch: tracked.then(|| Arc::clone(&self.watch)),
            whole: whole || !tracked,
        }
    }

    /// Old enough (as of its last use) for a larger session to take its slot.
    fn evictable_by_all(&self) -> bool {
        self.last_used_ms.saturating_sub(self.created_ms) > EVICTION_MS
    }

    fn evictable_by_privileged(&self) -> bool {
        !self.privileged || self.evictable_by_all()
    }
}

/// Session ids: xorshift64*, seeded at random by the broker (ids are not guessable) and
/// fixed by tests.
struct IdSource(u64);

impl IdSource {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// How a cache's sessions choose what a fetch visits.
#[derive(Clone, Copy)]
struct VisitRules {
    whole_ms: u64,
    tracked_min: usize,
}

/// Kafka's `EvictableKey`: the least valuable session is the smallest key.
fn rank(privileged: bool, size: usize, id: i32) -> (bool, usize, i32) {
    (privileged, size, id)
}

struct CacheState {
    sessions: HashMap<i32, Session>,
    partitions_cached: usize,
    ids: IdSource,
}

/// The broker's fetch sessions, shared by every connection.
pub struct FetchSessionCache {
    slots_max: usize,
    /// [`CACHED_PARTITIONS_MAX`] but in tests.
    partitions_max: usize,
    state: Mutex<CacheState>,
    evictions: AtomicU64,
    /// The longest between an incremental session's visits of every partition.
    whole_visit_ms: u64,
    /// [`TRACKED_MIN`] but in tests.
    tracked_min: usize,
}

impl FetchSessionCache {
    /// `slots_max` is `max.incremental.fetch.session.cache.slots` (0: no sessions);
    /// `seed` picks the session ids.
    pub fn new(slots_max: usize, seed: u64) -> FetchSessionCache {
        FetchSessionCache::with_partitions_max(slots_max, CACHED_PARTITIONS_MAX, seed)
    }

    fn with_partitions_max(slots_max: usize, partitions_max: usize, seed: u64) -> Self {
        FetchSessionCache {
            slots_max,
            partitions_max,
            state: Mutex::new(CacheState {
                sessions: HashMap::new(),
                partitions_cached: 0,
                ids: IdSource(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            }),
            evictions: AtomicU64::new(0),
            whole_visit_ms: WHOLE_VISIT_MS_MAX,
            tracked_min: TRACKED_MIN,
        }
    }

    /// Tracks sessions of `tracked_min` partitions or more.
    #[cfg(test)]
    fn with_tracked_min(mut self, tracked_min: usize) -> FetchSessionCache {
        self.tracked_min = tracked_min;
        self
    }

    /// Visits every partition of an incremental session at least every `ms` (at most
    /// [`WHOLE_VISIT_MS_MAX`]): the broker passes a tenth of `replica.lag.time.max.ms`.
    pub fn with_whole_visit_ms(mut self, ms: u64) -> FetchSessionCache {
        self.whole_visit_ms = ms.min(WHOLE_VISIT_MS_MAX);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The context of a request (Kafka's `FetchManager.newContext`). `changes` is asked
    /// for only when the request continues a session.
    pub fn begin(
        &self,
        request: SessionRequest,
        now_ms: u64,
        changes: impl FnOnce() -> SessionChanges,
    ) -> Context {
        match (request.session_id, request.epoch) {
            (INVALID_SESSION_ID, FINAL_EPOCH) => Context::Sessionless,
            (INVALID_SESSION_ID, INITIAL_EPOCH) => Context::Full,
            // Not a full fetch, so Kafka's `newContext` looks session 0 up and finds none.
            (INVALID_SESSION_ID, _) => Context::Error(ResponseError::FetchSessionIdNotFound),
            (id, FINAL_EPOCH) => {
                self.lock().remove(id);
                Context::Sessionless
            }
            (id, INITIAL_EPOCH) => {
                self.lock().remove(id);
                Context::Full
            }
            (_, _) => {
                let changes = changes();
                let rules = VisitRules {
                    whole_ms: self.whole_visit_ms,
                    tracked_min: self.tracked_min,
                };
                let bounds = (self.partitions_max, rules);
                self.lock()
                    .continue_session(request, now_ms, changes, bounds)
            }
        }
    }

    /// Makes a session of a full fetch's partitions if there is a slot or one can be freed
    /// (Kafka's `maybeCreateSession`); its id, or 0.
    pub fn create(
        &self,
        privileged: bool,
        uses_topic_ids: bool,
        now_ms: u64,
        partitions: Vec<(PartitionFetch, Sent)>,
    ) -> i32 {
        let mut state = self.lock();
        let size = partitions.len();
        if state.partitions_cached + size > self.partitions_max {
            return INVALID_SESSION_ID;
        }
        if state.sessions.len() >= self.slots_max {
            if !state.try_evict(privileged, size, now_ms) {
                return INVALID_SESSION_ID;
            }
            self.evictions.fetch_add(1, Relaxed);
        }
        let mut session = Session::new(privileged, uses_topic_ids, now_ms);
        for (fetch, sent) in partitions {
            session.forget(&fetch.key(uses_topic_ids));
            session.add(fetch.key(uses_topic_ids), fetch, sent);
        }
        let id = state.new_session_id();
        state.partitions_cached += session.len();
        state.sessions.insert(id, session);
        id
    }

    /// Records what an incremental response sends (Kafka's `updateAndGenerateResponseData`):
    /// INVALID_FETCH_SESSION_EPOCH if another request moved the session on meanwhile. A
    /// session evicted meanwhile is not an error: the answer stands and the next request
    /// learns the session is gone.
    pub fn commit(
        &self,
        incremental: &Incremental,
        responded: Vec<Responded>,
    ) -> Result<(), ResponseError> {
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(&incremental.session_id) else {
            return Ok(());
        };
        if session.epoch != incremental.epoch {
            return Err(ResponseError::InvalidFetchSessionEpoch);
        }
        for responded in responded {
            session.sent(responded);
        }
        Ok(())
    }

    /// Adds to a parked incremental fetch the partitions of `slots` (its session's, marked
    /// since it began) it does not visit yet: their copies are appended to its partitions.
    /// The number added; None once the session has moved on or gone (the fetch's answer
    /// would not stand).
    pub fn extend(&self, incremental: &mut Incremental, slots: Vec<u64>) -> Option<usize> {
        let mut visited: HashSet<u64> = incremental.slots.iter().copied().collect();
        let state = self.lock();
        let session = state.current(incremental)?;
        let mut added = 0;
        for slot in slots {
            let Some(sequence) = session.slots.get(&slot) else {
                continue;
            };
            if !visited.insert(slot) {
                continue;
            }
            let cached = &session.order[sequence];
            incremental
                .partitions
                .push((cached.fetch.clone(), cached.sent));
            incremental.slots.push(slot);
            added += 1;
        }
        Some(added)
    }

    /// The session of `incremental` is still at its epoch: its answer would stand.
    pub fn is_current(&self, incremental: &Incremental) -> bool {
        self.lock().current(incremental).is_some()
    }

    /// An incremental fetch whose visit was not recorded (its response throttled, refused
    /// or never built): the session's next fetch visits every partition, as the marks this
    /// one drained are gone.
    pub fn revisit(&self, session_id: i32) {
        if let Some(session) = self.lock().sessions.get_mut(&session_id) {
            session.whole_due_ms = 0;
        }
    }

    /// The epoch check of a throttled incremental response, which changes nothing.
    pub fn check_epoch(&self, incremental: &Incremental) -> Result<(), ResponseError> {
        let state = self.lock();
        match state.sessions.get(&incremental.session_id) {
            Some(session) if session.epoch != incremental.epoch => {
                Err(ResponseError::InvalidFetchSessionEpoch)
            }
            _ => Ok(()),
        }
    }

    /// (sessions, partitions cached): Kafka's `NumIncrementalFetchSessions` and
    /// `NumIncrementalFetchPartitionsCached`.
    pub fn sizes(&self) -> (usize, usize) {
        let state = self.lock();
        (state.sessions.len(), state.partitions_cached)
    }

    /// Sessions evicted to make room (Kafka's `IncrementalFetchSessionEvictionsPerSec`).
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Relaxed)
    }
}

impl CacheState {
    /// The session of `incremental`, if still at its epoch.
    fn current(&self, incremental: &Incremental) -> Option<&Session> {
        let session = self.sessions.get(&incremental.session_id)?;
        (session.epoch == incremental.epoch).then_some(session)
    }

    fn remove(&mut self, id: i32) {
        if let Some(session) = self.sessions.remove(&id) {
            self.partitions_cached -= session.len();
        }
    }

    fn continue_session(
        &mut self,
        request: SessionRequest,
        now_ms: u64,
        changes: SessionChanges,
        (partitions_max, rules): (usize, VisitRules),
    ) -> Context {
        let id = request.session_id;
        let Some(session) = self.sessions.get_mut(&id) else {
            return Context::Error(ResponseError::FetchSessionIdNotFound);
        };
        if session.epoch != request.epoch {
            return Context::Error(ResponseError::InvalidFetchSessionEpoch);
        }
        if session.uses_topic_ids != request.uses_topic_ids {
            return Context::Error(ResponseError::FetchSessionTopicIdError);
        }
        if self.partitions_cached + changes.upserts.len() > partitions_max {
            // Checked before the partitions go in: a hostile request would otherwise grow
            // the cache past its bound, under the lock every fetch takes, before being
            // refused. Closed and served sessionless, as below.
            self.remove(id);
            return Context::Sessionless;
        }
        let before = session.len();
        // Drained before the fetch reads anything: a change from now on marks again.
        let mut visit = session.watch.drain(now_ms);
        for fetch in changes.upserts {
            visit.slots.push(session.upsert(fetch));
        }
        for key in &changes.forgotten {
            session.forget(key);
        }
        let after = session.len();
        self.partitions_cached = self.partitions_cached - before + after;
        if after == 0 || self.partitions_cached > partitions_max {
            // Kafka closes a session left empty and serves the request sessionless.
            self.remove(id);
            return Context::Sessionless;
        }
        session.last_used_ms = now_ms;
        session.epoch = next_epoch(session.epoch);
        Context::Incremental(session.visit(id, visit, (request.reader, now_ms), rules))
    }

    /// Kafka's `tryEvict` for a new session of `size` partitions: the least recently used
    /// session if unused for longer than [`EVICTION_MS`]; else the least valuable session
    /// this one may evict, if it is worth less. Says whether a slot was freed.
    fn try_evict(&mut self, privileged: bool, size: usize, now_ms: u64) -> bool {
        let stale = (self.sessions.iter())
            .min_by_key(|(id, session)| (session.last_used_ms, **id))
            .map(|(id, session)| (*id, session.last_used_ms));
        let Some((stale_id, last_used_ms)) = stale else {
            return false;
        };
        if now_ms.saturating_sub(last_used_ms) > EVICTION_MS {
            self.remove(stale_id);
            return true;
        }
        let candidate = (self.sessions.iter())
            .filter(|(_, session)| match privileged {
                true => session.evictable_by_privileged(),
                false => session.evictable_by_all(),
            })
            .map(|(id, session)| rank(session.privileged, session.len(), *id))
            .min();
        match candidate {
            // The new session's key has id 0, below every real id: an equal size loses.
            Some(least) if rank(privileged, size, INVALID_SESSION_ID) >= least => {
                self.remove(least.2);
                true
            }
            _ => false,
        }
    }

    /// A random positive id no session has.
    fn new_session_id(&mut self) -> i32 {
        loop {
            let id = 1 + (self.ids.next_u64() % (i32::MAX as u64 - 1)) as i32;
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
#[path = "fetch_session_tests.rs"]
mod tests;
