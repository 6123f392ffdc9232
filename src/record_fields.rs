//! The field encodings of Kafka's internal records (the keys and values in
//! `__consumer_offsets` and `__transaction_state`), shared by their codecs in
//! `group::records`, `group::consumer::records` and `txn::records`:
//!
//! - the fixed format: big-endian integers, int16-length strings (-1 null), int32-length
//!   bytes;
//! - the flexible format (KIP-482): unsigned varints, compact strings and arrays (length
//!   plus one, 0 null), and a tagged-field section closing every struct.
//!
//! Readers take `&mut &[u8]` and move it past what they read. They never trust a length:
//! one beyond the bytes left is an error at once, so a corrupt count never drives a long
//! loop or a large allocation. Each codec's error type wraps [`FieldError`].

use bytes::{Buf, BufMut, BytesMut};
use thiserror::Error;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum FieldError {
    #[error("record truncated")]
    Truncated,
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("negative length {0}")]
    NegativeLength(i64),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

pub type FieldResult<T> = Result<T, FieldError>;

pub fn need(bytes: &[u8], count: usize) -> FieldResult<()> {
    if bytes.len() < count {
        Err(FieldError::Truncated)
    } else {
        Ok(())
    }
}

pub fn get_i8(bytes: &mut &[u8]) -> FieldResult<i8> {
    need(bytes, 1)?;
    Ok(bytes.get_i8())
}

pub fn get_i16(bytes: &mut &[u8]) -> FieldResult<i16> {
    need(bytes, 2)?;
    Ok(bytes.get_i16())
}

pub fn get_i32(bytes: &mut &[u8]) -> FieldResult<i32> {
    need(bytes, 4)?;
    Ok(bytes.get_i32())
}

pub fn get_i64(bytes: &mut &[u8]) -> FieldResult<i64> {
    need(bytes, 8)?;
    Ok(bytes.get_i64())
}

pub fn get_uuid(bytes: &mut &[u8]) -> FieldResult<Uuid> {
    let raw = take(bytes, 16)?;
    Uuid::from_slice(raw).map_err(|_| FieldError::Truncated)
}

/// The next `length` bytes, checked.
pub fn take<'a>(bytes: &mut &'a [u8], length: usize) -> FieldResult<&'a [u8]> {
    need(bytes, length)?;
    let (taken, rest) = bytes.split_at(length);
    *bytes = rest;
    Ok(taken)
}

/// The next `length` bytes as UTF-8.
pub fn take_utf8(bytes: &mut &[u8], length: usize) -> FieldResult<String> {
    let raw = take(bytes, length)?;
    let text = std::str::from_utf8(raw).map_err(|_| FieldError::NotUtf8)?;
    Ok(text.to_string())
}

// The fixed format.

/// An int16-length string. Longer than `i16::MAX` bytes is a caller bug: every string
/// written here (group, member, topic and transactional ids) is bounded far below.
pub fn put_string(out: &mut BytesMut, text: &str) {
    out.put_i16(text.len() as i16);
    out.put_slice(text.as_bytes());
}

pub fn put_nullable_string(out: &mut BytesMut, text: Option<&str>) {
    match text {
        Some(text) => put_string(out, text),
        None => out.put_i16(-1),
    }
}

/// An int16-length string; any negative length is null, as Kafka's readers take it.
pub fn get_nullable_string(bytes: &mut &[u8]) -> FieldResult<Option<String>> {
    let length = get_i16(bytes)?;
    if length < 0 {
        return Ok(None);
    }
    take_utf8(bytes, length as usize).map(Some)
}

/// An int16-length string that may not be null.
pub fn get_string(bytes: &mut &[u8]) -> FieldResult<String> {
    let length = get_i16(bytes)?;
    if length < 0 {
        return Err(FieldError::NegativeLength(i64::from(length)));
    }
    take_utf8(bytes, length as usize)
}

pub fn put_bytes(out: &mut BytesMut, value: &[u8]) {
    out.put_i32(value.len() as i32);
    out.put_slice(value);
}

/// int32-length bytes; any negative length is null.
pub fn get_nullable_bytes<'a>(bytes: &mut &'a [u8]) -> FieldResult<Option<&'a [u8]>> {
    let length = get_i32(bytes)?;
    if length < 0 {
        return Ok(None);
    }
    take(bytes, length as usize).map(Some)
}

