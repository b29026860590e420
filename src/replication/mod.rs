//! The replication layer: the node protocol (framed TCP), and — being built, see
//! `docs/REPLICATION.md` — the leader, followers, mirrors and snapshots on top of it.
//!
//! This layer calls the store and the log, never the reverse.
//!
//! What exists today: [`frame`], the protocol's messages and their byte map, and
//! [`read_frame`] / [`write_frame`], which move one frame over any `Read` / `Write` (a TCP
//! stream) with every length checked before anything is allocated.

pub mod coordinator;
pub mod frame;
pub mod isr;
pub mod node;
pub mod transport;

use std::io::{self, Read, Write};

use bytes::Bytes;

pub use frame::{
    Acks, ErrorCode, FetchRole, FollowerStatus, FrameError, FrameHead, Message, PartitionStatus,
    Role, TopicMetadata,
};
use frame::{FRAME_HEAD_LEN, MAX_FRAME_BYTES};

/// Why a frame could not be read or written.
///
/// # Examples
///
/// ```
/// use stratalog::replication::{WireError, read_frame};
///
/// // A stream that ends inside a frame head.
/// let mut cut: &[u8] = &[12, 0, 0];
/// assert!(matches!(read_frame(&mut cut), Err(WireError::Io(_))));
/// // Garbage: refused as a bad frame, nothing allocated.
/// let mut garbage: &[u8] = &[0xff; 12];
/// assert!(matches!(read_frame(&mut garbage), Err(WireError::Frame(_))));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The connection failed or closed in the middle of a frame.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that are not a valid frame; close the connection.
    #[error("bad frame from peer: {0}")]
    Frame(#[from] FrameError),
}

/// Reads one frame. Returns `Ok(None)` when the peer closed the connection cleanly between two
/// frames. The announced length is checked against [`MAX_FRAME_BYTES`] before the body is
/// allocated.
pub fn read_frame(r: &mut impl Read) -> Result<Option<(u32, Message)>, WireError> {
    let mut head = [0u8; FRAME_HEAD_LEN];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let head = FrameHead::decode(&head)?;
    debug_assert!(head.len <= MAX_FRAME_BYTES);
    // Read into spare capacity: a fetch answer of a MiB is not zeroed first.
    let len = head.body_len();
    let mut body = Vec::with_capacity(len);
    r.take(len as u64).read_to_end(&mut body)?;
    if body.len() != len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    let message = Message::decode(head.kind, Bytes::from(body))?;
    Ok(Some((head.correlation, message)))
}

/// Writes one frame and flushes it.
pub fn write_frame(
    w: &mut impl Write,
    correlation: u32,
    message: &Message,
) -> Result<(), WireError> {
    let mut out = Vec::new();
    message.encode(correlation, &mut out)?;
    w.write_all(&out)?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_travel_over_a_byte_stream_in_any_chunking() {
        let messages = [
            Message::PromoteRequest { min_epoch: 3 },
            Message::StatusRequest,
            Message::OffsetCommitResponse {
                error: ErrorCode::None,
            },
        ];
        let mut stream = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            write_frame(&mut stream, i as u32, m).unwrap();
        }
        // A reader that returns one byte at a time, as a TCP read may.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let mut r = Trickle(&stream);
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(read_frame(&mut r).unwrap(), Some((i as u32, m.clone())));
        }
        assert_eq!(
            read_frame(&mut r).unwrap(),
            None,
            "clean end between frames"
        );
        let mut cut = Trickle(&stream[..5]);
        assert!(matches!(read_frame(&mut cut), Err(WireError::Io(_))));
    }
}
