//! What the Kafka-client tests (kafka_clients.rs, kafka_groups.rs) share:
//! the client scripts of this directory and kcat as child processes with a
//! deadline, the records they send, and a broker with its Kafka listener on
//! a free port. Included with `#[path]` (this directory is not a test
//! target of its own).
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::server_support::{collect_lines, Broker};

pub const INSTALL_HINT: &str = "run scripts/install-kafka-clients.sh";

/// The interpreter scripts/install-kafka-clients.sh installed the Python
/// clients for: `$PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Panics, saying to run the install script, unless kcat and both Python
/// client libraries (with kafka-python's codecs) are there. Never skips.
pub fn require_clients() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let py = python();
        let imports = "import confluent_kafka, kafka, snappy, lz4.frame, zstandard";
        match Command::new(&py).args(["-c", imports]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!(
                    "{py} cannot `{imports}` ({}): {INSTALL_HINT}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) => return Err(format!("cannot run {py} ({e}): {INSTALL_HINT}")),
        }
        match Command::new("kcat").arg("-V").output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!("kcat -V failed ({:?}): {INSTALL_HINT}", o.status)),
            Err(e) => Err(format!("no kcat on PATH ({e}): {INSTALL_HINT}")),
        }
    });
    if let Err(e) = checked {
        panic!("the Kafka clients are missing: {e}");
    }
}

/// Starts a broker with `shards` shards and its Kafka listener on a free
/// port (plus `extra`), and checks the ready line names the Kafka addresses.
pub fn start_kafka_broker(data_dir: &Path, shards: usize, extra: &[&str]) -> Broker {
    require_clients();
    let mut args = vec!["--kafka-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let broker = Broker::start(data_dir, shards, &args);
    assert!(
        broker.kafka.is_some(),
        "no kafka= in the ready line: this broker has no Kafka listener"
    );
    broker
}

/// The Kafka bootstrap address, as HOST:PORT.
pub fn kafka_addr(broker: &Broker) -> String {
    broker.kafka.unwrap().to_string()
}

/// How long a native CLI call may take.
pub const NATIVE_CLI_LIMIT: Duration = Duration::from_secs(60);

/// `broker ARGS --bootstrap <native listen address>`: its stdout lines,
/// after checking it succeeded within `limit`.
pub fn native_cli_lines(broker: &Broker, args: &[&str], limit: Duration) -> Vec<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
    cmd.args(args)
        .args(["--bootstrap", &broker.listen.to_string()]);
    Proc::spawn(cmd).wait(limit).ok().stdout
}

/// `broker ARGS --bootstrap <native listen address>`: its stdout, after
/// checking it succeeded.
pub fn native_cli(broker: &Broker, args: &[&str]) -> String {
    let mut text = native_cli_lines(broker, args, NATIVE_CLI_LIMIT).join("\n");
    text.push('\n');
    text
}

/// Creates `topic` with `partitions` partitions through the native CLI.
pub fn create_topic(broker: &Broker, topic: &str, partitions: u32) {
    native_cli(
        broker,
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ],
    );
}

/// partition -> owning shard, from the native `topic describe`.
pub fn native_owners(broker: &Broker, topic: &str) -> BTreeMap<u32, u64> {
    let json: Value = serde_json::from_str(&native_cli(
        broker,
        &["topic", "describe", topic, "--output", "json"],
    ))
    .unwrap();
    json["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_u64().unwrap() as u32,
                p["shard"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The native `group describe --output json` of `group`.
pub fn native_group(broker: &Broker, group: &str) -> Value {
    serde_json::from_str(&native_cli(
        broker,
        &["group", "describe", group, "--output", "json"],
    ))
    .unwrap()
}

/// partition -> committed offset (partitions with one) of `topic` in a
/// native group description.
pub fn native_committed(d: &Value, topic: &str) -> BTreeMap<u32, i64> {
    d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["topic"] == topic)
        .filter_map(|p| {
            Some((
                p["partition"].as_u64().unwrap() as u32,
                p["committed"].as_i64()?,
            ))
        })
        .collect()
}

/// A Kafka client library the scripts come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lib {
    Confluent,
    KafkaPython,
}

impl Lib {
    pub fn name(self) -> &'static str {
        match self {
            Lib::Confluent => "confluent-kafka",
            Lib::KafkaPython => "kafka-python",
        }
    }

    /// This library's script `kind` (produce, consume, group).
    pub fn script(self, kind: &str) -> PathBuf {
        let prefix = match self {
            Lib::Confluent => "confluent",
            Lib::KafkaPython => "kafka_python",
        };
        scripts_dir().join(format!("{prefix}_{kind}.py"))
    }

    pub fn other(self) -> Lib {
        match self {
            Lib::Confluent => Lib::KafkaPython,
            Lib::KafkaPython => Lib::Confluent,
        }
    }
}

pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients")
}

/// A finished child: its exit status and output.
pub struct Output {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl Output {
    /// Panics with the command and its stderr unless it exited 0.
    pub fn ok(self) -> Output {
        assert!(
            self.status.success(),
            "{} failed ({}):\n{}",
            self.what,
            self.status,
            self.stderr
        );
        self
    }

    /// Its stdout lines as JSON (every line must be JSON).
    pub fn json(&self) -> Vec<Value> {
        self.stdout.iter().map(|l| parse_json_line(l)).collect()
    }

    /// The JSON lines whose "event" is `event`.
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.json()
            .into_iter()
            .filter(|v| v["event"] == event)
            .collect()
    }
}

pub fn parse_json_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:.200}"))
}

/// A running child whose stdout and stderr lines are collected as they come.
pub struct Proc {
    pub what: String,
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({e}): {INSTALL_HINT}?"));
        let (stdout, a) = collect_lines(child.stdout.take().unwrap());
        let (stderr, b) = collect_lines(child.stderr.take().unwrap());
        Proc {
            what,
            child,
            stdout,
            stderr,
            readers: vec![a, b],
        }
    }

    /// The complete stdout lines so far, as JSON.
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| parse_json_line(l))
            .collect()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for it to exit by itself, at most `timeout` (then SIGKILL and
    /// panic with its output).
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return self.finish(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let status = self.child.wait().unwrap();
                let out = self.finish(status);
                panic!(
                    "{} still ran after {timeout:?}; killed. stderr:\n{}\nlast stdout: {:?}",
                    out.what,
                    out.stderr,
                    out.stdout.last().map(|l| &l[..l.len().min(300)])
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then what it printed.
    pub fn kill(mut self) -> Output {
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        self.finish(status)
    }

    /// SIGTERM, then waits at most `timeout` for it to exit.
    pub fn terminate(self, timeout: Duration) -> Output {
        self.signal(libc::SIGTERM);
        self.wait(timeout)
    }

    fn finish(&mut self, status: ExitStatus) -> Output {
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        Output {
            what: self.what.clone(),
            status,
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
            stderr: self.stderr.lock().unwrap().join("\n"),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `python3 SCRIPT ARGS`.
pub fn script_cmd(script: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg("-u").arg(script).args(args);
    cmd
}

/// Runs `script ARGS` to its end, at most `timeout`.
pub fn run_script(script: &Path, args: &[String], timeout: Duration) -> Output {
    Proc::spawn(script_cmd(script, args)).wait(timeout)
}

/// Runs `kcat ARGS` with `stdin` fed to it, at most `timeout`.
pub fn run_kcat(args: &[&str], stdin: &[u8], timeout: Duration) -> Output {
    let what = format!("kcat {}", args.join(" "));
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start kcat ({e}): {INSTALL_HINT}"));
    let mut input = child.stdin.take().unwrap();
    // kcat -L -J ends its document without a newline: keep a last line
    // that has none (collect_lines drops it).
    let (stdout, a) = collect_all_lines(child.stdout.take().unwrap());
    let (stderr, b) = collect_all_lines(child.stderr.take().unwrap());
    // A kcat that failed early closed its stdin: its stderr says why.
    let _ = input.write_all(stdin);
    drop(input);
    Proc {
        what,
        child,
        stdout,
        stderr,
        readers: vec![a, b],
    }
    .wait(timeout)
}

/// Like `collect_lines`, but a last line without its newline counts too.
fn collect_all_lines(
    pipe: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let handle = thread::spawn(move || {
        let mut all = Vec::new();
        let mut pipe = pipe;
        let _ = pipe.read_to_end(&mut all);
        let text = String::from_utf8_lossy(&all);
        sink.lock().unwrap().extend(text.lines().map(str::to_owned));
    });
    (lines, handle)
}

/// Strings for a script's argument list.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// SplitMix64: seeded, so every run sends the same records.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// One record to produce, as the scripts' --input takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// `count` records from `seed`: random keys (some null, one empty) and
/// values of varied sizes, among them an empty value, a null value and a
/// value of about 100 KiB. Half the values are compressible text, half
/// random bytes, so that every codec has something to do and something it
/// cannot shrink.
pub fn mixed_records(seed: u64, count: usize) -> Vec<Record> {
    let mut rng = Rng::new(seed);
    let sizes = [0usize, 1, 7, 64, 300, 1000, 4096, 20_000];
    let mut out: Vec<Record> = (0..count)
        .map(|i| {
            let key = match rng.below(4) {
                0 => None,
                _ => {
                    let len = 1 + rng.below(24) as usize;
                    Some(rng.bytes(len))
                }
            };
            let size = sizes[rng.below(sizes.len() as u64) as usize];
            let value = if i % 2 == 0 {
                rng.bytes(size)
            } else {
                format!("record {i} of seed {seed} ")
                    .into_bytes()
                    .into_iter()
                    .cycle()
                    .take(size)
                    .collect()
            };
            Record {
                key,
                value: Some(value),
            }
        })
        .collect();
    let special = [
        Record {
            key: Some(b"empty-value".to_vec()),
            value: Some(Vec::new()),
        },
        Record {
            key: Some(b"null-value".to_vec()),
            value: None,
        },
        Record {
            key: Some(Vec::new()),
            value: Some(b"empty key".to_vec()),
        },
        Record {
            key: None,
            value: Some(Vec::new()),
        },
        Record {
            key: Some(b"big".to_vec()),
            value: Some(rng.bytes(100 * 1024)),
        },
    ];
    // Spread them among the others, deterministically.
    for (n, r) in special.into_iter().enumerate() {
        let at = (n * 7 + 3).min(out.len());
        out.insert(at, r);
    }
    out
}

/// Writes `records` as the JSON lines the scripts' --input reads.
pub fn write_records(path: &Path, records: &[Record]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for r in records {
        let line = serde_json::json!({
            "key": r.key.as_deref().map(hex),
            "value": r.value.as_deref().map(hex),
        });
        writeln!(f, "{line}").unwrap();
    }
    f.flush().unwrap();
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        write!(s, "{b:02x}").unwrap();
    }
    s
}

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A record as a consume script printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub partition: u32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub digest: String,
}

impl Consumed {
    pub fn from_json(v: &Value) -> Consumed {
        let bytes = |f: &str| v[f].as_str().map(unhex);
        Consumed {
            partition: v["partition"].as_u64().unwrap() as u32,
            offset: v["offset"].as_i64().unwrap(),
            key: bytes("key"),
            value: bytes("value"),
            digest: v["digest"].as_str().unwrap().to_owned(),
        }
    }
}

/// An acknowledgement as a produce script printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub index: usize,
    pub partition: u32,
    /// -1 with acks=0.
    pub offset: i64,
    pub digest: String,
}

impl Ack {
    pub fn from_json(v: &Value) -> Ack {
        Ack {
            index: v["index"].as_u64().unwrap() as usize,
            partition: v["partition"].as_u64().unwrap() as u32,
            offset: v["offset"].as_i64().unwrap(),
            digest: v["digest"].as_str().unwrap().to_owned(),
        }
    }
}

/// A short description of a record for failure messages.
pub fn describe(key: &Option<Vec<u8>>, value: &Option<Vec<u8>>) -> String {
    let part = |b: &Option<Vec<u8>>| match b {
        None => "null".to_owned(),
        Some(b) if b.len() <= 16 => format!("{:?}", hex(b)),
        Some(b) => format!("{} bytes {}..", b.len(), hex(&b[..8])),
    };
    format!("key {} value {}", part(key), part(value))
}
