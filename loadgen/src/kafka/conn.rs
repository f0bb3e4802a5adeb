//! One blocking Kafka connection: version negotiation (ApiVersions), size
//! prefixed frames, request headers and correlation ids, with
//! `kafka-protocol`'s request encoders and response decoders. A connection
//! can be cut in a writing half (requests encoded into a buffer, written in
//! one go) and a reading half (answers in request order, as Kafka promises
//! for one connection), so a producer keeps many requests in flight.

use std::{
    collections::HashMap,
    io::{BufReader, Read, Write},
    net::TcpStream,
};

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader},
    protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes},
};

/// The client id loadgen sends.
pub const CLIENT_ID: &str = "loadgen";

/// The largest answer loadgen accepts (a fetch answer is about its
/// `max_bytes`; this bounds what a broken peer can make us allocate).
const MAX_FRAME: usize = 256 << 20;

/// The versions loadgen speaks of each api it uses: the newest that the
/// broker also speaks is chosen. Produce stops at 10 and Fetch at 12, the
/// last versions that name topics (13 names them by id).
const OURS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 10),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 4, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
];

/// The version chosen for each api both sides speak.
#[derive(Debug, Clone, Default)]
pub struct Versions(HashMap<i16, i16>);

impl Versions {
    /// The version of `key`, or an error naming the api the broker lacks.
    pub fn get(&self, key: ApiKey) -> anyhow::Result<i16> {
        self.0
            .get(&(key as i16))
            .copied()
            .with_context(|| format!("the broker speaks no version of {key:?} that loadgen does"))
    }

    /// Whether both sides speak `key`.
    pub fn has(&self, key: ApiKey) -> bool {
        self.0.contains_key(&(key as i16))
    }

    /// The intersection of loadgen's ranges with the broker's.
    fn negotiate(broker: &[(i16, i16, i16)]) -> Versions {
        let mut chosen = HashMap::new();
        for &(key, min, max) in OURS {
            if let Some(&(_, bmin, bmax)) = broker.iter().find(|(k, _, _)| *k == key as i16) {
                let hi = max.min(bmax);
                if hi >= min.max(bmin) {
                    chosen.insert(key as i16, hi);
                }
            }
        }
        Versions(chosen)
    }
}

/// The writing half: encodes requests into a buffer, writes it out.
#[derive(Debug)]
pub struct Writer {
    stream: TcpStream,
    versions: Versions,
    next_id: i32,
    buf: BytesMut,
}

/// The reading half: reads answers, checks their correlation ids.
#[derive(Debug)]
pub struct Reader {
    stream: BufReader<TcpStream>,
    versions: Versions,
}

/// A connection, both halves.
#[derive(Debug)]
pub struct Conn {
    /// Writes requests.
    pub writer: Writer,
    /// Reads answers.
    pub reader: Reader,
}

impl Conn {
    /// Connects to `addr` and negotiates versions with ApiVersions.
    pub fn connect(addr: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let read = stream.try_clone()?;
        let mut conn = Conn {
            writer: Writer {
                stream,
                versions: Versions::default(),
                next_id: 0,
                buf: BytesMut::with_capacity(64 << 10),
            },
            reader: Reader {
                stream: BufReader::with_capacity(256 << 10, read),
                versions: Versions::default(),
            },
        };
        // ApiVersions v3 (every broker of the last years speaks it; one
        // that does not answers UNSUPPORTED_VERSION in the v0 shape, which
        // v3's decoder reads far enough to tell).
        let version = 3;
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("loadgen"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let id = conn.writer.encode_at(ApiKey::ApiVersions, version, &req)?;
        conn.writer.flush()?;
        let frame = conn.reader.frame()?;
        let resp: kafka_protocol::messages::ApiVersionsResponse =
            decode_frame(frame, id, version, ApiKey::ApiVersions)?;
        if resp.error_code != 0 {
            bail!("ApiVersions failed with error code {}", resp.error_code);
        }
        let broker: Vec<(i16, i16, i16)> = resp
            .api_keys
            .iter()
            .map(|a| (a.api_key, a.min_version, a.max_version))
            .collect();
        let versions = Versions::negotiate(&broker);
        conn.writer.versions = versions.clone();
        conn.reader.versions = versions;
        Ok(conn)
    }

    /// The negotiated versions.
    pub fn versions(&self) -> &Versions {
        &self.writer.versions
    }

    /// Sends `req` and waits for its answer (nothing else in flight).
    pub fn call<R: Request>(&mut self, req: &R) -> anyhow::Result<R::Response> {
        let id = self.writer.encode(req)?;
        self.writer.flush()?;
        self.reader.read::<R>(id)
    }
}

impl Writer {
    /// Encodes `req` at the negotiated version into the buffer (not yet
    /// written); returns its correlation id.
    pub fn encode<R: Request>(&mut self, req: &R) -> anyhow::Result<i32> {
        let key = api_key(R::KEY)?;
        let version = self.versions.get(key)?;
        self.encode_at(key, version, req)
    }

