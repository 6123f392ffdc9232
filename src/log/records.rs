//! A streaming walk over every record of a v2 batch (Kafka's `DefaultRecord.readFrom`
//! and `LogValidator`): at produce, so nothing is stored that a consumer cannot read back,
//! and over stored batches, before they are decoded (coordinator loads, the cleaner).
//!
//! The CRC only proves the bytes arrived as the producer sent them; a producer (or an
//! attacker) can still send a payload that does not decompress, or records whose count and
//! offset deltas disagree with the header, and every consumer of the partition would then
//! stall on it. So produce decompresses each batch as a stream, parses each record's
//! fields without copying keys or values, and checks the structure: exactly
//! `record_count` records, offset deltas 0..n-1, every length and varint inside its record,
//! no bytes left over. Decompression is capped ([`LogConfig::decompressed_bytes_max`]) so
//! a compression bomb costs bounded memory and time.
//!
//! A stored batch is walked under a looser offset rule ([`OffsetDeltas::Increasing`]): the
//! cleaner keeps a batch with only its surviving records, at their original offsets, so
//! its offset deltas may have gaps.
//!
//! Decompression failures are CORRUPT_MESSAGE, structural faults INVALID_RECORD. Checks
//! that depend on topic config (keys on compacted topics, timestamp bounds) become
//! per-record errors ([`RecordError`]) reported as KIP-467 `record_errors`, as Kafka does.

use std::io::{self, BufRead, BufReader, Read};

use kafka_protocol::records::Record;

use crate::log::batch::{BATCH_HEADER_BYTES, BatchHeader, NO_TIMESTAMP};
use crate::log::config::{LogConfig, TimestampType};
use crate::log::error::{BatchError, RecordError, RecordErrorCode};

/// What the walk learns about one record, for the checks that depend on topic config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// Position of the record in its batch (Kafka's `batch_index`); under
    /// [`OffsetDeltas::Exact`] also its offset delta.
    pub index: i32,
    /// Absolute timestamp: the batch's base timestamp plus the record's delta.
    pub timestamp_ms: i64,
    pub has_key: bool,
    /// Headers as sent, repeated names included.
    pub header_count: usize,
}

/// Which offset deltas a walk accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetDeltas {
    /// One record per offset, deltas 0..n-1: what a producer must send (Kafka's
    /// `LogValidator`), so produce validation and its recompression use it.
    Exact,
    /// Deltas from 0 up, strictly increasing, none past the header's last offset delta:
    /// a batch already in the log, which the cleaner may have left with gaps (Kafka keeps
    /// a compacted batch's surviving records at their original offsets). Readers of
    /// stored batches use it, or they refuse compacted data.
    Increasing,
}

/// Walks every record of the whole batch `batch` (header first), calling `visit` for each
/// in order, with offset deltas checked by `deltas`. Decompresses as a stream, never
/// producing more than `decompressed_bytes_max`.
pub fn walk_batch(
    batch: &[u8],
    header: &BatchHeader,
    deltas: OffsetDeltas,
    decompressed_bytes_max: usize,
    visit: &mut impl FnMut(RecordInfo),
) -> Result<(), BatchError> {
    let body = batch
        .get(BATCH_HEADER_BYTES..header.total_bytes())
        .ok_or_else(|| BatchError::Corrupt("batch is shorter than its header says".into()))?;
    let cap = decompressed_bytes_max;
    match header.compression_code() {
        0 => walk_records(SliceRecords::new(body), header, deltas, visit),
        1 => {
            let decoder = flate2::bufread::MultiGzDecoder::new(body);
            walk_records(StreamRecords::new(decoder, cap), header, deltas, visit)
        }
        2 => {
            let plain = snappy::decompress(body, cap)?;
            walk_records(SliceRecords::new(&plain), header, deltas, visit)
        }
        3 => {
            let decoder = lz4_flex::frame::FrameDecoder::new(body);
            walk_records(StreamRecords::new(decoder, cap), header, deltas, visit)
        }
        4 => {
            let decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(stream_error)?;
            walk_records(StreamRecords::new(decoder, cap), header, deltas, visit)
        }
        code => Err(BatchError::Corrupt(format!(
            "unknown compression code {code}"
        ))),
    }
}

/// Reads exactly `record_count` records from `records`, then requires the end of them.
/// `records` is taken by value: owned by the loop, its position stays in registers.
fn walk_records(
    mut records: impl Records,
    header: &BatchHeader,
    deltas: OffsetDeltas,
    visit: &mut impl FnMut(RecordInfo),
) -> Result<(), BatchError> {
    let mut previous_delta = -1;
    for index in 0..header.record_count.max(0) {
        let (record, offset_delta) = records.next_record(index, header.base_timestamp)?;
        deltas.check(
            index,
            offset_delta,
            previous_delta,
            header.last_offset_delta,
        )?;
        previous_delta = offset_delta;
        visit(record);
    }
    if !records.at_end()? {
        return Err(BatchError::InvalidRecord(
            "Incorrect declared batch size, records still remaining in file".into(),
        ));
    }
    Ok(())
}

impl OffsetDeltas {
    /// Whether the record at `index` may have `delta`, after a record with `previous`
    /// (-1 before the first, so a negative delta is never in order) in a batch whose
    /// header ends at `last`.
    #[inline]
    fn check(self, index: i32, delta: i32, previous: i32, last: i32) -> Result<(), BatchError> {
        let in_order = match self {
            OffsetDeltas::Exact => delta == index,
            OffsetDeltas::Increasing => delta > previous,
        };
        if in_order && delta <= last {
            return Ok(());
        }
        Err(self.refusal(index, delta, previous, last))
    }

    #[cold]
    fn refusal(self, index: i32, delta: i32, previous: i32, last: i32) -> BatchError {
        let why = match self {
            OffsetDeltas::Exact if delta != index => "offsets must increase by one from 0",
            OffsetDeltas::Increasing if delta <= previous => {
                "offset deltas must increase from 0 or more"
            }
            // In order, so past the end: under Exact, more records than the header's
            // offsets hold (produce refuses that header before any walk).
            _ => "it lies past the batch's last offset delta",
        };
        match self {
            // Produce's message, as clients have always seen it.
            OffsetDeltas::Exact => invalid(format!(
                "Inner record at batch index {index} has offset delta {delta}: {why}"
            )),
            OffsetDeltas::Increasing => invalid(format!(
                "Inner record at batch index {index} has offset delta {delta}: {why} \
                 (previous delta {previous}, last offset delta {last})"
            )),
        }
    }
}

/// The decompressed records of one batch, one `DefaultRecord` after another.
trait Records {
    /// The next record, with its offset delta for the caller's rule to check.
    fn next_record(
        &mut self,
        index: i32,
        base_timestamp: i64,
    ) -> Result<(RecordInfo, i32), BatchError>;

    /// Whether nothing follows the records read so far.
    fn at_end(&mut self) -> Result<bool, BatchError>;
}

