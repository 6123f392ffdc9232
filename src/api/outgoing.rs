//! A response ready for the socket: one encoded frame, or, for a fetch whose records stay
//! in the segment files, the encoded parts with file slices between them, which the
//! connection sends with sendfile (`server::sendfile`).
//!
//! The fetch response is encoded by `kafka-protocol` as any other, with a 16-byte marker
//! in place of each partition's records; [`splice`] then finds the markers in order, and
//! replaces each (with its length prefix) by the real length and the slices. The markers
//! carry a key drawn at random when the process starts, which a response's other fields
//! (integers, ids, names) would match by chance once in 2^64 attempts; the length prefix
//! before each is checked too. Only flexible versions are spliced: their records are
//! compact bytes, and the response ends with tagged fields, whose last byte is held back
//! ([`SplicedFrame::last`]) until the sender has checked the slices were not cut under it.

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};

use crate::log::batch::put_unsigned_varint;
use crate::log::{FileSlice, RecordSlices};

/// Bytes of a records marker: the process key, then the marker's index.
pub const MARKER_BYTES: usize = 16;

/// What the connection writes for one request.
pub enum Outgoing {
    /// A whole encoded frame.
    Frame(BytesMut),
    Spliced(SplicedFrame),
}

impl From<BytesMut> for Outgoing {
    fn from(frame: BytesMut) -> Self {
        Outgoing::Frame(frame)
    }
}

/// One part of a spliced frame, in order.
pub enum Part {
    Bytes(Bytes),
    File(FileSlice),
}

/// A frame whose records are sent from files: `parts`, then `last`, the frame's final byte,
/// sent only if every slice is [`SplicedFrame::unchanged`] once the parts are out.
pub struct SplicedFrame {
    pub parts: Vec<Part>,
    pub last: Bytes,
}

impl SplicedFrame {
    /// Whether no file was cut since its slice was taken (see `log::file_slice`).
    pub fn unchanged(&self) -> bool {
        self.parts.iter().all(|part| match part {
            Part::File(slice) => slice.unchanged(),
            Part::Bytes(_) => true,
        })
    }
}

impl Outgoing {
    /// The whole frame in one buffer, file slices read now: for callers without a socket
    /// (tests, fuzzing). Fails if a file was cut under a slice.
    pub fn into_frame(self) -> std::io::Result<BytesMut> {
        let frame = match self {
            Outgoing::Frame(frame) => return Ok(frame),
            Outgoing::Spliced(frame) => frame,
        };
        let mut out = BytesMut::new();
        for part in &frame.parts {
            match part {
                Part::Bytes(bytes) => out.extend_from_slice(bytes),
                Part::File(slice) => slice.read_into(&mut out)?,
            }
        }
        if !frame.unchanged() {
            return Err(std::io::Error::other(TRUNCATED_WHILE_SENT));
        }
        out.extend_from_slice(&frame.last);
        Ok(out)
    }
}

/// Why a spliced response is abandoned.
pub const TRUNCATED_WHILE_SENT: &str = "a segment file was truncated while its bytes were sent";

fn marker_key() -> [u8; 8] {
    static KEY: OnceLock<[u8; 8]> = OnceLock::new();
    *KEY.get_or_init(|| {
        let random = uuid::Uuid::new_v4();
        random.as_bytes()[..8].try_into().expect("8 of 16 bytes")
    })
}

/// The records marker standing for the `index`th file-backed records of a response.
pub fn marker(index: usize) -> Bytes {
    let mut marker = BytesMut::with_capacity(MARKER_BYTES);
    marker.put_slice(&marker_key());
    marker.put_u64(index as u64);
    marker.freeze()
}

/// The encoded response `frame` (length prefix included, flexible version) with the
/// markers `0..from_files.len()` replaced by those records. A frame without markers is
/// returned whole. Errors name a broken invariant of our own encoding.
pub fn splice(
    mut frame: BytesMut,
    from_files: Vec<RecordSlices>,
) -> Result<Outgoing, &'static str> {
    if from_files.is_empty() {
        return Ok(Outgoing::Frame(frame));
    }
    // Compact bytes: the unsigned varint of length + 1, then the bytes.
    let marker_prefix = compact_length(MARKER_BYTES)?;
    let mut positions = Vec::with_capacity(from_files.len());
    let mut search_from = 4;
    let size = i32::from_be_bytes(frame[..4].try_into().expect("4 bytes"));
    let mut size = usize::try_from(size).map_err(|_| "a negative frame size")?;
    for (index, records) in from_files.iter().enumerate() {
        let marker = marker(index);
        let at = find(&frame[search_from..], &marker)
            .map(|found| search_from + found)
            .ok_or("a file-backed records marker is missing or out of order")?;
        let prefix_at = at - marker_prefix.len();
        if frame[prefix_at..at] != marker_prefix[..] {
            return Err("a records marker is not preceded by its compact length");
        }
        let prefix = compact_length(records.len())?;
        size = spliced_size(size, records.len());
        positions.push((prefix_at, prefix));
        search_from = at + MARKER_BYTES;
    }
    let size = i32::try_from(size).map_err(|_| "a spliced response overflows its length")?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    let mut frame = frame.freeze();
    let mut parts = Vec::with_capacity(from_files.len() * 3 + 1);
    let mut taken = 0;
    for ((prefix_at, prefix), records) in positions.into_iter().zip(from_files) {
        parts.push(Part::Bytes(frame.split_to(prefix_at - taken)));
        parts.push(Part::Bytes(prefix));
        parts.extend(records.slices().iter().cloned().map(Part::File));
        let _marker = frame.split_to(marker_prefix.len() + MARKER_BYTES);
        taken = prefix_at + marker_prefix.len() + MARKER_BYTES;
    }
    // Flexible responses end with tagged fields after the last records: never empty.
    if frame.is_empty() {
        return Err("a spliced response ends in records, not tagged fields");
    }
    let last = frame.split_off(frame.len() - 1);
    parts.push(Part::Bytes(frame));
    Ok(SplicedFrame { parts, last }.into())
}

