//! The consumer group of the chaos run: real `broker consume --group
//! --print-offsets` processes, crashed (SIGKILL), paused (SIGSTOP) and
//! slowed down (their output read slowly, so they block writing it) by the
//! fault scheduler, and restarted when they end.
//!
//! Each process writes its stdout and stderr into one stream. It prints from
//! one thread and flushes after every poll, so its "joined group" lines
//! (stderr) and its records (stdout) arrive in the order it wrote them:
//! every record is known to belong to the membership announced last. Per
//! membership (a new generation or a new member id, as after a broker
//! restart), the reader checks that each record is of an assigned
//! partition and that no partition's offsets go backwards.

use std::{
    collections::{BTreeSet, HashMap},
    io::{BufRead, BufReader},
    os::{fd::OwnedFd, unix::net::UnixStream},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

/// The group's session timeout (ms); broker pauses longer than it make the
/// coordinator drop members.
pub const SESSION_TIMEOUT_MS: u64 = 2_000;

/// What the group's members delivered, over every process.
#[derive(Default)]
pub struct Delivered {
    /// (partition, offset) -> (value, times delivered).
    pub records: HashMap<(u32, i64), (String, u32)>,
    /// Memberships joined, over all processes.
    pub joins: u64,
    /// Records seen at or below an offset the same membership had
    /// already delivered for that partition, or of a partition it was not
    /// assigned, or before it joined.
    pub violations: Vec<String>,
    /// Processes that ended by themselves, with the last line they wrote
    /// that was not a record.
    pub exits: Vec<String>,
}

struct Member {
    child: Child,
    /// Milliseconds the reader waits after each line (0: reads at once).
    slow_ms: Arc<AtomicU64>,
    paused: bool,
    /// Returns the last line that was not a record.
    reader: Option<thread::JoinHandle<String>>,
}

impl Member {
    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

/// Which client the members are.
#[derive(Clone)]
pub enum Client {
    /// `broker consume --group` over the native protocol.
    Native,
    /// confluent-kafka (kafka_member.py) over the Kafka listener at this
    /// address.
    Kafka(String),
}

/// The member processes.
pub struct Members {
    client: Client,
    /// The broker binary (a copy taken at the start of the run).
    bin: std::path::PathBuf,
    bootstrap: String,
    topic: String,
    group: String,
    procs: Vec<Member>,
    started: usize,
    pub delivered: Arc<Mutex<Delivered>>,
}

impl Members {
    pub fn new(bin: &std::path::Path, bootstrap: &str, topic: &str, group: &str) -> Members {
        Members::of(Client::Native, bin, bootstrap, topic, group)
    }

    /// Members that are `client`s.
    pub fn of(
        client: Client,
        bin: &std::path::Path,
        bootstrap: &str,
        topic: &str,
        group: &str,
    ) -> Members {
        Members {
            client,
            bin: bin.to_owned(),
            bootstrap: bootstrap.to_owned(),
            topic: topic.to_owned(),
            group: group.to_owned(),
            procs: Vec::new(),
            started: 0,
            delivered: Arc::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Starts one more member process.
    pub fn spawn(&mut self) {
        let name = self.started;
        self.started += 1;
        // One stream for both (a socket pair: ordered like a pipe).
        let (read, write) = UnixStream::pair().unwrap();
        let mut command = match &self.client {
            Client::Native => {
                let mut c = Command::new(&self.bin);
                c.args(["consume", &self.topic, "--group", &self.group])
                    .arg("--print-offsets")
                    .args(["--session-timeout-ms", &SESSION_TIMEOUT_MS.to_string()])
                    .args(["--auto-commit-interval-ms", "500"])
                    .args(["--bootstrap", &self.bootstrap]);
                c
            }
            Client::Kafka(kafka) => {
                let mut c = Command::new("python3");
                c.arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/chaos/kafka_member.py"
                ))
                .args(["--bootstrap", kafka, "--topic", &self.topic])
                .args(["--group", &self.group])
                .args(["--session-timeout-ms", &SESSION_TIMEOUT_MS.to_string()]);
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(OwnedFd::from(write.try_clone().unwrap()))
            .stderr(OwnedFd::from(write))
            .spawn()
            .unwrap();
        // Only the child holds the write end now (the Command is gone): the
        // reader sees EOF when the child is.
        let slow_ms = Arc::new(AtomicU64::new(0));
        let reader = {
            let (slow_ms, delivered) = (slow_ms.clone(), self.delivered.clone());
            thread::spawn(move || read_member(name, read, &slow_ms, &delivered))
        };
        self.procs.push(Member {
            child,
            slow_ms,
            paused: false,
            reader: Some(reader),
        });
    }

    /// SIGKILLs member `i % len` (no commit, no leave).
    pub fn crash(&mut self, i: usize) {
        let mut m = self.procs.remove(i % self.procs.len());
        let _ = m.child.kill();
        let _ = m.child.wait();
        if let Some(r) = m.reader.take() {
            r.join().unwrap();
        }
    }

    /// Slows member `i % len`'s reader to `ms` per line (0: full speed).
    pub fn slow(&mut self, i: usize, ms: u64) {
        let n = self.procs.len();
        self.procs[i % n].slow_ms.store(ms, Ordering::Relaxed);
    }

    pub fn pause(&mut self, i: usize) {
        let n = self.procs.len();
        let m = &mut self.procs[i % n];
        m.signal(libc::SIGSTOP);
        m.paused = true;
    }

    /// Every member back to normal: resumed, read at full speed.
    pub fn resume_all(&mut self) {
        for m in &mut self.procs {
            if m.paused {
                m.signal(libc::SIGCONT);
                m.paused = false;
            }
            m.slow_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Replaces members that ended by themselves; how many did.
    pub fn restart_ended(&mut self) -> usize {
        let mut ended = 0;
        let mut i = 0;
        while i < self.procs.len() {
            if self.procs[i].child.try_wait().unwrap().is_some() {
                let mut m = self.procs.remove(i);
                if let Some(r) = m.reader.take() {
                    let last = r.join().unwrap();
                    self.delivered.lock().unwrap().exits.push(last);
                }
                ended += 1;
                self.spawn();
            } else {
                i += 1;
            }
        }
        ended
    }

    /// SIGTERMs every member (commit, leave) and waits for them.
    pub fn stop_all(&mut self) {
        self.resume_all();
        for m in &mut self.procs {
            m.signal(libc::SIGTERM);
        }
        for mut m in self.procs.drain(..) {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while m.child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = m.child.kill();
            let _ = m.child.wait();
            if let Some(r) = m.reader.take() {
                r.join().unwrap();
            }
        }
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for m in &mut self.procs {
            m.signal(libc::SIGCONT);
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }
}

/// A "joined group G as member M in generation N: partitions [T/P, ...]"
/// line: the partitions.
fn parse_join(line: &str) -> Option<BTreeSet<u32>> {
    let rest = line.strip_prefix("joined group ")?;
    let (_, partitions) = rest.split_once(": partitions [")?;
    partitions
        .trim_end_matches(']')
        .split(", ")
        .filter(|tp| !tp.is_empty())
        .map(|tp| tp.rsplit_once('/').and_then(|(_, p)| p.parse().ok()))
        .collect()
}

/// A "GENERATION PARTITION OFFSET VALUE" line.
fn parse_record(line: &str) -> Option<(u32, i64, &str)> {
    let mut f = line.splitn(4, ' ');
    let _generation: i32 = f.next()?.parse().ok()?;
    let partition = f.next()?.parse().ok()?;
    let offset = f.next()?.parse().ok()?;
    Some((partition, offset, f.next()?))
}

/// Reads one member's merged output until it ends.
fn read_member(
    name: usize,
    pipe: impl std::io::Read,
    slow_ms: &AtomicU64,
    delivered: &Mutex<Delivered>,
) -> String {
    let mut reader = BufReader::with_capacity(256, pipe);
    let mut line = String::new();
    // The current membership: its partitions and the last offset it
    // delivered of each.
    let mut assigned: Option<BTreeSet<u32>> = None;
    let mut last: HashMap<u32, i64> = HashMap::new();
    let mut other = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if !line.ends_with('\n') {
            break; // Killed mid-line: that record was not delivered.
        }
        let text = line.trim_end();
        if let Some(partitions) = parse_join(text) {
            assigned = Some(partitions);
            last.clear();
            delivered.lock().unwrap().joins += 1;
        } else if let Some((p, o, value)) = parse_record(text) {
            let mut d = delivered.lock().unwrap();
            match &assigned {
                None => d
                    .violations
                    .push(format!("member {name} delivered {p}/{o} before joining")),
                Some(a) if !a.contains(&p) => d.violations.push(format!(
                    "member {name} delivered {p}/{o} of a partition not assigned to it ({a:?})"
                )),
                Some(_) => {}
            }
            if let Some(prev) = last.insert(p, o) {
                if o <= prev {
                    d.violations.push(format!(
                        "member {name} delivered {p}/{o} after {p}/{prev} in the same membership"
                    ));
                }
            }
            let entry = d
                .records
                .entry((p, o))
                .or_insert_with(|| (value.to_owned(), 0));
            entry.1 += 1;
            if entry.0 != value {
                let held = entry.0.clone();
                d.violations
                    .push(format!("offset {p}/{o} delivered as {held} and as {value}"));
            }
        } else {
            other = text.to_owned();
        }
        let ms = slow_ms.load(Ordering::Relaxed);
        if ms > 0 {
            thread::sleep(Duration::from_millis(ms));
        }
    }
    format!("member {name}: {other}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(output: &str) -> Delivered {
        let d = Mutex::new(Delivered::default());
        read_member(7, output.as_bytes(), &AtomicU64::new(0), &d);
        d.into_inner().unwrap()
    }

    const JOIN_1: &str = "joined group g as member m-1 in generation 3: partitions [t/0, t/2]\n";
    /// The coordinator restarted: same generation number, new member id.
    const JOIN_2: &str = "joined group g as member m-9 in generation 3: partitions [t/0]\n";

    #[test]
    fn offsets_may_go_back_only_in_a_new_membership() {
        let ok = read(&format!(
            "{JOIN_1}3 0 10 a\n3 2 4 x\n3 0 11 b\n{JOIN_2}3 0 10 a\n3 0 11 b\n"
        ));
        assert!(ok.violations.is_empty(), "{:?}", ok.violations);
        assert_eq!(ok.joins, 2);
        assert_eq!(ok.records[&(0, 10)], ("a".to_string(), 2));
        assert_eq!(ok.records.len(), 3);

        let back = read(&format!("{JOIN_1}3 0 10 a\n3 0 11 b\n3 0 10 a\n"));
        assert_eq!(back.violations.len(), 1, "{:?}", back.violations);
        assert!(back.violations[0].contains("0/10 after 0/11 in the same membership"));
    }

    #[test]
    fn records_outside_the_assignment_or_before_a_join_are_violations() {
        let d = read(&format!("3 0 1 a\n{JOIN_1}3 1 5 b\n"));
        assert_eq!(d.violations.len(), 2, "{:?}", d.violations);
        assert!(d.violations[0].contains("before joining"));
        assert!(d.violations[1].contains("not assigned"));
    }

    #[test]
    fn an_offset_delivered_with_two_values_is_a_violation() {
        let d = read(&format!("{JOIN_1}3 0 1 a\n{JOIN_2}3 0 1 z\n"));
        assert!(
            d.violations.iter().any(|v| v.contains("as a and as z")),
            "{:?}",
            d.violations
        );
    }

    #[test]
    fn a_line_cut_off_by_a_kill_is_not_delivered() {
        let d = read(&format!("{JOIN_1}3 0 1 a\n3 0 2 b"));
        assert_eq!(d.records.len(), 1);
    }
}