/// Where a record's fields come from, and the one parser of `DefaultRecord`
/// ([`FieldSource::record`]) written over it. A source keeps a budget: what is left of the
/// current record's declared length, which no field may read past.
///
/// The provided methods are the record's rules, the required ones how bytes are had. Each
/// required read checks the budget before it asks for bytes (a field past the budget is a
/// size error even when the data ends first), except at the start of a varint, where a
/// stream refills before anything is checked: the order the walk has always had, which
/// decides the error when a record breaks two rules (or a decompressor fails) at once.
trait FieldSource {
    /// Before a record's length varint: no budget yet.
    fn unbounded(&mut self);

    /// After the length varint: the next `length` bytes are the record.
    fn start_record(&mut self, length: usize);

    /// What is left of the budget.
    fn budget(&self) -> usize;

    fn byte(&mut self) -> Result<u8, BatchError>;

    /// Steps over `count` bytes without copying them.
    fn skip(&mut self, count: usize) -> Result<(), BatchError>;

    /// A little-endian base-128 varint of at most `max_bytes` bytes, before zig-zag;
    /// `too_long` if every one of them has the continuation bit.
    fn raw_varint(&mut self, max_bytes: usize, too_long: &'static str) -> Result<u64, BatchError>;

    /// One record: length, attributes, timestamp delta, offset delta, key, value, headers.
    /// Returns it with its offset delta, for the caller's rule to check. It and its field
    /// readers are always inlined: each call the compiler kept cost more than the field's
    /// parse, and made the source's fields live in memory (measured with callgrind).
    #[inline(always)]
    fn record(&mut self, index: i32, base_timestamp: i64) -> Result<(RecordInfo, i32), BatchError> {
        self.unbounded(); // the length varint sits in front of the record body
        let length = self.varint()?;
        let Ok(length) = usize::try_from(length) else {
            return Err(invalid(format!("Invalid record size {length}")));
        };
        self.start_record(length);
        let _attributes = self.byte()?; // unused in v2 records, as Kafka ignores them
        let timestamp_delta = self.varlong()?;
        let offset_delta = self.varint()?;
        let has_key = self.skip_nullable_bytes()?;
        self.skip_nullable_bytes()?; // value
        let header_count = self.skip_headers()?;
        let left = self.budget();
        if left != 0 {
            return Err(invalid(format!(
                "Invalid record size: expected to read {length} bytes in record payload, \
                 but instead read {}",
                length - left
            )));
        }
        let info = RecordInfo {
            index,
            timestamp_ms: base_timestamp.wrapping_add(timestamp_delta),
            has_key,
            header_count,
        };
        Ok((info, offset_delta))
    }

    /// A varint length and that many bytes, skipped; -1 is null. Whether it was non-null.
    #[inline(always)]
    fn skip_nullable_bytes(&mut self) -> Result<bool, BatchError> {
        let length = self.varint()?;
        match usize::try_from(length) {
            Ok(length) => self.skip(length).map(|()| true),
            Err(_) => Ok(false),
        }
    }

    #[inline(always)]
    fn skip_headers(&mut self) -> Result<usize, BatchError> {
        let count = self.varint()?;
        if count < 0 {
            return Err(invalid(format!(
                "Found invalid number of record headers {count}"
            )));
        }
        // Each header takes at least two bytes of the budget, so this loop is bounded by
        // the record's length, not by the count the client claims.
        for _ in 0..count {
            let key_length = self.varint()?;
            let Ok(key_length) = usize::try_from(key_length) else {
                return Err(invalid(format!(
                    "Invalid negative header key size {key_length}"
                )));
            };
            self.skip(key_length)?;
            self.skip_nullable_bytes()?;
        }
        Ok(count as usize)
    }

    /// Kafka's zig-zag varint: at most 5 bytes.
    #[inline(always)]
    fn varint(&mut self) -> Result<i32, BatchError> {
        let too_long = "Varint is too long, the most significant bit in the 5th byte is set";
        let raw = self.raw_varint(5, too_long)? as u32;
        Ok((raw >> 1) as i32 ^ -((raw & 1) as i32))
    }

    /// Kafka's zig-zag varlong: at most 10 bytes.
    #[inline(always)]
    fn varlong(&mut self) -> Result<i64, BatchError> {
        let too_long = "Varlong is too long, the most significant bit in the 10th byte is set";
        let raw = self.raw_varint(10, too_long)?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }
}

/// Records in memory, all of them (an uncompressed batch, or snappy's output), or a
/// stream's buffer holding whole records ([`StreamRecords`]). Reads are bounds checks on
/// a slice: this is produce's hot path.
///
/// `current` is the part of the current record that is in memory and not yet read,
/// `missing` what the record's declared length claims beyond the data: the budget is their
/// sum. `rest` is what follows the record.
#[derive(Clone, Copy)]
struct SliceRecords<'a> {
    current: &'a [u8],
    missing: usize,
    rest: &'a [u8],
}

impl<'a> SliceRecords<'a> {
    fn new(records: &'a [u8]) -> SliceRecords<'a> {
        SliceRecords {
            current: &[],
            missing: 0,
            rest: records,
        }
    }

    /// Why a field of `count` bytes, more than `current` holds, cannot be read: past the
    /// budget, or past the end of the data.
    #[inline(always)]
    fn overrun(&self, count: usize) -> BatchError {
        overrun(count, self.budget())
    }
}

// The cold paths take numbers, not the source: a source whose address is never taken
// stays in registers through the record.

#[cold]
#[inline(never)]
fn overrun(count: usize, budget: usize) -> BatchError {
    if count > budget {
        past_budget()
    } else {
        premature_end()
    }
}

/// The error of a varint whose first `available` bytes (all of the source's, or
/// `max_bytes`) have the continuation bit.
#[cold]
#[inline(never)]
fn varint_fault(
    available: usize,
    budget: usize,
    max_bytes: usize,
    too_long: &'static str,
) -> BatchError {
    if available >= max_bytes {
        return invalid(too_long.into());
    }
    overrun(available + 1, budget)
}

impl FieldSource for SliceRecords<'_> {
    #[inline]
    fn unbounded(&mut self) {
        self.current = self.rest;
        self.rest = &[];
        self.missing = usize::MAX - self.current.len();
    }

    #[inline]
    fn start_record(&mut self, length: usize) {
        let (record, rest) = self.current.split_at(length.min(self.current.len()));
        self.missing = length - record.len();
        self.current = record;
        self.rest = rest;
    }

