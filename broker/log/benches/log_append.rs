//! Append throughput of the partition log, per fsync policy, next to a raw
//! glommio `DmaStreamWriter` writing the same bytes to the same disk in the
//! same run.
//!
//! One batch of `--records` records of `--record-bytes` bytes each is built
//! once with [`BatchBuilder`]; every append sends those same bytes (the log
//! assigns the base offset in its own copy). `--in-flight` glommio tasks, each
//! with a clone of the [`Log`] handle, append until `--total-mib` of batches
//! are in, so group commit has concurrent appends to share writes and fsyncs
//! among. The raw writer streams the same batches through one
//! `DmaStreamWriter` whose buffer is as large as the log's write buffer.
//!
//! Every system runs once per run, in turn, on one glommio executor pinned to
//! `--cpu`; a run's data is deleted before the next system starts. The timed
//! span is from the first append (or write) until `close` has returned, so
//! both sides include their final fdatasync. Throughput is batch bytes
//! (not padding) per second, in decimal MB/s.
//!
//! Output: a table on stdout and, with `--json-dir DIR`, the JSON file
//! `DIR/log-append-YYYY-MM-DD.json` (UTC date; `--json-suffix S` makes it
//! `log-append-YYYY-MM-DD-S.json`, so a second run the same day does not
//! replace the first). `scripts/bench-log.sh` is the
//! documented way to run it.

use std::{
    cell::Cell,
    error::Error,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    rc::Rc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use broker_format::BatchBuilder;
use broker_log::{
    config::DEFAULT_WRITE_BUFFER_BYTES, io::probe_device, Faults, FsyncPolicy, Log, LogConfig,
};
use futures_lite::AsyncWriteExt;
use glommio::{
    io::{DmaStreamWriterBuilder, OpenOptions},
    LocalExecutorBuilder, Placement,
};

type Res<T> = Result<T, Box<dyn Error>>;

const USAGE: &str = "\
log_append: append throughput of the partition log per fsync policy vs a raw DmaStreamWriter

Options (defaults in brackets):
  --total-mib N        batch bytes appended per system and run, in MiB [1024]
  --in-flight N        concurrent appending tasks [64]
  --runs N             runs; each runs every system once [3]
  --cpu N              CPU the executor is pinned to [1]
  --dir PATH           data directory (each system's files are deleted after it) [<workspace>/target/bench-log]
  --io-memory-mib N    glommio io_memory registered for DMA buffers [16]
  --records N          records per batch [50]
  --record-bytes N     value bytes per record [200]
  --interval-ms N      period of the fsync=interval policy [5]
  --write-buffer-kib N the log's write_buffer_bytes and the raw writer's buffer, in KiB [256, the default]
  --raw-sync-every N   batches between fdatasyncs of the raw+sync system [64]
  --raw-write-behind N write-behind buffers of the raw writer [4, glommio's default]
  --systems LIST       comma-separated subset of raw,never,interval,always,raw-sync [all]
  --json-dir DIR       also write DIR/log-append-YYYY-MM-DD.json
  --json-suffix S      name that file log-append-YYYY-MM-DD-S.json instead
";

/// Command-line settings.
struct Args {
    total_bytes: u64,
    in_flight: usize,
    runs: usize,
    cpu: usize,
    dir: PathBuf,
    io_memory_bytes: usize,
    records: usize,
    record_bytes: usize,
    interval: Duration,
    raw_sync_every: u64,
    write_buffer_bytes: usize,
    raw_write_behind: usize,
    systems: Vec<String>,
    json_dir: Option<PathBuf>,
    json_suffix: Option<String>,
}

impl Args {
    fn parse() -> Res<Args> {
        let mut a = Args {
            total_bytes: 1 << 30,
            in_flight: 64,
            runs: 3,
            cpu: 1,
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-log"),
            io_memory_bytes: 16 << 20,
            records: 50,
            record_bytes: 200,
            interval: Duration::from_millis(5),
            raw_sync_every: 64,
            write_buffer_bytes: DEFAULT_WRITE_BUFFER_BYTES,
            raw_write_behind: 4,
            systems: SYSTEM_KEYS.iter().map(|k| k.to_string()).collect(),
            json_dir: None,
            json_suffix: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            // `cargo bench` passes `--bench` to harness-less benches.
            if flag == "--bench" {
                continue;
            }
            if flag == "-h" || flag == "--help" {
                print!("{USAGE}");
                std::process::exit(0);
            }
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))?;
            let num = || -> Res<u64> {
                value
                    .parse::<u64>()
                    .map_err(|e| format!("{flag} {value}: {e}").into())
            };
            match flag.as_str() {
                "--total-mib" => a.total_bytes = num()? << 20,
                "--in-flight" => a.in_flight = num()? as usize,
                "--runs" => a.runs = num()? as usize,
                "--cpu" => a.cpu = num()? as usize,
                "--dir" => a.dir = PathBuf::from(&value),
                "--io-memory-mib" => a.io_memory_bytes = (num()? as usize) << 20,
                "--records" => a.records = num()? as usize,
                "--record-bytes" => a.record_bytes = num()? as usize,
                "--interval-ms" => a.interval = Duration::from_millis(num()?),
                "--write-buffer-kib" => a.write_buffer_bytes = (num()? as usize) << 10,
                "--raw-sync-every" => a.raw_sync_every = num()?,
                "--raw-write-behind" => a.raw_write_behind = num()? as usize,
                "--systems" => {
                    a.systems = value.split(',').map(str::to_string).collect();
                    if let Some(bad) = a
                        .systems
                        .iter()
                        .find(|k| !SYSTEM_KEYS.contains(&k.as_str()))
                    {
                        return Err(format!("unknown system {bad}\n\n{USAGE}").into());
                    }
                }
                "--json-dir" => a.json_dir = Some(PathBuf::from(&value)),
                "--json-suffix" => {
                    if value.is_empty()
                        || !value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        return Err(format!(
                            "--json-suffix {value:?}: use letters, digits, '-' and '_' only"
                        )
                        .into());
                    }
                    a.json_suffix = Some(value);
                }
                _ => return Err(format!("unknown option {flag}\n\n{USAGE}").into()),
            }
        }
        if a.in_flight == 0 || a.runs == 0 || a.records == 0 || a.raw_sync_every == 0 {
            return Err(
                "--in-flight, --runs, --records and --raw-sync-every must be at least 1".into(),
            );
        }
        if a.interval.is_zero() {
            return Err("--interval-ms must be at least 1".into());
        }
        Ok(a)
    }
}

