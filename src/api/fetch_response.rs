//! The Fetch response (v4-v17), encoded here rather than through `kafka-protocol`.
//!
//! Why: a long poll's empty answer cost the broker about 34,000 instructions (callgrind,
//! `scripts/bench.py --callgrind idle-longpoll`), and a third of them went to the
//! response alone: building `kafka-protocol`'s `PartitionData` per partition (a struct of
//! some 200 bytes with four tagged-field maps, moved by every `with_` call), encoding it
//! field by field (a `memcpy` call per integer, defaults built and compared for every
//! tagged field), and dropping it (four empty `BTreeMap`s). Here a partition's entry is a
//! small struct written into one buffer of exactly the response's size, and records left
//! in the segment files become parts of the frame where they fall.
//!
//! The layout is the message schema's (`FetchResponse.json`, Kafka 4.x): fixed-width
//! integers big-endian; from v12 (flexible) compact strings, arrays and bytes (unsigned
//! varint of length + 1) and tagged fields after every struct. The unit tests check it
//! byte for byte against `kafka-protocol`'s encoder at every version served.
//!
//! Records sent from files: the frame's bytes up to a partition's records length are one
//! part, the file slices follow, and the bytes after them the next part. Only flexible
//! versions may carry them: those end with tagged fields, whose last byte is held back
//! ([`SplicedFrame::last`]) until the sender has checked the slices were not cut under it.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::TopicName;

use super::leader_hint::{Endpoint, LeaderHint};
use super::outgoing::{Outgoing, Part, SplicedFrame};
use super::throttle::ThrottleTime;
use crate::log::batch::put_unsigned_varint;
use crate::log::txn_index::AbortedTxn;
use crate::replica::ReadRecords;
use crate::types::NodeId;

/// The first version with fetch sessions: in the request their id and epoch and the
/// forgotten topics, in the response a top-level error code and the session id.
pub const SESSION_MIN_VERSION: i16 = 7;
/// The first version with each partition's log start offset.
pub const LOG_START_MIN_VERSION: i16 = 5;
/// The first version with each partition's preferred read replica.
const PREFERRED_REPLICA_MIN_VERSION: i16 = 11;
/// The first flexible version: compact lengths, tagged fields, a tagged response header.
pub const FLEXIBLE_MIN_VERSION: i16 = 12;
/// The first version that names topics by id (and whose fetch sessions key partitions by it).
pub const TOPIC_IDS_MIN_VERSION: i16 = 13;
/// The first version with the `node_endpoints` tagged field.
const NODE_ENDPOINTS_MIN_VERSION: i16 = 16;

/// The tag of a partition's `current_leader`, and of the response's `node_endpoints`.
const CURRENT_LEADER_TAG: u64 = 1;
const NODE_ENDPOINTS_TAG: u64 = 0;

/// We never name a preferred read replica (KIP-392: no rack-aware fetching from followers).
const NO_PREFERRED_REPLICA: i32 = -1;

/// A whole Fetch response.
#[derive(Debug, Default)]
pub struct FetchAnswer {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<TopicAnswer>,
    /// The endpoints of leaders named in `current_leader`s (v16+), by node id.
    pub node_endpoints: Vec<(NodeId, Endpoint)>,
}

/// One topic's entry: by name up to v12, by id from v13.
#[derive(Debug)]
pub struct TopicAnswer {
    pub name: TopicName,
    pub id: uuid::Uuid,
    pub partitions: Vec<PartitionAnswer>,
}

/// One partition's entry.
#[derive(Debug)]
pub struct PartitionAnswer {
    pub index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// The leader named for a refused partition (KIP-951), v12+.
    pub current_leader: Option<LeaderHint>,
    /// Null for read_uncommitted (as Kafka sends it), a list (maybe empty) otherwise.
    pub aborted_transactions: Option<Vec<AbortedTxn>>,
    pub records: ReadRecords,
}

