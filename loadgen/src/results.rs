//! The result file: one JSON document per run, written by every workload
//! and read back by `loadgen compare` and the paper's summary. Field names
//! carry their unit; a field absent from a run (no latency without acks, no
//! broker CPU for a peer we did not start) is `null`, never a made-up 0.

use std::{path::Path, process::Command, time::Duration};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Version of this schema; bumped when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// One run of one workload against one system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// The system measured: "broker", "rabbitmq", "activemq".
    pub system: String,
    /// The workload and mode, e.g. "produce-batch50-paper", "consume-durable".
    pub scenario: String,
    /// Every setting of the run, as given.
    pub parameters: serde_json::Value,
    /// Messages moved.
    pub messages: u64,
    /// Payload bytes moved (messages x size; protocol overhead excluded).
    pub bytes: u64,
    /// Wall time of the measured part, in seconds.
    pub duration_s: f64,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// Payload megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Latency percentiles, when the run measured latency.
    pub latency: Option<Latency>,
    /// CPU time (user + system) the broker process used during the run,
    /// when loadgen knows its pid.
    pub broker_cpu_s: Option<f64>,
    /// The broker's CPU time per message moved, in nanoseconds.
    #[serde(default)]
    pub broker_cpu_ns_per_msg: Option<f64>,
    /// CPU time (user + system, getrusage) loadgen's own process used
    /// during the run, every thread of it (the client library's included).
    #[serde(default)]
    pub loadgen_cpu_s: Option<f64>,
    /// loadgen's CPU time per message moved, in nanoseconds: next to the
    /// broker's, it shows whether loadgen could have been the limit.
    #[serde(default)]
    pub loadgen_cpu_ns_per_msg: Option<f64>,
    /// How processes were placed on cores, in words.
    pub pinning: String,
    /// `git rev-parse HEAD` of the tree loadgen ran from (with "-dirty"
    /// when it had changes), or "unknown".
    pub git_revision: String,
    /// The machine.
    pub machine: Machine,
    /// When the run ended, RFC 3339, UTC.
    pub timestamp: String,
}

impl RunResult {
    /// A result for `messages` of `size` bytes moved in `duration`, with
    /// the machine, revision and time filled in.
    pub fn new(
        system: &str,
        scenario: &str,
        parameters: serde_json::Value,
        messages: u64,
        size: u64,
        duration: Duration,
    ) -> RunResult {
        let secs = duration.as_secs_f64().max(1e-9);
        let bytes = messages * size;
        RunResult {
            schema_version: SCHEMA_VERSION,
            system: system.to_owned(),
            scenario: scenario.to_owned(),
            parameters,
            messages,
            bytes,
            duration_s: secs,
            msgs_per_s: messages as f64 / secs,
            mb_per_s: bytes as f64 / secs / 1e6,
            latency: None,
            broker_cpu_s: None,
            broker_cpu_ns_per_msg: None,
            loadgen_cpu_s: None,
            loadgen_cpu_ns_per_msg: None,
            pinning: String::new(),
            git_revision: git_revision(),
            machine: Machine::detect(),
            timestamp: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }

    /// Sets the broker's CPU seconds, and from them its CPU per message.
    pub fn set_broker_cpu(&mut self, seconds: Option<f64>) {
        self.broker_cpu_s = seconds;
        self.broker_cpu_ns_per_msg = self.per_message_ns(seconds);
    }

    /// `seconds` per message moved, in nanoseconds (`None` without messages).
    fn per_message_ns(&self, seconds: Option<f64>) -> Option<f64> {
        seconds
            .filter(|_| self.messages > 0)
            .map(|s| s * 1e9 / self.messages as f64)
    }

    /// Writes this result as pretty JSON.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// Reads a result file.
    pub fn read(path: &Path) -> anyhow::Result<RunResult> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Latency percentiles in microseconds, from an hdrhistogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// What was timed: "produce-to-ack" or "produce-to-consume".
    pub kind: String,
    /// Samples recorded.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl Latency {
    /// The percentiles of a histogram of nanoseconds; `None` when empty.
    pub fn from_histogram(kind: &str, h: &hdrhistogram::Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            kind: kind.to_owned(),
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
    }
}

/// A histogram for latencies from 1 µs to 60 s in nanoseconds, 3 digits.
pub fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts: 1_000 >= 1, 60e9 >= 2 * 1_000, sigfig 3.
    hdrhistogram::Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
        .unwrap_or_else(|e| panic!("constant histogram bounds refused: {e}"))
}

/// The machine a run ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cores: usize,
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory in bytes from /proc/meminfo.
    pub memory_bytes: u64,
    /// Kernel release (uname -r).
    pub kernel: String,
}

impl Machine {
    /// This machine, as far as /proc tells.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cores: broker_shard::online_cpus().map_or(0, |c| c.len()),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            memory_bytes: mem_total_bytes(&meminfo).unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
        }
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The git revision of the current directory's tree, "-dirty" when it has
/// uncommitted changes; "unknown" outside a repository.
pub fn git_revision() -> String {
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match out(&["rev-parse", "HEAD"]) {
        Some(rev) => match out(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(s) if !s.is_empty() => format!("{rev}-dirty"),
            _ => rev,
        },
        None => "unknown".into(),
    }
}

/// The CPU time of the broker (when its pid is known) and of loadgen's own
/// process from one point of a run: [`CpuWindow::finish`] puts what each
/// used since into a result, in seconds and per message.
#[derive(Debug, Clone, Copy)]
pub struct CpuWindow {
    broker_pid: Option<u32>,
    broker: Option<Duration>,
    own: Option<Duration>,
}