/// The names `--systems` takes, in the order the systems run.
const SYSTEM_KEYS: [&str; 5] = ["raw", "never", "interval", "always", "raw-sync"];

/// What is measured.
#[derive(Clone, Copy)]
enum System {
    /// `DmaStreamWriter`, fdatasync only at close.
    Raw,
    /// `DmaStreamWriter`, `sync()` every that many batches and at close.
    RawSync(u64),
    /// The partition log with this fsync policy.
    Log(FsyncPolicy),
}

impl System {
    fn name(&self) -> String {
        match self {
            System::Raw => "raw".into(),
            System::RawSync(n) => format!("raw+fdatasync/{n}"),
            System::Log(FsyncPolicy::Never) => "log fsync=never".into(),
            System::Log(FsyncPolicy::Always) => "log fsync=always".into(),
            System::Log(FsyncPolicy::Interval(d)) => {
                format!("log fsync=interval({}ms)", d.as_millis())
            }
        }
    }
}

/// One timed pass of one system.
struct Measure {
    secs: f64,
    /// Data writes and fdatasyncs the log issued (counted by its I/O layer);
    /// `None` for the raw writer.
    writes: Option<u64>,
    syncs: Option<u64>,
}

/// All runs of one system.
struct Series {
    system: System,
    runs: Vec<Measure>,
}

