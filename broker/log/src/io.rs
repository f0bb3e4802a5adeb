//! The one place where the log touches glommio's file API: segment files
//! opened with O_DIRECT, index files, the directory. Every operation returns a
//! [`LogError`] naming the file, and passes through an optional
//! [`Faults`] plan so tests can make the disk fail on demand.
//!
//! Invariants:
//! - Every write is of a whole aligned buffer at an aligned position; a short
//!   write is an error (it is how a full device shows itself).
//! - Nothing here blocks the shard's thread. File operations go through
//!   glommio's io_uring file API; the few filesystem calls glommio 0.9 only
//!   offers synchronously (stat of a directory, `create_dir_all`, listing a
//!   directory) run on glommio's blocking thread pool (`off_thread`) and are
//!   awaited.

use std::{
    cell::Cell,
    io,
    path::{Path, PathBuf},
    rc::Rc,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::error::LogError;
use crate::histogram::Histogram;

/// Alignment of every direct-I/O write and read position. 4096 covers both
/// 512-byte and 4 KiB logical-block devices.
pub const BLOCK: u64 = 4096;

/// Rounds `v` down to a multiple of [`BLOCK`].
pub fn align_down(v: u64) -> u64 {
    v & !(BLOCK - 1)
}

/// Rounds `v` up to a multiple of [`BLOCK`].
pub fn align_up(v: u64) -> u64 {
    align_down(v + BLOCK - 1)
}

/// Which disk operations a test wants to fail, and how.
///
/// Shared by every file of one log. Counters count down on each operation of
/// their kind; the operation that brings one from 1 to 0 fails, once. `*_always`
/// makes every such operation fail until cleared.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fail the n-th next data write (1 = the next one).
    pub fail_write_in: Cell<u32>,
    /// Fail every data write.
    pub fail_write_always: Cell<bool>,
    /// Fail the n-th next fdatasync.
    pub fail_sync_in: Cell<u32>,
    /// Counts data writes and syncs, for tests that want to see group commit.
    pub writes: Cell<u64>,
    /// Counts fdatasync calls.
    pub syncs: Cell<u64>,
    /// Holds every data write this long before it is issued (or fails), so
    /// tests can have several writes in flight at once.
    pub write_delay: Cell<Duration>,
    /// Data writes issued and not yet completed.
    pub writes_in_flight: Cell<u32>,
    /// The most data writes that were in flight at once.
    pub max_writes_in_flight: Cell<u32>,
    /// Stop the operation under way at this point with an injected error,
    /// leaving the files as they are there (a crash, once the test drops
    /// the log and reopens the directory).
    pub stop_at: Cell<Option<LogFault>>,
    /// Pass the `stop_at` point this many times before stopping there.
    pub stop_after_passes: Cell<u32>,
}

/// A point inside a multi-step operation where a test can stop it
/// ([`Faults::stop_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFault {
    /// `truncate_to`: the cut segment's indexes were rewritten for the prefix.
    TruncateIndexWritten,
    /// `truncate_to`: one later segment's files were removed.
    TruncateSegmentDeleted,
    /// `truncate_to`: the directory was fsynced after the removals.
    TruncateDirSynced,
    /// `truncate_to`: the cut segment was truncated, not yet fdatasynced.
    TruncateFileCut,
    /// `truncate_to`: the cut was fdatasynced.
    TruncateFileSynced,
    /// `truncate_to`: the epoch checkpoint was rewritten (the tail not yet).
    TruncateEpochsWritten,
}

/// Counts a data write as in flight while it lives.
struct InFlightGuard<'a>(&'a Faults);

impl<'a> InFlightGuard<'a> {
    fn new(f: &'a Faults) -> Self {
        let n = f.writes_in_flight.get() + 1;
        f.writes_in_flight.set(n);
        f.max_writes_in_flight
            .set(f.max_writes_in_flight.get().max(n));
        InFlightGuard(f)
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0
            .writes_in_flight
            .set(self.0.writes_in_flight.get() - 1);
    }
}

