//! A seeded simulation of one transactional id's coordinator over a durable log, driving
//! the pure state machine (`state`) the way the shell does: decide, write, install only
//! what was written. Faults: writes that fail before the append, writes that reach the
//! log but whose coordinator dies before installing them, coordinator failover (memory
//! lost, the log replayed, prepared transactions resumed), markers that reach only some
//! partitions before the coordinator moves, and transactions timing out.
//!
//! Clients speak transaction version 1 or 2 at random (EndTxn v4 or v5, AddPartitionsToTxn
//! v3 or v5), and half the runs start near an exhausted epoch, so producer id rotations
//! (InitProducerId's and version 2 EndTxn's) happen.
//!
//! Invariants, checked after every step and at the end:
//! - the epoch (per producer id) never goes backwards in the log or in memory;
//! - a PrepareCommit is only ever written for the newest producer id and epoch handed out
//!   (a fenced producer can never commit; under version 2 the prepare is one above it);
//! - no transaction (id, producer id, epoch, start) is prepared both to commit and to abort;
//! - a completion is written only once every partition of the transaction has its marker,
//!   every marker carries the epoch the transaction was prepared (ended) at, and once
//!   faults stop, every prepared transaction completes;
//! - a version 2 EndTxn prepares at exactly one above the client's epoch, and the client
//!   goes on at that epoch (or at epoch 0 of the next producer id);
//! - no transaction completes twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::error::TxnError;
use super::records::{TxnPartitions, TxnStatus};
use super::state::{EndDecision, InitDecision, TxnMetadata};
use super::version::TxnVersion;
use crate::sim_rng::Rng as SimRng;

const TOPICS: [&str; 2] = ["a", "b"];
const PARTITIONS: i32 = 3;

/// One transaction instance: (producer id, start timestamp). Not the epoch: the abort
/// that fences a transaction carries a bumped epoch and must still count as its outcome.
type Instance = (i64, i64);

/// A prepared instance being completed: its outcome, the epoch its markers carry, and the
/// partitions without a marker.
type MarkersLeft = (Instance, bool, i16, BTreeSet<(String, i32)>);

/// A marker as a partition received it: (instance, commit?, producer epoch).
type Marker = (Instance, bool, i16);