impl PartitionAnswer {
    /// The leader to write: a hint of (-1, -1) (no leader, partition unknown) is the
    /// field's default, which a tagged field leaves out, as Kafka's encoder does.
    fn written_leader(&self) -> Option<LeaderHint> {
        (self.current_leader).filter(|leader| leader.leader_id != -1 || leader.leader_epoch != -1)
    }

    /// An entry without records: an error's, or one read found nothing for.
    pub fn empty(index: i32) -> Self {
        PartitionAnswer {
            index,
            error_code: 0,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            current_leader: None,
            aborted_transactions: None,
            records: ReadRecords::Bytes(Bytes::new()),
        }
    }
}

impl ThrottleTime for FetchAnswer {
    fn throttle_time_ms(&mut self) -> Option<&mut i32> {
        Some(&mut self.throttle_time_ms)
    }
}

/// A broken invariant of our own answer (never a client's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// Records left in the files at a version that cannot send them from there.
    FilesBeforeFlexible,
    /// More than an INT32 of bytes, or a list or string longer than its length field holds.
    TooLarge,
    /// The bytes written are not the size computed for the length prefix.
    SizeMismatch,
}

impl FetchAnswer {
    /// The body's encoded size (without the length prefix and the response header),
    /// records in files included: what a fetch quota is charged.
    pub fn body_size(&self, version: i16) -> usize {
        let flexible = version >= FLEXIBLE_MIN_VERSION;
        let mut size = 4; // throttle_time_ms
        if version >= SESSION_MIN_VERSION {
            size += 2 + 4;
        }
        size += array_length_size(self.topics.len(), flexible);
        for topic in &self.topics {
            size += topic_size(topic, version);
        }
        if flexible {
            size += 1; // the tagged fields' count
            if let Some(endpoints) = self.endpoints_size(version) {
                size += uvarint_size(NODE_ENDPOINTS_TAG) + uvarint_size(endpoints as u64);
                size += endpoints;
            }
        }
        size
    }

    /// The `node_endpoints` array's size, if this version carries a non-empty one.
    fn endpoints_size(&self, version: i16) -> Option<usize> {
        if version < NODE_ENDPOINTS_MIN_VERSION || self.node_endpoints.is_empty() {
            return None;
        }
        let mut size = uvarint_size(self.node_endpoints.len() as u64 + 1);
        for (_, endpoint) in &self.node_endpoints {
            let rack = endpoint.rack.as_deref();
            size += 4 + compact_string_size(Some(&endpoint.host)) + 4;
            size += compact_string_size(rack) + 1;
        }
        Some(size)
    }

    /// The whole frame: length prefix, response header (`correlation_id`, and from v12
    /// its empty tagged fields), body. One buffer, unless records are sent from files.
    pub fn encode(self, version: i16, correlation_id: i32) -> Result<Outgoing, EncodeError> {
        let flexible = version >= FLEXIBLE_MIN_VERSION;
        let header = 4 + usize::from(flexible);
        let frame_size = header + self.body_size(version);
        let frame_size_field = i32::try_from(frame_size).map_err(|_| EncodeError::TooLarge)?;
        let in_memory = frame_size - self.file_bytes();
        let mut out = Writer {
            buffer: Vec::with_capacity(4 + in_memory),
            cuts: Vec::new(),
        };
        let buffer = &mut out.buffer;
        buffer.put_i32(frame_size_field);
        buffer.put_i32(correlation_id);
        if flexible {
            buffer.put_u8(0);
        }
        buffer.put_i32(self.throttle_time_ms);
        if version >= SESSION_MIN_VERSION {
            buffer.put_i16(self.error_code);
            buffer.put_i32(self.session_id);
        }
        out.array_length(self.topics.len(), flexible)?;
        let endpoints_size = self.endpoints_size(version);
        for topic in self.topics {
            out.topic(topic, version)?;
        }
        if flexible {
            match endpoints_size {
                Some(size) => {
                    out.one_tagged_field(NODE_ENDPOINTS_TAG, size);
                    out.array_length(self.node_endpoints.len(), true)?;
                    for (node_id, endpoint) in &self.node_endpoints {
                        out.buffer.put_i32(*node_id);
                        out.compact_string(Some(&endpoint.host));
                        out.buffer.put_i32(endpoint.port);
                        out.compact_string(endpoint.rack.as_deref());
                        out.buffer.put_u8(0);
                    }
                }
                None => out.buffer.put_u8(0),
            }
        }
        // The length prefix was sized before writing: a field written but not sized (or
        // the reverse) would put the client's stream out of step, so it fails here.
        if out.buffer.len() != 4 + in_memory {
            return Err(EncodeError::SizeMismatch);
        }
        Ok(out.finish())
    }

