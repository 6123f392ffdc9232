//! An HTTP/1.1 request head, parsed from bytes that arrived (no I/O here).
//!
//! Only what routing needs: the method and the path (a query string is kept apart and
//! ignored by the routes). Headers are checked for shape and otherwise skipped: there is
//! no body to frame, since only GET and HEAD are served.

/// Upper bound of a request head (request line and headers). A scraper sends a few
/// hundred bytes; a larger head is refused with 431 rather than buffered.
pub const HEAD_BYTES_MAX: usize = 8 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Any other token: answered 405 Method Not Allowed.
    Other,
}

#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The path without its query string, e.g. `/metrics`.
    pub path: String,
}

/// Why a head could not be served; each maps to one status code.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x, or a malformed request line or header: 400.
    Malformed(&'static str),
    /// The head exceeds [`HEAD_BYTES_MAX`]: 431.
    TooLarge,
}

/// The end of the head (index just past the blank line) if it has fully arrived.
/// Accepts bare LF line ends too, as RFC 9112 allows a recipient to.
pub fn head_end(buffer: &[u8]) -> Option<usize> {
    let mut index = 0;
    while let Some(offset) = buffer[index..].iter().position(|&byte| byte == b'\n') {
        let line_end = index + offset;
        let next = line_end + 1;
        // A blank line: "\n" or "\r\n" right after the previous line's LF.
        if index > 0 && (line_end == index || (line_end == index + 1 && buffer[index] == b'\r')) {
            return Some(next);
        }
        index = next;
    }
    None
}

/// Parses a complete head (as delimited by [`head_end`]).
pub fn parse_head(head: &[u8]) -> Result<RequestHead, HeadError> {
    if head.len() > HEAD_BYTES_MAX {
        return Err(HeadError::TooLarge);
    }
    let text = std::str::from_utf8(head).map_err(|_| HeadError::Malformed("not UTF-8"))?;
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let request_line = lines.next().ok_or(HeadError::Malformed("empty request"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed(
            "request line is not METHOD TARGET VERSION",
        ));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HeadError::Malformed("not HTTP/1.0 or HTTP/1.1"));
    }
    if !target.starts_with('/') {
        return Err(HeadError::Malformed("target is not an absolute path"));
    }
    for line in lines.take_while(|line| !line.is_empty()) {
        let Some((name, _)) = line.split_once(':') else {
            return Err(HeadError::Malformed("header without a colon"));
        };
        // RFC 9112: no whitespace between a field name and the colon.
        if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(HeadError::Malformed("bad header name"));
        }
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        token if !token.is_empty() && token.bytes().all(|b| b.is_ascii_uppercase()) => {
            Method::Other
        }
        _ => return Err(HeadError::Malformed("bad method")),
    };
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok(RequestHead {
        method,
        path: path.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<RequestHead, HeadError> {
        let end = head_end(text.as_bytes()).expect("a complete head");
        parse_head(&text.as_bytes()[..end])
    }

    #[test]
    fn a_scrape_request_parses() {
        let head = parsed("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n").unwrap();
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.path, "/metrics");
        let head = parsed("HEAD / HTTP/1.0\n\n").unwrap();
        assert_eq!(head.method, Method::Head);
        assert_eq!(head.path, "/");
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        // A leading blank line is not the end of a head.
        assert_eq!(head_end(b"\r\n"), None);
    }

    #[test]
    fn other_methods_are_recognised_for_405() {
        assert_eq!(
            parsed("POST /metrics HTTP/1.1\r\n\r\n").unwrap().method,
            Method::Other
        );
        assert_eq!(
            parsed("DELETE / HTTP/1.1\r\n\r\n").unwrap().method,
            Method::Other
        );
    }

    #[test]
    fn malformed_heads_are_refused() {
        for bad in [
            "GET /metrics\r\n\r\n",
            "GET /metrics HTTP/2.0\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(
                matches!(parsed(bad), Err(HeadError::Malformed(_))),
                "accepted {bad:?}"
            );
        }
        assert!(matches!(
            parse_head(b"GET /\xff HTTP/1.1\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn an_oversized_head_is_too_large() {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        while text.len() <= HEAD_BYTES_MAX {
            text.push_str("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        text.push_str("\r\n");
        assert_eq!(parsed(&text), Err(HeadError::TooLarge));
    }
}
