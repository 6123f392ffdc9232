//! The Fetch request (v4-v17), decoded here rather than through `kafka-protocol`.
//!
//! Why: every long poll is a request decoded and dropped (an idle consumer at a 500 ms wait
//! sends two a second), and `kafka-protocol`'s `FetchRequest` cost about 2,500 of the
//! 28,500 instructions an empty six-partition long poll took in all (callgrind,
//! `scripts/bench.py --callgrind idle-longpoll`): a topic name copied into its own
//! `StrBytes`, each topic and partition a struct with a tagged-field `BTreeMap` to build
//! and drop, fields the broker never reads. Here the request becomes flat vectors (topics,
//! then all their partitions) of the fields the broker uses, with topic names borrowed from
//! the frame: 27,100 instructions per long poll.
//!
//! The layout is the message schema's (`FetchRequest.json`, Kafka 4.x): flexible from v12;
//! `ReplicaState` (tag 1, v15+) replaces `ReplicaId`; topics named by id from v13. Fields
//! read and dropped: `ClusterId` (tag 0), `LastFetchedEpoch` (no diverging-epoch answers:
//! followers truncate through OffsetForLeaderEpoch), `ReplicaDirectoryId` (tag 0 of a
//! partition, v17) and `RackId` (no fetching from followers). The unit tests decode what
//! `kafka-protocol` encodes, at every version served, and compare.

use std::ops::Range;

use super::fetch_response::{
    FLEXIBLE_MIN_VERSION, LOG_START_MIN_VERSION, SESSION_MIN_VERSION, TOPIC_IDS_MIN_VERSION,
};
use super::request_reader::{Malformed, PREALLOCATE_MAX, Reader};

/// The versions decoded here (`api::APIS` serves no others).
const VERSIONS: std::ops::RangeInclusive<i16> = 4..=17;
/// The first version with each partition's current leader epoch.
const LEADER_EPOCH_MIN_VERSION: i16 = 9;
/// The first version with the rack id.
const RACK_MIN_VERSION: i16 = 11;
/// The first version with each partition's last fetched epoch (the first flexible one).
const LAST_FETCHED_EPOCH_MIN_VERSION: i16 = 12;
/// The first version whose replica is named by the `ReplicaState` tagged field.
const REPLICA_STATE_MIN_VERSION: i16 = 15;
/// The first version with a partition's `ReplicaDirectoryId` tagged field.
const REPLICA_DIRECTORY_MIN_VERSION: i16 = 17;

/// The request's tagged fields.
const REPLICA_STATE_TAG: u32 = 1;
/// A partition's tagged field.
const REPLICA_DIRECTORY_TAG: u32 = 0;

/// A decoded Fetch request: what the broker reads of it.
#[derive(Debug, PartialEq)]
pub struct FetchQuery<'a> {
    /// The fetching follower's broker id; -1 from a consumer.
    pub replica_id: i32,
    /// The follower's broker epoch (v15+); -1 when not sent.
    pub replica_epoch: i64,
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub isolation_level: i8,
    pub session_id: i32,
    pub session_epoch: i32,
    /// The topics in the request's order; each names its run of `partitions`.
    pub topics: Vec<TopicRun<'a>>,
    pub partitions: Vec<QueryPartition>,
    /// The topics an incremental fetch drops partitions of from its session; each names
    /// its run of `forgotten_partitions`.
    pub forgotten: Vec<TopicRun<'a>>,
    pub forgotten_partitions: Vec<i32>,
}

/// A topic of the request, fetched or forgotten: a name before v13, an id from it, and
/// its run of partitions in the request's flat vector of them.
#[derive(Debug, PartialEq)]
pub struct TopicRun<'a> {
    /// Empty from v13.
    pub name: &'a str,
    /// Nil before v13.
    pub topic_id: uuid::Uuid,
    /// Its partitions' places in [`FetchQuery::partitions`] or
    /// [`FetchQuery::forgotten_partitions`].
    pub partitions: Range<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueryPartition {
    pub partition: i32,
    /// -1 before v9.
    pub current_leader_epoch: i32,
    pub fetch_offset: i64,
    /// -1 before v5.
    pub log_start_offset: i64,
    pub partition_max_bytes: i32,
}

