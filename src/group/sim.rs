//! Randomized simulation: five clients join, sync, heartbeat, leave, restart and fall
//! silent at random against one group, with time moving in random steps. After every
//! step the group's invariants and the request contract are checked; at the end, with the
//! clients gone quiet, every request ever parked must have been answered exactly once.
//!
//! Now and then the coordinator fails over (its offsets partition's leadership moves):
//! parked requests are answered NOT_COORDINATOR, as the registry's unload answers them,
//! and the group is rebuilt from the last metadata record it persisted, as the new
//! leader's load rebuilds it. What a client was told had happened (a successful SyncGroup
//! is answered only after its Persist) must survive that.
//!
//! Now and then a metadata write fails (not committed: timeout, leadership lost, too
//! large), as the registry's shell would see it: the answers after it turn into the
//! write's error and the group is told (`Group::write_failed`). Invariant: no member is
//! handed an assignment that the last committed record does not hold, and a Stable group
//! in memory is exactly what that record says.

use std::collections::{BTreeMap, BTreeSet};

use super::testkit::{Harness, T0, assignment_for, protocols};
use super::*;
use crate::sim_rng::Rng;

const CLIENTS: usize = 5;
const STEPS: usize = 3_000;
const SEEDS: u64 = 40;

#[derive(Default)]
struct Client {
    client_id: String,
    instance_id: Option<String>,
    member_id: String,
    generation_id: i32,
    /// The one request this client has in flight, if any.
    in_flight: Option<RequestToken>,
    /// Member list from a JoinGroup answer that made this client leader.
    leader_of: Option<Vec<String>>,
    synced: bool,
    must_rejoin: bool,
}