struct Sim {
    rng: SimRng,
    clock: i64,
    next_producer_id: i64,
    /// The durable `__transaction_state` records of the id, in order.
    log: Vec<TxnMetadata>,
    /// The coordinator's memory; `None` while no coordinator has loaded the log.
    memory: Option<TxnMetadata>,
    /// Prepared transactions whose markers are being sent: partitions still missing one.
    markers_left: Option<MarkersLeft>,
    /// Producers (producer id, epoch) clients were handed, newest last.
    handed_out: Vec<(i64, i16)>,
    /// Markers written per partition.
    markers: HashMap<(String, i32), Vec<Marker>>,
    /// Outcome each prepared instance was given.
    outcomes: HashMap<Instance, bool>,
    /// Prepared instances whose completion must eventually be written.
    open_prepares: BTreeSet<Instance>,
    /// Instances whose completion is in the log.
    completed: BTreeSet<Instance>,
    /// The highest epoch the log holds per producer id.
    epochs: HashMap<i64, i16>,
    /// Version 2 EndTxn prepares decided and installed.
    v2_prepares: usize,
    /// Producer ids rotated to by a completion.
    rotations: usize,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut first = TxnMetadata::new(999, 1000, 0);
        if seed % 2 == 1 {
            // Near exhaustion: rotations within a run.
            first.producer_epoch = i16::MAX - 12;
        }
        Sim {
            rng: SimRng::new(seed),
            clock: 1,
            next_producer_id: 1000,
            log: Vec::new(),
            memory: Some(first),
            markers_left: None,
            handed_out: Vec::new(),
            markers: HashMap::new(),
            outcomes: HashMap::new(),
            open_prepares: BTreeSet::new(),
            completed: BTreeSet::new(),
            epochs: HashMap::new(),
            v2_prepares: 0,
            rotations: 0,
        }
    }

    /// A client's transaction version for this request.
    fn version(&mut self) -> TxnVersion {
        if self.chance(50) {
            TxnVersion::V2
        } else {
            TxnVersion::V0
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.below(100) < percent
    }

    /// Writes `target`: fails before the append, or appends; an appended write is then
    /// installed, or its coordinator dies first (failover). Returns whether installed.
    fn write(&mut self, target: TxnMetadata) -> bool {
        if self.chance(10) {
            if let Some(memory) = &mut self.memory {
                memory.pending = None;
            }
            return false;
        }
        self.append(target.clone());
        if self.chance(5) {
            self.crash();
            return false;
        }
        self.memory = Some(target);
        true
    }

    fn append(&mut self, record: TxnMetadata) {
        if let Some(previous) = self.log.last()
            && previous.producer_id != record.producer_id
        {
            assert!(
                record.producer_id > previous.producer_id,
                "producer id went back"
            );
        }
        let highest = self.epochs.entry(record.producer_id).or_insert(i16::MIN);
        assert!(record.producer_epoch >= *highest, "epoch went back");
        *highest = record.producer_epoch;
        let instance = (record.producer_id, record.start_ms);
        match record.state {
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => {
                let commit = record.state == TxnStatus::PrepareCommit;
                if commit {
                    let newest = self.handed_out.last().copied();
                    let committer = if record.client_version.bumps_epoch() {
                        (record.producer_id, record.last_producer_epoch)
                    } else {
                        (record.producer_id, record.producer_epoch)
                    };
                    assert_eq!(newest, Some(committer), "a fenced producer committed");
                }
                let earlier = self.outcomes.insert(instance, commit);
                assert!(
                    earlier.is_none_or(|e| e == commit),
                    "both committed and aborted"
                );
                self.open_prepares.insert(instance);
            }
            TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
                self.check_markers_complete(&record);
            }
            _ => {}
        }
        self.log.push(record);
    }

    /// The prepared record being completed has a marker, at the epoch it was prepared
    /// at, on each of its partitions; it completes once, as the prepare said.
    fn check_markers_complete(&mut self, completion: &TxnMetadata) {
        let prepared = self
            .log
            .last()
            .expect("a completion follows a prepare")
            .clone();
        let Some((_, epoch, commit)) = prepared.marker() else {
            panic!("completion without a prepare");
        };
        let instance = (prepared.producer_id, prepared.start_ms);
        for (topic, ids) in &prepared.partitions {
            for id in ids {
                let written = self.markers.get(&(topic.clone(), *id));
                assert!(
                    written.is_some_and(|list| list.contains(&(instance, commit, epoch))),
                    "completed before the marker reached {topic}-{id} at epoch {epoch}"
                );
            }
        }
        assert!(
            self.completed.insert(instance),
            "{instance:?} completed twice"
        );
        if prepared.next_producer_id != -1 {
            assert_eq!(
                (completion.producer_id, completion.producer_epoch),
                (prepared.next_producer_id, 0),
                "a rotation completes at epoch 0 of the next id"
            );
            self.rotations += 1;
        } else {
            assert_eq!(
                (completion.producer_id, completion.producer_epoch),
                (prepared.producer_id, epoch),
                "a completion keeps the epoch the markers carry"
            );
        }
        self.open_prepares.remove(&instance);
    }

    /// The coordinator dies: memory and in-flight markers are lost.
    fn crash(&mut self) {
        self.memory = None;
        self.markers_left = None;
    }

    /// A new coordinator loads the log (last record wins, through its bytes) and resumes
    /// a prepared one.
    fn load(&mut self) {
        let mut memory = match self.log.last() {
            Some(last) => {
                use super::records;
                let record = last.to_record();
                let bytes = records::encode_value(&record, records::value_version(&record, 1));
                TxnMetadata::from_record(&records::decode_value(&bytes).expect("own record"))
            }
            None => TxnMetadata::new(999, 1000, 0),
        };
        memory.pending = None;
        self.start_markers(&memory);
        self.memory = Some(memory);
    }

    fn start_markers(&mut self, meta: &TxnMetadata) {
        if let Some((producer_id, epoch, commit)) = meta.marker() {
            let left = all_partitions(&meta.partitions);
            self.markers_left = Some(((producer_id, meta.start_ms), commit, epoch, left));
        }
    }

    fn step(&mut self) {
        self.clock += 1 + self.rng.below(50) as i64;
        let Some(memory) = self.memory.clone() else {
            self.load();
            return;
        };
        match self.rng.below(10) {
            0 | 1 => self.init(&memory),
            2 | 3 => self.add(&memory),
            4 => self.end(&memory),
            5..=7 => self.send_markers(),
            8 => self.time_out(&memory),
            _ => {
                if self.chance(30) {
                    self.crash();
                }
            }
        }
    }

    /// A client: the newest producer usually, a stale one sometimes.
    fn producer(&mut self) -> (i64, i16) {
        let count = self.handed_out.len();
        if count == 0 {
            return (-1, -1);
        }
        let index = if self.chance(80) {
            count - 1
        } else {
            self.rng.below(count as u64) as usize
        };
        self.handed_out[index]
    }

    fn init(&mut self, memory: &TxnMetadata) {
        let new_id = Some(self.next_producer_id);
        match memory.init_producer_id(1000, None, new_id, self.clock) {
            Ok(InitDecision::Write(target)) => {
                if target.producer_id == self.next_producer_id {
                    self.next_producer_id += 1;
                }
                let answer = (target.producer_id, target.producer_epoch);
                if self.write(target) {
                    self.handed_out.push(answer);
                }
            }
            Ok(InitDecision::FenceAndAbort(target)) => {
                if self.write(target.clone()) {
                    self.start_markers(&target);
                }
            }
            Err(_) => {}
        }
    }

    fn add(&mut self, memory: &TxnMetadata) {
        let (producer_id, epoch) = self.producer();
        let topic = TOPICS[self.rng.below(2) as usize];
        let partition = self.rng.below(PARTITIONS as u64) as i32;
        let wanted = TxnPartitions::from([(topic.to_string(), BTreeSet::from([partition]))]);
        let version = self.version();
        if let Ok(Some(target)) =
            memory.add_partitions(producer_id, epoch, &wanted, version, self.clock)
        {
            self.write(target);
        }
    }

    fn end(&mut self, memory: &TxnMetadata) {
        let (producer_id, epoch) = self.producer();
        let commit = self.chance(60);
        if self.version().bumps_epoch() {
            self.end_v2(memory, (producer_id, epoch), commit);
            return;
        }
        if let Ok(EndDecision::Prepare(target)) =
            memory.end_txn(producer_id, epoch, commit, self.clock)
            && self.write(target.clone())
        {
            self.start_markers(&target);
        }
    }

    /// EndTxn v5: the prepare is one above the client's epoch; the client is handed the
    /// producer it goes on with, on success and on a retry's NONE.
    fn end_v2(&mut self, memory: &TxnMetadata, (producer_id, epoch): (i64, i16), commit: bool) {
        let next_id = memory
            .end_needs_producer_id()
            .then_some(self.next_producer_id);
        match memory.end_txn_v2(producer_id, epoch, commit, next_id, self.clock) {
            Ok(EndDecision::Prepare(target)) => {
                assert_eq!(target.producer_id, producer_id);
                assert_eq!(i32::from(target.producer_epoch), i32::from(epoch) + 1);
                assert_eq!(target.last_producer_epoch, epoch);
                if target.next_producer_id == self.next_producer_id {
                    self.next_producer_id += 1;
                }
                let answer = target.producer_after_end();
                if self.write(target.clone()) {
                    self.v2_prepares += 1;
                    self.handed_out.push(answer);
                    self.start_markers(&target);
                }
            }
            Ok(EndDecision::AlreadyDone) => {
                let answer = memory.producer_after_end();
                if self.handed_out.last() != Some(&answer) {
                    self.handed_out.push(answer);
                }
            }
            Err(TxnError::InvalidTxnState | TxnError::ProducerFenced) => {}
            Err(TxnError::ConcurrentTransactions | TxnError::InvalidProducerIdMapping) => {}
            Err(other) => panic!("EndTxn v5 answered {other:?}"),
        }
    }

    fn time_out(&mut self, memory: &TxnMetadata) {
        if memory.state == TxnStatus::Ongoing && memory.pending.is_none() {
            let target = memory.fence(self.clock);
            if self.write(target.clone()) {
                self.start_markers(&target);
            }
        }
    }

    /// Some markers reach their partitions; once all have, the completion is written.
    fn send_markers(&mut self) {
        let Some((instance, commit, epoch, mut left)) = self.markers_left.take() else {
            return;
        };
        let reached: Vec<(String, i32)> = left
            .iter()
            .filter(|_| self.rng.below(2) == 0)
            .cloned()
            .collect();
        for partition in reached {
            left.remove(&partition);
            self.markers
                .entry(partition)
                .or_default()
                .push((instance, commit, epoch));
        }
        if !left.is_empty() {
            self.markers_left = Some((instance, commit, epoch, left));
            return;
        }
        let Some(memory) = self.memory.clone() else {
            return;
        };
        let target = memory.complete(self.clock);
        if !self.write(target) && self.memory.is_some() {
            // Not written but still the coordinator: the completion is retried.
            self.markers_left = Some((instance, commit, epoch, BTreeSet::new()));
        }
    }

    /// No more faults: whatever is prepared completes.
    fn quiesce(&mut self) {
        if self.memory.is_none() {
            self.load();
        }
        for _ in 0..100 {
            let Some((instance, commit, epoch, left)) = self.markers_left.take() else {
                break;
            };
            for partition in left {
                self.markers
                    .entry(partition)
                    .or_default()
                    .push((instance, commit, epoch));
            }
            let memory = self.memory.clone().expect("loaded");
            let target = memory.complete(self.clock);
            self.append(target.clone());
            self.memory = Some(target);
        }
        let memory = self.memory.as_ref().expect("loaded");
        assert!(memory.marker().is_none(), "still prepared: {memory:?}");
        assert!(
            self.open_prepares.is_empty(),
            "never completed: {:?}",
            self.open_prepares
        );
    }
}

