//! A cursor over a request body, for the requests decoded here rather than through
//! `kafka-protocol` (`fetch_request`, and the versions it no longer decodes:
//! `legacy_offsets`, `legacy_leader_epoch`): Kafka's primitive types in their classic and
//! flexible forms (compact lengths as unsigned varints of length + 1, tagged fields after
//! every struct).
//!
//! Every read checks the bytes left first and fails with [`Malformed`], never a panic; an
//! array's count must fit the bytes left at the smallest size its elements can take, and
//! the caller reserves no more than [`PREALLOCATE_MAX`] elements from it up front, so a
//! lying count cannot make us allocate. Strings are borrowed from the body, not copied.

/// The most elements a decoder reserves before decoding them: a count is bounded only by
/// the bytes left, and an element can take far more memory than its bytes on the wire.
pub const PREALLOCATE_MAX: usize = 1024;

/// Why a request body could not be decoded (the connection closes on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The reason, as `RequestContext::malformed` takes it.
impl From<Malformed> for String {
    fn from(Malformed(reason): Malformed) -> String {
        reason.to_owned()
    }
}

/// The most bytes an unsigned varint of 32 bits takes.
const VARINT_BYTES_MAX: usize = 5;

/// The longest string Kafka's readers accept, compact ones included (its generated code
/// refuses a longer one as an invalid length).
const STRING_BYTES_MAX: usize = i16::MAX as usize;

/// Reads one request body front to back; `flexible` is whether its version is.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
    flexible: bool,
}

impl<'a> Reader<'a> {
    pub fn new(body: &'a [u8], flexible: bool) -> Reader<'a> {
        Reader {
            rest: body,
            flexible,
        }
    }

    /// The next `n` bytes, borrowed.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.rest.len() < n {
            return Err(Malformed("the body ends inside a field"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let bytes = self.bytes(N)?;
        Ok(bytes.try_into().expect("split at N"))
    }

    pub fn i8(&mut self) -> Result<i8, Malformed> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    pub fn i16(&mut self) -> Result<i16, Malformed> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32, Malformed> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, Malformed> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub fn uuid(&mut self) -> Result<uuid::Uuid, Malformed> {
        Ok(uuid::Uuid::from_bytes(self.array()?))
    }

    /// An unsigned varint of at most 32 bits. Longer is refused: a sixth byte, as Kafka's
    /// `ByteUtils.readUnsignedVarint` refuses it, and bits past the 32nd in the fifth,
    /// which Kafka drops.
    pub fn unsigned_varint(&mut self) -> Result<u32, Malformed> {
        let mut value: u64 = 0;
        for index in 0..VARINT_BYTES_MAX {
            let [byte] = self.array()?;
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| Malformed("a varint beyond 32 bits"));
            }
        }
        Err(Malformed("a varint longer than 5 bytes"))
    }

    /// A non-nullable array's element count, each element taking at least
    /// `element_bytes_min` bytes: INT32, or in flexible versions an unsigned varint of
    /// count + 1. Null, negative or more than the bytes left can hold is refused.
    pub fn count(&mut self, element_bytes_min: usize) -> Result<usize, Malformed> {
        let count = if self.flexible {
            let encoded = self.unsigned_varint()?;
            let count = encoded.checked_sub(1).ok_or(Malformed("a null array"))?;
            count as usize
        } else {
            let count = self.i32()?;
            usize::try_from(count).map_err(|_| Malformed("a null or negative array length"))?
        };
        match count.checked_mul(element_bytes_min.max(1)) {
            Some(bytes) if bytes <= self.rest.len() => Ok(count),
            _ => Err(Malformed("an array longer than the body")),
        }
    }