struct Sim {
    h: Harness,
    rng: Rng,
    now_ms: i64,
    clients: Vec<Client>,
    /// Every token handed to the group and not answered yet, with its client (None once
    /// the client restarted and forgot it).
    open: BTreeMap<RequestToken, Option<usize>>,
    answered: BTreeSet<RequestToken>,
    generation_seen: i32,
    stable_seen: usize,
    /// The latest metadata record committed (what a new leader replays).
    persisted: Option<GroupSnapshot>,
    /// How many metadata writes were made to fail.
    failed_writes: usize,
    /// The highest generation a client was told it synced in.
    synced_generation: i32,
    failovers: usize,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let delay_ms = [0, 0, 3_000][rng.below(3) as usize];
        let mut h = Harness::new(delay_ms);
        if rng.chance(25) {
            h.config.max_size = 3;
        }
        let clients = (0..CLIENTS)
            .map(|i| Client {
                client_id: format!("c{i}"),
                // Two static members, three dynamic.
                instance_id: (i < 2).then(|| format!("i{i}")),
                ..Client::default()
            })
            .collect();
        let open = BTreeMap::new();
        Self {
            h,
            rng,
            now_ms: T0,
            clients,
            open,
            answered: BTreeSet::new(),
            generation_seen: 0,
            stable_seen: 0,
            persisted: None,
            failed_writes: 0,
            synced_generation: 0,
            failovers: 0,
        }
    }

    fn run(&mut self) {
        for _ in 0..STEPS {
            self.step();
            self.check();
        }
        self.drain();
    }

    fn step(&mut self) {
        let client = self.rng.below(CLIENTS as u64) as usize;
        match self.rng.below(100) {
            0..=39 => self.natural_next(client),
            40..=47 => self.join(client),
            48..=51 => self.leave(client),
            52..=54 => self.restart(client),
            55..=56 => self.admin_remove(client),
            57 => self.failover(),
            58..=79 => self.advance(2_000),
            80..=82 => self.advance(40_000),
            _ => self.heartbeat(client),
        }
    }

    /// What a well-behaved client would do next.
    fn natural_next(&mut self, client: usize) {
        let c = &self.clients[client];
        if c.in_flight.is_some() {
            return;
        }
        if c.generation_id == 0 || c.must_rejoin || c.member_id.is_empty() {
            self.join(client);
        } else if !c.synced {
            self.sync(client);
        } else {
            self.heartbeat(client);
        }
    }

    fn join(&mut self, client: usize) {
        if self.clients[client].in_flight.is_some() {
            return;
        }
        let names: &[&str] = match self.rng.below(10) {
            0 => &["roundrobin", "range"],
            1 => &["sticky"],
            _ => &["range", "roundrobin"],
        };
        let c = &self.clients[client];
        let request = JoinRequest {
            member_id: c.member_id.clone(),
            group_instance_id: c.instance_id.clone(),
            client_id: c.client_id.clone(),
            client_host: "/10.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 5_000 + self.rng.below(35_000) as i32,
            protocol_type: "consumer".into(),
            protocols: protocols(names),
            require_known_member_id: self.rng.chance(50),
            supports_skip_assignment: self.rng.chance(50),
            reason: None,
        };
        let (token, effects) = self.h.join(request, self.now_ms);
        self.open.insert(token, Some(client));
        self.clients[client].in_flight = Some(token);
        self.apply(effects);
    }

    fn sync(&mut self, client: usize) {
        let c = &self.clients[client];
        if c.in_flight.is_some() {
            return;
        }
        let assignments = (c.leader_of.iter().flatten())
            .map(|member_id| (member_id.clone(), assignment_for(member_id)))
            .collect();
        let request = SyncRequest {
            member_id: c.member_id.clone(),
            group_instance_id: c.instance_id.clone(),
            generation_id: c.generation_id,
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            assignments,
        };
        let (token, effects) = self.h.sync(request, self.now_ms);
        self.open.insert(token, Some(client));
        self.clients[client].in_flight = Some(token);
        self.apply(effects);
    }

    fn heartbeat(&mut self, client: usize) {
        let c = &self.clients[client];
        let (member_id, instance_id) = (c.member_id.clone(), c.instance_id.clone());
        let result = self.h.group.heartbeat(
            &member_id,
            instance_id.as_deref(),
            c.generation_id,
            self.now_ms,
        );
        self.h.group.check_invariants();
        let c = &mut self.clients[client];
        match result {
            Ok(()) => {}
            Err(GroupError::RebalanceInProgress) | Err(GroupError::IllegalGeneration) => {
                c.must_rejoin = true
            }
            Err(_) => forget_membership(c),
        }
    }

    fn leave(&mut self, client: usize) {
        let c = &self.clients[client];
        let entry = (
            Some(c.member_id.clone()).filter(|id| !id.is_empty()),
            c.instance_id.clone(),
        );
        let (results, effects) = self.h.group.leave(vec![entry], self.now_ms);
        self.h.group.check_invariants();
        assert_eq!(results.len(), 1);
        forget_membership(&mut self.clients[client]);
        self.apply(effects);
    }

    /// An admin removes a static member by instance id (LeaveGroup without member id).
    fn admin_remove(&mut self, client: usize) {
        let Some(instance_id) = self.clients[client].instance_id.clone() else {
            return;
        };
        let (_, effects) = self
            .h
            .group
            .leave(vec![(None, Some(instance_id))], self.now_ms);
        self.h.group.check_invariants();
        self.apply(effects);
    }

    /// The process dies and comes back: in-flight requests are abandoned (the group must
    /// still answer them), and the member id is forgotten (static members keep their
    /// instance id, so their next join replaces the old member).
    fn restart(&mut self, client: usize) {
        let c = &mut self.clients[client];
        if let Some(token) = c.in_flight.take() {
            self.open.insert(token, None);
        }
        forget_membership(c);
    }

    /// The coordinator moves: parked requests answer NOT_COORDINATOR (their clients keep
    /// their membership and retry against the new coordinator), and the group restarts
    /// from its last persisted record.
    fn failover(&mut self) {
        let open: Vec<RequestToken> = self.open.keys().copied().collect();
        for token in open {
            self.close(token);
        }
        let group = match self.persisted.clone() {
            Some(snapshot) => Group::from_snapshot(snapshot, self.now_ms),
            None => Group::new("g", self.now_ms),
        };
        group.check_invariants();
        assert!(
            group.generation() >= self.synced_generation,
            "a failover lost generation {} that SyncGroup acknowledged (reloaded {})",
            self.synced_generation,
            group.generation()
        );
        // The generation may go back to the persisted one (rebalances in between were
        // never written); clients of a later one are told ILLEGAL_GENERATION and rejoin.
        self.generation_seen = group.generation();
        self.h.group = group;
        self.failovers += 1;
    }

    fn advance(&mut self, max_ms: u64) {
        self.now_ms += self.rng.below(max_ms) as i64;
        let effects = self.h.tick(self.now_ms);
        self.apply(effects);
    }

    /// Carries effects out as the registry does: a failed write turns the answers after it
    /// into its error, and then the group is told.
    fn apply(&mut self, effects: Vec<Effect>) {
        let mut write_failed: Option<GroupError> = None;
        for effect in effects {
            let effect = match &write_failed {
                Some(error) => effect.after_failed_write(error),
                None => effect,
            };
            match effect {
                Effect::JoinDone { token, response } => {
                    if let Some(client) = self.close(token) {
                        on_join_answer(&mut self.clients[client], response);
                    }
                }
                Effect::SyncDone { token, response } => {
                    let owner = self.close(token);
                    if response.error.is_none() {
                        let generation = self.h.group.generation();
                        self.synced_generation = self.synced_generation.max(generation);
                        let member_id = owner.map(|c| self.clients[c].member_id.clone());
                        self.check_committed(member_id.as_deref(), &response.assignment);
                    }
                    if let Some(client) = owner {
                        on_sync_answer(&mut self.clients[client], response);
                    }
                }
                Effect::Persist(snapshot) => {
                    assert!(snapshot.generation_id >= self.generation_seen);
                    Group::from_snapshot(snapshot.clone(), self.now_ms).check_invariants();
                    match self.write_fails() {
                        Some(error) => write_failed = Some(error),
                        None => self.persisted = Some(snapshot),
                    }
                }
                Effect::Tombstone { .. } => panic!("nobody deletes in the simulation"),
                Effect::WakeAt(at_ms) => assert!(at_ms > self.now_ms, "wake in the past"),
            }
        }
        if let Some(error) = write_failed {
            let effects = self.h.group.write_failed(&error, self.now_ms);
            self.h.group.check_invariants();
            self.apply(effects);
        }
    }

    /// Whether the next metadata write fails, and how (Kafka's storeGroup mapping).
    fn write_fails(&mut self) -> Option<GroupError> {
        if !self.rng.chance(10) {
            return None;
        }
        self.failed_writes += 1;
        Some(match self.rng.below(3) {
            0 => GroupError::CoordinatorNotAvailable,
            1 => GroupError::NotCoordinator,
            _ => GroupError::UnknownServer,
        })
    }

    /// A successful SyncGroup handed out `assignment` (to `member_id`, if its client still
    /// waits): the committed record must say so, for the group's current generation.
    fn check_committed(&self, member_id: Option<&str>, assignment: &[u8]) {
        let record = self
            .persisted
            .as_ref()
            .expect("an assignment handed out before any record committed");
        assert_eq!(
            record.generation_id,
            self.h.group.generation(),
            "an assignment of a generation whose record did not commit"
        );
        let held = record.members.iter().any(|member| {
            member_id.is_none_or(|id| member.member_id == id) && member.assignment == assignment
        });
        assert!(
            held,
            "{member_id:?} handed an assignment the log does not hold"
        );
    }

    /// Marks a token answered; returns the client still waiting on it.
    fn close(&mut self, token: RequestToken) -> Option<usize> {
        assert!(self.answered.insert(token), "{token:?} answered twice");
        let owner = self
            .open
            .remove(&token)
            .expect("answered a token never handed in");
        let client = owner?;
        let c = &mut self.clients[client];
        assert_eq!(c.in_flight, Some(token));
        c.in_flight = None;
        Some(client)
    }

    fn check(&mut self) {
        let group = &self.h.group;
        group.check_invariants();
        assert!(
            group.generation() >= self.generation_seen,
            "generation went back"
        );
        self.generation_seen = group.generation();
        if let Some(at_ms) = group.next_deadline_ms() {
            assert!(at_ms > self.now_ms, "a due deadline was left unprocessed");
        }
        if group.state() == GroupState::Stable {
            self.stable_seen += 1;
            // Memory says Stable only with what the log says: a reload would agree.
            let record = self.persisted.as_ref().expect("Stable without a record");
            let ours = group.snapshot();
            assert_eq!(
                record.generation_id, ours.generation_id,
                "Stable ahead of the log"
            );
            assert_eq!(record.leader_id, ours.leader_id, "leader not in the log");
            let members = |s: &GroupSnapshot| -> Vec<(String, Vec<u8>)> {
                (s.members.iter())
                    .map(|m| (m.member_id.clone(), m.assignment.clone()))
                    .collect()
            };
            assert_eq!(members(record), members(&ours), "members not in the log");
            for member in group.members() {
                assert!(
                    !member.assignment.is_empty(),
                    "stable member without assignment"
                );
            }
        }
        let members = group.members();
        let leaders = members
            .iter()
            .filter(|m| Some(m.member_id.as_str()) == group.leader_id());
        assert!(leaders.count() <= 1);
        if let Some(leader) = group.leader_id() {
            assert!(
                members.iter().any(|m| m.member_id == leader),
                "leader is not a member"
            );
        }
    }

    /// Everyone falls silent: following `WakeAt` must answer every open request and
    /// empty the group.
    fn drain(&mut self) {
        for _ in 0..1_000 {
            let Some(at_ms) = self.h.group.next_deadline_ms() else {
                break;
            };
            self.now_ms = at_ms;
            let effects = self.h.tick(at_ms);
            self.apply(effects);
            self.check();
        }
        assert!(
            self.open.is_empty(),
            "requests never answered: {:?}",
            self.open
        );
        assert_eq!(self.h.group.next_deadline_ms(), None);
        assert_eq!(self.h.group.state(), GroupState::Empty);
    }
}

