//! Transitional: the partition layer's calls, until the log's own
//! `durable_end` and `read_below` land (log-split branch).

use crate::{Log, LogError, LogRead};

impl Log {
    /// The end of what an acknowledgement promises.
    pub fn durable_end(&self) -> u64 {
        self.high_watermark()
    }

    /// Reads below `end` (transitional: the whole acknowledged log).
    pub async fn read_below(
        &self,
        offset: u64,
        max_bytes: usize,
        _end: u64,
    ) -> Result<LogRead, LogError> {
        self.read(offset, max_bytes).await
    }
}