impl From<SplicedFrame> for Outgoing {
    fn from(frame: SplicedFrame) -> Self {
        Outgoing::Spliced(frame)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// The size of an encoded response of `size` bytes once one marker (with its compact
/// length) is replaced by `records` bytes (with theirs).
pub fn spliced_size(size: usize, records: usize) -> usize {
    let prefix = |length: usize| compact_length(length).map_or(5, |prefix| prefix.len());
    (size + prefix(records) + records).saturating_sub(prefix(MARKER_BYTES) + MARKER_BYTES)
}

/// The length prefix of compact bytes of `length` bytes.
fn compact_length(length: usize) -> Result<Bytes, &'static str> {
    let value = u32::try_from(length + 1).map_err(|_| "records longer than compact bytes hold")?;
    let mut out = BytesMut::with_capacity(5);
    put_unsigned_varint(&mut out, value.into());
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kafka_protocol::messages::fetch_response::{
        FetchableTopicResponse, NodeEndpoint, PartitionData,
    };
    use kafka_protocol::messages::{ApiKey, BrokerId, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::api::{RequestContext, encode_response};
    use crate::log::file_slice::SegmentFile;

    fn context(version: i16) -> RequestContext {
        RequestContext::for_tests(ApiKey::Fetch, version)
    }

    fn file_with(bytes: &[u8]) -> Arc<SegmentFile> {
        SegmentFile::holding(bytes)
    }

    fn partition(index: i32, records: Bytes) -> PartitionData {
        PartitionData::default()
            .with_partition_index(index)
            .with_high_watermark(1000 + i64::from(index))
            .with_records(Some(records))
    }

    /// A response with records in memory, one in error, two from files (one of them
    /// across two files, as a read spanning segments is), and node endpoints.
    fn response(records: [Bytes; 3]) -> FetchResponse {
        let [small, large, spanning] = records;
        let topic = |name: &str, partitions| {
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(name.into())))
                .with_topic_id(uuid::Uuid::from_u128(0xfeed))
                .with_partitions(partitions)
        };
        let failed = PartitionData::default()
            .with_partition_index(9)
            .with_error_code(6)
            .with_records(Some(Bytes::new()));
        FetchResponse::default()
            .with_throttle_time_ms(3)
            .with_responses(vec![
                topic("a", vec![partition(0, small), partition(1, large), failed]),
                topic("b", vec![partition(0, spanning)]),
            ])
            .with_node_endpoints(vec![
                NodeEndpoint::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(9092),
            ])
    }

    #[test]
    fn a_spliced_frame_is_byte_for_byte_the_frame_encoded_with_its_records() {
        let large: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let first: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let second = vec![0xab; 200_000];
        let spanning = [first.clone(), second.clone()].concat();
        let (large_file, span_a, span_b) = (
            file_with(&[b"before".as_slice(), &large].concat()),
            file_with(&first),
            file_with(&[vec![1; 10], second.clone()].concat()),
        );
        for version in SEND_FROM_FILE_VERSIONS {
            let expected = encode_response(
                &context(version),
                &response([
                    Bytes::from_static(b"inline"),
                    Bytes::from(large.clone()),
                    Bytes::from(spanning.clone()),
                ]),
            )
            .unwrap();
            let mut from_large = RecordSlices::default();
            from_large.push(FileSlice::new(&large_file, 6, large.len()), 10);
            let mut from_two = RecordSlices::default();
            from_two.push(FileSlice::new(&span_a, 0, first.len()), 20);
            from_two.push(FileSlice::new(&span_b, 10, second.len()), 30);
            let with_markers = response([Bytes::from_static(b"inline"), marker(0), marker(1)]);
            let frame = encode_response(&context(version), &with_markers).unwrap();
            let spliced = splice(frame, vec![from_large, from_two]).unwrap();
            assert!(matches!(spliced, Outgoing::Spliced(_)), "v{version}");
            assert_eq!(spliced.into_frame().unwrap(), expected, "v{version}");
        }
    }

    const SEND_FROM_FILE_VERSIONS: std::ops::RangeInclusive<i16> = 12..=17;

    #[test]
    fn a_frame_without_markers_is_left_whole() {
        let frame = encode_response(&context(17), &response(Default::default())).unwrap();
        let outgoing = splice(frame.clone(), Vec::new()).unwrap();
        assert!(matches!(&outgoing, Outgoing::Frame(whole) if *whole == frame));
    }

    #[test]
    fn a_missing_marker_is_an_error_not_a_wrong_frame() {
        let frame = encode_response(&context(17), &response(Default::default())).unwrap();
        let mut slices = RecordSlices::default();
        slices.push(FileSlice::new(&file_with(b"records"), 0, 7), 1);
        assert!(splice(frame, vec![slices]).is_err());
    }

    #[test]
    fn a_slice_cut_before_it_is_read_fails_the_frame() {
        let file = file_with(&[7; 50_000]);
        let mut slices = RecordSlices::default();
        slices.push(FileSlice::new(&file, 0, 50_000), 1);
        let with_marker = response([Bytes::new(), marker(0), Bytes::new()]);
        let frame = encode_response(&context(16), &with_marker).unwrap();
        let spliced = splice(frame, vec![slices]).unwrap();
        // Cut into the slice and written again to the old length: readable, but not the bytes.
        file.truncate(1_000).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&**file, &[8; 49_000], 1_000).unwrap();
        assert!(spliced.into_frame().is_err());
    }
}
