//! The walk's quick read of one record that lies wholly in memory: what produce meets for
//! almost every record (an uncompressed batch holds them all, a decompressing stream's
//! buffer most of them).
//!
//! It reads the same fields under the same rules as the full parser
//! ([`super::FieldSource::record`]), but keeps no budget and builds no error: a position
//! in the record's own bytes bounds every field, and anything the full parser would
//! refuse (a varint too long, a length past the record, a negative count, bytes left over,
//! a record longer than the data) makes it give up with `None`. The walk then reads that
//! record again with the full parser, which finds the fault and reports it exactly as it
//! always has. So the quick read decides nothing on its own: for every input it either
//! agrees with the full parser's `Ok` or defers to it (`records_walk_tests.rs` checks
//! both ways on a corpus of valid and mutated records).
//!
//! Measured with callgrind on 100-byte records: the full parser's bookkeeping of the
//! budget and its error paths cost about as much as the parse itself.

use super::RecordInfo;

/// The record at the front of `data`: its fields, its offset delta and how many bytes of
/// `data` it takes (length prefix included). `None` when it does not lie wholly in `data`
/// or the full parser would refuse it.
#[inline(always)]
pub(super) fn whole_record(
    data: &[u8],
    index: i32,
    base_timestamp: i64,
) -> Option<(RecordInfo, i32, usize)> {
    let head = data
        .first_chunk::<HEAD_BYTES>()
        .and_then(|copy| head_from_copy(data, copy));
    let head = match head {
        Some(head) => head,
        None => head_bytewise(data)?,
    };
    rest_of_record(data, head, index, base_timestamp)
}

/// [`whole_record`] with its head read byte by byte (what it falls back on), for tests.
#[cfg(test)]
pub(super) fn bytewise(
    data: &[u8],
    index: i32,
    base_timestamp: i64,
) -> Option<(RecordInfo, i32, usize)> {
    rest_of_record(data, head_bytewise(data)?, index, base_timestamp)
}

/// A record's fields up to its key (and the key skipped): whatever way they were read,
/// the rest of the record is read alike.
struct Head {
    /// Where the record ends in `data`.
    end: usize,
    /// Where its value starts.
    at: usize,
    timestamp_delta: i64,
    offset_delta: i32,
    has_key: bool,
}

/// The value and the headers, which must end exactly at the record's end.
#[inline(always)]
fn rest_of_record(
    data: &[u8],
    head: Head,
    index: i32,
    base_timestamp: i64,
) -> Option<(RecordInfo, i32, usize)> {
    // Every field is read from `record`, so none reads past the record's declared length.
    let record = data.get(..head.end)?;
    let mut at = head.at;
    skip_nullable_bytes(record, &mut at)?; // value
    let header_count = zigzag_int(varint(record, &mut at, INT_BYTES_MAX)?);
    // Negative: the full parser's "invalid number of record headers".
    let header_count = usize::try_from(header_count).ok()?;
    // Each header takes at least two bytes of the record, so a false count ends the loop
    // at the record's end, not after `header_count` turns.
    for _ in 0..header_count {
        let key_length = zigzag_int(varint(record, &mut at, INT_BYTES_MAX)?);
        skip(record, &mut at, usize::try_from(key_length).ok()?)?;
        skip_nullable_bytes(record, &mut at)?;
    }
    // Bytes left inside the record are the full parser's to refuse.
    if at != head.end {
        return None;
    }
    let info = RecordInfo {
        index,
        timestamp_ms: base_timestamp.wrapping_add(head.timestamp_delta),
        has_key: head.has_key,
        header_count,
    };
    Some((info, head.offset_delta, head.end))
}

/// Bytes copied from the front of a record for [`head_from_copy`]: its fields up to the
/// key take at most 9 when each varint takes one or two.
const HEAD_BYTES: usize = 16;

/// The head of a record whose length, timestamp delta, offset delta and key length take
/// one or two bytes each (nearly all): those are read from `copy`, the first
/// [`HEAD_BYTES`] of `data`, at positions the compiler can bound, instead of one checked
/// read of `data` per byte. `None` for any other record (the byte-by-byte read then
/// takes it, or refuses it).
#[inline(always)]
fn head_from_copy(data: &[u8], copy: &[u8; HEAD_BYTES]) -> Option<Head> {
    let mut at = 0;
    let length = usize::try_from(zigzag_int(short_varint(copy, &mut at)?)).ok()?;
    // At most 2 + 2^14: no overflow.
    let end = at + length;
    let record = data.get(..end)?;
    at += 1; // attributes
    let timestamp_delta = zigzag_long(short_varint(copy, &mut at)?);
    let offset_delta = zigzag_int(short_varint(copy, &mut at)?);
    let key_length = zigzag_int(short_varint(copy, &mut at)?);
    // The full parser reads these fields from the record: they must lie in it.
    if at > end {
        return None;
    }
    let has_key = match usize::try_from(key_length) {
        Ok(key_length) => skip(record, &mut at, key_length).map(|()| true)?,
        Err(_) => false,
    };
    Some(Head {
        end,
        at,
        timestamp_delta,
        offset_delta,
        has_key,
    })
}

