//! The walk has two ways to read a record: from a slice (an uncompressed batch, snappy's
//! output, a stream's buffer holding whole records) and field by field from a stream,
//! refilling as it goes. Both run the one parser (`FieldSource::record`); what differs is
//! how each source checks a field against the record's length and the data's end. These
//! tests run every way over the same corpus (valid batches, every test input of the walk,
//! and mutations of them: flipped bytes, truncations, inserted bytes, varints padded,
//! split and too long) and require the same answer: the same records, or the same error
//! variant and message.

use std::io::{BufReader, Read};

use super::tests::{CODECS, compress};
use super::*;
use crate::log::batch::put_varint;
use crate::log::test_support::{batch_around, record_bytes, record_with_headers};

/// The field-by-field read of every record, as the walk read all streams before it parsed
/// whole records from the buffer: the reference for the buffered walk.
struct FieldByField<R>(StreamRecords<R>);

impl<R: Read> Records for FieldByField<R> {
    fn next_record(
        &mut self,
        index: i32,
        base_timestamp: i64,
    ) -> Result<(RecordInfo, i32), BatchError> {
        self.0.record(index, base_timestamp)
    }

    fn at_end(&mut self) -> Result<bool, BatchError> {
        self.0.at_end()
    }
}

type Walked = Result<Vec<RecordInfo>, BatchError>;

fn header_for(count: i32, last_offset_delta: i32) -> BatchHeader {
    let mut batch = batch_around(&[], 0, count, 0);
    if last_offset_delta >= 0 {
        crate::log::batch::set_last_offset_delta(&mut batch, last_offset_delta);
    }
    BatchHeader::parse(&batch).unwrap()
}

fn walk_with(records: impl Records, header: &BatchHeader, deltas: OffsetDeltas) -> Walked {
    let mut seen = Vec::new();
    walk_records(records, header, deltas, &mut |record| seen.push(record))?;
    Ok(seen)
}

/// Buffer sizes for the stream reads of plain bytes: one byte (every field refills),
/// sizes that cut records and varints at every place, and the walk's own.
const CAPACITIES: [usize; 8] = [1, 2, 3, 5, 7, 16, 64, STREAM_BUFFER_BYTES];

/// Walks `body` every way under `header` and `deltas`; all must agree. Returns the answer.
fn agree(body: &[u8], header: &BatchHeader, deltas: OffsetDeltas, what: &str) -> Walked {
    let expected = walk_with(SliceRecords::new(body), header, deltas);
    for capacity in CAPACITIES {
        let source = BufReader::with_capacity(capacity, body);
        let buffered = walk_with(StreamRecords::over(source), header, deltas);
        assert_eq!(buffered, expected, "{what}: buffered, capacity {capacity}");
        let source = BufReader::with_capacity(capacity, body);
        let field_by_field = walk_with(FieldByField(StreamRecords::over(source)), header, deltas);
        assert_eq!(
            field_by_field, expected,
            "{what}: field by field, {capacity}"
        );
    }
    expected
}

/// Walks `body` as `count` records under both offset rules (header last offset delta
/// `count - 1`, and one past it for the gapped rule).
fn agree_all(body: &[u8], count: i32, what: &str) {
    for (deltas, last) in [
        (OffsetDeltas::Exact, count - 1),
        (OffsetDeltas::Increasing, count - 1),
        (OffsetDeltas::Increasing, count + 1),
    ] {
        let _answer = agree(body, &header_for(count, last), deltas, what);
    }
}

/// A deterministic xorshift generator: the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// A zig-zag varint of `value` written in `width` bytes or more: minimal when `width` is
/// smaller, else padded with continuation bytes (legal up to 5 bytes for a varint and 10
/// for a varlong; longer is a varint too long).
fn put_padded_varint(buffer: &mut Vec<u8>, value: i64, width: usize) {
    let start = buffer.len();
    put_varint(buffer, value);
    while buffer.len() - start < width {
        *buffer.last_mut().unwrap() |= 0x80;
        buffer.push(0);
    }
}

/// One record with every varint padded by the generator (now and then past its maximum),
/// so varints end, split and overflow at every place a buffer can cut them.
fn padded_record(rng: &mut Rng, offset_delta: i64, value_bytes: usize) -> Vec<u8> {
    let width = |rng: &mut Rng| match rng.below(8) {
        0 => 2 + rng.below(4),
        1 if rng.below(8) == 0 => 6 + rng.below(6), // past 5 (varint) or 10 (varlong)
        _ => 0,
    };
    let mut record = vec![0u8]; // attributes
    put_padded_varint(&mut record, offset_delta * 3, width(rng)); // timestamp delta
    put_padded_varint(&mut record, offset_delta, width(rng));
    if rng.below(4) == 0 {
        put_padded_varint(&mut record, -1, width(rng)); // null key
    } else {
        put_padded_varint(&mut record, 3, width(rng));
        record.extend_from_slice(b"key");
    }
    put_padded_varint(&mut record, value_bytes as i64, width(rng));
    record.extend((0..value_bytes).map(|i| i as u8));
    let header_count = rng.below(3);
    put_padded_varint(&mut record, header_count as i64, width(rng));
    for _ in 0..header_count {
        put_padded_varint(&mut record, 1, width(rng));
        record.push(b'h');
        put_padded_varint(&mut record, -1, width(rng));
    }
    let mut framed = Vec::new();
    put_padded_varint(&mut framed, record.len() as i64, width(rng));
    framed.extend(record);
    framed
}

