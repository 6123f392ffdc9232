//! One client connection: frames in, responses out, strictly in request order (Kafka
//! clients match responses to requests by order as well as correlation id).
//!
//! Requests on one connection are handled one at a time, as Kafka's muted channel does;
//! pipelined requests wait in the read buffer, and responses are flushed when no whole
//! request is waiting, so a pipelining client gets its responses in batches.
//!
//! Memory: a connection holds a read buffer only while a request is arriving or being
//! handled. It takes a standing-size one from its thread's [`buffer_pool`] when bytes are
//! there to read, and gives it back once the request is answered with nothing of the next
//! request in it (freed rather than pooled if the frame is still alive elsewhere). Its
//! [`ResponseWriter`] holds a pooled buffer likewise, from a response's first byte to the
//! flush. An idle connection holds neither.
//!
//! A frame larger than the standing buffer first takes its size from the broker-wide
//! [`RequestBudget`] (`queued.max.request.bytes`; the connection does not read while it
//! waits). The buffer that grew for it keeps those bytes while the client goes on sending
//! (the next large frame reuses the allocation instead of faulting in a fresh one per
//! request); after a second without a byte it is dropped and the bytes go back.
//!
//! Once a request is answered and its frame dropped, the next read starts again at the
//! front of the read buffer ([`reuse_read_buffer`]) instead of further along it, so the
//! same few pages stay hot: walking all 64 KiB faulted in (and, on a VM, had the host
//! back) every page of every connection's buffer, measured at 10,000 producing
//! connections as most of the extra cost per record and about 50 KiB of resident memory
//! per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tracing::Instrument;

use super::Shutdown;
use super::budget::{BudgetPermit, RequestBudget};
use super::buffer_pool;
use super::request_span::request_span;
use super::response_writer::ResponseWriter;
use super::sendfile::write_response;
use crate::api::outgoing::Outgoing;
use crate::api::{self, ApiError};
use crate::broker::Broker;
use crate::metrics::request::{RequestTimer, with_request_scope};

const READ_BUFFER_BYTES: usize = buffer_pool::BUFFER_BYTES;
const RESERVE_STEP_BYTES: usize = 1024 * 1024;
/// Bytes of a following request already read that are moved to the buffer's front to reuse
/// it; past this the buffer is used on to its end first (each byte is copied once at most).
const REUSE_COPY_MAX_BYTES: usize = 4 * 1024;
/// Frames up to this size fit the standing read buffer and do not draw on the budget.
pub const BUDGET_EXEMPT_BYTES: usize = READ_BUFFER_BYTES;
/// A buffer grown for large frames is kept (with its budget bytes) while the client keeps
/// sending, and dropped after this long without a byte (the next read takes a pooled one).
const GROWN_BUFFER_IDLE: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
enum ConnectionError {
    #[error("frame of {size} bytes exceeds socket.request.max.bytes {max}")]
    FrameTooLarge { size: i64, max: usize },
    #[error("peer closed the connection in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ConnectionError {
    /// The `reason` of the connection-closed line.
    fn reason(&self) -> &'static str {
        match self {
            ConnectionError::FrameTooLarge { .. } => "limit",
            ConnectionError::Truncated => "client closed",
            ConnectionError::Api(_) => "bad frame",
            ConnectionError::Io(_) => "i/o error",
        }
    }
}

/// Why a connection ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    ByClient,
    IdleTimeout,
    Shutdown,
}

impl Closed {
    fn as_str(self) -> &'static str {
        match self {
            Closed::ByClient => "client closed",
            Closed::IdleTimeout => "idle timeout",
            Closed::Shutdown => "shutdown",
        }
    }
}

