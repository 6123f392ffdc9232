//! The debug-level span around one request: api, version, correlation id, client id and
//! listener, read from the frame's header bytes. When debug is off for this module the
//! header is not even peeked: the span is `Span::none()` and costs a level check.

use std::borrow::Cow;

use kafka_protocol::messages::ApiKey;
use tracing::Span;

/// The request header fields every version (1 and 2) starts with.
#[derive(Debug, PartialEq, Eq)]
struct HeaderPeek<'a> {
    api_key: i16,
    version: i16,
    correlation_id: i32,
    /// `None` for a null client id or a frame too short to hold one.
    client_id: Option<Cow<'a, str>>,
}

fn peek_header(frame: &[u8]) -> Option<HeaderPeek<'_>> {
    let fixed = frame.get(..8)?;
    let api_key = i16::from_be_bytes([fixed[0], fixed[1]]);
    let version = i16::from_be_bytes([fixed[2], fixed[3]]);
    let correlation_id = i32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let client_id = frame.get(8..10).and_then(|length| {
        let length = i16::from_be_bytes([length[0], length[1]]);
        let length = usize::try_from(length).ok()?;
        frame.get(10..10 + length).map(String::from_utf8_lossy)
    });
    Some(HeaderPeek {
        api_key,
        version,
        correlation_id,
        client_id,
    })
}

/// The most of a client id the span records: the client chooses it (up to 32 KiB) and the
/// span repeats it on every event inside the request.
const SPAN_CLIENT_ID_BYTES_MAX: usize = 256;

/// `client_id` cut to [`SPAN_CLIENT_ID_BYTES_MAX`] bytes on a char boundary, saying how
/// long it was.
fn capped_client_id(client_id: &str) -> Cow<'_, str> {
    if client_id.len() <= SPAN_CLIENT_ID_BYTES_MAX {
        return Cow::Borrowed(client_id);
    }
    let mut end = SPAN_CLIENT_ID_BYTES_MAX;
    while !client_id.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}...({} bytes)",
        &client_id[..end],
        client_id.len()
    ))
}

/// The span for the request in `frame` (without its size prefix).
pub fn request_span(frame: &[u8], listener: &str) -> Span {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return Span::none();
    }
    let Some(header) = peek_header(frame) else {
        return Span::none();
    };
    let api: Cow<'static, str> = match ApiKey::try_from(header.api_key) {
        Ok(key) => Cow::Owned(format!("{key:?}")),
        Err(()) => Cow::Owned(format!("unknown({})", header.api_key)),
    };
    let client_id = capped_client_id(header.client_id.as_deref().unwrap_or(""));
    tracing::debug_span!(
        "request",
        api = %api,
        version = header.version,
        correlation_id = header.correlation_id,
        client_id = client_id.as_ref(),
        listener = %listener,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_fields_are_read_from_the_frame() {
        let mut frame = vec![0, 18, 0, 3, 0, 0, 0, 42, 0, 5];
        frame.extend_from_slice(b"kcat!rest-of-body");
        let header = peek_header(&frame).unwrap();
        assert_eq!(
            (header.api_key, header.version, header.correlation_id),
            (18, 3, 42)
        );
        assert_eq!(header.client_id.as_deref(), Some("kcat!"));
    }

    #[test]
    fn a_long_client_id_is_cut_on_a_char_boundary_with_its_length() {
        let short = "a".repeat(SPAN_CLIENT_ID_BYTES_MAX);
        assert_eq!(capped_client_id(&short), short.as_str());
        // 255 ASCII bytes then a 3-byte char straddling the cap: the cut falls before it.
        let long = format!("{}€{}", "a".repeat(255), "b".repeat(32_000));
        let capped = capped_client_id(&long);
        assert_eq!(
            capped,
            format!("{}...({} bytes)", "a".repeat(255), long.len())
        );
    }

    #[test]
    fn a_null_or_truncated_client_id_and_a_short_frame_are_handled() {
        let null = [0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff];
        assert_eq!(peek_header(&null).unwrap().client_id, None);
        let truncated = [0, 0, 0, 9, 0, 0, 0, 1, 0, 50, b'x'];
        assert_eq!(peek_header(&truncated).unwrap().client_id, None);
        assert!(peek_header(&[0, 18, 0]).is_none());
    }
}