/// Valid bodies (record count, bytes) and the walk's other test inputs.
fn corpus(rng: &mut Rng) -> Vec<(i32, Vec<u8>)> {
    let plain = |count: i64, value_bytes: usize| -> Vec<u8> {
        (0..count)
            .flat_map(|i| record_bytes(i, i, Some(b"key"), &vec![b'v'; value_bytes]))
            .collect()
    };
    let mut bodies = vec![
        (0, Vec::new()),
        (1, plain(1, 0)),
        (3, plain(3, 5)),
        (40, plain(40, 100)),
        // Straddles the walk's own buffer: records cut at a refill.
        (300, plain(300, 100)),
        // Values longer than the buffer.
        (2, plain(2, 20_000)),
        (
            2,
            [
                record_with_headers(0, 0, None, b"v", &[(b"h", b"1"), (b"h", b"2")]),
                record_with_headers(1, -5, Some(b""), b"", &[(b"\xff", b"")]),
            ]
            .concat(),
        ),
        // The walk's unit-test inputs that are not valid bodies.
        (1, vec![0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        (1, vec![0x01]),
        (1, vec![0x00]),
        (
            2,
            [
                record_bytes(0, 0, Some(b"k"), b"a"),
                record_bytes(2, 0, Some(b"k"), b"b"),
            ]
            .concat(),
        ),
        (
            2,
            [
                record_bytes(0, 0, Some(b"k"), b"a"),
                record_bytes(0, 0, Some(b"k"), b"b"),
            ]
            .concat(),
        ),
        (
            3,
            [0, 2, 5]
                .iter()
                .flat_map(|&d| record_bytes(d, d, Some(b"key"), b"v"))
                .collect(),
        ),
    ];
    let mut key_too_long = record_bytes(0, 0, Some(b"key"), b"v");
    key_too_long[0] = 2 * 4;
    bodies.push((1, key_too_long));
    let mut negative_headers = record_bytes(0, 0, None, b"v");
    *negative_headers.last_mut().unwrap() = 0x01;
    bodies.push((1, negative_headers));
    for count in [1, 4, 30] {
        let mut body = Vec::new();
        for delta in 0..count {
            let value_bytes = rng.below(40);
            body.extend(padded_record(rng, delta, value_bytes));
        }
        bodies.push((count as i32, body));
    }
    bodies
}

/// Mutations of `body`: every truncation and every byte flipped several ways when it is
/// small, a sample of them when it is large, and random multi-byte edits.
fn mutations(rng: &mut Rng, body: &[u8]) -> Vec<Vec<u8>> {
    let small = body.len() <= 300;
    let positions: Vec<usize> = if small {
        (0..body.len()).collect()
    } else {
        (0..40).map(|_| rng.below(body.len())).collect()
    };
    let mut mutated = Vec::new();
    for &at in &positions {
        mutated.push(body[..at].to_vec());
        for flip in [0x80u8, 0x01, 0x7f, 0xff] {
            let mut edited = body.to_vec();
            edited[at] ^= flip;
            mutated.push(edited);
        }
        let mut inserted = body.to_vec();
        inserted.insert(at, 0x80);
        mutated.push(inserted);
    }
    for _ in 0..if small { 100 } else { 20 } {
        let mut edited = body.to_vec();
        for _ in 0..1 + rng.below(4) {
            if edited.is_empty() {
                break;
            }
            let at = rng.below(edited.len());
            edited[at] = rng.next() as u8;
        }
        mutated.push(edited);
    }
    mutated.push([body, &[0]].concat());
    mutated
}

#[test]
fn slice_and_stream_reads_agree_on_valid_and_mutated_records() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut answers = [0usize; 2];
    for (count, body) in corpus(&mut rng) {
        for (index, mutated) in [body.clone()]
            .into_iter()
            .chain(mutations(&mut rng, &body))
            .enumerate()
        {
            for claimed in [count - 1, count, count + 1] {
                let what = format!("{count} records, mutation {index}, claimed {claimed}");
                agree_all(&mutated, claimed.max(0), &what);
            }
            let walked = agree(
                &mutated,
                &header_for(count, count - 1),
                OffsetDeltas::Exact,
                "",
            );
            answers[walked.is_ok() as usize] += 1;
        }
    }
    // The corpus reaches both answers, many times over.
    assert!(answers[0] > 1_000 && answers[1] > 20, "{answers:?}");
}

/// The records of `compressed` (code 1, 3 or 4), through the walk's stream with `cap`.
fn stream_of(
    code: i16,
    compressed: &[u8],
    cap: usize,
) -> Result<StreamRecords<Capped<Box<dyn Read + '_>>>, BatchError> {
    let decoder: Box<dyn Read> = match code {
        1 => Box::new(flate2::bufread::MultiGzDecoder::new(compressed)),
        3 => Box::new(lz4_flex::frame::FrameDecoder::new(compressed)),
        4 => Box::new(zstd::stream::read::Decoder::with_buffer(compressed).map_err(stream_error)?),
        _ => unreachable!("a stream codec"),
    };
    Ok(StreamRecords::new(decoder, cap))
}