fn main() -> Res<()> {
    let args = Args::parse()?;
    let cores = std::thread::available_parallelism()?.get();
    if args.cpu >= cores {
        return Err(format!("--cpu {} but this machine has {cores} CPUs", args.cpu).into());
    }
    let batch = build_batch(args.records, args.record_bytes);
    let batches = args.total_bytes / batch.len() as u64;
    if batches == 0 {
        return Err("--total-mib is smaller than one batch".into());
    }
    std::fs::create_dir_all(&args.dir)?;
    let fs = filesystem_of(&args.dir);
    if fs.starts_with("tmpfs") {
        eprintln!("warning: {} is on tmpfs, not on a disk", args.dir.display());
    }
    let systems: Vec<System> = [
        System::Raw,
        System::Log(FsyncPolicy::Never),
        System::Log(FsyncPolicy::Interval(args.interval)),
        System::Log(FsyncPolicy::Always),
        System::RawSync(args.raw_sync_every),
    ]
    .into_iter()
    .zip(SYSTEM_KEYS)
    .filter(|(_, key)| args.systems.iter().any(|k| k == key))
    .map(|(s, _)| s)
    .collect();
    eprintln!(
        "{} runs x {} systems, {batches} batches of {} B ({:.1} MiB) each, {} in flight, cpu {}, data in {} ({fs})",
        args.runs,
        systems.len(),
        batch.len(),
        (batches * batch.len() as u64) as f64 / f64::from(1 << 20),
        args.in_flight,
        args.cpu,
        args.dir.display(),
    );

    let series = LocalExecutorBuilder::new(Placement::Fixed(args.cpu))
        .name("log-bench")
        .io_memory(args.io_memory_bytes)
        .make()?
        .run(async {
            broker_shard::spawn_park_guard();
            run_all(&args, &systems, Rc::new(batch.clone()), batches).await
        })?;

    let bytes = batches * batch.len() as u64;
    let machine = Machine::probe(cores);
    let table = render_table(&series, bytes, batches);
    print!("{table}");
    if let Some(dir) = &args.json_dir {
        let (date, timestamp) = utc_now();
        let json = render_json(
            &args,
            &series,
            &machine,
            &fs,
            batch.len(),
            batches,
            &timestamp,
        );
        std::fs::create_dir_all(dir)?;
        let name = match &args.json_suffix {
            Some(suffix) => format!("log-append-{date}-{suffix}.json"),
            None => format!("log-append-{date}.json"),
        };
        let path = dir.join(name);
        std::fs::write(&path, json)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The batch every append sends: `records` records, each a 200-byte (or
/// `record_bytes`) pseudo-random value without key or headers.
fn build_batch(records: usize, record_bytes: usize) -> Vec<u8> {
    let base_ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut seed = 0x5EED_u64;
    let mut b = BatchBuilder::with_capacity(base_ts, records * (record_bytes + 16) + 64);
    for i in 0..records {
        let value: Vec<u8> = (0..record_bytes)
            .map(|_| {
                // splitmix64: payload bytes that are not all alike.
                seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = seed;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) as u8
            })
            .collect();
        b.push(base_ts + i as i64, None, Some(&value), &[]);
    }
    b.finish()
}

/// Runs every system once per run, in turn, so slow drift of the shared
/// machine spreads over all systems alike.
async fn run_all(
    args: &Args,
    systems: &[System],
    batch: Rc<Vec<u8>>,
    batches: u64,
) -> Res<Vec<Series>> {
    let mut series: Vec<Series> = systems
        .iter()
        .map(|&system| Series {
            system,
            runs: Vec::new(),
        })
        .collect();
    for run in 1..=args.runs {
        for s in series.iter_mut() {
            let dir = args.dir.join(format!("run{run}"));
            // Nothing else runs on this executor between systems, so the
            // blocking removal here delays no I/O that is measured.
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir)?;
            let m = match s.system {
                System::Raw => run_raw(args, &dir, &batch, batches, None).await?,
                System::RawSync(every) => run_raw(args, &dir, &batch, batches, Some(every)).await?,
                System::Log(policy) => run_log(args, &dir, policy, &batch, batches).await?,
            };
            std::fs::remove_dir_all(&dir)?;
            eprintln!(
                "run {run}/{}: {:<26} {:>8.1} MB/s  ({:.3} s)",
                args.runs,
                s.system.name(),
                (batches * batch.len() as u64) as f64 / 1e6 / m.secs,
                m.secs
            );
            s.runs.push(m);
        }
    }
    Ok(series)
}

/// The partition log: `in_flight` tasks append the batch until `batches`
/// are in, then the log is closed.
async fn run_log(
    args: &Args,
    dir: &Path,
    fsync: FsyncPolicy,
    batch: &Rc<Vec<u8>>,
    batches: u64,
) -> Res<Measure> {
    let config = LogConfig {
        fsync,
        write_buffer_bytes: args.write_buffer_bytes,
        ..LogConfig::default()
    };
    // An empty fault plan injects nothing; the bench uses it only for the
    // write and fdatasync counters of the log's I/O layer.
    let faults = Rc::new(Faults::default());
    let (log, _) = Log::open_with_faults(dir.join("log"), config, Some(faults.clone())).await?;
    let remaining = Rc::new(Cell::new(batches));
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.in_flight)
        .map(|_| {
            let log = log.clone();
            let remaining = remaining.clone();
            let batch = batch.clone();
            glommio::spawn_local(async move {
                while remaining.get() > 0 {
                    remaining.set(remaining.get() - 1);
                    log.append(&batch).await?;
                }
                Ok::<(), broker_log::LogError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let end = log.high_watermark();
    log.close().await?;
    let secs = start.elapsed().as_secs_f64();
    let expected = batches * args.records as u64;
    if end != expected {
        return Err(format!("log holds offsets up to {end}, expected {expected}").into());
    }
    Ok(Measure {
        secs,
        writes: Some(faults.writes.get()),
        syncs: Some(faults.syncs.get()),
    })
}

/// The baseline: one `DmaStreamWriter` on a new file in the same directory,
/// buffers as large as the log's write buffer, optionally `sync()` every
/// `sync_every` batches; `close` fdatasyncs.
async fn run_raw(
    args: &Args,
    dir: &Path,
    batch: &[u8],
    batches: u64,
    sync_every: Option<u64>,
) -> Res<Measure> {
    // The log primes glommio's per-device polled-I/O probe (see
    // `broker_log::io::probe_device`); the raw writer must see the same.
    probe_device(dir).await?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(dir.join("raw.log"))
        .await?;
    let mut w = DmaStreamWriterBuilder::new(file)
        .with_buffer_size(args.write_buffer_bytes)
        .with_write_behind(args.raw_write_behind)
        .build();
    let start = Instant::now();
    for i in 1..=batches {
        w.write_all(batch).await?;
        if let Some(every) = sync_every {
            if i % every == 0 {
                w.sync().await?;
            }
        }
    }
    w.close().await?;
    Ok(Measure {
        secs: start.elapsed().as_secs_f64(),
        writes: None,
        syncs: None,
    })
}

/// The middle value (mean of the two middle ones for an even count).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn mb_per_s(s: &Series, bytes: u64) -> Vec<f64> {
    s.runs.iter().map(|m| bytes as f64 / 1e6 / m.secs).collect()
}

/// Throughput of `log fsync=never` over `raw`: (per-run ratios, their
/// median, ratio of the medians).
fn never_vs_raw(series: &[Series], bytes: u64) -> Option<(Vec<f64>, f64, f64)> {
    let find = |pred: fn(&System) -> bool| series.iter().find(|s| pred(&s.system));
    let raw = mb_per_s(find(|s| matches!(s, System::Raw))?, bytes);
    let never = mb_per_s(
        find(|s| matches!(s, System::Log(FsyncPolicy::Never)))?,
        bytes,
    );
    let per_run: Vec<f64> = never.iter().zip(&raw).map(|(n, r)| n / r).collect();
    let med = median(&per_run);
    Some((per_run, med, median(&never) / median(&raw)))
}

fn render_table(series: &[Series], bytes: u64, batches: u64) -> String {
    let mut out = String::new();
    let runs = series.first().map_or(0, |s| s.runs.len());
    let _ = write!(out, "\n{:<26}", "system (MB/s)");
    for r in 1..=runs {
        let _ = write!(out, " {:>8}", format!("run {r}"));
    }
    let _ = writeln!(
        out,
        " {:>8} {:>8} {:>8} {:>10} {:>9} {:>9}",
        "min", "median", "max", "appends/s", "b/write", "b/fsync"
    );
    for s in series {
        let mbs = mb_per_s(s, bytes);
        let _ = write!(out, "{:<26}", s.system.name());
        for v in &mbs {
            let _ = write!(out, " {v:>8.1}");
        }
        let secs: Vec<f64> = s.runs.iter().map(|m| m.secs).collect();
        let (b_write, b_sync) = per_op(s, batches);
        let _ = writeln!(
            out,
            " {:>8.1} {:>8.1} {:>8.1} {:>10.0} {:>9} {:>9}",
            mbs.iter().copied().fold(f64::INFINITY, f64::min),
            median(&mbs),
            mbs.iter().copied().fold(0.0, f64::max),
            batches as f64 / median(&secs),
            b_write.map_or("-".into(), |v| format!("{v:.1}")),
            b_sync.map_or("-".into(), |v| format!("{v:.1}")),
        );
    }
    if let Some((per_run, med, of_medians)) = never_vs_raw(series, bytes) {
        let runs: Vec<String> = per_run.iter().map(|r| format!("{r:.3}")).collect();
        let _ = writeln!(
            out,
            "\nlog fsync=never / raw: per run [{}], median {med:.3}, ratio of medians {of_medians:.3} (goal >= 0.80: {})",
            runs.join(", "),
            if med >= 0.8 { "met" } else { "NOT met" }
        );
    }
    let _ = writeln!(
        out,
        "b/write, b/fsync: batches per data write and per fdatasync the log issued (median run)"
    );
    out
}

/// Batches per data write and per fdatasync, from the median run's counters.
fn per_op(s: &Series, batches: u64) -> (Option<f64>, Option<f64>) {
    let mut w: Vec<u64> = s.runs.iter().filter_map(|m| m.writes).collect();
    let mut y: Vec<u64> = s.runs.iter().filter_map(|m| m.syncs).collect();
    w.sort_unstable();
    y.sort_unstable();
    let per = |v: &[u64]| {
        v.get(v.len() / 2)
            .filter(|&&n| n > 0)
            .map(|&n| batches as f64 / n as f64)
    };
    (per(&w), per(&y))
}

/// What the results were measured on.
struct Machine {
    cores: usize,
    cpu_model: String,
    memory: String,
    kernel: String,
    git_revision: String,
    git_uncommitted: bool,
}

impl Machine {
    fn probe(cores: usize) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".into(), |(_, v)| v.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .map_or("unknown".into(), |v| v.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".into(), |k| k.trim().to_string());
        let git = |args: &[&str]| {
            Command::new("git")
                .args(args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let git_revision = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "uncommitted".into());
        let git_uncommitted = git(&["status", "--porcelain"]).is_none_or(|s| !s.is_empty());
        Machine {
            cores,
            cpu_model,
            memory,
            kernel,
            git_revision,
            git_uncommitted,
        }
    }
}

/// "fstype on device" of the mount holding `dir`, from /proc/self/mounts.
fn filesystem_of(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && dir.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} on {}", f[2], f[0])))
        })
        .max_by_key(|(len, _)| *len)
        .map_or("unknown".into(), |(_, fs)| fs)
}