fn all_partitions(partitions: &TxnPartitions) -> BTreeSet<(String, i32)> {
    partitions
        .iter()
        .flat_map(|(topic, ids)| ids.iter().map(move |id| (topic.clone(), *id)))
        .collect()
}

fn run(seed: u64, steps: usize) -> BTreeMap<&'static str, usize> {
    let mut sim = Sim::new(seed);
    for _ in 0..steps {
        sim.step();
    }
    sim.quiesce();
    let commits = sim.outcomes.values().filter(|c| **c).count();
    BTreeMap::from([
        ("commits", commits),
        ("aborts", sim.outcomes.len() - commits),
        ("records", sim.log.len()),
        ("v2 prepares", sim.v2_prepares),
        ("rotations", sim.rotations),
    ])
}

#[test]
fn transactions_keep_their_invariants_through_faults() {
    let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
    for seed in 0..300 {
        for (key, count) in run(seed, 400) {
            *totals.entry(key).or_default() += count;
        }
    }
    // The runs exercised both outcomes, not just the fault paths.
    assert!(totals["commits"] > 100, "{totals:?}");
    assert!(totals["aborts"] > 100, "{totals:?}");
    assert!(totals["v2 prepares"] > 100, "{totals:?}");
    assert!(totals["rotations"] > 3, "{totals:?}");
}
