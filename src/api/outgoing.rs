//! A response ready for the socket: one encoded frame, or, for a fetch whose records stay
//! in the segment files, the encoded parts with file slices between them, which the
//! connection sends with sendfile (`server::sendfile`). `api::fetch_response` builds the
//! latter: only flexible versions, whose frames end with tagged fields, so the last byte
//! can be held back ([`SplicedFrame::last`]) until the sender has checked the slices were
//! not cut under it.

use bytes::{Bytes, BytesMut};

use crate::log::FileSlice;

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

impl From<SplicedFrame> for Outgoing {
    fn from(frame: SplicedFrame) -> Self {
        Outgoing::Spliced(frame)
    }
}