    /// Record bytes that stay in the files.
    fn file_bytes(&self) -> usize {
        let partitions = self.topics.iter().flat_map(|topic| &topic.partitions);
        (partitions.filter_map(|partition| match &partition.records {
            ReadRecords::Slices(slices) => Some(slices.len()),
            ReadRecords::Bytes(_) => None,
        }))
        .sum()
    }
}

fn topic_size(topic: &TopicAnswer, version: i16) -> usize {
    let flexible = version >= FLEXIBLE_MIN_VERSION;
    let mut size = match version {
        v if v >= TOPIC_IDS_MIN_VERSION => 16,
        v if v >= FLEXIBLE_MIN_VERSION => compact_string_size(Some(topic.name.as_str())),
        _ => 2 + topic.name.len(),
    };
    size += array_length_size(topic.partitions.len(), flexible);
    for partition in &topic.partitions {
        size += partition_size(partition, version);
    }
    size + usize::from(flexible)
}

fn partition_size(partition: &PartitionAnswer, version: i16) -> usize {
    let flexible = version >= FLEXIBLE_MIN_VERSION;
    let mut size = 4 + 2 + 8 + 8; // index, error code, high watermark, last stable offset
    if version >= LOG_START_MIN_VERSION {
        size += 8;
    }
    size += match &partition.aborted_transactions {
        None if flexible => 1,
        None => 4,
        Some(aborted) => {
            let each = 8 + 8 + usize::from(flexible);
            array_length_size(aborted.len(), flexible) + aborted.len() * each
        }
    };
    if version >= PREFERRED_REPLICA_MIN_VERSION {
        size += 4;
    }
    let records = partition.records.len();
    size += match flexible {
        true => uvarint_size(records as u64 + 1) + records,
        false => 4 + records,
    };
    if flexible {
        size += 1; // the tagged fields' count
        if partition.written_leader().is_some() {
            // Tag, size (9), leader id, leader epoch, the struct's empty tagged fields.
            size += 1 + 1 + 4 + 4 + 1;
        }
    }
    size
}

/// The encoded size of an array's length: INT32, or from v12 an unsigned varint of
/// length + 1.
fn array_length_size(length: usize, flexible: bool) -> usize {
    match flexible {
        true => uvarint_size(length as u64 + 1),
        false => 4,
    }
}

/// A compact (nullable) string's size: unsigned varint of length + 1 (0 for null), bytes.
fn compact_string_size(string: Option<&str>) -> usize {
    string.map_or(1, |s| uvarint_size(s.len() as u64 + 1) + s.len())
}