    #[inline]
    fn budget(&self) -> usize {
        self.current.len() + self.missing
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, BatchError> {
        let Some((&byte, after)) = self.current.split_first() else {
            return Err(self.overrun(1));
        };
        self.current = after;
        Ok(byte)
    }

    #[inline]
    fn skip(&mut self, count: usize) -> Result<(), BatchError> {
        let Some(after) = self.current.get(count..) else {
            return Err(self.overrun(count));
        };
        self.current = after;
        Ok(())
    }

    #[inline(always)]
    fn raw_varint(&mut self, max_bytes: usize, too_long: &'static str) -> Result<u64, BatchError> {
        let bytes = self.current;
        // A record's varints are one or two bytes but for long values and keys: those
        // two cases take one bounds check and no loop.
        if let Some(&[first, second]) = bytes.first_chunk::<2>() {
            if first & 0x80 == 0 {
                self.current = &bytes[1..];
                return Ok(u64::from(first));
            }
            if second & 0x80 == 0 {
                self.current = &bytes[2..];
                return Ok(u64::from(first & 0x7f) | u64::from(second) << 7);
            }
        }
        let end = bytes.len().min(max_bytes);
        let mut raw: u64 = 0;
        let mut index = 0;
        while index < end {
            let byte = bytes[index];
            raw |= u64::from(byte & 0x7f) << (7 * index);
            index += 1;
            if byte & 0x80 == 0 {
                self.current = &bytes[index..];
                return Ok(raw);
            }
        }
        Err(varint_fault(
            bytes.len(),
            self.budget(),
            max_bytes,
            too_long,
        ))
    }
}

impl Records for SliceRecords<'_> {
    /// Inlined into the walk's loop: as a call, its result went through memory.
    #[inline(always)]
    fn next_record(
        &mut self,
        index: i32,
        base_timestamp: i64,
    ) -> Result<(RecordInfo, i32), BatchError> {
        // Between records, what is left is all in `rest`.
        debug_assert!(self.current.is_empty() && self.missing == 0);
        if let Some((record, offset_delta, taken)) =
            quick::whole_record(self.rest, index, base_timestamp)
        {
            self.rest = &self.rest[taken..];
            return Ok((record, offset_delta));
        }
        // Parsed in a local copy, which the compiler can keep in registers; through
        // `self` every field's step was a store to memory.
        let mut records = *self;
        let result = records.record(index, base_timestamp);
        *self = records;
        result
    }

    fn at_end(&mut self) -> Result<bool, BatchError> {
        Ok(self.current.is_empty() && self.rest.is_empty())
    }
}

/// Records decompressed as a stream, through a buffer of [`STREAM_BUFFER_BYTES`] (memory
/// stays bounded whatever the records' sizes). A record wholly in the buffer is parsed
/// there as a slice ([`SliceRecords`]), which reads nothing more from the stream: the
/// same result as reading it field by field. A record that runs past the buffer is read
/// field by field, refilling as it goes.
struct StreamRecords<R> {
    source: BufReader<R>,
    budget: usize,
}

/// The stream's buffer: std's default, which it has always had (where a refill falls
/// decides which error a batch both corrupt and malformed gets, so keep it).
const STREAM_BUFFER_BYTES: usize = 8 * 1024;

impl<R: Read> StreamRecords<Capped<R>> {
    /// What `decoder` produces, up to `cap` bytes.
    fn new(decoder: R, cap: usize) -> Self {
        let source = BufReader::with_capacity(STREAM_BUFFER_BYTES, Capped::new(decoder, cap));
        StreamRecords::over(source)
    }
}

impl<R: Read> StreamRecords<R> {
    /// Over any buffered source (tests vary the buffer's size).
    fn over(source: BufReader<R>) -> StreamRecords<R> {
        StreamRecords {
            source,
            budget: usize::MAX,
        }
    }
}

/// How many bytes of `buffer` the record at its front takes, length varint included, when
/// all of them are there; `None` when some are not, or the length is not a valid one (the
/// field-by-field read then says what is wrong).
#[inline]
fn whole_record_bytes(buffer: &[u8]) -> Option<usize> {
    let mut probe = SliceRecords::new(buffer);
    probe.unbounded();
    let length = usize::try_from(probe.varint().ok()?).ok()?;
    let after_length = probe.current.len();
    (length <= after_length).then(|| buffer.len() - after_length + length)
}

impl<R: Read> Records for StreamRecords<R> {
    fn next_record(
        &mut self,
        index: i32,
        base_timestamp: i64,
    ) -> Result<(RecordInfo, i32), BatchError> {
        // What is buffered already: a refill here would be one more read of the stream
        // than the field-by-field read makes, and a decoder past its end (lz4's) may
        // answer a second read with an error where the first said "end".
        let buffer = self.source.buffer();
        if let Some((record, offset_delta, taken)) =
            quick::whole_record(buffer, index, base_timestamp)
        {
            self.source.consume(taken);
            return Ok((record, offset_delta));
        }
        if let Some(whole) = whole_record_bytes(buffer) {
            let result = SliceRecords::new(&buffer[..whole]).record(index, base_timestamp);
            // Read field by field, a varint that starts where the buffer ends refills
            // first (and may meet a decompression error) before its budget is checked. A
            // valid record starts no varint at its end; one that ends the buffer and is
            // refused is read again that way, so a refused refill wins as it always did.
            if result.is_ok() || whole < buffer.len() {
                self.source.consume(whole);
                return result;
            }
        }
        self.record(index, base_timestamp)
    }

    fn at_end(&mut self) -> Result<bool, BatchError> {
        let buffer = self.source.fill_buf().map_err(stream_error)?;
        Ok(buffer.is_empty())
    }
}

impl<R: Read> StreamRecords<R> {
    /// The varint of at most `max_bytes` at the front of the source's buffer, consumed, if
    /// it ends there: the common case, decoded without a buffer call per byte. `None` when
    /// it runs past the buffer (or past `max_bytes`): nothing is consumed, and the bytewise
    /// decoder takes over and reports what is wrong.
    #[inline]
    fn buffered_raw_varint(&mut self, max_bytes: usize) -> Result<Option<u64>, BatchError> {
        let found = {
            let buffer = self.source.fill_buf().map_err(stream_error)?;
            let mut raw: u64 = 0;
            let mut found = None;
            for (index, &byte) in buffer.iter().take(max_bytes).enumerate() {
                raw |= u64::from(byte & 0x7f) << (7 * index);
                if byte & 0x80 == 0 {
                    found = Some((raw, index + 1));
                    break;
                }
            }
            found
        };
        let Some((raw, length)) = found else {
            return Ok(None);
        };
        self.take_budget(length)?;
        self.source.consume(length);
        Ok(Some(raw))
    }

    /// A varint of at most `max_bytes` read byte by byte (across buffer refills).
    fn raw_varint_bytewise(
        &mut self,
        max_bytes: usize,
        too_long: &'static str,
    ) -> Result<u64, BatchError> {
        let mut raw: u64 = 0;
        for index in 0..max_bytes {
            let byte = self.byte()?;
            raw |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(raw);
            }
        }
        Err(invalid(too_long.into()))
    }

    #[inline]
    fn take_budget(&mut self, count: usize) -> Result<(), BatchError> {
        match self.budget.checked_sub(count) {
            Some(rest) => {
                self.budget = rest;
                Ok(())
            }
            None => Err(past_budget()),
        }
    }
}

impl<R: Read> FieldSource for StreamRecords<R> {
    fn unbounded(&mut self) {
        self.budget = usize::MAX;
    }

