//! The HTTP accept loop and one request per connection.
//!
//! Routing is a static table of [`Route`]s: a new page is one more row. Every answer
//! closes the connection (`Connection: close`), so there is no keep-alive state, no
//! pipelining and no body framing to get wrong; scrapers reconnect cheaply.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::request::{HEAD_BYTES_MAX, HeadError, Method, head_end, parse_head};
use crate::server::Shutdown;

/// Open HTTP connections at most; more wait in the listen backlog. Scrapers and the odd
/// curl need a handful; the cap keeps a misbehaving client from holding sockets.
pub const CONNECTIONS_MAX: usize = 16;
/// A request head must arrive within this, or the connection gets 408 and is closed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A response that the peer does not take within this is abandoned.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long, and how many bytes, a closing connection reads from a client that is still
/// sending (see `linger`).
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
const LINGER_BYTES_MAX: usize = 64 * 1024;

/// What a route answers.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
}

pub type RouteFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// One page: an exact path and the function that renders it from the shared state.
pub struct Route<S: ?Sized> {
    pub path: &'static str,
    pub handler: fn(Arc<S>) -> RouteFuture,
}

/// Serves `routes` on `listener` until `shutdown`; connections in flight are dropped
/// with the task (they hold no state worth finishing).
pub async fn serve<S: Send + Sync + ?Sized + 'static>(
    listener: TcpListener,
    state: Arc<S>,
    routes: &'static [Route<S>],
    mut shutdown: Shutdown,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closes"),
            _ = shutdown.triggered() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.triggered() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        connections.spawn(async move {
            if let Err(error) = answer(stream, state, routes, READ_TIMEOUT).await {
                tracing::debug!(%error, "http connection dropped");
            }
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

async fn answer<S: ?Sized>(
    mut stream: TcpStream,
    state: Arc<S>,
    routes: &'static [Route<S>],
    read_timeout: Duration,
) -> std::io::Result<()> {
    let head = tokio::time::timeout(read_timeout, read_head(&mut stream)).await;
    let (response, head_only) = match head {
        Err(_) => (
            Response::text(408, "request head not received in time\n"),
            false,
        ),
        Ok(Err(error)) => return Err(error),
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(bytes))) => route(&bytes, state, routes).await,
    };
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&encode_head(&response)).await?;
        if !head_only {
            stream.write_all(&response.body).await?;
        }
        stream.shutdown().await
    })
    .await;
    written.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))?;
    linger(&mut stream).await;
    Ok(())
}

/// Reads and drops what the client still sends (the rest of an oversized head) until it
/// closes, for a bounded time: closing with unread bytes sends a reset, which can destroy
/// the response before the client has read it.
async fn linger(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let mut drained = 0usize;
    let _ = tokio::time::timeout(LINGER_TIMEOUT, async {
        while drained < LINGER_BYTES_MAX {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(read) => drained += read,
            }
        }
    })
    .await;
}

/// Reads until the head is complete: `Some(head bytes)`, or `Some` of more than
/// [`HEAD_BYTES_MAX`] bytes when it does not end in time (the parser refuses those), or
/// `None` when the peer closed before sending anything.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return match buffer.is_empty() {
                true => Ok(None),
                false => Err(std::io::ErrorKind::UnexpectedEof.into()),
            };
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = head_end(&buffer) {
            buffer.truncate(end);
            return Ok(Some(buffer));
        }
        if buffer.len() > HEAD_BYTES_MAX {
            return Ok(Some(buffer));
        }
    }
}

/// The response to a head, and whether only its head is sent (a HEAD request).
async fn route<S: ?Sized>(
    bytes: &[u8],
    state: Arc<S>,
    routes: &'static [Route<S>],
) -> (Response, bool) {
    let head = match parse_head(bytes) {
        Ok(head) => head,
        Err(HeadError::TooLarge) => {
            return (Response::text(431, "request head too large\n"), false);
        }
        Err(HeadError::Malformed(reason)) => {
            return (
                Response::text(400, format!("bad request: {reason}\n")),
                false,
            );
        }
    };
    if head.method == Method::Other {
        return (Response::text(405, "only GET and HEAD are served\n"), false);
    }
    let head_only = head.method == Method::Head;
    match routes.iter().find(|route| route.path == head.path) {
        Some(route) => ((route.handler)(state).await, head_only),
        None => (Response::text(404, "not found\n"), head_only),
    }
}

fn encode_head(response: &Response) -> Vec<u8> {
    let allow = if response.status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}\
         Connection: close\r\n\r\n",
        response.status,
        reason_phrase(response.status),
        response.content_type,
        response.body.len(),
    )
    .into_bytes()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
