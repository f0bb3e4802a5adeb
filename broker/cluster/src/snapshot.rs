//! The image as bytes: a JSON document with a format version, written
//! whole by [`MetadataImage::to_snapshot`] and read back, checked, by
//! [`MetadataImage::from_snapshot`]. The Raft layer stores it with the log
//! position it covers; that position is not part of the image.

use serde::{Deserialize, Serialize};

use crate::error::SnapshotError;
use crate::image::MetadataImage;

/// The snapshot format this build writes and reads. A change to the
/// image's serialized form that an older build would misread bumps it.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

#[derive(Serialize)]
struct SnapshotOut<'a> {
    format_version: u32,
    image: &'a MetadataImage,
}

/// Read first, alone, so that a snapshot of another format is refused for
/// its version, not for whatever field it lays out differently.
#[derive(Deserialize)]
struct FormatVersion {
    format_version: u64,
}

#[derive(Deserialize)]
struct SnapshotIn {
    image: MetadataImage,
}

impl MetadataImage {
    /// The image as snapshot bytes.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let snapshot = SnapshotOut {
            format_version: SNAPSHOT_FORMAT_VERSION,
            image: self,
        };
        // Only structs, strings, integers, and maps keyed by strings or
        // integers: serde_json cannot fail on them.
        serde_json::to_vec(&snapshot).expect("an image always serializes to JSON")
    }

    /// The image in snapshot `bytes`, which must be of this build's format
    /// and of cluster `cluster_id`; its invariants are checked.
    pub fn from_snapshot(bytes: &[u8], cluster_id: &str) -> Result<MetadataImage, SnapshotError> {
        let FormatVersion { format_version } = serde_json::from_slice(bytes)?;
        if format_version != u64::from(SNAPSHOT_FORMAT_VERSION) {
            return Err(SnapshotError::UnknownFormatVersion {
                found: format_version,
                supported: SNAPSHOT_FORMAT_VERSION,
            });
        }
        let SnapshotIn { image } = serde_json::from_slice(bytes)?;
        if image.cluster_id() != cluster_id {
            return Err(SnapshotError::WrongCluster {
                expected: cluster_id.to_owned(),
                found: image.cluster_id().to_owned(),
            });
        }
        Ok(image)
    }
}