    fn start_record(&mut self, length: usize) {
        self.budget = length;
    }

    fn budget(&self) -> usize {
        self.budget
    }

    fn byte(&mut self) -> Result<u8, BatchError> {
        self.take_budget(1)?;
        let buffer = self.source.fill_buf().map_err(stream_error)?;
        let Some(&byte) = buffer.first() else {
            return Err(premature_end());
        };
        self.source.consume(1);
        Ok(byte)
    }

    fn skip(&mut self, mut count: usize) -> Result<(), BatchError> {
        self.take_budget(count)?;
        while count > 0 {
            let buffer = self.source.fill_buf().map_err(stream_error)?;
            if buffer.is_empty() {
                return Err(premature_end());
            }
            let step = buffer.len().min(count);
            self.source.consume(step);
            count -= step;
        }
        Ok(())
    }

    fn raw_varint(&mut self, max_bytes: usize, too_long: &'static str) -> Result<u64, BatchError> {
        match self.buffered_raw_varint(max_bytes)? {
            Some(raw) => Ok(raw),
            None => self.raw_varint_bytewise(max_bytes, too_long),
        }
    }
}

fn invalid(message: String) -> BatchError {
    BatchError::InvalidRecord(message)
}

fn premature_end() -> BatchError {
    invalid("Incorrect declared batch size, premature EOF reached".into())
}

fn past_budget() -> BatchError {
    invalid("Invalid record size: a field runs past the record's declared length".into())
}

/// An error of the decompressing stream: past the cap, or the codec refused the bytes.
fn stream_error(error: io::Error) -> BatchError {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<CapReached>())
    {
        Some(cap) => BatchError::DecompressedTooLarge { max: cap.0 },
        None => BatchError::Corrupt(format!("cannot decompress the records: {error}")),
    }
}

/// The error a [`Capped`] reader returns once the stream goes past its cap.
#[derive(Debug, thiserror::Error)]
#[error("decompressed records exceed {0} bytes")]
struct CapReached(usize);

/// Passes through at most `remaining` bytes; one more is an error, not a silent cut, so a
/// bomb is refused rather than half-read.
struct Capped<R> {
    inner: R,
    max: usize,
    remaining: usize,
}

impl<R> Capped<R> {
    fn new(inner: R, max: usize) -> Capped<R> {
        Capped {
            inner,
            max,
            remaining: max,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        // One byte past the cap is allowed into the buffer so overflow is seen, not hidden.
        let allowed = buffer.len().min(self.remaining.saturating_add(1));
        let count = self.inner.read(&mut buffer[..allowed])?;
        if count > self.remaining {
            return Err(io::Error::other(CapReached(self.max)));
        }
        self.remaining -= count;
        Ok(count)
    }
}

/// Kafka's snappy: the xerial framing (Java producers) or, without its magic, one raw
/// snappy block (librdkafka), as snappy-java's reader accepts both.
mod snappy {
    use super::BatchError;

    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    /// Magic, then version and compatible version (i32 each).
    const XERIAL_HEADER_BYTES: usize = 16;

    pub(super) fn decompress(body: &[u8], cap: usize) -> Result<Vec<u8>, BatchError> {
        if body.len() >= XERIAL_HEADER_BYTES && body.starts_with(XERIAL_MAGIC) {
            return xerial(&body[XERIAL_HEADER_BYTES..], cap);
        }
        let mut plain = Vec::new();
        append_block(body, &mut plain, cap)?;
        Ok(plain)
    }

    /// Blocks of `[length u32 big-endian][raw snappy block]`.
    fn xerial(mut blocks: &[u8], cap: usize) -> Result<Vec<u8>, BatchError> {
        let mut plain = Vec::new();
        while !blocks.is_empty() {
            let Some((length, rest)) = blocks.split_first_chunk::<4>() else {
                return Err(corrupt("a snappy block length is cut short".into()));
            };
            let length = u32::from_be_bytes(*length) as usize;
            let Some(block) = rest.get(..length) else {
                return Err(corrupt("a snappy block is cut short".into()));
            };
            append_block(block, &mut plain, cap)?;
            blocks = &rest[length..];
        }
        Ok(plain)
    }

    /// Decompresses one raw block onto `plain`, refusing to grow it past `cap`.
    fn append_block(block: &[u8], plain: &mut Vec<u8>, cap: usize) -> Result<(), BatchError> {
        let length = snap::raw::decompress_len(block)
            .map_err(|error| corrupt(format!("snappy block header: {error}")))?;
        if length > cap.saturating_sub(plain.len()) {
            return Err(BatchError::DecompressedTooLarge { max: cap });
        }
        let start = plain.len();
        plain.resize(start + length, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut plain[start..])
            .map_err(|error| corrupt(format!("snappy block: {error}")))?;
        Ok(())
    }

    fn corrupt(why: String) -> BatchError {
        BatchError::Corrupt(format!("cannot decompress the records: {why}"))
    }
}

/// The topic-config checks Kafka's `LogValidator.validateRecord` applies to each record.
#[derive(Clone)]
pub struct RecordPolicy<'a> {
    /// `topic-partition`, as Kafka names it in messages; formatted only when a record
    /// breaks a rule, so the produce path allocates nothing for it.
    pub topic_partition: &'a dyn std::fmt::Display,
    pub compact: bool,
    pub timestamp_type: TimestampType,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub now_ms: i64,
}

impl<'a> RecordPolicy<'a> {
    pub fn new(
        config: &LogConfig,
        topic_partition: &'a dyn std::fmt::Display,
        now_ms: i64,
    ) -> RecordPolicy<'a> {
        RecordPolicy {
            topic_partition,
            compact: config.compact,
            timestamp_type: config.timestamp_type,
            timestamp_before_max_ms: config.timestamp_before_max_ms,
            timestamp_after_max_ms: config.timestamp_after_max_ms,
            now_ms,
        }
    }

    /// The rules for the records of the batch `header`, with what does not vary from one
    /// record to the next worked out once.
    fn for_batch<'p>(&'p self, header: &'p BatchHeader) -> BatchRules<'p, 'a> {
        // i128: neither bound overflows, whatever the topic's configured margins.
        let now_ms = i128::from(self.now_ms);
        BatchRules {
            policy: self,
            header,
            compact: self.compact,
            create_time: self.timestamp_type == TimestampType::CreateTime,
            log_append_time: header.is_log_append_time(),
            timestamp_earliest_ms: now_ms - i128::from(self.timestamp_before_max_ms),
            timestamp_latest_ms: now_ms + i128::from(self.timestamp_after_max_ms),
        }
    }

    #[cold]
    fn keyless(&self) -> (RecordErrorCode, String) {
        let message = format!(
            "Compacted topic cannot accept message without key in topic partition {}.",
            self.topic_partition
        );
        (RecordErrorCode::InvalidRecord, message)
    }

    #[cold]
    fn timestamp_out_of_range(&self, header: &BatchHeader, record: &RecordInfo) -> String {
        let timestamp = record.timestamp_ms;
        let offset = header.base_offset.wrapping_add(i64::from(record.index));
        let earliest = self.now_ms.saturating_sub(self.timestamp_before_max_ms);
        let latest = self.now_ms.saturating_add(self.timestamp_after_max_ms);
        format!(
            "Timestamp {timestamp} of message with offset {offset} is out of range. \
             The timestamp should be within [{earliest}, {latest}]"
        )
    }
}