impl CpuWindow {
    /// Starts the window now.
    pub fn start(broker_pid: Option<u32>) -> CpuWindow {
        CpuWindow {
            broker_pid,
            broker: broker_pid.and_then(process_cpu_time),
            own: own_cpu_time(),
        }
    }

    /// Ends the window: fills `result`'s CPU fields (per message from its
    /// `messages`), leaving `None` where a figure could not be read.
    pub fn finish(&self, result: &mut RunResult) {
        let since = |before: Option<Duration>, now: Option<Duration>| {
            now.zip(before)
                .map(|(a, b)| a.saturating_sub(b).as_secs_f64())
        };
        let own = since(self.own, own_cpu_time());
        result.loadgen_cpu_s = own;
        result.loadgen_cpu_ns_per_msg = result.per_message_ns(own);
        if self.broker_pid.is_some() {
            result.set_broker_cpu(since(
                self.broker,
                self.broker_pid.and_then(process_cpu_time),
            ));
        }
    }
}

/// CPU time (user + system) of this process so far, every thread of it,
/// from getrusage; `None` if the call fails.
pub fn own_cpu_time() -> Option<Duration> {
    // SAFETY: getrusage writes only into the struct it is given, which is
    // a plain C struct for which all zeroes is a valid value.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return None;
        }
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).ok()?)
            .checked_add(Duration::from_micros(u64::try_from(t.tv_usec).ok()?))
    };
    tv(usage.ru_utime)?.checked_add(tv(usage.ru_stime)?)
}

/// CPU time (user + system, children excluded) of process `pid` so far,
/// from /proc/PID/stat; `None` if it cannot be read.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions; it reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    cpu_time_from_stat(&stat, u64::try_from(ticks).ok().filter(|&t| t > 0)?)
}

/// CPU time of every live process in process group `pgid` (a peer's start
/// script and what it forked); `None` when the group has no process left.
pub fn group_cpu_time(pgid: u32) -> Option<Duration> {
    // SAFETY: sysconf has no preconditions; it reads a constant.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&t| t > 0)?;
    let mut total = Duration::ZERO;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let pgrp: Option<u32> = stat[close + 1..]
            .split_whitespace()
            .nth(2)
            .and_then(|f| f.parse().ok());
        if pgrp == Some(pgid) {
            found = true;
            total += cpu_time_from_stat(&stat, ticks).unwrap_or_default();
        }
    }
    found.then_some(total)
}

fn cpu_time_from_stat(stat: &str, ticks_per_s: u64) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces: fields
    // are counted from the last ')'. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / ticks_per_s))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may unwrap: a failure is the test failing
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_time_counts_from_the_last_parenthesis() {
        // A name with spaces and a ')' must not shift the fields.
        let stat = "4242 (shard 0) x) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0";
        let t = cpu_time_from_stat(stat, 100).unwrap();
        assert_eq!(t, Duration::from_secs(3));
    }

    #[test]
    fn own_process_cpu_time_is_readable() {
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(process_cpu_time(std::process::id()).is_some());
    }

    #[test]
    fn a_cpu_window_reports_own_cpu_per_message() {
        let window = CpuWindow::start(Some(std::process::id()));
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(x != 1);
        let mut r = RunResult::new(
            "broker",
            "produce",
            serde_json::json!({}),
            1000,
            100,
            Duration::from_millis(10),
        );
        window.finish(&mut r);
        let own = r.loadgen_cpu_s.unwrap();
        assert!(own > 0.0, "{r:?}");
        let per_msg = r.loadgen_cpu_ns_per_msg.unwrap();
        assert!((per_msg - own * 1e6).abs() < 1e-3, "{r:?}");
        // The "broker" here is this process, read from /proc at 10 ms ticks.
        assert!(r.broker_cpu_s.is_some() && r.broker_cpu_ns_per_msg.is_some());
    }

    #[test]
    fn result_files_without_the_cpu_per_message_fields_still_read() {
        let r = RunResult::new(
            "broker",
            "produce",
            serde_json::json!({}),
            1,
            1,
            Duration::from_millis(1),
        );
        let mut v = serde_json::to_value(&r).unwrap();
        let m = v.as_object_mut().unwrap();
        for f in [
            "broker_cpu_ns_per_msg",
            "loadgen_cpu_s",
            "loadgen_cpu_ns_per_msg",
        ] {
            m.remove(f);
        }
        let back: RunResult = serde_json::from_value(v).unwrap();
        assert_eq!(back.loadgen_cpu_s, None);
    }

    #[test]
    fn machine_fields_parse_from_proc_text() {
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: Test CPU @ 2GHz\n").as_deref(),
            Some("Test CPU @ 2GHz")
        );
        assert_eq!(
            mem_total_bytes("MemTotal:       1024 kB\n"),
            Some(1024 * 1024)
        );
    }

    #[test]
    fn latency_percentiles_come_from_the_histogram() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let l = Latency::from_histogram("produce-to-ack", &h).unwrap();
        assert_eq!(l.samples, 1000);
        assert!((l.p50_us - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99_us - 990.0).abs() < 1.5, "{l:?}");
        assert!((l.max_us - 1000.0).abs() < 1.5, "{l:?}");
        assert!(Latency::from_histogram("x", &latency_histogram()).is_none());
    }

    #[test]
    fn a_result_survives_a_round_trip_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let r = RunResult::new(
            "broker",
            "produce",
            serde_json::json!({"size": 200}),
            1000,
            200,
            Duration::from_millis(500),
        );
        assert_eq!(r.msgs_per_s, 2000.0);
        assert_eq!(r.bytes, 200_000);
        r.write(&path).unwrap();
        assert_eq!(RunResult::read(&path).unwrap(), r);
    }
}