    fn encode_at<R: Encodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &R,
    ) -> anyhow::Result<i32> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let start = self.buf.len();
        self.buf.put_i32(0);
        header.encode(&mut self.buf, R::header_version(version))?;
        req.encode(&mut self.buf, version)?;
        let len = i32::try_from(self.buf.len() - start - 4).context("request too large")?;
        self.buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(id)
    }

    /// Bytes encoded and not yet written.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Writes everything encoded so far.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        if !self.buf.is_empty() {
            self.stream
                .write_all(&self.buf)
                .context("writing to the broker")?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl Reader {
    /// Reads one answer frame (without its size prefix).
    pub fn frame(&mut self) -> anyhow::Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .context("reading from the broker")?;
        let len = usize::try_from(i32::from_be_bytes(len)).context("negative frame size")?;
        if len > MAX_FRAME {
            bail!("the broker sent a frame of {len} bytes (more than {MAX_FRAME})");
        }
        let mut buf = BytesMut::zeroed(len);
        self.stream
            .read_exact(&mut buf)
            .context("reading from the broker")?;
        Ok(buf.freeze())
    }

    /// Reads the answer to request `id` of type `R`.
    pub fn read<R: Request>(&mut self, id: i32) -> anyhow::Result<R::Response> {
        let key = api_key(R::KEY)?;
        let version = self.versions.get(key)?;
        let frame = self.frame()?;
        decode_frame(frame, id, version, key)
    }
}

fn api_key(key: i16) -> anyhow::Result<ApiKey> {
    ApiKey::try_from(key).map_err(|_| anyhow::anyhow!("unknown api key {key}"))
}

fn decode_frame<T: Decodable + HeaderVersion>(
    mut frame: Bytes,
    id: i32,
    version: i16,
    key: ApiKey,
) -> anyhow::Result<T> {
    let header = ResponseHeader::decode(&mut frame, T::header_version(version))
        .with_context(|| format!("decoding the header of a {key:?} v{version} answer"))?;
    if header.correlation_id != id {
        bail!(
            "answer out of order: correlation id {} where {id} was expected ({key:?})",
            header.correlation_id
        );
    }
    T::decode(&mut frame, version).with_context(|| format!("decoding a {key:?} v{version} answer"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may unwrap: a failure is the test failing
mod tests {
    use super::*;

    #[test]
    fn negotiation_takes_the_newest_common_version_and_drops_disjoint_apis() {
        let v = Versions::negotiate(&[(0, 3, 13), (1, 4, 11), (3, 0, 3), (18, 0, 4)]);
        assert_eq!(v.get(ApiKey::Produce).unwrap(), 10);
        assert_eq!(v.get(ApiKey::Fetch).unwrap(), 11);
        assert!(
            !v.has(ApiKey::Metadata),
            "metadata 0-3 is below loadgen's 4"
        );
        assert_eq!(v.get(ApiKey::ApiVersions).unwrap(), 3);
        assert!(!v.has(ApiKey::CreateTopics));
        assert!(v.get(ApiKey::ListOffsets).is_err());
    }
}