    /// A non-nullable string, borrowed: INT16 length, or in flexible versions an unsigned
    /// varint of length + 1. Null, longer than [`STRING_BYTES_MAX`] and invalid UTF-8 are
    /// refused.
    pub fn string(&mut self) -> Result<&'a str, Malformed> {
        self.nullable_string()?.ok_or(Malformed("a null string"))
    }

    /// A nullable string, borrowed: as [`Reader::string`], with null (a negative length, or
    /// a compact length of 0) read as `None`.
    pub fn nullable_string(&mut self) -> Result<Option<&'a str>, Malformed> {
        let length = if self.flexible {
            let Some(length) = self.unsigned_varint()?.checked_sub(1) else {
                return Ok(None);
            };
            let length = length as usize;
            if length > STRING_BYTES_MAX {
                return Err(Malformed("a string longer than 32767 bytes"));
            }
            length
        } else {
            // Any negative length is null, as Kafka's generated readers take it.
            match usize::try_from(self.i16()?) {
                Ok(length) => length,
                Err(_) => return Ok(None),
            }
        };
        let text = self.bytes(length)?;
        std::str::from_utf8(text)
            .map(Some)
            .map_err(|_| Malformed("a string not in UTF-8"))
    }

    /// The tagged fields that end a struct in flexible versions (nothing in classic ones):
    /// `field` gets each one's tag and a reader over exactly its bytes; it reads the tags
    /// it knows, and the bytes of the others are skipped, as Kafka skips unknown tags.
    pub fn tagged_fields(
        &mut self,
        mut field: impl FnMut(u32, &mut Reader<'a>) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.unsigned_varint()?;
        for _ in 0..count {
            let tag = self.unsigned_varint()?;
            let size = self.unsigned_varint()? as usize;
            let mut value = Reader::new(self.bytes(size)?, true);
            field(tag, &mut value)?;
        }
        Ok(())
    }

    /// Skips a struct's tagged fields: none of them is one the caller reads.
    pub fn skip_tagged_fields(&mut self) -> Result<(), Malformed> {
        self.tagged_fields(|_, _| Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian_and_short_input_is_refused() {
        let body = [1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 9];
        let mut reader = Reader::new(&body, false);
        assert_eq!(reader.i8(), Ok(1));
        assert_eq!(reader.i16(), Ok(2));
        assert_eq!(reader.i32(), Ok(3));
        assert_eq!(reader.i64(), Ok(4));
        assert!(reader.i16().is_err(), "one byte left");
        assert!(Reader::new(&[0; 15], false).uuid().is_err());
    }

    #[test]
    fn varints_up_to_32_bits_and_no_longer() {
        let read = |bytes: &[u8]| Reader::new(bytes, true).unsigned_varint();
        assert_eq!(read(&[0]), Ok(0));
        assert_eq!(read(&[0x7f]), Ok(127));
        assert_eq!(read(&[0x80, 0x01]), Ok(128));
        assert_eq!(read(&[0xff, 0xff, 0xff, 0xff, 0x0f]), Ok(u32::MAX));
        assert!(read(&[0xff, 0xff, 0xff, 0xff, 0x1f]).is_err(), "33 bits");
        assert!(
            read(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).is_err(),
            "6 bytes"
        );
        assert!(read(&[0x80]).is_err(), "cut short");
    }

    #[test]
    fn strings_classic_and_compact() {
        assert_eq!(Reader::new(&[0, 2, b'h', b'i'], false).string(), Ok("hi"));
        assert_eq!(Reader::new(&[3, b'h', b'i'], true).string(), Ok("hi"));
        assert_eq!(Reader::new(&[0, 0], false).string(), Ok(""));
        assert!(Reader::new(&[0xff, 0xff], false).string().is_err(), "null");
        assert!(Reader::new(&[0], true).string().is_err(), "compact null");
        assert!(
            Reader::new(&[0, 3, b'h', b'i'], false).string().is_err(),
            "cut"
        );
        assert!(
            Reader::new(&[3, 0xff, 0xfe], true).string().is_err(),
            "not UTF-8"
        );
        let mut longest = vec![0x80, 0x80, 0x02]; // 32,768: a length of 32,767
        longest.extend(std::iter::repeat_n(b'x', 32_767));
        assert_eq!(
            Reader::new(&longest, true).string().map(str::len),
            Ok(32_767)
        );
        let mut longer = vec![0x81, 0x80, 0x02]; // a length of 32,768
        longer.extend(std::iter::repeat_n(b'x', 32_768));
        assert!(Reader::new(&longer, true).string().is_err());
    }

    #[test]
    fn nullable_strings_read_any_negative_length_as_none() {
        assert_eq!(
            Reader::new(&[0xff, 0xff], false).nullable_string(),
            Ok(None)
        );
        assert_eq!(Reader::new(&[0], true).nullable_string(), Ok(None));
        assert_eq!(
            Reader::new(&[0, 1, b'x'], false).nullable_string(),
            Ok(Some("x"))
        );
        assert_eq!(
            Reader::new(&[2, b'x'], true).nullable_string(),
            Ok(Some("x"))
        );
        assert_eq!(
            Reader::new(&[0xff, 0xfe], false).nullable_string(),
            Ok(None),
            "-2"
        );
        assert!(
            Reader::new(&[0xff, 0xfe], false).string().is_err(),
            "non-nullable"
        );
        assert!(
            Reader::new(&[0, 2, b'x'], false).nullable_string().is_err(),
            "cut"
        );
        // What follows a null is read next.
        let mut reader = Reader::new(&[0xff, 0xff, 7], false);
        assert_eq!(reader.nullable_string(), Ok(None));
        assert_eq!(reader.i8(), Ok(7));
    }

    #[test]
    fn an_array_count_must_fit_the_bytes_left() {
        let classic = [0, 0, 0, 2, 9, 9, 9, 9];
        assert_eq!(Reader::new(&classic, false).count(2), Ok(2));
        assert!(Reader::new(&classic, false).count(3).is_err());
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff], false)
                .count(1)
                .is_err()
        );
        assert_eq!(Reader::new(&[3, 9, 9], true).count(1), Ok(2));
        assert!(Reader::new(&[0], true).count(1).is_err(), "compact null");
        let huge = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(Reader::new(&huge, true).count(1).is_err());
        assert!(
            Reader::new(&[0x7f, 0xff, 0xff, 0xff], false)
                .count(usize::MAX)
                .is_err()
        );
    }

    #[test]
    fn tagged_fields_come_in_their_own_windows_and_unknown_ones_are_skipped() {
        // Two fields: tag 3 holding an INT16, tag 9 holding three bytes; then an INT8.
        let body = [2, 3, 2, 0, 7, 9, 3, 1, 2, 3, 42];
        let mut reader = Reader::new(&body, true);
        let mut seen = Vec::new();
        reader
            .tagged_fields(|tag, value| {
                if tag == 3 {
                    seen.push(value.i16()?);
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, [7]);
        assert_eq!(reader.i8(), Ok(42));
        // A field read past its window fails even though the body goes on.
        let mut reader = Reader::new(&body, true);
        assert!(
            reader
                .tagged_fields(|_, value| value.i32().map(drop))
                .is_err()
        );
        // A window longer than the body.
        assert!(
            Reader::new(&[1, 0, 5, 1], true)
                .skip_tagged_fields()
                .is_err()
        );
        // Classic versions have none.
        let mut classic = Reader::new(&[42], false);
        classic.skip_tagged_fields().unwrap();
        assert_eq!(classic.i8(), Ok(42));
    }
}