#[test]
fn compressed_streams_read_alike_whole_and_field_by_field() {
    // The real decoders, the real buffer: a decompression error or the cap can fall
    // anywhere in a record, and must be met (or not) as reading field by field meets it.
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut bodies = corpus(&mut rng);
    bodies.truncate(7); // the valid ones
    for (codec, code) in CODECS.into_iter().filter(|(_, code)| *code != 2) {
        for (count, body) in &bodies {
            let header = header_for(*count, count - 1);
            let compressed = compress(codec, body);
            let mut inputs = mutations(&mut rng, &compressed);
            inputs.push(compressed.clone());
            for (index, input) in inputs.iter().enumerate() {
                for cap in [
                    1,
                    body.len() / 2,
                    body.len().saturating_sub(1),
                    body.len(),
                    64 << 20,
                ] {
                    let what = format!("{codec}, {count} records, mutation {index}, cap {cap}");
                    let buffered = stream_of(code, input, cap)
                        .and_then(|records| walk_with(records, &header, OffsetDeltas::Exact));
                    let field_by_field = stream_of(code, input, cap).and_then(|records| {
                        walk_with(FieldByField(records), &header, OffsetDeltas::Exact)
                    });
                    assert_eq!(buffered, field_by_field, "{what}");
                }
            }
        }
    }
}

#[test]
fn every_codec_reads_a_mutated_body_as_the_slice_read_does() {
    // Mutated records, validly compressed: whatever the codec, the walk's answer is the
    // answer for the plain bytes.
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for (count, body) in corpus(&mut rng) {
        let mut inputs = mutations(&mut rng, &body);
        inputs.truncate(200);
        inputs.push(body);
        for input in inputs {
            let expected = walk_whole(&batch_around(&input, 0, count, 0));
            for (codec, code) in CODECS {
                let walked = walk_whole(&batch_around(&compress(codec, &input), code, count, 0));
                assert_eq!(walked, expected, "{codec}, {count} records");
            }
        }
    }
}

fn walk_whole(batch: &[u8]) -> Walked {
    let header = BatchHeader::parse(batch).unwrap();
    let mut seen = Vec::new();
    walk_batch(batch, &header, OffsetDeltas::Exact, 1 << 20, &mut |r| {
        seen.push(r)
    })?;
    Ok(seen)
}

/// A record whose fields are given raw: `fields` follow the attributes byte, and the
/// record's length prefix is `length` (None: the true length).
fn hostile_record(length: Option<i64>, fields: &[i64], tail: &[u8]) -> Vec<u8> {
    let mut record = vec![0u8]; // attributes
    for &field in fields {
        put_varint(&mut record, field);
    }
    record.extend_from_slice(tail);
    let mut framed = Vec::new();
    put_varint(&mut framed, length.unwrap_or(record.len() as i64));
    framed.extend(record);
    framed
}