fn uvarint_size(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// The frame being written, and where file slices cut into it.
///
/// A `Vec<u8>` written with `extend_from_slice` of fixed-size arrays, which compiles to
/// plain stores: `BytesMut`'s `put_i32` and the like each called `memcpy` (callgrind),
/// several times the cost of the field itself.
struct Writer {
    buffer: Vec<u8>,
    /// (offset in `buffer`, the slices sent there), in order.
    cuts: Vec<(usize, crate::log::RecordSlices)>,
}

/// Big-endian fixed-width integers and unsigned varints onto a `Vec<u8>`.
trait PutInto {
    fn put_u8(&mut self, value: u8);
    fn put_i16(&mut self, value: i16);
    fn put_i32(&mut self, value: i32);
    fn put_i64(&mut self, value: i64);
    fn put_slice(&mut self, bytes: &[u8]);
    fn put_uvarint(&mut self, value: u64);
}

impl PutInto for Vec<u8> {
    #[inline]
    fn put_u8(&mut self, value: u8) {
        self.push(value);
    }
    #[inline]
    fn put_i16(&mut self, value: i16) {
        self.extend_from_slice(&value.to_be_bytes());
    }
    #[inline]
    fn put_i32(&mut self, value: i32) {
        self.extend_from_slice(&value.to_be_bytes());
    }
    #[inline]
    fn put_i64(&mut self, value: i64) {
        self.extend_from_slice(&value.to_be_bytes());
    }
    #[inline]
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    #[inline]
    fn put_uvarint(&mut self, value: u64) {
        put_unsigned_varint(self, value);
    }
}

impl Writer {
    fn array_length(&mut self, length: usize, flexible: bool) -> Result<(), EncodeError> {
        match flexible {
            true => self.buffer.put_uvarint(length as u64 + 1),
            false => self
                .buffer
                .put_i32(i32::try_from(length).map_err(|_| EncodeError::TooLarge)?),
        }
        Ok(())
    }

    fn compact_string(&mut self, string: Option<&str>) {
        let Some(string) = string else {
            self.buffer.put_u8(0);
            return;
        };
        self.buffer.put_uvarint(string.len() as u64 + 1);
        self.buffer.put_slice(string.as_bytes());
    }

    /// The tagged fields' count (one), then that field's tag and size; its value follows.
    fn one_tagged_field(&mut self, tag: u64, size: usize) {
        self.buffer.put_u8(1);
        self.buffer.put_uvarint(tag);
        self.buffer.put_uvarint(size as u64);
    }

    fn topic(&mut self, topic: TopicAnswer, version: i16) -> Result<(), EncodeError> {
        let flexible = version >= FLEXIBLE_MIN_VERSION;
        match version {
            v if v >= TOPIC_IDS_MIN_VERSION => self.buffer.put_slice(topic.id.as_bytes()),
            v if v >= FLEXIBLE_MIN_VERSION => self.compact_string(Some(topic.name.as_str())),
            _ => {
                let length = i16::try_from(topic.name.len()).map_err(|_| EncodeError::TooLarge)?;
                self.buffer.put_i16(length);
                self.buffer.put_slice(topic.name.as_bytes());
            }
        }
        self.array_length(topic.partitions.len(), flexible)?;
        for partition in topic.partitions {
            self.partition(partition, version)?;
        }
        if flexible {
            self.buffer.put_u8(0);
        }
        Ok(())
    }

    fn partition(&mut self, partition: PartitionAnswer, version: i16) -> Result<(), EncodeError> {
        let flexible = version >= FLEXIBLE_MIN_VERSION;
        let buffer = &mut self.buffer;
        buffer.put_i32(partition.index);
        buffer.put_i16(partition.error_code);
        buffer.put_i64(partition.high_watermark);
        buffer.put_i64(partition.last_stable_offset);
        if version >= LOG_START_MIN_VERSION {
            buffer.put_i64(partition.log_start_offset);
        }
        match &partition.aborted_transactions {
            None if flexible => self.buffer.put_u8(0),
            None => self.buffer.put_i32(-1),
            Some(aborted) => {
                self.array_length(aborted.len(), flexible)?;
                for txn in aborted {
                    self.buffer.put_i64(txn.producer_id);
                    self.buffer.put_i64(txn.first_offset);
                    if flexible {
                        self.buffer.put_u8(0);
                    }
                }
            }
        }
        if version >= PREFERRED_REPLICA_MIN_VERSION {
            self.buffer.put_i32(NO_PREFERRED_REPLICA);
        }
        let leader = partition.written_leader();
        let length = partition.records.len();
        match flexible {
            true => self.buffer.put_uvarint(length as u64 + 1),
            false => self
                .buffer
                .put_i32(i32::try_from(length).map_err(|_| EncodeError::TooLarge)?),
        }
        match partition.records {
            ReadRecords::Bytes(bytes) => self.buffer.put_slice(&bytes),
            ReadRecords::Slices(_) if !flexible => return Err(EncodeError::FilesBeforeFlexible),
            ReadRecords::Slices(slices) => self.cuts.push((self.buffer.len(), slices)),
        }
        if flexible {
            match leader {
                Some(leader) => {
                    // Leader id, leader epoch, the struct's own (empty) tagged fields.
                    self.one_tagged_field(CURRENT_LEADER_TAG, 4 + 4 + 1);
                    self.buffer.put_i32(leader.leader_id);
                    self.buffer.put_i32(leader.leader_epoch);
                    self.buffer.put_u8(0);
                }
                None => self.buffer.put_u8(0),
            }
        }
        Ok(())
    }

    /// The frame: whole, or in parts around the file slices with its last byte held back.
    fn finish(self) -> Outgoing {
        if self.cuts.is_empty() {
            return Outgoing::Frame(BytesMut::from(Bytes::from(self.buffer)));
        }
        let mut rest = Bytes::from(self.buffer);
        let mut parts = Vec::with_capacity(self.cuts.len() * 2 + 1);
        let mut taken = 0;
        for (at, slices) in self.cuts {
            parts.push(Part::Bytes(rest.split_to(at - taken)));
            parts.extend(slices.slices().iter().cloned().map(Part::File));
            taken = at;
        }
        // A flexible frame ends with tagged fields after the last records: never empty.
        let last = rest.split_off(rest.len() - 1);
        parts.push(Part::Bytes(rest));
        Outgoing::Spliced(SplicedFrame { parts, last })
    }
}

#[cfg(test)]
impl FetchAnswer {
    /// This answer as the broker encodes it (records in files read in), decoded by
    /// `kafka-protocol`: what a client reads.
    pub fn decoded(self, version: i16) -> kafka_protocol::messages::FetchResponse {
        use bytes::Buf;
        use kafka_protocol::messages::{ApiKey, ResponseHeader};
        use kafka_protocol::protocol::Decodable;
        let frame = self.encode(version, 7).unwrap().into_frame().unwrap();
        let mut frame = frame.freeze();
        assert_eq!(frame.get_i32() as usize, frame.len(), "the length prefix");
        let header_version = ApiKey::Fetch.response_header_version(version);
        let header = ResponseHeader::decode(&mut frame, header_version).unwrap();
        assert_eq!(header.correlation_id, 7);
        let response = kafka_protocol::messages::FetchResponse::decode(&mut frame, version);
        assert!(
            frame.is_empty(),
            "v{version}: {} bytes after the response",
            frame.len()
        );
        response.unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
    };
    use kafka_protocol::messages::{ApiKey, BrokerId, FetchResponse, ProducerId, ResponseHeader};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;
    use crate::log::file_slice::SegmentFile;
    use crate::log::{FileSlice, RecordSlices};
    use crate::sim_rng::Rng;

    /// The versions served (`api::mod`'s ApiVersions spec).
    const VERSIONS: std::ops::RangeInclusive<i16> = 4..=17;

    fn aborted(producer_id: i64, first_offset: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset,
            last_offset: first_offset + 1,
            last_stable_offset: first_offset + 2,
        }
    }

    /// The same response as `kafka-protocol`'s message (records read from their files).
    fn as_message(answer: &FetchAnswer, version: i16) -> FetchResponse {
        let partition = |p: &PartitionAnswer| {
            let records = match &p.records {
                ReadRecords::Bytes(bytes) => bytes.clone(),
                ReadRecords::Slices(slices) => slices.to_bytes().unwrap(),
            };
            let leader = p
                .current_leader
                .map_or_else(LeaderIdAndEpoch::default, |l| {
                    LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(l.leader_id))
                        .with_leader_epoch(l.leader_epoch)
                });
            let aborted = p.aborted_transactions.as_ref().map(|list| {
                (list.iter())
                    .map(|txn| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(txn.producer_id))
                            .with_first_offset(txn.first_offset)
                    })
                    .collect()
            });
            PartitionData::default()
                .with_partition_index(p.index)
                .with_error_code(p.error_code)
                .with_high_watermark(p.high_watermark)
                .with_last_stable_offset(p.last_stable_offset)
                .with_log_start_offset(p.log_start_offset)
                // Only encoded from v12, where it is a tagged field.
                .with_current_leader(if version >= 12 {
                    leader
                } else {
                    Default::default()
                })
                .with_aborted_transactions(aborted)
                .with_records(Some(records))
        };
        let topics = (answer.topics.iter())
            .map(|t| {
                FetchableTopicResponse::default()
                    .with_topic(t.name.clone())
                    .with_topic_id(t.id)
                    .with_partitions(t.partitions.iter().map(partition).collect())
            })
            .collect();
        let endpoints = (answer.node_endpoints.iter())
            .map(|(node_id, e)| {
                NodeEndpoint::default()
                    .with_node_id(BrokerId(*node_id))
                    .with_host(StrBytes::from_string(e.host.clone()))
                    .with_port(e.port)
                    .with_rack(e.rack.clone().map(StrBytes::from_string))
            })
            .collect();
        FetchResponse::default()
            .with_throttle_time_ms(answer.throttle_time_ms)
            .with_error_code(answer.error_code)
            .with_session_id(answer.session_id)
            .with_responses(topics)
            .with_node_endpoints(if version >= 16 { endpoints } else { Vec::new() })
    }

    /// `kafka-protocol`'s frame of `message`: length prefix, header, body.
    fn reference_frame(message: &FetchResponse, version: i16, correlation_id: i32) -> Vec<u8> {
        let header_version = ApiKey::Fetch.response_header_version(version);
        let header = ResponseHeader::default().with_correlation_id(correlation_id);
        let mut body = BytesMut::new();
        header.encode(&mut body, header_version).unwrap();
        message.encode(&mut body, version).unwrap();
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        frame
    }

    fn file_with(bytes: &[u8]) -> Arc<SegmentFile> {
        SegmentFile::holding(bytes)
    }

    /// Records `length` bytes long, in memory or (flexible versions, by chance) split
    /// across one or two files.
    fn records(rng: &mut Rng, length: usize, files: bool) -> ReadRecords {
        let bytes: Vec<u8> = (0..length).map(|_| rng.below(256) as u8).collect();
        if !files || length == 0 || rng.chance(40) {
            return ReadRecords::Bytes(Bytes::from(bytes));
        }
        let cut = rng.below(length as u64 + 1) as usize;
        let mut slices = RecordSlices::default();
        for (index, piece) in [&bytes[..cut], &bytes[cut..]].into_iter().enumerate() {
            if piece.is_empty() {
                continue;
            }
            let before = rng.below(20) as usize;
            let file = file_with(&[vec![0xee; before], piece.to_vec()].concat());
            slices.push(
                FileSlice::new(&file, before as u64, piece.len()),
                index as i64,
            );
        }
        ReadRecords::Slices(slices)
    }

    fn random_answer(rng: &mut Rng, version: i16) -> FetchAnswer {
        let files = version >= FLEXIBLE_MIN_VERSION;
        let topics = (0..rng.below(4))
            .map(|t| {
                let name = "t".repeat(1 + rng.below(300) as usize) + &t.to_string();
                let partitions = (0..rng.below(5))
                    .map(|index| {
                        let mut p = PartitionAnswer::empty(index as i32);
                        p.error_code = [0, 6, 74][rng.below(3) as usize];
                        p.high_watermark = rng.next_u64() as i64 >> rng.below(64);
                        p.last_stable_offset = rng.below(1 << 40) as i64 - 1;
                        p.log_start_offset = rng.below(1000) as i64;
                        if version >= 12 && rng.chance(30) {
                            // (-1, -1) included: the default, left out.
                            p.current_leader = Some(LeaderHint {
                                leader_id: rng.below(5) as i32 - 1,
                                leader_epoch: rng.below(1 << 31) as i32 - rng.below(2) as i32,
                            });
                            if rng.chance(30) {
                                p.current_leader = Some(LeaderHint {
                                    leader_id: -1,
                                    leader_epoch: -1,
                                });
                            }
                        }
                        if rng.chance(50) {
                            let count = rng.below(200) as i64;
                            p.aborted_transactions = Some(
                                (0..count)
                                    .map(|i| aborted(i * 3, rng.below(1 << 50) as i64))
                                    .collect(),
                            );
                        }
                        let length =
                            [0, 1, 126, 127, 128, 16_383, 16_384, 70_000][rng.below(8) as usize];
                        p.records = records(rng, length, files);
                        p
                    })
                    .collect();
                TopicAnswer {
                    name: TopicName(StrBytes::from_string(name)),
                    id: uuid::Uuid::from_u128(rng.next_u64() as u128),
                    partitions,
                }
            })
            .collect();
        let node_endpoints = (0..rng.below(3))
            .map(|node| {
                let endpoint = Endpoint {
                    host: "h".repeat(rng.below(200) as usize),
                    port: rng.below(65536) as i32,
                    rack: rng.chance(50).then(|| "r".repeat(rng.below(130) as usize)),
                };
                (node as i32, endpoint)
            })
            .collect();
        FetchAnswer {
            throttle_time_ms: rng.below(1000) as i32,
            error_code: if version >= 7 { rng.below(3) as i16 } else { 0 },
            session_id: if version >= 7 {
                rng.next_u64() as i32
            } else {
                0
            },
            topics,
            node_endpoints,
        }
    }

    /// Byte for byte `kafka-protocol`'s frame at every version, records in memory or in
    /// files, with lengths around the varint steps; the size a quota is charged is the
    /// reference's body size.
    #[test]
    fn every_version_encodes_byte_for_byte_as_kafka_protocol_does() {
        let mut rng = Rng::new(12);
        for round in 0..400 {
            for version in VERSIONS {
                let answer = random_answer(&mut rng, version);
                let message = as_message(&answer, version);
                let expected = reference_frame(&message, version, round);
                assert_eq!(
                    answer.body_size(version),
                    message.compute_size(version).unwrap(),
                    "v{version} round {round}"
                );
                let has_files = answer.file_bytes() > 0;
                let outgoing = answer.encode(version, round).unwrap();
                assert_eq!(matches!(outgoing, Outgoing::Spliced(_)), has_files);
                let frame = outgoing.into_frame().unwrap();
                assert_eq!(frame.to_vec(), expected, "v{version} round {round}");
            }
        }
    }

    /// One topic, one partition whose records are all of `file`.
    fn answer_from_file(file: &Arc<SegmentFile>, length: usize) -> FetchAnswer {
        let mut slices = RecordSlices::default();
        slices.push(FileSlice::new(file, 0, length), 1);
        let mut partition = PartitionAnswer::empty(0);
        partition.records = ReadRecords::Slices(slices);
        FetchAnswer {
            topics: vec![TopicAnswer {
                name: TopicName(StrBytes::from_static_str("t")),
                id: uuid::Uuid::nil(),
                partitions: vec![partition],
            }],
            ..FetchAnswer::default()
        }
    }

    #[test]
    fn records_in_files_need_a_flexible_version() {
        let answer = answer_from_file(&file_with(b"records"), 7);
        assert!(matches!(
            answer.encode(11, 1),
            Err(EncodeError::FilesBeforeFlexible)
        ));
    }

    #[test]
    fn a_slice_cut_before_it_is_read_fails_the_frame() {
        let file = file_with(&[7; 50_000]);
        let spliced = answer_from_file(&file, 50_000).encode(16, 1).unwrap();
        // Cut into the slice and written again to the old length: readable, but not the bytes.
        file.truncate(1_000).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&**file, &[8; 49_000], 1_000).unwrap();
        assert!(spliced.into_frame().is_err());
    }

    #[test]
    fn varint_sizes_step_at_powers_of_128() {
        for (value, size) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u32::MAX as u64, 5),
        ] {
            assert_eq!(uvarint_size(value), size, "{value}");
            let mut out = BytesMut::new();
            put_unsigned_varint(&mut out, value);
            assert_eq!(out.len(), size, "{value}");
        }
    }
}
