//! Readers for the primitive types of Kafka's non-flexible encoding, for the request
//! versions kafka-protocol 0.18 no longer decodes (`legacy_offsets`, `legacy_leader_epoch`).
//!
//! Every reader returns `None` when the bytes left cannot hold the value: a truncated or
//! lying body is refused, never a panic, and an array length is believed only as far as
//! the bytes that arrived can back it, so it cannot make us allocate.

use bytes::{Buf, Bytes};

/// An array length that cannot exceed the bytes left (each element takes at least one).
pub fn count(body: &mut Bytes) -> Option<usize> {
    let n = i32_of(body)?;
    (n >= 0 && n as usize <= body.remaining()).then_some(n as usize)
}

pub fn i32_of(body: &mut Bytes) -> Option<i32> {
    (body.remaining() >= 4).then(|| body.get_i32())
}

pub fn i64_of(body: &mut Bytes) -> Option<i64> {
    (body.remaining() >= 8).then(|| body.get_i64())
}

pub fn nullable_string(body: &mut Bytes) -> Option<Option<String>> {
    if body.remaining() < 2 {
        return None;
    }
    let length = body.get_i16();
    if length < 0 {
        return Some(None);
    }
    let length = length as usize;
    if body.remaining() < length {
        return None;
    }
    let text = String::from_utf8(body.split_to(length).to_vec()).ok()?;
    Some(Some(text))
}

/// A non-nullable string; a null one reads as empty, as the offsets decoders always did.
pub fn string(body: &mut Bytes) -> Option<String> {
    nullable_string(body).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_refused_and_consumes_nothing_it_cannot_use() {
        assert_eq!(i32_of(&mut Bytes::from_static(&[0, 0, 1])), None);
        assert_eq!(i64_of(&mut Bytes::from_static(&[0; 7])), None);
        assert_eq!(string(&mut Bytes::from_static(&[0, 3, b'a', b'b'])), None);
        assert_eq!(
            nullable_string(&mut Bytes::from_static(&[0xff, 0xff])),
            Some(None)
        );
        assert_eq!(
            string(&mut Bytes::from_static(&[0, 2, 0xff, 0xfe])),
            None,
            "not UTF-8"
        );
    }

    #[test]
    fn an_array_length_beyond_the_bytes_left_is_refused() {
        assert_eq!(count(&mut Bytes::from_static(&[0, 0, 0, 2, 9, 9])), Some(2));
        assert_eq!(count(&mut Bytes::from_static(&[0, 0, 0, 3, 9, 9])), None);
        assert_eq!(
            count(&mut Bytes::from_static(&[0xff, 0xff, 0xff, 0xff])),
            None
        );
    }
}