/// A [`RecordPolicy`] applied to one batch.
struct BatchRules<'p, 'a> {
    policy: &'p RecordPolicy<'a>,
    header: &'p BatchHeader,
    // Copies of what every record is checked against, so the walk's loop reads them from
    // registers, not through `policy` and `header`.
    compact: bool,
    create_time: bool,
    log_append_time: bool,
    /// The CreateTime timestamps the topic accepts: `[now - timestamp_before_max_ms, now +
    /// timestamp_after_max_ms]`, exact (a client timestamp near i64::MIN included).
    timestamp_earliest_ms: i128,
    timestamp_latest_ms: i128,
}

impl BatchRules<'_, '_> {
    /// Whether `record` keeps every rule: the walk's per-record test, kept small enough to
    /// be inlined into it (what a refusal says is worked out by [`Self::check`], cold).
    #[inline(always)]
    fn accepts(&self, record: &RecordInfo) -> bool {
        !self.keyless(record) && !self.timestamp_refused(record)
    }

    /// The first rule `record` breaks, if any: a missing key first, then the timestamp.
    #[cold]
    #[inline(never)]
    fn check(&self, record: &RecordInfo) -> Option<(RecordErrorCode, String)> {
        if self.keyless(record) {
            return Some(self.policy.keyless());
        }
        if !self.timestamp_refused(record) {
            return None;
        }
        let message = if self.create_time && record.timestamp_ms != NO_TIMESTAMP {
            self.policy.timestamp_out_of_range(self.header, record)
        } else {
            append_time_refused(record)
        };
        Some((RecordErrorCode::InvalidTimestamp, message))
    }

    /// A compacted topic takes no record without a key.
    #[inline(always)]
    fn keyless(&self, record: &RecordInfo) -> bool {
        self.compact && !record.has_key
    }

    /// Under CreateTime, a timestamp outside the topic's bounds (no timestamp passes);
    /// otherwise a batch that claims LogAppendTime, which only the broker may set.
    #[inline(always)]
    fn timestamp_refused(&self, record: &RecordInfo) -> bool {
        let timestamp = record.timestamp_ms;
        if self.create_time && timestamp != NO_TIMESTAMP {
            let timestamp = i128::from(timestamp);
            return timestamp < self.timestamp_earliest_ms || timestamp > self.timestamp_latest_ms;
        }
        self.log_append_time
    }
}

#[cold]
fn append_time_refused(record: &RecordInfo) -> String {
    format!(
        "Invalid timestamp type in message at batch index {}. Producer should not set \
         timestamp type to LogAppendTime.",
        record.index
    )
}

/// Whether `decoded`, kafka-protocol's decoding of the whole stored batch `batch`, holds
/// every record header as sent. Its records keep headers in a map (repeated names merge)
/// and refuse non-UTF-8 names, both legal in Kafka: a batch it cannot hold exactly must
/// never be re-encoded (recompression, a cleaner rewrite), or headers are silently lost.
/// `deltas` is the rule the batch was stored under: [`OffsetDeltas::Increasing`] for a batch
/// from the log, which the cleaner may have left with gaps.
pub fn decoded_exactly(
    batch: &[u8],
    header: &BatchHeader,
    deltas: OffsetDeltas,
    decoded: &[Record],
) -> bool {
    let mut counts = Vec::with_capacity(decoded.len());
    // The batch passed the capped walk when it was produced; this walk cannot grow past it.
    let walked = walk_batch(batch, header, deltas, usize::MAX, &mut |record| {
        counts.push(record.header_count)
    });
    walked.is_ok()
        && counts.len() == decoded.len()
        && counts
            .iter()
            .zip(decoded)
            .all(|(count, record)| *count == record.headers.len())
}

/// Walks every batch of a produce (`headers` from `validate_batches`, in order) and applies
/// `policy` to each record. A structural fault stops at once; rule breaches are collected
/// per batch and fail it with every record's error, as Kafka's `processRecordErrors` does.
pub fn validate_records(
    records: &[u8],
    headers: &[BatchHeader],
    policy: &RecordPolicy,
    decompressed_bytes_max: usize,
) -> Result<(), BatchError> {
    let mut position = 0;
    for header in headers {
        let batch = &records[position..position + header.total_bytes()];
        position += header.total_bytes();
        let mut errors = RecordErrors::default();
        let rules = policy.for_batch(header);
        walk_batch(
            batch,
            header,
            OffsetDeltas::Exact,
            decompressed_bytes_max,
            &mut |record| {
                if !rules.accepts(&record) {
                    errors.refuse(&rules, record);
                }
            },
        )?;
        if errors.total > 0 {
            return Err(record_errors(errors));
        }
    }
    Ok(())
}

/// Per-record errors kept for one batch at most. Kafka lists them all, but a small zstd
/// batch can expand to millions of keyless records, and a string each would cost gigabytes;
/// clients fail the records not listed with the batch's summary message.
pub const RECORD_ERRORS_MAX: usize = 1000;

/// The rule breaches of one batch: the first [`RECORD_ERRORS_MAX`], and what all of them
/// add up to.
#[derive(Default)]
struct RecordErrors {
    listed: Vec<RecordError>,
    total: usize,
    timestamp: bool,
}

impl RecordErrors {
    /// Adds the error of `record`, which `rules` do not accept. Cold: kept out of the
    /// walk's per-record loop.
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, rules: &BatchRules, record: RecordInfo) {
        // By value: a record passed by reference would be stored to memory on the hot path.
        if let Some((code, message)) = rules.check(&record) {
            self.add(code, RecordError::new(record.index, message));
        }
    }

    fn add(&mut self, code: RecordErrorCode, error: RecordError) {
        self.total += 1;
        self.timestamp |= code == RecordErrorCode::InvalidTimestamp;
        if self.listed.len() < RECORD_ERRORS_MAX {
            self.listed.push(error);
        }
    }
}

/// Kafka's summary of a failed batch: INVALID_TIMESTAMP wins over INVALID_RECORD.
fn record_errors(errors: RecordErrors) -> BatchError {
    let RecordErrors {
        listed: errors,
        total,
        timestamp,
    } = errors;
    if timestamp {
        return BatchError::Records {
            code: RecordErrorCode::InvalidTimestamp,
            message: "One or more records have been rejected due to invalid timestamp".into(),
            errors,
        };
    }
    let shown: Vec<String> = errors.iter().take(3).map(RecordError::to_string).collect();
    let message = format!(
        "One or more records have been rejected due to {} record errors in total, and only \
         showing the first three errors at most: [{}]",
        total,
        shown.join(", ")
    );
    BatchError::Records {
        code: RecordErrorCode::InvalidRecord,
        message,
        errors,
    }
}