fn forget_membership(c: &mut Client) {
    c.member_id.clear();
    c.generation_id = 0;
    c.leader_of = None;
    c.synced = false;
    c.must_rejoin = false;
}

fn on_join_answer(c: &mut Client, response: JoinOutcome) {
    match response.error {
        // The coordinator moved or could not write: rejoin as the same member.
        Some(GroupError::CoordinatorNotAvailable) | Some(GroupError::NotCoordinator) => {
            c.must_rejoin = true
        }
        None => {
            c.member_id = response.member_id;
            c.generation_id = response.generation_id;
            let leads = response.leader == c.member_id && !response.skip_assignment;
            c.leader_of = leads.then(|| {
                response
                    .members
                    .iter()
                    .map(|m| m.member_id.clone())
                    .collect()
            });
            c.synced = false;
            c.must_rejoin = false;
        }
        Some(GroupError::MemberIdRequired { member_id }) => {
            assert_eq!(member_id, response.member_id);
            c.member_id = member_id;
            c.must_rejoin = true;
        }
        Some(GroupError::RebalanceInProgress) => c.must_rejoin = true,
        Some(_) => forget_membership(c),
    }
}

fn on_sync_answer(c: &mut Client, response: SyncOutcome) {
    match response.error {
        None => c.synced = true,
        Some(GroupError::RebalanceInProgress)
        | Some(GroupError::IllegalGeneration)
        | Some(GroupError::CoordinatorNotAvailable)
        | Some(GroupError::NotCoordinator) => c.must_rejoin = true,
        Some(_) => forget_membership(c),
    }
}