impl Faults {
    /// Fails with an injected error when the plan stops at `at` (see
    /// [`Faults::stop_at`]).
    pub(crate) fn check_stop(&self, at: LogFault, dir: &Path) -> Result<(), LogError> {
        if self.stop_at.get() != Some(at) {
            return Ok(());
        }
        let passes = self.stop_after_passes.get();
        if passes > 0 {
            self.stop_after_passes.set(passes - 1);
            return Ok(());
        }
        self.stop_at.set(None);
        Err(LogError::io(
            "stopping (injected)",
            dir,
            io::Error::other(format!("stopped at {at:?}")),
        ))
    }

    fn trip(counter: &Cell<u32>) -> bool {
        match counter.get() {
            0 => false,
            1 => {
                counter.set(0);
                true
            }
            n => {
                counter.set(n - 1);
                false
            }
        }
    }
}

fn injected(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

thread_local! {
    /// Devices (st_dev) whose io_uring poll support glommio has already
    /// probed on this thread.
    static PROBED_DEVICES: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Makes glommio probe the device holding `dir` for io_uring polled I/O
/// with a file that has data.
///
/// glommio 0.9 decides once per device and thread, on the first DmaFile
/// opened, by reading its first block: on an empty file that read succeeds
/// whatever the device supports, so glommio wrongly enables polled I/O and
/// every later read fails with EOPNOTSUPP (seen on this machine's virtio
/// disk). A log usually opens a new, empty segment first, so it primes the
/// probe with a one-block scratch file.
pub async fn probe_device(dir: &Path) -> Result<(), LogError> {
    use std::os::unix::fs::MetadataExt;
    // glommio reports a file's device only on a DmaFile, and opening one is
    // the probe this prepares: stat the directory off the thread instead.
    let owned = dir.to_path_buf();
    let dev = off_thread(move || std::fs::metadata(owned).map(|m| m.dev()))
        .await
        .map_err(|e| LogError::io("inspecting", dir, e))?;
    if PROBED_DEVICES.with(|d| d.borrow().contains(&dev)) {
        return Ok(());
    }
    let path = dir.join(".device-probe.tmp");
    let scratch = create_with(&path, vec![0u8; BLOCK as usize]).await?;
    scratch
        .close()
        .await
        .map_err(|e| LogError::io("closing", &path, e.into()))?;
    let file = DmaFile::open(&path)
        .await
        .map_err(|e| LogError::io("opening", &path, e.into()))?;
    let _ = file.close().await;
    remove_file(&path).await?;
    PROBED_DEVICES.with(|d| d.borrow_mut().push(dev));
    Ok(())
}

/// What one log's files did on the disk, for the metrics endpoint: data
/// writes, bytes written, fdatasyncs and how long they took. Shared by every
/// segment file of the log and read by the scraper's thread (relaxed atomic
/// adds, once per write or sync, never per record).
#[derive(Debug, Default)]
pub struct IoStats {
    /// Data writes completed.
    pub writes: AtomicU64,
    /// Bytes those writes carried (whole blocks, rewritten tails included).
    pub write_bytes: AtomicU64,
    /// Data fdatasyncs completed or failed.
    pub syncs: AtomicU64,
    /// How long each fdatasync took.
    pub sync_latency: Histogram,
    /// Reads of a segment from the disk for readers (read-aheads included).
    pub disk_reads: AtomicU64,
    /// Reads for readers served by a read-ahead issued after the previous
    /// read of the same partition (see `Log::read`).
    pub read_ahead_hits: AtomicU64,
}

/// A segment's `.log` file, opened read-write with O_DIRECT.
#[derive(Debug)]
pub struct SegmentFile {
    file: DmaFile,
    path: PathBuf,
    faults: Option<Rc<Faults>>,
    stats: Arc<IoStats>,
}

impl SegmentFile {
    /// Opens (and with `create`, creates) a segment file.
    pub async fn open(
        path: &Path,
        create: bool,
        faults: Option<Rc<Faults>>,
        stats: Arc<IoStats>,
    ) -> Result<Self, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(|e| LogError::io("opening", path, e.into()))?;
        Ok(SegmentFile {
            file,
            path: path.to_path_buf(),
            faults,
            stats,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An aligned buffer suitable for [`SegmentFile::write`].
    pub fn alloc(&self, size: usize) -> DmaBuffer {
        self.file.alloc_dma_buffer(size)
    }

    /// Writes the whole of `buf` at `pos`; both are block-aligned.
    pub async fn write(&self, buf: Rc<DmaBuffer>, pos: u64) -> Result<(), LogError> {
        // Once per write: cheap, and an unaligned O_DIRECT write is a bug
        // in the tail, not a disk error.
        assert_eq!(pos % BLOCK, 0, "unaligned write position");
        assert_eq!(buf.len() as u64 % BLOCK, 0, "unaligned write length");
        let want = buf.len();
        let _in_flight = self.faults.as_deref().map(InFlightGuard::new);
        if let Some(f) = &self.faults {
            f.writes.set(f.writes.get() + 1);
            let fail = f.fail_write_always.get() || Faults::trip(&f.fail_write_in);
            let delay = f.write_delay.get();
            if !delay.is_zero() {
                glommio::timer::sleep(delay).await;
            }
            if fail {
                return Err(LogError::io("writing", &self.path, injected(libc::ENOSPC)));
            }
        }
        let written = self
            .file
            .write_rc_at(buf, pos)
            .await
            .map_err(|e| LogError::io("writing", &self.path, e.into()))?;
        if written != want {
            // A short direct-I/O write means the device is full.
            return Err(LogError::io(
                "writing",
                &self.path,
                io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("short write of {written} of {want} bytes at {pos}: no space left on device"),
                ),
            ));
        }
        self.stats.writes.fetch_add(1, Relaxed);
        self.stats.write_bytes.fetch_add(want as u64, Relaxed);
        Ok(())
    }

    /// Reads `len` bytes at aligned `pos` (fewer at the end of the file).
    pub async fn read(&self, pos: u64, len: usize) -> Result<ReadResult, LogError> {
        debug_assert_eq!(pos % BLOCK, 0, "unaligned read position");
        self.file
            .read_at_aligned(pos, len)
            .await
            .map_err(|e| LogError::io("reading", &self.path, e.into()))
    }

    /// The bytes from the last block boundary at or below `len` to `len`
    /// (none when `len` is aligned): what a new tail carries when it
    /// continues the file at `len`.
    pub async fn read_partial_block(&self, len: u64) -> Result<Vec<u8>, LogError> {
        let pos = align_down(len);
        if len == pos {
            return Ok(Vec::new());
        }
        let block = self.read(pos, BLOCK as usize).await?;
        let n = (len - pos) as usize;
        if block.len() < n {
            return Err(LogError::Corrupt {
                path: self.path.clone(),
                reason: format!("file shorter than the {len} bytes the log holds in it"),
            });
        }
        Ok(block[..n].to_vec())
    }

    /// `fdatasync`.
    pub async fn sync(&self) -> Result<(), LogError> {
        if let Some(f) = &self.faults {
            f.syncs.set(f.syncs.get() + 1);
            if Faults::trip(&f.fail_sync_in) {
                return Err(LogError::io("fsyncing", &self.path, injected(libc::EIO)));
            }
        }
        let start = Instant::now();
        let synced = self.file.fdatasync().await;
        self.stats.syncs.fetch_add(1, Relaxed);
        self.stats.sync_latency.observe(start.elapsed());
        synced.map_err(|e| LogError::io("fsyncing", &self.path, e.into()))
    }

    /// Sets the file's length.
    pub async fn truncate(&self, len: u64) -> Result<(), LogError> {
        self.file
            .truncate(len)
            .await
            .map_err(|e| LogError::io("truncating", &self.path, e.into()))
    }

    /// The file's length.
    pub async fn file_len(&self) -> Result<u64, LogError> {
        self.file
            .file_size()
            .await
            .map_err(|e| LogError::io("reading the size of", &self.path, e.into()))
    }

    /// Closes the file.
    pub async fn close(self) -> Result<(), LogError> {
        let path = self.path;
        self.file
            .close()
            .await
            .map_err(|e| LogError::io("closing", &path, e.into()))
    }
}

/// Writes a small file atomically: to `NAME.tmp`, fsynced, renamed over
/// `NAME`. The caller fsyncs the directory.
pub async fn write_file_atomic(path: &Path, bytes: Vec<u8>) -> Result<(), LogError> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let file = create_with(&tmp, bytes).await?;
    file.fdatasync()
        .await
        .map_err(|e| LogError::io("fsyncing", &tmp, e.into()))?;
    file.close()
        .await
        .map_err(|e| LogError::io("closing", &tmp, e.into()))?;
    glommio::io::rename(&tmp, path)
        .await
        .map_err(|e| LogError::io("renaming", &tmp, e.into()))
}

/// Creates (or truncates) `path` as a buffered file holding `bytes`, and
/// returns it open; a short write is an error.
async fn create_with(path: &Path, bytes: Vec<u8>) -> Result<glommio::io::BufferedFile, LogError> {
    let file = glommio::io::BufferedFile::create(path)
        .await
        .map_err(|e| LogError::io("creating", path, e.into()))?;
    let len = bytes.len();
    let written = file
        .write_at(bytes, 0)
        .await
        .map_err(|e| LogError::io("writing", path, e.into()))?;
    if written != len {
        return Err(LogError::io(
            "writing",
            path,
            io::Error::other(format!("short write of {written} of {len} bytes")),
        ));
    }
    Ok(file)
}

/// Reads a whole small file; `Ok(None)` when it does not exist.
pub async fn read_file(path: &Path) -> Result<Option<Vec<u8>>, LogError> {
    let file = match glommio::io::BufferedFile::open(path).await {
        Ok(f) => f,
        Err(e) => {
            let e: io::Error = e.into();
            if e.kind() == io::ErrorKind::NotFound {
                return Ok(None);
            }
            return Err(LogError::io("opening", path, e));
        }
    };
    let len = file
        .file_size()
        .await
        .map_err(|e| LogError::io("reading the size of", path, e.into()))?;
    let len = usize::try_from(len)
        .map_err(|_| LogError::io("reading", path, io::Error::other("file too large")))?;
    let data = file
        .read_at(0, len)
        .await
        .map_err(|e| LogError::io("reading", path, e.into()))?;
    let out = data.to_vec();
    let _ = file.close().await;
    Ok(Some(out))
}

/// Removes a file; a file already gone is not an error.
pub async fn remove_file(path: &Path) -> Result<(), LogError> {
    match glommio::io::remove(path).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e: io::Error = e.into();
            if e.kind() == io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(LogError::io("removing", path, e))
            }
        }
    }
}