impl<'a> FetchQuery<'a> {
    /// Decodes `body` (the request after its header) as Fetch `version`.
    pub fn decode(body: &'a [u8], version: i16) -> Result<FetchQuery<'a>, Malformed> {
        if !VERSIONS.contains(&version) {
            return Err(Malformed("a Fetch version not decoded here"));
        }
        let reader = &mut Reader::new(body, version >= FLEXIBLE_MIN_VERSION);
        let replica_id = match version < REPLICA_STATE_MIN_VERSION {
            true => reader.i32()?,
            false => -1,
        };
        let mut query = FetchQuery {
            replica_id,
            replica_epoch: -1,
            max_wait_ms: reader.i32()?,
            min_bytes: reader.i32()?,
            max_bytes: reader.i32()?,
            isolation_level: reader.i8()?,
            session_id: 0,
            session_epoch: -1,
            topics: Vec::new(),
            partitions: Vec::new(),
            forgotten: Vec::new(),
            forgotten_partitions: Vec::new(),
        };
        if version >= SESSION_MIN_VERSION {
            query.session_id = reader.i32()?;
            query.session_epoch = reader.i32()?;
        }
        let fetched = (partition_bytes_min(version), &mut query.partitions);
        query.topics = topic_runs(reader, version, fetched, |r| partition_of(r, version))?;
        if version >= SESSION_MIN_VERSION {
            let forgotten = (4, &mut query.forgotten_partitions);
            query.forgotten = topic_runs(reader, version, forgotten, Reader::i32)?;
        }
        if version >= RACK_MIN_VERSION {
            reader.string()?;
        }
        reader.tagged_fields(|tag, value| match tag {
            REPLICA_STATE_TAG if version >= REPLICA_STATE_MIN_VERSION => {
                query.replica_id = value.i32()?;
                query.replica_epoch = value.i64()?;
                value.skip_tagged_fields()
            }
            REPLICA_STATE_TAG => Err(Malformed("ReplicaState before v15")),
            _ => Ok(()),
        })?;
        Ok(query)
    }

    /// The partitions of `topic`, one of this request's.
    pub fn partitions_of(&self, topic: &TopicRun<'_>) -> &[QueryPartition] {
        &self.partitions[topic.partitions.clone()]
    }

    /// The partitions forgotten of `topic`, one of this request's.
    pub fn forgotten_of(&self, topic: &TopicRun<'_>) -> &[i32] {
        &self.forgotten_partitions[topic.partitions.clone()]
    }
}

/// An array of topics, each a name or id and an array of elements (of at least
/// `element_bytes_min` bytes each) that `element` reads into `elements`: the topics, with
/// their runs of `elements`.
fn topic_runs<'a, T>(
    reader: &mut Reader<'a>,
    version: i16,
    (element_bytes_min, elements): (usize, &mut Vec<T>),
    mut element: impl FnMut(&mut Reader<'a>) -> Result<T, Malformed>,
) -> Result<Vec<TopicRun<'a>>, Malformed> {
    let count = reader.count(topic_bytes_min(version))?;
    let mut topics = Vec::with_capacity(count.min(PREALLOCATE_MAX));
    for _ in 0..count {
        let (name, topic_id) = topic_of(reader, version)?;
        let element_count = reader.count(element_bytes_min)?;
        elements.reserve(element_count.min(PREALLOCATE_MAX));
        let first = elements.len();
        for _ in 0..element_count {
            elements.push(element(reader)?);
        }
        reader.skip_tagged_fields()?;
        let partitions = first..elements.len();
        topics.push(TopicRun {
            name,
            topic_id,
            partitions,
        });
    }
    Ok(topics)
}

/// A topic's name (before v13) or id (from v13).
fn topic_of<'a>(reader: &mut Reader<'a>, version: i16) -> Result<(&'a str, uuid::Uuid), Malformed> {
    match version >= TOPIC_IDS_MIN_VERSION {
        true => Ok(("", reader.uuid()?)),
        false => Ok((reader.string()?, uuid::Uuid::nil())),
    }
}

fn partition_of(reader: &mut Reader<'_>, version: i16) -> Result<QueryPartition, Malformed> {
    let partition = reader.i32()?;
    let current_leader_epoch = match version >= LEADER_EPOCH_MIN_VERSION {
        true => reader.i32()?,
        false => -1,
    };
    let fetch_offset = reader.i64()?;
    if version >= LAST_FETCHED_EPOCH_MIN_VERSION {
        reader.i32()?;
    }
    let log_start_offset = match version >= LOG_START_MIN_VERSION {
        true => reader.i64()?,
        false => -1,
    };
    let partition_max_bytes = reader.i32()?;
    reader.tagged_fields(|tag, _| match tag {
        REPLICA_DIRECTORY_TAG if version < REPLICA_DIRECTORY_MIN_VERSION => {
            Err(Malformed("ReplicaDirectoryId before v17"))
        }
        _ => Ok(()),
    })?;
    Ok(QueryPartition {
        partition,
        current_leader_epoch,
        fetch_offset,
        log_start_offset,
        partition_max_bytes,
    })
}

/// The fewest bytes a topic (or a forgotten topic) takes at `version`: its name's length
/// or its id, its partitions' count, and from v12 its tagged fields' count.
fn topic_bytes_min(version: i16) -> usize {
    match version {
        TOPIC_IDS_MIN_VERSION.. => 16 + 1 + 1,
        FLEXIBLE_MIN_VERSION.. => 1 + 1 + 1,
        _ => 2 + 4,
    }
}

/// The fewest bytes a partition takes at `version`.
fn partition_bytes_min(version: i16) -> usize {
    let mut bytes = 4 + 8 + 4; // partition, fetch offset, max bytes
    if version >= LOG_START_MIN_VERSION {
        bytes += 8;
    }
    if version >= LEADER_EPOCH_MIN_VERSION {
        bytes += 4;
    }
    if version >= LAST_FETCHED_EPOCH_MIN_VERSION {
        bytes += 4 + 1; // last fetched epoch, the tagged fields' count
    }
    bytes
}

#[cfg(test)]
#[path = "fetch_request_tests.rs"]
mod tests;