/// An int32 array length, -1 null. Every element takes at least a byte, so a length
/// beyond the bytes left is an error.
pub fn get_array_length(bytes: &mut &[u8]) -> FieldResult<Option<usize>> {
    match get_i32(bytes)? {
        -1 => Ok(None),
        n if n < 0 => Err(FieldError::NegativeLength(i64::from(n))),
        n => {
            need(bytes, n as usize)?;
            Ok(Some(n as usize))
        }
    }
}

pub fn put_array_length(out: &mut BytesMut, length: Option<usize>) {
    out.put_i32(length.map_or(-1, |n| n as i32));
}

// The flexible format.

pub fn put_uvarint(out: &mut BytesMut, value: u32) {
    crate::log::batch::put_unsigned_varint(out, value.into());
}

/// An unsigned varint of at most 5 bytes (32 bits), as Kafka's `readUnsignedVarint`.
pub fn get_uvarint(bytes: &mut &[u8]) -> FieldResult<u32> {
    let mut value: u32 = 0;
    for shift in (0..35).step_by(7) {
        let byte = get_i8(bytes)? as u8;
        value |= u32::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(FieldError::Invalid("varint longer than 5 bytes"))
}

/// A compact array's or string's length: the count plus one, 0 for null.
pub fn put_compact_length(out: &mut BytesMut, length: Option<usize>) {
    let raw = length.map_or(0, |n| u32::try_from(n + 1).unwrap_or(u32::MAX));
    put_uvarint(out, raw);
}

/// A compact length, `None` for null. Every array element takes at least a byte and a
/// string's length is its bytes, so a length beyond the bytes left is an error.
pub fn get_compact_length(bytes: &mut &[u8]) -> FieldResult<Option<usize>> {
    let Some(count) = (get_uvarint(bytes)? as usize).checked_sub(1) else {
        return Ok(None);
    };
    need(bytes, count)?;
    Ok(Some(count))
}

/// A compact array's count where the schema does not allow null.
pub fn get_compact_array_length(bytes: &mut &[u8]) -> FieldResult<usize> {
    get_compact_length(bytes)?.ok_or(FieldError::Invalid("null array"))
}

pub fn put_compact_string(out: &mut BytesMut, text: &str) {
    put_compact_length(out, Some(text.len()));
    out.put_slice(text.as_bytes());
}

pub fn put_compact_nullable_string(out: &mut BytesMut, text: Option<&str>) {
    match text {
        Some(text) => put_compact_string(out, text),
        None => put_compact_length(out, None),
    }
}

pub fn get_compact_nullable_string(bytes: &mut &[u8]) -> FieldResult<Option<String>> {
    match get_compact_length(bytes)? {
        Some(length) => take_utf8(bytes, length).map(Some),
        None => Ok(None),
    }
}

pub fn get_compact_string(bytes: &mut &[u8]) -> FieldResult<String> {
    get_compact_nullable_string(bytes)?.ok_or(FieldError::Invalid("null string"))
}

/// An empty tagged-field section.
pub fn put_no_tags(out: &mut BytesMut) {
    put_uvarint(out, 0);
}

/// A tagged-field section of `(tag, data)` fields, in the order given (ascending tags, as
/// the format requires).
pub fn put_tags(out: &mut BytesMut, fields: &[(u32, &[u8])]) {
    put_uvarint(out, fields.len() as u32);
    for (tag, data) in fields {
        put_uvarint(out, *tag);
        put_uvarint(out, data.len() as u32);
        out.put_slice(data);
    }
}

/// Reads a tagged-field section, handing each field's tag and data to `field`; a reader
/// that does not know a tag ignores it, as the format intends.
pub fn read_tags(bytes: &mut &[u8], mut field: impl FnMut(u32, &[u8])) -> FieldResult<()> {
    let count = get_uvarint(bytes)?;
    for _ in 0..count {
        let tag = get_uvarint(bytes)?;
        let size = get_uvarint(bytes)? as usize;
        field(tag, take(bytes, size)?);
    }
    Ok(())
}

/// Skips a tagged-field section (fields this version does not know).
pub fn skip_tags(bytes: &mut &[u8]) -> FieldResult<()> {
    read_tags(bytes, |_, _| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_a_sixth_byte_is_refused() {
        for value in [0, 1, 127, 128, 16_383, 16_384, u32::MAX] {
            let mut out = BytesMut::new();
            put_uvarint(&mut out, value);
            let mut bytes = &out[..];
            assert_eq!(get_uvarint(&mut bytes), Ok(value));
            assert!(bytes.is_empty());
        }
        let mut six = &[0x80u8, 0x80, 0x80, 0x80, 0x80, 0x01][..];
        assert_eq!(
            get_uvarint(&mut six),
            Err(FieldError::Invalid("varint longer than 5 bytes"))
        );
        assert_eq!(get_uvarint(&mut &[0x80u8][..]), Err(FieldError::Truncated));
    }

    #[test]
    fn strings_round_trip_in_both_formats_with_null() {
        let mut out = BytesMut::new();
        put_string(&mut out, "group");
        put_nullable_string(&mut out, None);
        put_compact_string(&mut out, "topic");
        put_compact_nullable_string(&mut out, None);
        put_compact_nullable_string(&mut out, Some(""));
        assert_eq!(&out[..7], b"\x00\x05group");
        assert_eq!(&out[7..9], b"\xff\xff");
        assert_eq!(&out[9..15], b"\x06topic");
        assert_eq!(&out[15..], b"\x00\x01");
        let mut bytes = &out[..];
        assert_eq!(get_string(&mut bytes).as_deref(), Ok("group"));
        assert_eq!(get_nullable_string(&mut bytes), Ok(None));
        assert_eq!(get_compact_string(&mut bytes).as_deref(), Ok("topic"));
        assert_eq!(get_compact_nullable_string(&mut bytes), Ok(None));
        assert_eq!(get_compact_string(&mut bytes).as_deref(), Ok(""));
        assert!(bytes.is_empty());
    }

    #[test]
    fn lengths_beyond_the_bytes_left_and_bad_text_are_errors() {
        assert_eq!(
            get_string(&mut &b"\x00\x09abc"[..]),
            Err(FieldError::Truncated)
        );
        assert_eq!(
            get_string(&mut &b"\xff\xfe"[..]),
            Err(FieldError::NegativeLength(-2))
        );
        assert_eq!(
            get_compact_string(&mut &b"\x00"[..]),
            Err(FieldError::Invalid("null string"))
        );
        assert_eq!(
            get_compact_string(&mut &b"\x03\xff\xfe"[..]),
            Err(FieldError::NotUtf8)
        );
        // A huge count is refused before any loop could run on it.
        assert_eq!(
            get_compact_length(&mut &b"\xff\xff\xff\xff\x0f"[..]),
            Err(FieldError::Truncated)
        );
        assert_eq!(
            get_array_length(&mut &b"\x7f\xff\xff\xff"[..]),
            Err(FieldError::Truncated)
        );
        assert_eq!(get_array_length(&mut &b"\xff\xff\xff\xff"[..]), Ok(None));
        assert_eq!(
            get_array_length(&mut &b"\xff\xff\xff\xfe"[..]),
            Err(FieldError::NegativeLength(-2))
        );
        assert_eq!(
            get_compact_array_length(&mut &b"\x00"[..]),
            Err(FieldError::Invalid("null array"))
        );
        assert_eq!(get_uuid(&mut &[0u8; 15][..]), Err(FieldError::Truncated));
    }

    #[test]
    fn tags_are_read_in_order_and_unknown_ones_skipped() {
        let mut out = BytesMut::new();
        put_tags(&mut out, &[(0, &[1, 2][..]), (7, &[][..]), (300, &[9][..])]);
        out.put_u8(0x42);
        let mut seen = Vec::new();
        let mut bytes = &out[..];
        read_tags(&mut bytes, |tag, data| seen.push((tag, data.to_vec()))).unwrap();
        assert_eq!(seen, vec![(0, vec![1, 2]), (7, vec![]), (300, vec![9])]);
        assert_eq!(bytes, &[0x42]);
        let mut bytes = &out[..];
        skip_tags(&mut bytes).unwrap();
        assert_eq!(bytes, &[0x42]);
        let cut = &out[..out.len() - 2];
        assert_eq!(skip_tags(&mut &cut[..]), Err(FieldError::Truncated));
    }
}