#[path = "records_quick.rs"]
mod quick;

#[cfg(test)]
#[path = "records_walk_tests.rs"]
mod walk_tests;

#[cfg(test)]
mod tests {
    use std::io::Write;

    use bytes::BytesMut;
    use kafka_protocol::records::Compression;

    use super::*;
    use crate::log::batch::validate_batches;
    use crate::log::test_support::{batch_around, encode_batch, record_bytes};

    const CAP: usize = 1 << 20;
    /// Codes 1-4 with a way to compress a body the way clients do; snappy twice (xerial
    /// framing as Java sends it, raw as librdkafka sends it).
    pub(super) const CODECS: [(&str, i16); 5] = [
        ("gzip", 1),
        ("snappy-xerial", 2),
        ("snappy-raw", 2),
        ("lz4", 3),
        ("zstd", 4),
    ];

    pub(super) fn compress(codec: &str, plain: &[u8]) -> Vec<u8> {
        match codec {
            "gzip" => {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                encoder.write_all(plain).unwrap();
                encoder.finish().unwrap()
            }
            "snappy-raw" => snap::raw::Encoder::new().compress_vec(plain).unwrap(),
            "snappy-xerial" => {
                let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
                for block in plain.chunks(32 * 1024) {
                    let compressed = snap::raw::Encoder::new().compress_vec(block).unwrap();
                    framed.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                    framed.extend_from_slice(&compressed);
                }
                framed
            }
            "lz4" => {
                let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
                encoder.write_all(plain).unwrap();
                encoder.finish().unwrap()
            }
            "zstd" => zstd::encode_all(plain, 3).unwrap(),
            _ => unreachable!("test codec"),
        }
    }

    /// `count` keyed records with offset deltas 0..count and timestamp deltas 0, 1, ...
    fn plain_records(count: i64) -> Vec<u8> {
        (0..count)
            .flat_map(|i| record_bytes(i, i, Some(b"key"), format!("value-{i}").as_bytes()))
            .collect()
    }

    fn walk(batch: &[u8], cap: usize) -> Result<Vec<RecordInfo>, BatchError> {
        let header = validate_batches(batch, u32::MAX)?[0];
        let mut seen = Vec::new();
        walk_batch(batch, &header, OffsetDeltas::Exact, cap, &mut |record| {
            seen.push(record)
        })?;
        Ok(seen)
    }

    fn assert_invalid(result: Result<Vec<RecordInfo>, BatchError>, needle: &str, what: &str) {
        match result {
            Err(BatchError::InvalidRecord(why)) => assert!(why.contains(needle), "{what}: {why}"),
            other => panic!("{what}: expected INVALID_RECORD ({needle}), got {other:?}"),
        }
    }