#[test]
fn random_clients_keep_the_group_consistent() {
    let mut stable_steps = 0;
    let mut failovers = 0;
    let mut failed_writes = 0;
    for seed in 1..=SEEDS {
        let mut sim = Sim::new(seed);
        sim.run();
        assert!(sim.answered.len() > 100, "seed {seed}: too little happened");
        stable_steps += sim.stable_seen;
        failovers += sim.failovers;
        failed_writes += sim.failed_writes;
    }
    assert!(failovers > 100, "only {failovers} failovers");
    assert!(failed_writes > 100, "only {failed_writes} failed writes");
    // The walk must actually reach Stable, or the invariants above say little.
    assert!(stable_steps > 1_000, "only {stable_steps} stable steps");
}

/// Transactional offset commits against the offsets state, with the loader's replay as
/// the failover: several producers commit offsets inside transactions, consumers commit
/// plainly, offsets are deleted, transactions commit or abort, and now and then the
/// coordinator fails over and rebuilds everything from the log (as `Record`s, through the
/// loader's own rules). A plain commit or tombstone is applied in memory some steps after
/// its append, as the coordinator applies each write only after its replication wait;
/// they hold the group's write lock, so one at a time, while transactional appends and
/// markers go on around them.
///
/// Invariants, after every step: OffsetFetch never shows an offset of an open or aborted
/// transaction; once a transaction's marker commits, every partition it wrote shows its
/// offset or one written later in the log; what every partition shows is the reference
/// answer, computed apart from the store: the latest record in the log among the applied
/// plain commits and tombstones and the offsets of committed transactions;
/// require_stable (`has_pending`) is answered for exactly the partitions an open
/// transaction holds; and a failover's replay shows what memory showed.
mod txn {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use bytes::{BufMut, BytesMut};
    use kafka_protocol::records::{Record, TimestampType};

