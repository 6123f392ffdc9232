//! Buffers shared by the connections of one thread, for reading requests and for writing
//! responses: a connection holds a read buffer only while a request is arriving or being
//! handled, and a write buffer only while a response waits to be flushed.
//!
//! Why: with standing buffers per connection, 10,000 producing connections kept 10,000
//! read buffers and 10,000 write buffers, and each buffer's touched pages stayed resident
//! (about 15 KiB per connection at 10 KB requests, 4 KiB per idle one for its first
//! answer). Taken from a last-in-first-out pool, the buffer a request lands in is one a
//! request just left, still in the cache, and an idle connection holds none.
//!
//! Only empty buffers are given back, and only whole standing-size ones are kept
//! ([`give`]); the pool keeps at most [`POOLED_MAX`] per thread and frees the rest.

use std::cell::RefCell;

use bytes::BytesMut;

/// The size of every pooled buffer: a frame up to this size is read without growing it.
pub const BUFFER_BYTES: usize = 64 * 1024;

/// The most buffers a thread keeps: more than the requests and responses a worker thread
/// has in hand at once in the common case, and no more than 1 MiB of idle buffers per
/// thread.
pub const POOLED_MAX: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of [`BUFFER_BYTES`], empty: the one given back last on this thread, or a new one.
pub fn take() -> BytesMut {
    POOL.with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| BytesMut::with_capacity(BUFFER_BYTES))
}

/// Takes an empty `buffer` back, leaving it empty without capacity: into the pool if it is
/// the front of a whole standing-size allocation, else freed (an empty buffer holds
/// nothing; a frame still alive keeps its own part of the allocation). A buffer holding
/// bytes is left as it is. Whether it was taken.
///
/// Callers give only buffers whose allocation is at most [`BUFFER_BYTES`] (from [`take`],
/// or a standing-size one `reserve` made): the capacity counts from the read position, so
/// all of [`BUFFER_BYTES`] is the whole allocation, and no frame split off its front is
/// alive. A connection's buffer that moved to a larger allocation is never given
/// (`connection`'s `grown`).
pub fn give(buffer: &mut BytesMut) -> bool {
    if !buffer.is_empty() {
        return false;
    }
    let returned = std::mem::take(buffer);
    if returned.capacity() == BUFFER_BYTES {
        POOL.with_borrow_mut(|pool| {
            if pool.len() < POOLED_MAX {
                pool.push(returned);
            }
        });
    }
    true
}

#[cfg(test)]
pub fn pooled() -> usize {
    POOL.with_borrow(Vec::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_buffer_given_is_the_next_taken() {
        let mut first = take();
        let mut second = take();
        let (first_at, second_at) = (first.as_ptr(), second.as_ptr());
        assert!(give(&mut first) && give(&mut second));
        assert_eq!((first.capacity(), second.capacity()), (0, 0));
        assert_eq!(take().as_ptr(), second_at);
        assert_eq!(take().as_ptr(), first_at);
    }

    #[test]
    fn empty_buffers_are_taken_and_only_whole_standing_ones_pooled() {
        let mut holding = take();
        holding.extend_from_slice(b"next request");
        assert!(!give(&mut holding), "bytes of a next request");
        assert_eq!(&holding[..], b"next request");

        let mut buffer = take();
        buffer.extend_from_slice(&[1; 100]);
        let frame = buffer.split_to(100).freeze();
        assert!(
            give(&mut buffer),
            "taken, and freed: a frame still points into it"
        );
        assert_eq!((buffer.capacity(), pooled()), (0, 0));
        assert_eq!(&frame[..], &[1; 100][..], "the frame is untouched");

        let mut grown = BytesMut::with_capacity(2 * BUFFER_BYTES);
        assert!(give(&mut grown));
        assert_eq!(pooled(), 0, "grown for a large frame: freed");

        let mut whole = take();
        whole.extend_from_slice(&[2; 100]);
        drop(whole.split_to(100));
        assert!(
            whole.try_reclaim(BUFFER_BYTES),
            "unshared once the frame is gone"
        );
        assert!(give(&mut whole));
        assert_eq!(pooled(), 1);
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_bound() {
        let mut buffers: Vec<BytesMut> = (0..POOLED_MAX + 5).map(|_| take()).collect();
        for buffer in &mut buffers {
            assert!(give(buffer));
        }
        assert_eq!(pooled(), POOLED_MAX);
    }
}
