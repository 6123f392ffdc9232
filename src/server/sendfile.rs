//! Writes a response to the client's socket: encoded bytes through the connection's
//! buffer, records of segment files with sendfile(2), from the page cache to the socket
//! without passing through this process (rustix's safe wrapper; the socket is
//! non-blocking, so each call sends what fits and tokio's readiness says when to go on).
//!
//! A spliced frame's last byte goes out only after every slice is checked unchanged
//! (`log::file_slice`): if a file was cut while its bytes were sent, the response is
//! abandoned and the connection closed, and the client, which never got a whole
//! response, retries elsewhere.

use std::io;

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::response_writer::ResponseWriter;
use crate::api::outgoing::{Outgoing, Part, TRUNCATED_WHILE_SENT};
use crate::log::FileSlice;

/// Writes `outgoing` into `writer`; what stays in its buffer is flushed by the caller.
pub async fn write_response(writer: &mut ResponseWriter, outgoing: Outgoing) -> io::Result<()> {
    let frame = match outgoing {
        Outgoing::Frame(frame) => return writer.write_all(&frame).await,
        Outgoing::Spliced(frame) => frame,
    };
    for part in &frame.parts {
        match part {
            Part::Bytes(bytes) => writer.write_all(bytes).await?,
            Part::File(slice) => {
                // The bytes before the slice go first.
                writer.flush().await?;
                send_file(writer.socket(), slice).await?;
            }
        }
    }
    if !frame.unchanged() {
        return Err(io::Error::other(TRUNCATED_WHILE_SENT));
    }
    writer.write_all(&frame.last).await
}

/// Sends the slice's bytes from its file to the socket.
async fn send_file(socket: &TcpStream, slice: &FileSlice) -> io::Result<()> {
    let mut position = slice.position();
    let end = position + slice.len() as u64;
    while position < end {
        let count = usize::try_from(end - position).unwrap_or(usize::MAX);
        socket.writable().await?;
        let sent = socket.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(socket, slice.file(), Some(&mut position), count)
                .map_err(io::Error::from)
        });
        match sent {
            // The file ends before the slice: it was cut under us.
            Ok(0) => return Err(io::Error::other(TRUNCATED_WHILE_SENT)),
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::{Bytes, BytesMut};
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::api::outgoing::SplicedFrame;
    use crate::log::file_slice::SegmentFile;
    use crate::server::response_writer::tests::pair;

    fn file_with(bytes: &[u8]) -> Arc<SegmentFile> {
        SegmentFile::holding(bytes)
    }

    fn frame(file: &Arc<SegmentFile>, len: usize) -> SplicedFrame {
        SplicedFrame {
            parts: vec![
                Part::Bytes(Bytes::from_static(b"head")),
                Part::File(FileSlice::new(file, 3, len)),
                Part::Bytes(Bytes::from_static(b"mid")),
                Part::File(FileSlice::new(file, 0, 2)),
            ],
            last: Bytes::from_static(b"!"),
        }
    }

    #[tokio::test]
    async fn file_bytes_arrive_in_order_between_the_encoded_parts() {
        // Larger than a loopback socket buffer, so sendfile has to wait for the reader.
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let file = file_with(&content);
        let (mut writer, mut client) = pair().await;
        let len = content.len() - 3;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        write_response(&mut writer, Outgoing::Spliced(frame(&file, len)))
            .await
            .unwrap();
        writer.flush().await.unwrap();
        drop(writer); // the client reads to the end
        let got = reader.await.unwrap();
        let mut expected = BytesMut::from(&b"head"[..]);
        expected.extend_from_slice(&content[3..]);
        expected.extend_from_slice(b"mid");
        expected.extend_from_slice(&content[..2]);
        expected.extend_from_slice(b"!");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
    }

    #[tokio::test]
    async fn a_file_cut_under_its_slice_abandons_the_response_before_its_last_byte() {
        let file = file_with(&[5; 10_000]);
        let (mut writer, mut client) = pair().await;
        let spliced = frame(&file, 9_000);
        // Cut into the slice and written again to the old length: sendable, not the bytes.
        file.truncate(5_000).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&**file, &[6; 5_000], 5_000).unwrap();
        let error = write_response(&mut writer, Outgoing::Spliced(spliced))
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), TRUNCATED_WHILE_SENT);
        writer.flush().await.unwrap();
        drop(writer);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 4 + 9_000 + 3 + 2, "everything but the last byte");

        let short = file_with(&[5; 100]);
        let (mut writer, _client) = pair().await;
        let spliced = frame(&short, 1_000);
        short.truncate(50).unwrap();
        let error = write_response(&mut writer, Outgoing::Spliced(spliced))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            TRUNCATED_WHILE_SENT,
            "the file ends early"
        );
    }
}