pub struct Connection {
    reader: OwnedReadHalf,
    writer: ResponseWriter,
    buffer: BytesMut,
    peer: SocketAddr,
    /// `/ip` as Kafka shows client hosts.
    client_host: Arc<str>,
    /// The listener this connection was accepted on.
    listener_name: Arc<str>,
    broker: Arc<Broker>,
    shutdown: Shutdown,
    /// `None` when `queued.max.request.bytes` is unbounded.
    budget: Option<Arc<RequestBudget>>,
    /// The budget bytes of the frame being read or handled.
    permit: Option<BudgetPermit>,
    /// The buffer is not a standing-size one from the pool: it grew, or moved to a larger
    /// allocation, for a frame. It stays (with any budget bytes) until it sits empty for
    /// [`GROWN_BUFFER_IDLE`], and is never given to the pool.
    grown: bool,
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        listener_name: Arc<str>,
        broker: Arc<Broker>,
        shutdown: Shutdown,
        budget: Option<Arc<RequestBudget>>,
    ) -> Self {
        let (reader, writer) = stream.into_split();
        Connection {
            reader,
            writer: ResponseWriter::new(writer),
            // Taken from the pool when the first bytes arrive.
            buffer: BytesMut::new(),
            client_host: Arc::from(format!("/{}", peer.ip())),
            listener_name,
            peer,
            broker,
            shutdown,
            budget,
            permit: None,
            grown: false,
        }
    }

    pub async fn run(mut self) {
        let (peer, listener) = (self.peer, self.listener_name.clone());
        tracing::info!(%peer, %listener, "connection accepted");
        match self.serve().await {
            Ok(reason) => {
                tracing::info!(%peer, %listener, reason = reason.as_str(), "connection closed")
            }
            Err(error) => tracing::info!(
                %peer,
                %listener,
                reason = error.reason(),
                %error,
                "connection closed"
            ),
        }
    }

    async fn serve(&mut self) -> Result<Closed, ConnectionError> {
        let idle = (self.broker.config.connection_idle_ms_max).map(Duration::from_millis);
        let mut shutdown = self.shutdown.clone();
        // One shutdown wait and one idle timer for the connection's life: made per request,
        // they were a timer-wheel insert and removal and a watch registration each, about
        // a twentieth of the instructions of an empty long-poll answer.
        let stopping = shutdown.triggered();
        tokio::pin!(stopping);
        // Never polled without an idle time.
        let idle_timer = tokio::time::sleep(idle.unwrap_or(Duration::MAX));
        tokio::pin!(idle_timer);
        loop {
            // Idle is counted from here; a timer set for an earlier wait is moved on when it
            // fires (at most once per `idle`), not at every request.
            // None: no idle time (`connections.max.idle.ms` negative), or one past what an
            // Instant holds, which never ends. On Linux even u64::MAX ms fits (i64
            // seconds), so the latter only guards other platforms.
            let idle_until = idle.and_then(|idle| tokio::time::Instant::now().checked_add(idle));
            let idled = async {
                let Some(idle_until) = idle_until else {
                    return std::future::pending().await;
                };
                loop {
                    (&mut idle_timer).await;
                    if tokio::time::Instant::now() >= idle_until {
                        break;
                    }
                    idle_timer.as_mut().reset(idle_until);
                }
            };
            // Biased: a request arriving as serving ends is not read (nor answered).
            let frame = tokio::select! {
                biased;
                _ = &mut stopping => Err(Closed::Shutdown),
                frame = self.read_frame() => frame?.ok_or(Closed::ByClient),
                _ = idled => Err(Closed::IdleTimeout),
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(reason) => {
                    self.writer.flush().await?;
                    return Ok(reason);
                }
            };
            let timer = RequestTimer::start(&frame);
            let (handled, scope) = {
                let handling = std::pin::pin!(self.handle(frame.freeze()));
                with_request_scope(handling).await
            };
            let handled_at = Instant::now();
            if let Err(error) = &handled {
                timer.failed(error);
            }
            let response = handled?;
            // Regardless of throttling the response goes out at once, as Kafka 4.0 sends it
            // for every version: holding it back would let an old client's request time
            // out (and a non-idempotent producer retry into duplicates).
            if let Some(response) = response {
                write_response(&mut self.writer, response).await?;
            }
            timer.finish(handled_at, &scope);
            self.release_request_memory();
            reuse_read_buffer(&mut self.buffer);
            if !self.grown {
                // Kept only if it holds bytes of the next request.
                buffer_pool::give(&mut self.buffer);
            }
            let throttle = Duration::from_millis(scope.throttle_ms());
            if !self.whole_frame_buffered() || !throttle.is_zero() {
                self.writer.flush().await?;
            }
            if !throttle.is_zero() {
                // The response is out with its throttle time; the connection reads no
                // further request until the time is up (Kafka mutes the channel).
                self.hold(throttle).await?;
            }
            if self.shutdown.is_triggered() {
                self.writer.flush().await?;
                return Ok(Closed::Shutdown);
            }
        }
    }

    /// Holds a throttled client: nothing is read for `throttle`, unless shutdown begins.
    async fn hold(&mut self, throttle: Duration) -> Result<(), ConnectionError> {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(throttle) => {}
            _ = shutdown.triggered() => {}
        }
        Ok(())
    }

    /// Hands one frame to the API layer inside its request span; the latency line is
    /// logged only when the span is enabled (debug).
    async fn handle(&self, frame: Bytes) -> Result<Option<Outgoing>, ApiError> {
        let span = request_span(&frame, &self.listener_name);
        let started = (!span.is_disabled()).then(Instant::now);
        let outcome =
            api::handle_frame_on(&self.broker, frame, &self.client_host, &self.listener_name)
                .instrument(span.clone())
                .await;
        if let Some(started) = started {
            let latency_us = started.elapsed().as_micros() as u64;
            match &outcome {
                Ok(Some(_)) => tracing::debug!(parent: &span, latency_us, "request answered"),
                Ok(None) => tracing::debug!(parent: &span, latency_us, "request needs no answer"),
                Err(error) => tracing::debug!(parent: &span, latency_us, %error, "request failed"),
            }
        }
        outcome
    }

    /// The next frame without its size prefix; `None` on a clean close between frames.
    async fn read_frame(&mut self) -> Result<Option<BytesMut>, ConnectionError> {
        loop {
            if let Some(size) = self.announced_size()? {
                self.admit(size).await;
                if self.buffer.len() >= 4 + size {
                    self.buffer.advance(4);
                    return Ok(Some(self.buffer.split_to(size)));
                }
                self.make_room(4 + size);
            }
            let Some(read) = self.read_or_idle().await else {
                self.shrink_buffer();
                continue;
            };
            if read? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::Truncated)
                };
            }
        }
    }

    /// Reads more bytes; `None` when a grown buffer sat empty for [`GROWN_BUFFER_IDLE`].
    async fn read_or_idle(&mut self) -> Option<std::io::Result<usize>> {
        if !self.grown || !self.buffer.is_empty() {
            return Some(self.read_some().await);
        }
        tokio::select! {
            read = self.read_some() => Some(read),
            _ = tokio::time::sleep(GROWN_BUFFER_IDLE) => None,
        }
    }

    /// One read into the buffer. Without one, a pooled buffer is lent to each attempt and
    /// kept only if bytes came: an attempt with nothing to read usually returns before any
    /// system call (tokio's readiness; after a read that filled its buffer, one `recv`
    /// finds nothing), so waiting costs no buffer.
    async fn read_some(&mut self) -> std::io::Result<usize> {
        if self.buffer.capacity() > 0 || self.grown {
            return self.reader.read_buf(&mut self.buffer).await;
        }
        std::future::poll_fn(|cx| {
            let mut buffer = buffer_pool::take();
            let read = std::pin::pin!(self.reader.read_buf(&mut buffer)).poll(cx);
            match read {
                std::task::Poll::Ready(Ok(read)) if read > 0 => self.buffer = buffer,
                // Pending, closed or failed: nothing was read into it.
                _ => _ = buffer_pool::give(&mut buffer),
            }
            read
        })
        .await
    }

    /// The size the next frame announces, once its 4 bytes are in; checked against
    /// `socket.request.max.bytes`.
    fn announced_size(&self) -> Result<Option<usize>, ConnectionError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let size = i64::from(i32::from_be_bytes(
            self.buffer[..4].try_into().expect("4 bytes"),
        ));
        let max = self.broker.config.frame_bytes_max;
        if size < 0 || size as u64 > max as u64 {
            return Err(ConnectionError::FrameTooLarge { size, max });
        }
        Ok(Some(size as usize))
    }

    /// Takes the frame's bytes from the budget (once per frame) before its body is read.
    /// A grant kept with a grown buffer covers the next frame when it is large enough.
    async fn admit(&mut self, size: usize) {
        if size <= BUDGET_EXEMPT_BYTES {
            return;
        }
        let Some(budget) = &self.budget else { return };
        let covered = self
            .permit
            .as_ref()
            .map_or(0, |permit| permit.num_permits());
        if covered >= budget.bytes_for(size) {
            return;
        }
        // Give a smaller grant back before waiting for the larger one.
        self.permit = None;
        self.permit = Some(budget.acquire(size).await);
    }

    /// Makes room to read the rest of a `total`-byte frame.
    fn make_room(&mut self, total: usize) {
        if self.permit.is_some() {
            // The budget granted these bytes: no more may be allocated for them.
            reserve_exactly(&mut self.buffer, total);
            self.grown = true;
            return;
        }
        // Unbudgeted: grow in steps, as an announced size is a claim, not bytes that
        // have arrived.
        self.buffer
            .reserve((total - self.buffer.len()).min(RESERVE_STEP_BYTES));
        // A reallocation past the standing size (bytes of a next frame left in the pooled
        // buffer can make even a small frame move it) is no longer the pool's kind.
        self.grown |= total > READ_BUFFER_BYTES || self.buffer.capacity() > READ_BUFFER_BYTES;
    }

    /// Gives the answered frame's bytes back to the budget, unless a grown buffer still
    /// holds them (then they go back with the buffer, when it is shrunk).
    fn release_request_memory(&mut self) {
        if !self.grown {
            self.permit = None;
        }
    }

    /// Drops a grown buffer and gives its budget bytes back: the large allocation is pinned
    /// by the buffer even once its frames are dropped. The next read takes a pooled one.
    fn shrink_buffer(&mut self) {
        // Called only when it sat empty (`read_or_idle`): bytes in it would be lost.
        if !self.buffer.is_empty() {
            return;
        }
        self.permit = None;
        self.buffer = BytesMut::new();
        self.grown = false;
    }

    fn whole_frame_buffered(&self) -> bool {
        if self.buffer.len() < 4 {
            return false;
        }
        let size = i32::from_be_bytes(self.buffer[..4].try_into().expect("4 bytes"));
        size >= 0 && self.buffer.len() >= 4 + size as usize
    }
}