    use crate::group::loader::replay_records;
    use crate::group::offsets::OffsetStore;
    use crate::group::records::{self, OffsetValue, RecordKey};
    use crate::sim_rng::Rng;

    const PARTITIONS: i32 = 3;
    const PRODUCERS: i64 = 3;
    const STEPS: usize = 2_000;
    const SEEDS: u64 = 30;

    /// What became of the transaction that wrote an offset.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Fate {
        Plain,
        Open(i64),
        Committed,
        Aborted,
    }

    struct TxnSim {
        rng: Rng,
        /// The offsets partition, in log order.
        log: Vec<Record>,
        store: OffsetStore,
        /// Every offset value ever written (each one unique) and its fate.
        fates: HashMap<i64, Fate>,
        /// Where each written value's record sits.
        positions: HashMap<i64, i64>,
        /// Open transactions: producer -> partition -> its latest value there.
        open: BTreeMap<i64, BTreeMap<i32, i64>>,
        /// The plain commit or tombstone in the log, not yet applied in memory.
        unapplied: Option<(i32, Option<i64>, i64)>,
        /// The reference: partition -> (log position, value) of its latest eligible record.
        expected: BTreeMap<i32, (i64, Option<i64>)>,
        next_value: i64,
        commits: usize,
        aborts: usize,
        failovers: usize,
    }

    impl TxnSim {
        fn new(seed: u64) -> TxnSim {
            TxnSim {
                rng: Rng::new(seed),
                log: Vec::new(),
                store: OffsetStore::default(),
                fates: HashMap::new(),
                positions: HashMap::new(),
                open: BTreeMap::new(),
                unapplied: None,
                expected: BTreeMap::new(),
                next_value: 100,
                commits: 0,
                aborts: 0,
                failovers: 0,
            }
        }

        fn step(&mut self) {
            let partition = self.rng.below(PARTITIONS as u64) as i32;
            let producer = self.rng.below(PRODUCERS as u64) as i64;
            match self.rng.below(100) {
                0..=29 => self.txn_commit(producer, partition),
                30..=44 => self.plain_commit(partition, true),
                45..=49 => self.plain_commit(partition, false),
                50..=64 => self.end(producer, true),
                65..=74 => self.end(producer, false),
                75..=94 => self.apply_one(),
                _ => self.failover(),
            }
        }

        fn append(&mut self, mut record: Record) -> i64 {
            let position = self.log.len() as i64;
            record.offset = position;
            self.log.push(record);
            position
        }

        fn value(&mut self, fate: Fate) -> i64 {
            self.next_value += 1;
            self.fates.insert(self.next_value, fate);
            self.next_value
        }

        /// TxnOffsetCommit: appended, and pending in memory at once (under the lock).
        fn txn_commit(&mut self, producer: i64, partition: i32) {
            let value = self.value(Fate::Open(producer));
            let position = self.append(offset_record(partition, Some(value), Some(producer)));
            self.positions.insert(value, position);
            let offset = offset_value(value);
            self.store
                .add_pending(producer, "g", "t", partition, offset, position);
            self.open
                .entry(producer)
                .or_default()
                .insert(partition, value);
        }

        /// OffsetCommit (or a tombstone): appended now, applied after its wait. The
        /// group's write lock holds the next one until the previous one applied.
        fn plain_commit(&mut self, partition: i32, commit: bool) {
            if self.unapplied.is_some() {
                return;
            }
            let value = commit.then(|| self.value(Fate::Plain));
            let position = self.append(offset_record(partition, value, None));
            if let Some(value) = value {
                self.positions.insert(value, position);
            }
            self.unapplied = Some((partition, value, position));
        }

        fn apply_one(&mut self) {
            let Some((partition, value, position)) = self.unapplied.take() else {
                return;
            };
            if value.is_none() {
                // A tombstone deletes what open transactions wrote there before it.
                for written in self.open.values_mut() {
                    written.retain(|p, v| *p != partition || self.positions[v] > position);
                }
            }
            let offset = value.map(offset_value);
            self.store.apply("g", "t", partition, offset, position);
            self.eligible(partition, position, value);
        }

        /// A record becomes part of what the group must see (reference answer).
        fn eligible(&mut self, partition: i32, position: i64, value: Option<i64>) {
            let latest = self.expected.entry(partition).or_insert((-1, None));
            if position > latest.0 {
                *latest = (position, value);
            }
        }

        /// The transaction's marker lands and is committed: `complete_transaction`.
        fn end(&mut self, producer: i64, committed: bool) {
            let Some(written) = self.open.remove(&producer) else {
                return;
            };
            let marker_offset = self.append(marker(producer, committed));
            for fate in self.fates.values_mut() {
                if *fate == Fate::Open(producer) {
                    *fate = if committed {
                        Fate::Committed
                    } else {
                        Fate::Aborted
                    };
                }
            }
            self.store
                .complete(producer, committed, |_| true, marker_offset);
            if committed {
                self.commits += 1;
                for (partition, value) in &written {
                    self.eligible(*partition, self.positions[value], Some(*value));
                }
                for (partition, value) in written {
                    let shown = self.shown(partition).expect("a committed offset vanished");
                    assert!(
                        self.positions[&shown] >= self.positions[&value],
                        "after its commit, t-{partition} shows {shown}, older than {value}"
                    );
                }
            } else {
                self.aborts += 1;
            }
        }

        /// The coordinator moves: memory is rebuilt from the log. It must show what memory
        /// showed once the write still waiting (committed in the log) applied.
        fn failover(&mut self) {
            let replayed = replay_records(&self.log);
            self.apply_one();
            for partition in 0..PARTITIONS {
                let shown = replayed.get("g", "t", partition).map(|v| v.offset);
                assert_eq!(shown, self.shown(partition), "t-{partition} after failover");
                let pending = replayed.has_pending("g", "t", partition);
                assert_eq!(pending, self.store.has_pending("g", "t", partition));
            }
            self.store = replayed;
            self.failovers += 1;
        }

        fn shown(&self, partition: i32) -> Option<i64> {
            self.store
                .get("g", "t", partition)
                .map(|value| value.offset)
        }

        fn check(&self) {
            let mut held: BTreeSet<i32> = BTreeSet::new();
            for written in self.open.values() {
                held.extend(written.keys());
            }
            for partition in 0..PARTITIONS {
                let expected = self.expected.get(&partition).and_then(|(_, value)| *value);
                assert_eq!(self.shown(partition), expected, "t-{partition}");
                if let Some(value) = self.shown(partition) {
                    let fate = self.fates[&value];
                    assert!(
                        matches!(fate, Fate::Plain | Fate::Committed),
                        "t-{partition} shows {value} of a {fate:?} transaction"
                    );
                }
                assert_eq!(
                    self.store.has_pending("g", "t", partition),
                    held.contains(&partition),
                    "require_stable for t-{partition}"
                );
            }
        }
    }

    fn offset_value(value: i64) -> OffsetValue {
        OffsetValue {
            offset: value,
            leader_epoch: 0,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        }
    }

    fn record(producer: Option<i64>, control: bool) -> Record {
        Record {
            transactional: producer.is_some(),
            control,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: producer.unwrap_or(-1),
            producer_epoch: if producer.is_some() { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 0,
            key: None,
            value: None,
            headers: Default::default(),
        }
    }

    fn offset_record(partition: i32, value: Option<i64>, producer: Option<i64>) -> Record {
        let key = RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition,
        };
        Record {
            key: Some(records::encode_key(&key)),
            value: value.map(|v| records::encode_offset(&offset_value(v))),
            ..record(producer, false)
        }
    }

    fn marker(producer: i64, committed: bool) -> Record {
        let mut key = BytesMut::new();
        key.put_i16(0);
        key.put_i16(i16::from(committed));
        let mut value = BytesMut::new();
        value.put_i16(0);
        value.put_i32(0);
        Record {
            key: Some(key.freeze()),
            value: Some(value.freeze()),
            ..record(Some(producer), true)
        }
    }

    #[test]
    fn transactional_offsets_show_only_once_committed_and_survive_failover() {
        let (mut commits, mut aborts, mut failovers) = (0, 0, 0);
        for seed in 1..=SEEDS {
            let mut sim = TxnSim::new(seed);
            for _ in 0..STEPS {
                sim.step();
                sim.check();
            }
            sim.failover();
            commits += sim.commits;
            aborts += sim.aborts;
            failovers += sim.failovers;
        }
        assert!(commits > 1_000, "only {commits} commits");
        assert!(aborts > 500, "only {aborts} aborts");
        assert!(failovers > 500, "only {failovers} failovers");
    }
}