/// fsyncs a directory, so that file creations, renames and removals in it are durable.
pub async fn sync_dir(dir: &Path) -> Result<(), LogError> {
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| LogError::io("opening directory", dir, e.into()))?;
    d.sync()
        .await
        .map_err(|e| LogError::io("fsyncing directory", dir, e.into()))?;
    d.close()
        .await
        .map_err(|e| LogError::io("closing directory", dir, e.into()))
}

/// Runs a filesystem call that glommio 0.9 offers only synchronously on
/// glommio's blocking thread pool (as glommio itself runs rename, remove
/// and mkdir), so the shard's thread goes on serving while it runs.
async fn off_thread<R: Send + 'static>(call: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(call).await
}

/// Creates `dir` and any missing parent (glommio 0.9 has no recursive
/// mkdir; its `Directory::create` makes one level).
pub async fn create_dir_all(dir: &Path) -> Result<(), LogError> {
    let owned = dir.to_path_buf();
    off_thread(move || std::fs::create_dir_all(owned))
        .await
        .map_err(|e| LogError::io("creating directory", dir, e))
}

/// The paths of the entries of `dir` (glommio 0.9 lists a directory only
/// with the blocking `Directory::sync_read_dir`).
pub(crate) async fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let owned = dir.to_path_buf();
    off_thread(move || {
        std::fs::read_dir(owned)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<io::Result<Vec<PathBuf>>>()
    })
    .await
    .map_err(|e| LogError::io("listing", dir, e))
}

/// Whether `path` exists, looked up on glommio's blocking thread pool.
pub async fn exists(path: &Path) -> bool {
    let owned = path.to_path_buf();
    off_thread(move || owned.exists()).await
}

/// Renames `from` to `to` (io_uring's renameat).
pub async fn rename(from: &Path, to: &Path) -> Result<(), LogError> {
    glommio::io::rename(from, to)
        .await
        .map_err(|e| LogError::io("renaming", from, e.into()))
}