/// Makes room in `buffer` (which holds the first bytes of a frame) for the whole `total`
/// bytes, allocating no more than that: the memory the request budget counted.
///
/// Its own allocation is reused when the frame fits there, the bytes in hand moved to the
/// front if need be (once the previous frame was dropped, and when they are no more than
/// their distance from the front, as `BytesMut` copies without overlap): a stream of large
/// produces does not allocate, and page-fault in, a fresh buffer per request. Otherwise it
/// moves to one allocation of exactly `total` bytes, as Kafka's memory pool hands out.
/// `reserve` on a buffer that alone holds its allocation (as here, the frame before being
/// answered) would take the larger of twice the old allocation and `total` plus the offset
/// of the bytes in it: a pooled buffer reserving for a 70 KB frame took 128 KiB, a grown
/// one of 1 MiB reserving for a 1.1 MiB frame 2 MiB, beyond `queued.max.request.bytes`.
fn reserve_exactly(buffer: &mut BytesMut, total: usize) {
    if buffer.try_reclaim(total - buffer.len()) {
        return;
    }
    let mut exact = BytesMut::with_capacity(total);
    exact.extend_from_slice(buffer);
    // The old allocation is freed, not pooled: this is the rare large frame.
    *buffer = exact;
}

/// Moves reading back to the front of `buffer`'s allocation when nothing else holds a part
/// of it (the answered frame was dropped) and at most [`REUSE_COPY_MAX_BYTES`] of the next
/// request are already in; otherwise leaves it as it is (never allocates). Whether it did.
fn reuse_read_buffer(buffer: &mut BytesMut) -> bool {
    if buffer.len() > REUSE_COPY_MAX_BYTES {
        return false;
    }
    // Asking for more than the bytes left after the read position, but no more than the
    // allocation, makes `try_reclaim` move the unread bytes to the front when it may. A
    // frame that ended exactly at the allocation's end leaves none: 1 byte is asked then.
    let allocation_left = buffer.capacity() - buffer.len();
    buffer.try_reclaim(allocation_left + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer as a connection holds it after reading a 10 KB frame and `pending` bytes of
    /// the next request; the frame is returned (as the handler gets it).
    fn after_one_frame(pending: &[u8]) -> (BytesMut, Bytes, *const u8) {
        let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
        let front = buffer.as_ptr();
        buffer.extend_from_slice(&[7u8; 10_000]);
        buffer.extend_from_slice(pending);
        let frame = buffer.split_to(10_000).freeze();
        (buffer, frame, front)
    }

    #[test]
    fn reading_starts_again_at_the_front_once_the_frame_is_dropped() {
        let (mut buffer, frame, front) = after_one_frame(&[]);
        drop(frame);
        assert!(reuse_read_buffer(&mut buffer));
        assert_eq!(buffer.as_ptr(), front);
        assert_eq!(buffer.capacity(), READ_BUFFER_BYTES);
        assert!(buffer.is_empty());
        // Already at the front: nothing to do, and still nothing allocated.
        assert!(!reuse_read_buffer(&mut buffer));
        assert_eq!(buffer.as_ptr(), front);
    }

    #[test]
    fn the_start_of_the_next_request_moves_to_the_front_intact() {
        let pending: Vec<u8> = (0..=255u8).cycle().take(REUSE_COPY_MAX_BYTES).collect();
        let (mut buffer, frame, front) = after_one_frame(&pending);
        drop(frame);
        assert!(reuse_read_buffer(&mut buffer));
        assert_eq!(buffer.as_ptr(), front);
        assert_eq!(&buffer[..], &pending[..]);
    }

    #[test]
    fn a_frame_that_filled_the_allocation_gives_all_of_it_back_once_dropped() {
        // A budgeted large frame: its buffer is reserved to exactly its size.
        let mut buffer = BytesMut::with_capacity(200_000);
        let (front, whole) = (buffer.as_ptr(), buffer.capacity());
        buffer.extend_from_slice(&vec![3u8; whole]);
        let frame = buffer.split_to(whole).freeze();
        assert_eq!(buffer.capacity(), 0);
        assert!(
            !reuse_read_buffer(&mut buffer),
            "the frame still points into it"
        );
        drop(frame);
        assert!(reuse_read_buffer(&mut buffer));
        assert_eq!((buffer.as_ptr(), buffer.capacity()), (front, whole));
        // A connection holding no buffer: nothing to reuse, nothing allocated.
        let mut none = BytesMut::new();
        assert!(!reuse_read_buffer(&mut none));
        assert_eq!(none.capacity(), 0);
    }

    #[test]
    fn a_budgeted_frame_gets_exactly_its_size_when_the_buffer_cannot_hold_it() {
        // A pooled buffer holding a 10 KB frame (dropped) and the first 1,000 bytes of a
        // 70,000-byte one (`reserve` gave it 121,072 bytes, in an allocation of 128 KiB).
        let start: Vec<u8> = (0..=255u8).cycle().take(1_000).collect();
        let (mut buffer, frame, _) = after_one_frame(&start);
        drop(frame);
        reserve_exactly(&mut buffer, 70_000);
        assert_eq!(buffer.capacity(), 70_000);
        assert_eq!(&buffer[..], &start[..]);
    }

    #[test]
    fn a_budgeted_frame_reuses_the_allocation_of_the_one_before() {
        // A grown buffer: a 299,000-byte frame answered and dropped, the first 1,000 bytes
        // of the next (250,000 bytes) behind it. (`reserve` reused it too: this guards the
        // reuse, which a fresh exact allocation per frame would lose.)
        let mut buffer = BytesMut::with_capacity(300_000);
        let (front, whole) = (buffer.as_ptr(), buffer.capacity());
        buffer.extend_from_slice(&vec![5u8; 299_000]);
        buffer.extend_from_slice(&[6u8; 1_000]);
        let frame = buffer.split_to(299_000).freeze();
        drop(frame);
        reserve_exactly(&mut buffer, 250_000);
        assert_eq!((buffer.as_ptr(), buffer.capacity()), (front, whole));
        assert_eq!(&buffer[..], &[6u8; 1_000][..]);
    }

    #[test]
    fn a_buffer_still_shared_or_holding_much_of_the_next_request_is_left_alone() {
        let (mut buffer, frame, _) = after_one_frame(&[1, 2, 3]);
        let position = buffer.as_ptr();
        assert!(
            !reuse_read_buffer(&mut buffer),
            "the frame still points into it"
        );
        assert_eq!((buffer.as_ptr(), &buffer[..]), (position, &[1u8, 2, 3][..]));
        assert_eq!(frame.len(), 10_000);

        let pending = vec![9u8; REUSE_COPY_MAX_BYTES + 1];
        let (mut buffer, frame, _) = after_one_frame(&pending);
        drop(frame);
        let position = buffer.as_ptr();
        assert!(!reuse_read_buffer(&mut buffer));
        assert_eq!(buffer.as_ptr(), position);
        assert_eq!(&buffer[..], &pending[..]);
    }
}
