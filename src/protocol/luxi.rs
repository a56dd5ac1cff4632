//! Luxi's wire framing, shared by maintd's Luxi client ([`crate::backend::luxi`]) and the
//! simulator's server ([`crate::sim::luxi_server`]): JSON messages, each ended by one
//! 0x03 byte, over a Unix stream socket (Ganeti's `lib/luxi.py`, `src/Ganeti/UDSServer.hs`).

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// End-of-message byte of the Luxi framing.
pub const END_OF_MESSAGE: u8 = 0x03;
/// Bytes asked from the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why no complete message could be read from a Luxi stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The peer closed the stream; `received` bytes of an unfinished message were read.
    #[error("connection closed after {received} bytes of a message")]
    Closed {
        /// Bytes of the unfinished message.
        received: usize,
    },
    /// The message exceeds the limit; the stream is out of step and must be dropped.
    #[error("message exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Reading failed.
    #[error("read failed: {0}")]
    Io(String),
}

/// Splits a byte stream into 0x03-terminated Luxi messages, never buffering more than
/// `max_bytes + 1` bytes of one message. Shared by the client and the simulator's server.
#[derive(Debug)]
pub struct MessageReader {
    pending: Vec<u8>,
    max_bytes: usize,
}

impl MessageReader {
    /// A reader accepting messages of at most `max_bytes` (terminator excluded).
    pub fn new(max_bytes: usize) -> Self {
        MessageReader {
            pending: Vec::new(),
            max_bytes,
        }
    }

    /// Bytes received beyond the last complete message.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next message, without its terminator.
    pub async fn read_message<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<Vec<u8>, FrameError> {
        let max_bytes = self.max_bytes;
        let mut searched = 0;
        loop {
            if let Some(offset) = self.pending[searched..]
                .iter()
                .position(|&b| b == END_OF_MESSAGE)
            {
                let end = searched + offset;
                let mut message: Vec<u8> = self.pending.drain(..=end).collect();
                message.pop();
                if message.len() > max_bytes {
                    return Err(FrameError::TooLarge { limit: max_bytes });
                }
                return Ok(message);
            }
            searched = self.pending.len();
            if self.pending.len() > max_bytes {
                return Err(FrameError::TooLarge { limit: max_bytes });
            }
            // Read at most up to one byte past the limit (plus the terminator).
            let room = (max_bytes + 2 - self.pending.len()).min(READ_CHUNK_BYTES);
            let start = self.pending.len();
            self.pending.resize(start + room, 0);
            let read = reader.read(&mut self.pending[start..]).await;
            let got = match read {
                Ok(n) => n,
                Err(e) => {
                    self.pending.truncate(start);
                    return Err(FrameError::Io(e.to_string()));
                }
            };
            self.pending.truncate(start + got);
            if got == 0 {
                return Err(FrameError::Closed {
                    received: self.pending.len(),
                });
            }
        }
    }
}

/// Write `payload` and the terminator. The payload must not contain 0x03; JSON produced by
/// serde_json never does, since it escapes control characters.
pub async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut framed = Vec::with_capacity(payload.len() + 1);
    framed.extend_from_slice(payload);
    framed.push(END_OF_MESSAGE);
    writer.write_all(&framed).await?;
    writer.flush().await
}