/// Today's UTC date (YYYY-MM-DD) and the RFC 3339 UTC timestamp.
fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let date = format!("{y:04}-{m:02}-{d:02}");
    let ts = format!(
        "{date}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    (date, ts)
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn js_opt(v: Option<f64>) -> String {
    v.map_or("null".into(), |v| format!("{v:.2}"))
}

fn js_list(v: &[f64], decimals: usize) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:.decimals$}")).collect();
    format!("[{}]", items.join(", "))
}

fn render_json(
    args: &Args,
    series: &[Series],
    machine: &Machine,
    fs: &str,
    batch_len: usize,
    batches: u64,
    timestamp: &str,
) -> String {
    let bytes = batches * batch_len as u64;
    let mut systems = Vec::new();
    for s in series {
        let mbs = mb_per_s(s, bytes);
        let secs: Vec<f64> = s.runs.iter().map(|m| m.secs).collect();
        let (b_write, b_sync) = per_op(s, batches);
        let counts = |f: fn(&Measure) -> Option<u64>| {
            let v: Vec<String> = s
                .runs
                .iter()
                .map(|m| f(m).map_or("null".into(), |n| n.to_string()))
                .collect();
            format!("[{}]", v.join(", "))
        };
        systems.push(format!(
            r#"    {{
      "name": {name},
      "mb_per_s": {runs},
      "mb_per_s_min": {min:.1},
      "mb_per_s_median": {med:.1},
      "mb_per_s_max": {max:.1},
      "seconds": {secs},
      "appends_per_s_median": {aps:.0},
      "data_writes": {writes},
      "fdatasyncs": {syncs},
      "batches_per_write_median": {bw},
      "batches_per_fdatasync_median": {bs}
    }}"#,
            name = js(&s.system.name()),
            runs = js_list(&mbs, 1),
            min = mbs.iter().copied().fold(f64::INFINITY, f64::min),
            med = median(&mbs),
            max = mbs.iter().copied().fold(0.0, f64::max),
            secs = js_list(&secs, 3),
            aps = batches as f64 / median(&secs),
            writes = counts(|m| m.writes),
            syncs = counts(|m| m.syncs),
            bw = js_opt(b_write),
            bs = js_opt(b_sync),
        ));
    }
    let ratio = match never_vs_raw(series, bytes) {
        Some((per_run, med, of_medians)) => format!(
            r#"{{
    "per_run": {},
    "median": {med:.3},
    "ratio_of_medians": {of_medians:.3},
    "goal": 0.8,
    "goal_met": {}
  }}"#,
            js_list(&per_run, 3),
            med >= 0.8
        ),
        None => "null".into(),
    };
    format!(
        r#"{{
  "benchmark": "log_append",
  "git_revision": {rev},
  "git_uncommitted_changes": {dirty},
  "timestamp": {timestamp},
  "machine": {{
    "cores": {cores},
    "cpu_model": {cpu},
    "memory": {mem},
    "kernel": {kernel},
    "data_filesystem": {fs},
    "note": "shared, noisy virtual machine with 2 cores; the benchmark runs on one glommio executor pinned to one core"
  }},
  "parameters": {{
    "batch_bytes": {batch_len},
    "records_per_batch": {records},
    "record_value_bytes": {record_bytes},
    "batches_per_run": {batches},
    "total_bytes_per_run": {bytes},
    "in_flight_appends": {in_flight},
    "runs": {runs},
    "cpu": {cpu_pin},
    "io_memory_bytes": {io_memory},
    "log_write_buffer_bytes": {wbuf},
    "log_segment_bytes_max": {segment},
    "fsync_interval_ms": {interval},
    "raw_buffer_bytes": {wbuf},
    "raw_write_behind": {wb},
    "raw_sync_every_batches": {sync_every},
    "timed_span": "first append or write until close returned (both include their final fdatasync)",
    "mb": "10^6 bytes of record batches (padding not counted)"
  }},
  "systems": [
{systems}
  ],
  "log_never_over_raw": {ratio}
}}
"#,
        rev = js(&machine.git_revision),
        dirty = machine.git_uncommitted,
        timestamp = js(timestamp),
        cores = machine.cores,
        cpu = js(&machine.cpu_model),
        mem = js(&machine.memory),
        kernel = js(&machine.kernel),
        fs = js(fs),
        records = args.records,
        record_bytes = args.record_bytes,
        in_flight = args.in_flight,
        runs = args.runs,
        cpu_pin = args.cpu,
        io_memory = args.io_memory_bytes,
        wbuf = args.write_buffer_bytes,
        segment = LogConfig::default().segment_bytes_max,
        interval = args.interval.as_millis(),
        wb = args.raw_write_behind,
        sync_every = args.raw_sync_every,
        systems = systems.join(",\n"),
    )
}