/// A varint of one or two bytes at `at` in `copy` (`at` at most 7, as
/// [`head_from_copy`] reads them); `None` for a longer one.
#[inline(always)]
fn short_varint(copy: &[u8; HEAD_BYTES], at: &mut usize) -> Option<u64> {
    let first = copy[*at];
    if first & 0x80 == 0 {
        *at += 1;
        return Some(u64::from(first));
    }
    let second = copy[*at + 1];
    if second & 0x80 == 0 {
        *at += 2;
        return Some(u64::from(first & 0x7f) | u64::from(second) << 7);
    }
    None
}

/// The head of any record, read byte by byte, each read checked against the record's end.
#[inline(always)]
fn head_bytewise(data: &[u8]) -> Option<Head> {
    let mut at = 0;
    let length = usize::try_from(zigzag_int(varint(data, &mut at, INT_BYTES_MAX)?)).ok()?;
    let end = at.checked_add(length)?;
    let record = data.get(..end)?;
    at += 1; // attributes: unused in v2 records, as Kafka ignores them
    let timestamp_delta = zigzag_long(varint(record, &mut at, LONG_BYTES_MAX)?);
    let offset_delta = zigzag_int(varint(record, &mut at, INT_BYTES_MAX)?);
    let has_key = skip_nullable_bytes(record, &mut at)?;
    Some(Head {
        end,
        at,
        timestamp_delta,
        offset_delta,
        has_key,
    })
}

/// The most bytes of a varint (int32) and a varlong (int64).
const INT_BYTES_MAX: usize = 5;
const LONG_BYTES_MAX: usize = 10;

/// A varint length and that many bytes, skipped; negative is null. Whether it was not.
#[inline(always)]
fn skip_nullable_bytes(record: &[u8], at: &mut usize) -> Option<bool> {
    let length = zigzag_int(varint(record, at, INT_BYTES_MAX)?);
    match usize::try_from(length) {
        Ok(length) => skip(record, at, length).map(|()| true),
        Err(_) => Some(false),
    }
}

#[inline(always)]
fn skip(record: &[u8], at: &mut usize, count: usize) -> Option<()> {
    if count > record.len().checked_sub(*at)? {
        return None;
    }
    *at += count;
    Some(())
}

/// A little-endian base-128 varint of at most `max_bytes` bytes at `at`, before zig-zag:
/// the full parser's arithmetic, so a padded varint decodes to the same value. The one-
/// and two-byte forms (nearly every field of a record) take no loop.
#[inline(always)]
fn varint(bytes: &[u8], at: &mut usize, max_bytes: usize) -> Option<u64> {
    let first = *bytes.get(*at)?;
    if first & 0x80 == 0 {
        *at += 1;
        return Some(u64::from(first));
    }
    let second = *bytes.get(*at + 1)?;
    if second & 0x80 == 0 {
        *at += 2;
        return Some(u64::from(first & 0x7f) | u64::from(second) << 7);
    }
    // By value, not through `at`: a position whose address is taken lives in memory.
    let (raw, length) = long_varint(bytes.get(*at..)?, max_bytes)?;
    *at += length;
    Some(raw)
}

/// A varint of three bytes or more at the front of `bytes`, with its length.
#[inline(never)]
fn long_varint(bytes: &[u8], max_bytes: usize) -> Option<(u64, usize)> {
    let mut raw: u64 = 0;
    for (index, &byte) in bytes.iter().take(max_bytes).enumerate() {
        raw |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((raw, index + 1));
        }
    }
    None
}

/// Kafka's zig-zag int32 of a raw varint (whose bits past 32 are dropped, as the full
/// parser drops them).
#[inline(always)]
fn zigzag_int(raw: u64) -> i32 {
    let raw = raw as u32;
    (raw >> 1) as i32 ^ -((raw & 1) as i32)
}

#[inline(always)]
fn zigzag_long(raw: u64) -> i64 {
    (raw >> 1) as i64 ^ -((raw & 1) as i64)
}