#[test]
fn hostile_lengths_and_counts_are_refused_by_every_read() {
    // Fields: timestamp delta, offset delta, key length, [key], value length, [value],
    // header count, ... Each input claims more than it holds or a length no record can
    // have; every read must refuse it, the same way, without allocating what it claims.
    let max = i64::from(i32::MAX);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "record length i32::MAX",
            hostile_record(Some(max), &[0, 0, -1, -1, 0], &[]),
        ),
        (
            "record length -2",
            hostile_record(Some(-2), &[0, 0, -1, -1, 0], &[]),
        ),
        ("record length 0", hostile_record(Some(0), &[], &[])),
        (
            "key length i32::MAX",
            hostile_record(None, &[0, 0, max], b"k"),
        ),
        (
            "value length i32::MAX",
            hostile_record(None, &[0, 0, -1, max], b"v"),
        ),
        (
            "header count i32::MAX",
            hostile_record(None, &[0, 0, -1, -1, max], &[]),
        ),
        (
            "header count -1",
            hostile_record(None, &[0, 0, -1, -1, -1], &[]),
        ),
        (
            "header key null",
            hostile_record(None, &[0, 0, -1, -1, 1, -1, -1], &[]),
        ),
        (
            "header key i32::MAX",
            hostile_record(None, &[0, 0, -1, -1, 1, max], &[]),
        ),
        (
            "header value i32::MAX",
            hostile_record(None, &[0, 0, -1, -1, 1, 1], b"h\xfe\xff\xff\xff\x0f"),
        ),
        (
            "offset delta 1 in record 0",
            hostile_record(None, &[0, 1, -1, -1, 0], &[]),
        ),
        // A length prefix of 6 varint bytes (5 is the most an int32 takes).
        ("record length varint too long", {
            let mut framed = Vec::new();
            put_padded_varint(&mut framed, 7, 6);
            framed.extend(hostile_record(None, &[0, 0, -1, -1, 0], &[]).split_off(1));
            framed
        }),
        // A timestamp delta of 11 varlong bytes (10 is the most an int64 takes).
        ("timestamp delta varlong too long", {
            let mut record = vec![0u8];
            put_padded_varint(&mut record, 0, 11);
            for field in [0, -1, -1, 0] {
                put_varint(&mut record, field);
            }
            let mut framed = Vec::new();
            put_varint(&mut framed, record.len() as i64);
            framed.extend(record);
            framed
        }),
    ];
    // Kafka's `DefaultRecord.readFrom` reads any negative key, value or header value
    // length as null, so those are records, not errors.
    for (what, body) in [
        (
            "null key and value",
            hostile_record(None, &[0, 0, -1, -1, 0], &[]),
        ),
        (
            "key length -2",
            hostile_record(None, &[0, 0, -2, -1, 0], &[]),
        ),
        (
            "value length -2",
            hostile_record(None, &[0, 0, -1, -2, 0], &[]),
        ),
        (
            "header value -7",
            hostile_record(None, &[0, 0, -1, -1, 1, 1], b"h\x0d"),
        ),
    ] {
        let walked = agree(&body, &header_for(1, 0), OffsetDeltas::Exact, what);
        assert!(walked.is_ok_and(|records| records.len() == 1), "{what}");
    }
    for (what, body) in cases {
        for deltas in [OffsetDeltas::Exact, OffsetDeltas::Increasing] {
            let walked = agree(&body, &header_for(1, 0), deltas, what);
            assert!(
                walked.is_err(),
                "{what} ({deltas:?}) was accepted: {walked:?}"
            );
        }
        for (codec, code) in CODECS {
            let walked = walk_whole(&batch_around(&compress(codec, &body), code, 1, 0));
            assert!(walked.is_err(), "{what} under {codec} was accepted");
        }
    }
}

/// The full parser's read of the record at the front of `data`: the record, its offset
/// delta and the bytes it took, or its error.
fn full_read(data: &[u8], index: i32) -> Result<(RecordInfo, i32, usize), BatchError> {
    let mut source = SliceRecords::new(data);
    let (record, offset_delta) = source.record(index, 1_000)?;
    Ok((record, offset_delta, data.len() - source.rest.len()))
}

#[test]
fn the_quick_read_gives_the_full_parsers_record_or_leaves_it_the_fault() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    // (quick read took the record, full parser refused) counts: both must be seen.
    let mut outcomes = [0usize; 2];
    let mut check = |data: &[u8], index: i32| {
        let full = full_read(data, index);
        // The quick read, and its byte-by-byte part alone (which it falls back on).
        for quick in [
            quick::whole_record(data, index, 1_000),
            quick::bytewise(data, index, 1_000),
        ] {
            match (quick, &full) {
                (Some(quick), Ok(full)) => {
                    assert_eq!(&quick, full, "{data:?}");
                    outcomes[0] += 1;
                }
                // A refusal is the full parser's to explain.
                (None, Err(_)) => outcomes[1] += 1,
                (quick, full) => panic!("quick {quick:?}, full {full:?}: {data:?}"),
            }
        }
        full.ok().map(|(_, _, taken)| taken)
    };
    for (_, body) in corpus(&mut rng) {
        for input in [body.clone()].into_iter().chain(mutations(&mut rng, &body)) {
            // Record by record, as a walk meets them...
            let mut rest = &input[..];
            let mut index = 0;
            while let Some(taken) = check(rest, index) {
                rest = &rest[taken..];
                index += 1;
            }
            // ...and from every byte of a small input, as if a record started there.
            if input.len() <= 300 {
                for start in 0..input.len() {
                    check(&input[start..], 0);
                }
            }
        }
    }
    assert!(outcomes[0] > 1_000 && outcomes[1] > 1_000, "{outcomes:?}");
}