    #[test]
    fn encoder_batches_walk_with_every_compression() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = encode_batch(&[1_000, 1_005, 1_002], compression);
            let seen = walk(&batch, CAP).unwrap();
            let timestamps: Vec<i64> = seen.iter().map(|r| r.timestamp_ms).collect();
            assert_eq!(timestamps, vec![1_000, 1_005, 1_002], "{compression:?}");
            assert_eq!(seen.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1, 2]);
            assert!(seen.iter().all(|r| r.has_key), "{compression:?}");
        }
    }

    #[test]
    fn hand_compressed_batches_walk_with_every_codec() {
        for (codec, code) in CODECS {
            let batch = batch_around(&compress(codec, &plain_records(4)), code, 4, 0);
            let seen = walk(&batch, CAP).unwrap();
            assert_eq!(seen.len(), 4, "{codec}");
            assert_eq!(seen[3].timestamp_ms, 1_003, "{codec}");
        }
    }

    #[test]
    fn counts_off_by_one_either_way_are_invalid_with_every_codec() {
        let body = plain_records(3);
        for (codec, code) in CODECS.into_iter().chain([("none", 0)]) {
            let payload = if code == 0 {
                body.clone()
            } else {
                compress(codec, &body)
            };
            let fewer = batch_around(&payload, code, 2, 0);
            assert_invalid(walk(&fewer, CAP), "still remaining", codec);
            let more = batch_around(&payload, code, 4, 0);
            assert_invalid(walk(&more, CAP), "premature EOF", codec);
            assert_eq!(
                walk(&batch_around(&payload, code, 3, 0), CAP)
                    .unwrap()
                    .len(),
                3
            );
        }
    }

    #[test]
    fn random_compressed_payloads_are_corrupt() {
        // Bytes no codec produced; the CRC is valid, so only decompression can tell.
        let noise: Vec<u8> = (0..512u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for code in 1..=4 {
            let batch = batch_around(&noise, code, 1, 0);
            match walk(&batch, CAP) {
                Err(BatchError::Corrupt(why)) => assert!(why.contains("decompress"), "{why}"),
                other => panic!("code {code}: expected CORRUPT_MESSAGE, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_truncated_compressed_stream_is_refused() {
        for (codec, code) in CODECS {
            let compressed = compress(codec, &plain_records(50));
            let cut = &compressed[..compressed.len() / 2];
            let result = walk(&batch_around(cut, code, 50, 0), CAP);
            assert!(
                matches!(
                    result,
                    Err(BatchError::Corrupt(_) | BatchError::InvalidRecord(_))
                ),
                "{codec}: {result:?}"
            );
        }
    }

    #[test]
    fn trailing_bytes_after_the_last_record_are_invalid() {
        let mut body = plain_records(2);
        body.push(0);
        assert_invalid(
            walk(&batch_around(&body, 0, 2, 0), CAP),
            "still remaining",
            "plain",
        );
        let compressed = compress("zstd", &body);
        assert_invalid(
            walk(&batch_around(&compressed, 4, 2, 0), CAP),
            "still",
            "zstd",
        );
    }

    #[test]
    fn offset_deltas_must_count_from_zero() {
        let mut body = record_bytes(0, 0, Some(b"k"), b"a");
        body.extend(record_bytes(2, 0, Some(b"k"), b"b"));
        assert_invalid(
            walk(&batch_around(&body, 0, 2, 0), CAP),
            "offset delta 2",
            "gap",
        );
        let mut body = record_bytes(0, 0, Some(b"k"), b"a");
        body.extend(record_bytes(0, 0, Some(b"k"), b"b"));
        assert_invalid(
            walk(&batch_around(&body, 0, 2, 0), CAP),
            "offset delta 0",
            "repeat",
        );
    }

    /// A batch as the log may hold it: records at `deltas` (timestamp delta = offset
    /// delta), a header ending at `last_offset_delta`, compressed with `codec` (code 0:
    /// plain). Its header is parsed, not validated: produce would refuse a gapped one.
    fn stored_batch(deltas: &[i64], last_offset_delta: i32, codec: &str, code: i16) -> BytesMut {
        let body: Vec<u8> = deltas
            .iter()
            .flat_map(|&d| record_bytes(d, d, Some(b"key"), format!("value-{d}").as_bytes()))
            .collect();
        let payload = if code == 0 {
            body
        } else {
            compress(codec, &body)
        };
        let mut batch = batch_around(&payload, code, deltas.len() as i32, 100);
        crate::log::batch::set_last_offset_delta(&mut batch, last_offset_delta);
        batch
    }

    fn walk_stored(batch: &[u8], deltas: OffsetDeltas) -> Result<Vec<RecordInfo>, BatchError> {
        let header = BatchHeader::parse(batch)?;
        let mut seen = Vec::new();
        walk_batch(batch, &header, deltas, CAP, &mut |record| seen.push(record))?;
        Ok(seen)
    }

    #[test]
    fn gapped_deltas_are_read_only_under_the_stored_batch_rule() {
        for (codec, code) in CODECS.into_iter().chain([("none", 0)]) {
            // What the cleaner leaves of offsets 100..=105 keeping 100, 102 and 105.
            let batch = stored_batch(&[0, 2, 5], 5, codec, code);
            let seen = walk_stored(&batch, OffsetDeltas::Increasing).unwrap();
            let fields: Vec<(i32, i64)> = seen.iter().map(|r| (r.index, r.timestamp_ms)).collect();
            assert_eq!(fields, [(0, 1_000), (1, 1_002), (2, 1_005)], "{codec}");
            assert_invalid(
                walk_stored(&batch, OffsetDeltas::Exact),
                "batch index 1 has offset delta 2: offsets must increase by one",
                codec,
            );
            // Gaps at the front and before the header's last offset are as legal.
            let batch = stored_batch(&[1, 3], 4, codec, code);
            assert_eq!(
                walk_stored(&batch, OffsetDeltas::Increasing).unwrap().len(),
                2
            );
        }
        // Stored-batch readers that gate re-encoding on the walk take it too.
        let batch = stored_batch(&[0, 2, 5], 5, "none", 0);
        let header = BatchHeader::parse(&batch).unwrap();
        let decoded =
            kafka_protocol::records::RecordBatchDecoder::decode(&mut batch.clone().freeze())
                .unwrap();
        let offsets: Vec<i64> = decoded.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [100, 102, 105]);
        assert!(decoded_exactly(
            &batch,
            &header,
            OffsetDeltas::Increasing,
            &decoded.records
        ));
        assert!(!decoded_exactly(
            &batch,
            &header,
            OffsetDeltas::Exact,
            &decoded.records
        ));
    }

    #[test]
    fn deltas_out_of_order_or_past_the_header_are_refused_under_both_rules() {
        // (case, deltas, last offset delta, what Exact says, what Increasing says)
        let cases: [(&str, &[i64], i32, &str, &str); 5] = [
            (
                "decreasing",
                &[0, 1, 3, 2],
                5,
                "index 2 has offset delta 3: offsets must increase by one",
                "index 3 has offset delta 2: offset deltas must increase",
            ),
            (
                "duplicate",
                &[0, 1, 1],
                3,
                "index 2 has offset delta 1: offsets must increase by one",
                "index 2 has offset delta 1: offset deltas must increase",
            ),
            (
                "negative",
                &[-1, 0],
                1,
                "index 0 has offset delta -1: offsets must increase by one",
                "index 0 has offset delta -1: offset deltas must increase",
            ),
            (
                "past the header",
                &[0, 1, 2],
                1,
                "index 2 has offset delta 2: it lies past the batch's last offset delta",
                "index 2 has offset delta 2: it lies past the batch's last offset delta",
            ),
            (
                "gapped past the header",
                &[0, 2, 6],
                5,
                "index 1 has offset delta 2: offsets must increase by one",
                "index 2 has offset delta 6: it lies past the batch's last offset delta",
            ),
        ];
        for (case, deltas, last, exact, increasing) in cases {
            for (codec, code) in [("none", 0), ("zstd", 4)] {
                let batch = stored_batch(deltas, last, codec, code);
                let what = format!("{case}, {codec}");
                assert_invalid(walk_stored(&batch, OffsetDeltas::Exact), exact, &what);
                let walked = walk_stored(&batch, OffsetDeltas::Increasing);
                assert_invalid(walked, increasing, &what);
            }
        }
    }

    #[test]
    fn varints_decode_alike_whole_in_the_buffer_and_split_across_refills() {
        let ints = [0, 1, -1, 63, -64, 64, 8191, -8192, i32::MAX, i32::MIN];
        let longs = [0, -1, 1 << 35, -(1 << 40), i64::MAX, i64::MIN];
        let mut bytes = Vec::new();
        for value in ints {
            crate::log::batch::put_varint(&mut bytes, value.into());
        }
        for value in longs {
            crate::log::batch::put_varint(&mut bytes, value);
        }
        // Five continuation bytes: too long for a varint, whichever path reads it.
        bytes.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
        let mut whole = SliceRecords::new(&bytes);
        whole.unbounded();
        let split = StreamRecords::over(io::BufReader::with_capacity(1, &bytes[..]));
        fn read_all(mut source: impl FieldSource) -> (Vec<i32>, Vec<i64>, String) {
            let ints = (0..10).map(|_| source.varint().unwrap()).collect();
            let longs = (0..6).map(|_| source.varlong().unwrap()).collect();
            (ints, longs, source.varint().unwrap_err().to_string())
        }
        let (got_ints, got_longs, error) = read_all(whole);
        assert_eq!(got_ints, ints);
        assert_eq!(got_longs, longs);
        assert!(error.contains("Varint is too long"), "{error}");
        assert_eq!(read_all(split), (got_ints, got_longs, error));
    }

    #[test]
    fn bad_varints_and_lengths_are_invalid() {
        // A length varint whose fifth byte still has the continuation bit set.
        let body = [0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_invalid(
            walk(&batch_around(&body, 0, 1, 0), CAP),
            "Varint is too long",
            "len",
        );
        // A negative record length.
        let body = [0x01];
        assert_invalid(
            walk(&batch_around(&body, 0, 1, 0), CAP),
            "Invalid record size",
            "neg",
        );
        // A key longer than the record that holds it.
        let mut body = record_bytes(0, 0, Some(b"key"), b"v");
        body[0] = 2 * 4; // record length 4: the key's 3 bytes no longer fit
        assert_invalid(
            walk(&batch_around(&body, 0, 1, 0), CAP),
            "record size",
            "key",
        );
        // A record length larger than its fields: bytes left inside the record.
        let mut body = record_bytes(0, 0, Some(b"k"), b"v");
        body[0] += 2;
        body.push(0);
        assert_invalid(
            walk(&batch_around(&body, 0, 1, 0), CAP),
            "expected to read",
            "long",
        );
        // A negative header count.
        let mut body = record_bytes(0, 0, None, b"v");
        *body.last_mut().unwrap() = 0x01; // zig-zag -1
        assert_invalid(
            walk(&batch_around(&body, 0, 1, 0), CAP),
            "record headers -1",
            "hdr",
        );
    }

    #[test]
    fn compression_bombs_stop_at_the_cap() {
        let zeros = vec![0u8; 4 << 20];
        let body = record_bytes(0, 0, Some(b"k"), &zeros);
        for (codec, code) in CODECS {
            let batch = batch_around(&compress(codec, &body), code, 1, 0);
            assert!(batch.len() < 1 << 20, "{codec}: the bomb itself is small");
            let result = walk(&batch, 1 << 20);
            assert_eq!(
                result,
                Err(BatchError::DecompressedTooLarge { max: 1 << 20 }),
                "{codec}"
            );
            assert_eq!(
                walk(&batch, 8 << 20).unwrap().len(),
                1,
                "{codec} under the cap"
            );
        }
    }

    fn policy(compact: bool, now_ms: i64) -> RecordPolicy<'static> {
        RecordPolicy {
            topic_partition: &"t-0",
            compact,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: 1_000,
            timestamp_after_max_ms: 500,
            now_ms,
        }
    }

    fn validate(body: &[u8], count: i32, policy: &RecordPolicy) -> Result<(), BatchError> {
        let batch = batch_around(body, 0, count, 0);
        let headers = validate_batches(&batch, u32::MAX).unwrap();
        validate_records(&batch, &headers, policy, CAP)
    }

    #[test]
    fn keyless_records_on_a_compacted_topic_fail_the_batch_per_record() {
        let mut body = record_bytes(0, 0, Some(b"k"), b"a");
        body.extend(record_bytes(1, 0, None, b"b"));
        body.extend(record_bytes(2, 0, None, b"c"));
        assert_eq!(validate(&body, 3, &policy(false, 1_000)), Ok(()));
        let Err(BatchError::Records {
            code,
            message,
            errors,
        }) = validate(&body, 3, &policy(true, 1_000))
        else {
            panic!("a keyless record on a compacted topic must fail");
        };
        assert_eq!(code, RecordErrorCode::InvalidRecord);
        let indexes: Vec<i32> = errors.iter().map(|e| e.batch_index).collect();
        assert_eq!(indexes, vec![1, 2]);
        let expected = "Compacted topic cannot accept message without key in topic partition t-0.";
        assert_eq!(errors[0].message, expected);
        assert!(message.starts_with("One or more records have been rejected due to 2 record"));
        assert!(message.contains(&format!("RecordError(batchIndex=1, message='{expected}')")));
    }

    #[test]
    fn record_errors_are_listed_up_to_the_cap_and_counted_in_full() {
        let count = RECORD_ERRORS_MAX + 5;
        let mut body = Vec::new();
        for index in 0..count {
            body.extend(record_bytes(index as i64, 0, None, b"v"));
        }
        let Err(BatchError::Records {
            code,
            message,
            errors,
        }) = validate(&body, count as i32, &policy(true, 1_000))
        else {
            panic!("keyless records on a compacted topic must fail");
        };
        assert_eq!(code, RecordErrorCode::InvalidRecord);
        assert_eq!(errors.len(), RECORD_ERRORS_MAX);
        assert_eq!(
            errors.last().unwrap().batch_index,
            RECORD_ERRORS_MAX as i32 - 1
        );
        assert!(
            message.contains(&format!("due to {count} record errors")),
            "{message}"
        );
    }

    #[test]
    fn timestamps_outside_the_bounds_are_invalid_timestamp() {
        // Base timestamp 1_000; now 2_000; allowed [1_000, 2_500].
        let mut body = record_bytes(0, 0, Some(b"k"), b"a"); // 1_000: the lower bound
        body.extend(record_bytes(1, 1_500, Some(b"k"), b"b")); // 2_500: the upper bound
        assert_eq!(validate(&body, 2, &policy(false, 2_000)), Ok(()));
        body.extend(record_bytes(2, 1_501, Some(b"k"), b"c")); // 2_501: too new
        body.extend(record_bytes(3, -1, Some(b"k"), b"d")); // 999: too old
        let Err(BatchError::Records { code, errors, .. }) =
            validate(&body, 4, &policy(false, 2_000))
        else {
            panic!("out-of-range timestamps must fail");
        };
        assert_eq!(code, RecordErrorCode::InvalidTimestamp);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].batch_index, 2);
        assert_eq!(
            errors[0].message,
            "Timestamp 2501 of message with offset 2 is out of range. \
             The timestamp should be within [1000, 2500]"
        );
        assert!(
            errors[1]
                .message
                .starts_with("Timestamp 999 of message with offset 3")
        );
        let mut log_append = policy(false, 2_000);
        log_append.timestamp_type = TimestampType::LogAppendTime;
        assert_eq!(validate(&body, 4, &log_append), Ok(()));
    }

    #[test]
    fn timestamp_bounds_worked_out_per_batch_keep_the_per_record_rule() {
        // Kafka's rule, per record: how far the timestamp is behind now, against each
        // margin (the walk checks it against bounds worked out once per batch).
        fn in_range(now_ms: i64, before_ms: i64, after_ms: i64, timestamp_ms: i64) -> bool {
            let behind = i128::from(now_ms) - i128::from(timestamp_ms);
            !(behind > i128::from(before_ms) || -behind > i128::from(after_ms))
        }
        let values = [
            i64::MIN,
            i64::MIN + 1,
            -1_001,
            -2,
            0,
            1,
            1_000,
            i64::MAX - 1,
            i64::MAX,
        ];
        let margins = [-1, 0, 1, 1_000, i64::MAX - 1, i64::MAX];
        let header = BatchHeader::parse(&batch_around(&[], 0, 1, 0)).unwrap();
        let mut checked = [0usize; 2];
        for now_ms in values {
            for before_ms in margins {
                for after_ms in margins {
                    let mut policy = policy(false, now_ms);
                    policy.timestamp_before_max_ms = before_ms;
                    policy.timestamp_after_max_ms = after_ms;
                    let rules = policy.for_batch(&header);
                    let edges = [now_ms.checked_sub(before_ms), now_ms.checked_add(after_ms)];
                    let near_edges = edges
                        .into_iter()
                        .flatten()
                        .flat_map(|edge| [edge.checked_sub(1), Some(edge), edge.checked_add(1)]);
                    for timestamp_ms in values.into_iter().chain(near_edges.flatten()) {
                        let record = RecordInfo {
                            index: 0,
                            timestamp_ms,
                            has_key: true,
                            header_count: 0,
                        };
                        let expected = timestamp_ms == NO_TIMESTAMP
                            || in_range(now_ms, before_ms, after_ms, timestamp_ms);
                        let accepted = rules.check(&record).is_none();
                        assert_eq!(rules.accepts(&record), accepted, "the walk's test");
                        assert_eq!(
                            accepted, expected,
                            "now {now_ms}, margins {before_ms}/{after_ms}, at {timestamp_ms}"
                        );
                        checked[accepted as usize] += 1;
                    }
                }
            }
        }
        assert!(checked[0] > 100 && checked[1] > 100, "{checked:?}");
    }
}
