//! Consumer groups end to end, with the real binary: `broker consume
//! --group` processes share a topic's partitions by range (3 members on 6
//! partitions: 2 each; a fourth joins: 2/2/1/1), a SIGKILLed member's
//! partitions move after its session timeout and its records are delivered
//! again, stale commits are refused, `broker group describe` shows the lag,
//! and committed offsets survive a broker SIGKILL. In-process, a
//! `GroupConsumer` fenced while it was not polling has its commit refused,
//! rejoins, and everything it had handed out is delivered again.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use broker_client::{
    AutoOffsetReset, Client, ConsumerConfig, ErrorCode, GroupConsumer, GroupConsumerConfig,
    GroupDescription, Producer, ProducerConfig, TopicSettings,
};
use server_support::{collect_lines, Broker};

const TOPIC: &str = "orders";
const SESSION_MS: &str = "1500";
/// How long a condition that depends on the group settling may take before
/// the test gives up (generous: this is not a speed test).
const SETTLE: Duration = Duration::from_secs(60);

/// A `broker consume --group` child, its output collected by threads.
struct Member {
    child: Child,
    /// "GENERATION PARTITION OFFSET VALUE" lines.
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Member {
    fn spawn(broker: &Broker, group: &str, extra: &[&str]) -> Member {
        let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["consume", TOPIC, "--group", group, "--print-offsets"])
            .args(["--session-timeout-ms", SESSION_MS])
            .args(["--bootstrap", &broker.listen.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdout, out_reader) = collect_lines(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect_lines(child.stderr.take().unwrap());
        Member {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    /// The member id of its latest join, from its "joined group" lines.
    fn member_id(&self) -> Option<String> {
        self.stderr.lock().unwrap().iter().rev().find_map(|l| {
            l.split(" as member ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .map(str::to_owned)
        })
    }

    fn values(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap().to_owned())
            .collect()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGTERM (commit and leave), then the exit status once it is gone.
    fn stop(mut self) -> (ExitStatus, Vec<String>, String) {
        self.signal(libc::SIGTERM);
        let status = self.child.wait().unwrap();
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let values = self.values();
        let stderr = self.stderr.lock().unwrap().join("\n");
        (status, values, stderr)
    }

    /// SIGKILL: no commit, no leave.
    fn kill(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        self.values()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `check` holds for the group's description; panics with the
/// last description otherwise.
fn wait_for_group(
    client: &Client,
    group: &str,
    what: &str,
    check: impl Fn(&GroupDescription) -> bool,
) -> GroupDescription {
    let started = Instant::now();
    let deadline = started + SETTLE;
    loop {
        let d = client.describe_group(group).unwrap();
        if check(&d) {
            println!("{group}: {what} after {:?}", started.elapsed());
            return d;
        }
        assert!(Instant::now() < deadline, "never {what}: {d:#?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Members' partition counts, largest first, when the group is Stable and
/// every partition of the topic has exactly one owner.
fn stable_sizes(d: &GroupDescription, partitions: u32) -> Option<Vec<usize>> {
    if d.state != "Stable" {
        return None;
    }
    let mut owned = BTreeSet::new();
    for m in &d.members {
        for tp in &m.assignment {
            if !owned.insert(tp.clone()) {
                return None;
            }
        }
    }
    if owned.len() != partitions as usize {
        return None;
    }
    let mut sizes: Vec<usize> = d.members.iter().map(|m| m.assignment.len()).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    Some(sizes)
}

/// Produces `values` keyed by themselves and waits for every ack.
fn produce(client: &Client, values: &[String]) {
    let producer = Producer::with_client(client.clone(), ProducerConfig::default()).unwrap();
    let futures: Vec<_> = values
        .iter()
        .map(|v| {
            producer
                .send(TOPIC, Some(v.as_bytes()), v.as_bytes())
                .unwrap()
        })
        .collect();
    producer.flush();
    for f in futures {
        f.wait().unwrap();
    }
}

/// Waits until the union of what `members` (and the `gone` ones) printed
/// covers `values`.
fn wait_consumed(members: &[&Member], gone: &[String], values: &[String]) {
    let started = Instant::now();
    let deadline = started + SETTLE;
    loop {
        let mut seen: BTreeSet<String> = gone.iter().cloned().collect();
        for m in members {
            seen.extend(m.values());
        }
        let missing: Vec<&String> = values.iter().filter(|v| !seen.contains(*v)).collect();
        if missing.is_empty() {
            println!(
                "{} records consumed after {:?}",
                values.len(),
                started.elapsed()
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} records never consumed, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `broker ARGS --bootstrap ADDR`: its stdout, after checking it succeeded.
fn cli(broker: &Broker, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(args)
        .args(["--bootstrap", &broker.listen.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "broker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn committed(d: &GroupDescription) -> BTreeMap<u32, i64> {
    d.offsets.iter().map(|o| (o.partition, o.offset)).collect()
}

#[test]
fn members_share_partitions_rebalance_on_join_and_kill_and_resume_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let broker = Broker::start(&data, 2, &[]);
    let client = Client::connect(&broker.listen.to_string()).unwrap();
    client
        .create_topic(TOPIC, 6, &TopicSettings::default())
        .unwrap();
    let first: Vec<String> = (0..600).map(|i| format!("a-{i}")).collect();
    produce(&client, &first);

    // Three members on six partitions: two each.
    let fast_commit = ["--auto-commit-interval-ms", "200"];
    let mut members: Vec<Member> = (0..3)
        .map(|_| Member::spawn(&broker, "g", &fast_commit))
        .collect();
    let d = wait_for_group(&client, "g", "3 members with 2 partitions each", |d| {
        d.members.len() == 3 && stable_sizes(d, 6) == Some(vec![2, 2, 2])
    });
    let gen3 = d.generation;

    // A fourth joins: a rebalance spreads the six as 2/2/1/1.
    members.push(Member::spawn(&broker, "g", &fast_commit));
    let d = wait_for_group(&client, "g", "4 members as 2/2/1/1", |d| {
        d.members.len() == 4 && stable_sizes(d, 6) == Some(vec![2, 2, 1, 1])
    });
    assert!(d.generation > gen3);
    wait_consumed(&members.iter().collect::<Vec<_>>(), &[], &first);

    // Every process reports the member id the coordinator knows it by.
    let ids = |members: &[Member]| -> BTreeSet<Option<String>> {
        members.iter().map(Member::member_id).collect()
    };
    wait_for_group(&client, "g", "ids as the members report them", |d| {
        d.members
            .iter()
            .map(|m| Some(m.member_id.clone()))
            .collect::<BTreeSet<_>>()
            == ids(&members)
    });

    // SIGKILL one that owns two partitions (no commit, no leave): after its
    // session timeout the three others own all six.
    let d = client.describe_group("g").unwrap();
    let victim_id = d
        .members
        .iter()
        .find(|m| m.assignment.len() == 2)
        .unwrap()
        .member_id
        .clone();
    let victim_at = members
        .iter()
        .position(|m| m.member_id().as_deref() == Some(&victim_id))
        .unwrap();
    let victim_generation = d.generation;
    let victim_partitions = d
        .members
        .iter()
        .find(|m| m.member_id == victim_id)
        .unwrap()
        .assignment
        .clone();
    let killed_output = members.remove(victim_at).kill();
    let d = wait_for_group(&client, "g", "the killed member's partitions moved", |d| {
        d.members.len() == 3
            && stable_sizes(d, 6) == Some(vec![2, 2, 2])
            && d.members.iter().all(|m| m.member_id != victim_id)
    });
    for (t, p) in &victim_partitions {
        assert!(d.owner(t, *p).is_some_and(|o| o != victim_id));
    }
    let second: Vec<String> = (0..600).map(|i| format!("b-{i}")).collect();
    produce(&client, &second);
    wait_consumed(&members.iter().collect::<Vec<_>>(), &killed_output, &second);

    // Stale commits are refused: the killed member's, and a live member's
    // with an old generation.
    let coordinator = client.find_coordinator("g").unwrap();
    let before = committed(&client.describe_group("g").unwrap());
    let (t, p) = victim_partitions[0].clone();
    // Something is committed there, so a commit of 0 that got through shows.
    assert!(before.get(&p).is_some_and(|&o| o > 0), "{before:?}");
    let e = client
        .commit_offsets(
            &coordinator,
            "g",
            &victim_id,
            victim_generation,
            &[((t.clone(), p), 0)],
        )
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownMember), "{e}");
    let live = d.owner(&t, p).unwrap().to_owned();
    let e = client
        .commit_offsets(
            &coordinator,
            "g",
            &live,
            victim_generation,
            &[((t.clone(), p), 0)],
        )
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::IllegalGeneration), "{e}");
    let after = client
        .fetch_offsets(&coordinator, "g", &[(t.clone(), p)])
        .unwrap();
    assert!(
        after[0].offset >= before[&p],
        "a refused commit moved {t}/{p}"
    );

    // Once the group has committed everything, SIGTERM: each commits, leaves
    // and exits 0.
    wait_for_group(&client, "g", "everything committed", |d| {
        d.offsets.iter().map(|o| o.offset).sum::<i64>() == 1200
    });
    for m in members.drain(..) {
        let (status, _, stderr) = m.stop();
        assert!(status.success(), "{status:?}: {stderr}");
    }
    let d = client.describe_group("g").unwrap();
    assert_eq!(d.state, "Empty");
    assert!(d.members.is_empty());
    let committed_before_restart = committed(&d);
    let ends: BTreeMap<u32, i64> = (0..6)
        .map(|p| {
            let o = client
                .list_offsets(TOPIC, p, broker_client::OffsetQuery::Latest)
                .unwrap();
            (p, o.high_watermark)
        })
        .collect();
    assert_eq!(committed_before_restart, ends, "everything was committed");

    // Ten more records: `group describe` shows them as lag.
    let third: Vec<String> = (0..10).map(|i| format!("c-{i}")).collect();
    produce(&client, &third);
    let json: serde_json::Value = serde_json::from_str(&cli(
        &broker,
        &["group", "describe", "g", "--output", "json"],
    ))
    .unwrap();
    assert_eq!(json["total_lag"], 10, "{json:#}");
    let rows = json["partitions"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for row in rows {
        let (hw, c, lag) = (
            row["high_watermark"].as_i64().unwrap(),
            row["committed"].as_i64().unwrap(),
            row["lag"].as_i64().unwrap(),
        );
        assert_eq!(lag, hw - c, "{row}");
    }
    let table = cli(&broker, &["group", "describe", "g"]);
    assert!(table.contains("total lag 10"), "{table}");
    assert!(table.contains("LAG"), "{table}");
    let listed = cli(&broker, &["group", "list"]);
    assert!(listed.lines().any(|l| l.starts_with("g ")), "{listed}");

    // SIGKILL the broker and start it on the same data: the offsets are
    // there, and a new member resumes from them: exactly the ten new ones.
    broker.kill();
    let broker = Broker::start(&data, 2, &[]);
    let client = Client::connect(&broker.listen.to_string()).unwrap();
    assert_eq!(
        committed(&client.describe_group("g").unwrap()),
        committed_before_restart
    );
    let resumed = Member::spawn(&broker, "g", &[]);
    wait_consumed(&[&resumed], &[], &third);
    let (status, values, stderr) = resumed.stop();
    assert!(status.success(), "{status:?}: {stderr}");
    let got: BTreeSet<String> = values.iter().cloned().collect();
    assert_eq!(got, third.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(values.len(), 10, "nothing delivered twice: {values:?}");
    let json: serde_json::Value = serde_json::from_str(&cli(
        &broker,
        &["group", "describe", "g", "--output", "json"],
    ))
    .unwrap();
    assert_eq!(json["total_lag"], 0, "{json:#}");
}

#[test]
fn a_fenced_member_has_its_commit_refused_rejoins_and_its_records_are_delivered_again() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&tmp.path().join("data"), 2, &[]);
    let bootstrap = broker.listen.to_string();
    let client = Client::connect(&bootstrap).unwrap();
    client
        .create_topic(TOPIC, 4, &TopicSettings::default())
        .unwrap();
    let first: Vec<String> = (0..400).map(|i| format!("a-{i}")).collect();
    produce(&client, &first);
    let config = GroupConsumerConfig {
        session_timeout_ms: 1500,
        auto_offset_reset: AutoOffsetReset::Earliest,
        auto_commit_interval_ms: None,
        consumer: ConsumerConfig {
            fetch_max_wait_ms: 100,
            ..ConsumerConfig::default()
        },
        ..GroupConsumerConfig::default()
    };

    // A alone: it owns all four partitions and hands out every record,
    // committing nothing.
    let mut a = GroupConsumer::connect(&bootstrap, "f", &[TOPIC], config.clone()).unwrap();
    let mut a_first = Vec::new();
    let deadline = Instant::now() + SETTLE;
    while a_first.len() < first.len() {
        assert!(Instant::now() < deadline, "A got {} records", a_first.len());
        a_first.extend(a.poll(Duration::from_millis(200)).unwrap());
    }
    assert_eq!(a.assignment().len(), 4);
    let a_generation = a.generation();
    let a_id = a.member_id();

    // B joins while A does not poll: A misses the rebalance and is removed
    // at its deadline; B gets everything and starts from the committed
    // offsets (none: earliest).
    let stop = Arc::new(AtomicBool::new(false));
    let b = {
        let (bootstrap, config, stop) = (bootstrap.clone(), config.clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let mut b = GroupConsumer::connect(
                &bootstrap,
                "f",
                &[TOPIC],
                GroupConsumerConfig {
                    auto_commit_interval_ms: Some(200),
                    ..config
                },
            )
            .unwrap();
            let mut got = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                got.extend(b.poll(Duration::from_millis(100)).unwrap());
            }
            b.close().unwrap();
            got
        })
    };
    let d = wait_for_group(&client, "f", "B alone", |d| {
        d.members.len() == 1 && d.members[0].member_id != a_id && d.state == "Stable"
    });
    assert!(d.generation > a_generation);

    // A's commit is refused (it was fenced): not an error, a rejoin.
    assert!(
        !a.commit().unwrap(),
        "a fenced member's commit must be refused"
    );
    let coordinator = client.find_coordinator("f").unwrap();
    let e = client
        .commit_offsets(
            &coordinator,
            "f",
            &d.members[0].member_id,
            a_generation,
            &[((TOPIC.to_owned(), 0), 1)],
        )
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::IllegalGeneration), "{e}");

    // A polls again: it rejoins as a new member; both end with two
    // partitions each and the rest of the records.
    let second: Vec<String> = (0..400).map(|i| format!("b-{i}")).collect();
    produce(&client, &second);
    let mut a_later = Vec::new();
    let d = {
        let deadline = Instant::now() + SETTLE;
        loop {
            a_later.extend(a.poll(Duration::from_millis(100)).unwrap());
            let d = client.describe_group("f").unwrap();
            if d.members.len() == 2 && stable_sizes(&d, 4) == Some(vec![2, 2]) {
                break d;
            }
            assert!(Instant::now() < deadline, "A never rejoined: {d:#?}");
        }
    };
    assert_ne!(a.member_id(), a_id, "A rejoined as a new member");
    assert!(d.members.iter().any(|m| m.member_id == a.member_id()));
    // Keep A consuming until the group has committed all 800.
    let deadline = Instant::now() + SETTLE;
    loop {
        a_later.extend(a.poll(Duration::from_millis(100)).unwrap());
        a.commit().unwrap();
        let d = client.describe_group("f").unwrap();
        if d.offsets.iter().map(|o| o.offset).sum::<i64>() == 800 {
            break;
        }
        assert!(Instant::now() < deadline, "never all committed: {d:#?}");
    }
    a.close().unwrap();
    stop.store(true, Ordering::Relaxed);
    let b_got = b.join().unwrap();

    // Nothing A handed out and could not commit is lost: B (or A again)
    // delivered every one of them again; together they cover everything.
    let value = |r: &broker_client::ConsumedRecord| {
        String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()
    };
    let later: BTreeSet<String> = b_got.iter().chain(&a_later).map(value).collect();
    for r in &a_first {
        assert!(
            later.contains(&value(r)),
            "{} was not delivered again",
            value(r)
        );
    }
    for v in first.iter().chain(&second) {
        assert!(later.contains(v), "{v} never consumed after the rebalance");
    }
}
