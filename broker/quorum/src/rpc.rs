//! The Raft RPCs on the wire between controllers: one request, then its
//! response, on a TCP connection at a time.
//!
//! A frame is a 4-byte little-endian length, then that many bytes of JSON
//! (a `Request` or a `Response`). The length is checked against
//! `MAX_FRAME_BYTES` before the frame's buffer is allocated; a frame that is
//! too long or does not decode is an error that closes the connection.

use std::io;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::limits::MAX_FRAME_BYTES;
use crate::types::TypeConfig;

/// A Raft RPC from a peer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Replication and heartbeats.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// An election.
    Vote(VoteRequest<u64>),
    /// One chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A request of the application's clients (brokers asking a
    /// controller), opaque text for the `ClientService`.
    Client(String),
}

/// The answer to a `Request`, of the same kind.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    /// To `Request::AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// To `Request::Vote`.
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// To `Request::InstallSnapshot`.
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// The `ClientService`'s answer to `Request::Client`.
    Client(String),
    /// To `Request::Client` on a node started without a `ClientService`.
    NoClientService,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The connection failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The length field exceeds the bound.
    #[error("frame of {len} bytes, above the bound {MAX_FRAME_BYTES}")]
    TooLarge {
        /// The length claimed or needed.
        len: usize,
    },
    /// The payload is not the JSON of the expected message.
    #[error("undecodable frame: {0}")]
    Decode(serde_json::Error),
    /// The message could not be encoded.
    #[error("unencodable message: {0}")]
    Encode(serde_json::Error),
}

/// Writes `message` as one frame.
pub(crate) async fn write_frame<T: Serialize>(
    out: &mut (impl AsyncWrite + Unpin),
    message: &T,
) -> Result<(), FrameError> {
    let json = serde_json::to_vec(message).map_err(FrameError::Encode)?;
    if json.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len: json.len() });
    }
    let len = u32::try_from(json.len()).map_err(|_| FrameError::TooLarge { len: json.len() })?;
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&json);
    out.write_all(&frame).await?;
    out.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` if the peer closed the connection cleanly
/// before a frame began.
pub(crate) async fn read_frame<T: DeserializeOwned>(
    input: &mut (impl AsyncRead + Unpin),
) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    let mut filled = 0;
    while filled < len.len() {
        match input.read(&mut len[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            n => filled += n,
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len });
    }
    let mut payload = vec![0u8; len];
    input.read_exact(&mut payload).await?;
    serde_json::from_slice(&payload)
        .map(Some)
        .map_err(FrameError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_vote_request_round_trips() {
        runtime().block_on(async {
            let request = Request::Vote(VoteRequest::new(openraft::Vote::new(3, 2), None));
            let mut buf = Vec::new();
            write_frame(&mut buf, &request).await.expect("write");
            let mut input = &buf[..];
            let got: Option<Request> = read_frame(&mut input).await.expect("read");
            assert!(matches!(got, Some(Request::Vote(v)) if v.vote == openraft::Vote::new(3, 2)));
            let end: Option<Request> = read_frame(&mut input).await.expect("clean end");
            assert!(end.is_none());
        });
    }

    #[test]
    fn an_oversized_length_is_refused_before_allocating() {
        runtime().block_on(async {
            let buf = u32::MAX.to_le_bytes();
            let mut input = &buf[..];
            let got = read_frame::<Request>(&mut input).await;
            assert!(matches!(got, Err(FrameError::TooLarge { .. })), "{got:?}");
        });
    }

    #[test]
    fn garbage_and_cut_frames_are_errors_not_panics() {
        runtime().block_on(async {
            let mut buf = 5u32.to_le_bytes().to_vec();
            buf.extend_from_slice(b"{nope");
            let mut input = &buf[..];
            assert!(matches!(
                read_frame::<Request>(&mut input).await,
                Err(FrameError::Decode(_))
            ));
            let cut = &buf[..6];
            let mut input = cut;
            assert!(matches!(
                read_frame::<Request>(&mut input).await,
                Err(FrameError::Io(_))
            ));
            let mut input = &buf[..2];
            assert!(matches!(
                read_frame::<Request>(&mut input).await,
                Err(FrameError::Io(_))
            ));
        });
    }
}
