//! Small-file helpers: a file replaced atomically (temp file, fsync, rename,
//! directory fsync), and files of a magic followed by records.
//!
//! Blocking `std::fs` calls: they run on the controller thread (or in
//! `Quorum::start`), never on a shard's executor.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::Path;

use crate::error::QuorumError;
use crate::record::{self, Read1};

/// Bytes of a file's magic (its kind and format version).
pub(crate) const MAGIC_BYTES: usize = 8;

/// Replaces `dir/name` with `bytes`. With `durable`, the temp file and the
/// directory are fsynced around the rename, so once this returns the new
/// content survives a crash; without, a crash may leave the old content or
/// (on some file systems) an empty file, which the reader treats as absent.
pub(crate) fn replace(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    file.write_all(bytes)?;
    if durable {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp, dir.join(name))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// fsyncs a directory, making renames and creations in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `magic` followed by one record per payload.
pub(crate) fn records_file(magic: &[u8; MAGIC_BYTES], payloads: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(MAGIC_BYTES + payloads.iter().map(|p| p.len() + 8).sum::<usize>());
    out.extend_from_slice(magic);
    for payload in payloads {
        record::encode(payload, &mut out);
    }
    out
}

/// Reads a file written by `replace(records_file(magic, payloads))`:
/// `Ok(None)` if it does not exist or is incomplete (a non-durable write cut
/// short); its `count` payloads otherwise, each at most `max_payload`
/// bytes. A wrong magic or a corrupt record is an error.
pub(crate) fn read_records_file(
    path: &Path,
    magic: &[u8; MAGIC_BYTES],
    count: usize,
    max_payload: &[usize],
) -> Result<Option<Vec<Vec<u8>>>, QuorumError> {
    let io_err = |source| QuorumError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let mut input = BufReader::new(file);
    let mut got = [0u8; MAGIC_BYTES];
    let n = record::read_full(&mut input, &mut got).map_err(io_err)?;
    if n < MAGIC_BYTES {
        return Ok(None);
    }
    if &got != magic {
        return Err(QuorumError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("magic {got:?}, expected {magic:?}"),
        });
    }
    let mut payloads = Vec::with_capacity(count);
    for max in max_payload.iter().take(count) {
        match record::read_record(&mut input, *max).map_err(io_err)? {
            Read1::Record(p) => payloads.push(p),
            Read1::End | Read1::Torn => return Ok(None),
            Read1::Corrupt(reason) => {
                return Err(QuorumError::Corrupt {
                    path: path.to_path_buf(),
                    reason,
                })
            }
        }
    }
    Ok(Some(payloads))
}
