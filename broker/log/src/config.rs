//! Configuration of one partition log: segment sizing, fsync policy,
//! indexing cadence and retention. Plain data, validated once at open.

use std::time::Duration;

use super::error::LogError;

/// When the log makes appended data durable before acknowledging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` after every write cycle, before any append of that cycle is
    /// acknowledged. Appends that arrive during a cycle share the next one
    /// (group commit). The default.
    Always,
    /// Acknowledge once the data is written to the device; `fdatasync` at
    /// most every given interval. A crash may lose up to one interval of
    /// acknowledged data.
    Interval(Duration),
    /// Acknowledge once written; `fdatasync` only when a segment rolls and when
    /// the log closes.
    Never,
}

/// Settings of one partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before the active one would exceed this size.
    pub segment_bytes_max: u64,
    /// Roll the active segment once it is older than this (None: never by age).
    pub segment_age_max: Option<Duration>,
    /// When appends are acknowledged and fsynced.
    pub fsync: FsyncPolicy,
    /// One sparse offset-index entry per this many bytes of log.
    pub index_interval_bytes: u32,
    /// Delete closed segments whose newest record is older than this (None: keep).
    pub retention_ms: Option<u64>,
    /// Delete the oldest closed segments while the log is larger than this (None: no limit).
    pub retention_bytes: Option<u64>,
    /// Largest batch one append accepts, in bytes.
    pub batch_bytes_max: usize,
    /// Capacity of each aligned write buffer; batches accumulate in one until
    /// the next write cycle. A larger batch gets a buffer of its own size.
    pub write_buffer_bytes: usize,
    /// How many written buffers are kept in memory to serve reads of recent data.
    pub read_cache_buffers: usize,
}

/// Kafka's default segment size, and the paper's.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1 << 30;
/// Seven days, Kafka's default `retention.ms`.
pub const DEFAULT_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
/// Kafka's default `index.interval.bytes`.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u32 = 4096;
/// Default for the largest batch: 8 MiB, well above Kafka's 1 MiB
/// `message.max.bytes`, below the hard limit of the batch format.
pub const DEFAULT_BATCH_BYTES_MAX: usize = 8 << 20;
/// 256 KiB: big enough that a write cycle of many 10 KB batches is one write,
/// small enough that a few per partition fit in glommio's registered memory.
pub const DEFAULT_WRITE_BUFFER_BYTES: usize = 256 << 10;

/// Positions inside a segment are stored as u32 in the index files, so a
/// segment must stay below 4 GiB including the batch that crosses the limit.
pub const SEGMENT_BYTES_LIMIT: u64 = (u32::MAX as u64) - (broker_format::MAX_BATCH_LEN as u64);
/// The smallest segment size accepted: a few blocks, so tests can roll often.
pub const SEGMENT_BYTES_MIN: u64 = 4096;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: DEFAULT_SEGMENT_BYTES,
            segment_age_max: None,
            fsync: FsyncPolicy::Always,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            retention_ms: Some(DEFAULT_RETENTION_MS),
            retention_bytes: None,
            batch_bytes_max: DEFAULT_BATCH_BYTES_MAX,
            write_buffer_bytes: DEFAULT_WRITE_BUFFER_BYTES,
            read_cache_buffers: 8,
        }
    }
}

impl LogConfig {
    /// Checks every value against its limit; the error names the setting.
    pub fn validate(&self) -> Result<(), LogError> {
        let bad = |setting: &'static str, reason: String| Err(LogError::Config { setting, reason });
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_LIMIT).contains(&self.segment_bytes_max) {
            return bad(
                "segment_bytes_max",
                format!(
                    "{} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_LIMIT}",
                    self.segment_bytes_max
                ),
            );
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes", "must be at least 1".into());
        }
        if self.batch_bytes_max < broker_format::HEADER_LEN
            || self.batch_bytes_max > broker_format::MAX_BATCH_LEN
        {
            return bad(
                "batch_bytes_max",
                format!(
                    "{} is outside {}..={}",
                    self.batch_bytes_max,
                    broker_format::HEADER_LEN,
                    broker_format::MAX_BATCH_LEN
                ),
            );
        }
        if !(4096..=(64 << 20)).contains(&self.write_buffer_bytes) {
            return bad(
                "write_buffer_bytes",
                format!("{} is outside 4096..=64 MiB", self.write_buffer_bytes),
            );
        }
        if let FsyncPolicy::Interval(d) = self.fsync {
            if d.is_zero() {
                return bad("fsync", "interval must be above 0 ms (use `always`)".into());
            }
        }
        Ok(())
    }
}
