//! One controller and its brokers in one process: a member registers, is
//! unfenced once it has the image of its registration, follows the image
//! (a topic created through the controller reaches it), is fenced when it
//! goes silent past its session timeout, and a controlled shutdown fences
//! it at once. A second process with a live broker's id is refused.
//! Replicated partitions through the real quorum: an RF-3 topic on three
//! members, all in sync; a leader's AlterPartition commits as a
//! compare-and-set on the partition epoch and a stale copy of it is
//! refused with its typed reason; the leader's member silent past its
//! session elects a new leader from the ISR in a higher leader epoch.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use broker_cluster::{
    AlterPartition, BrokerEpoch, BrokerId, BrokerRegistration, BrokerState, Incarnation, IsrMember,
    Listener, MetadataImage, RequestId, TopicConfig,
};
use broker_controller::{
    Applied, BrokerStanding, Controller, ControllerClient, ControllerConfig, Done, Member,
    MemberConfig, RefusalKind, Request, Response,
};

const SESSION_MS: u64 = 600;

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn controller(dir: &std::path::Path) -> (Controller, SocketAddr) {
    let addr = free_addr();
    let c = Controller::start(ControllerConfig {
        node_id: 1,
        voters: BTreeMap::from([(1, addr)]),
        dir: dir.to_owned(),
        cluster_id: "test-cluster".into(),
        session_timeout_ms: SESSION_MS,
    })
    .unwrap();
    (c, addr)
}

fn registration(id: u32, incarnation: u128) -> BrokerRegistration {
    BrokerRegistration {
        id: BrokerId(id),
        incarnation: Incarnation(incarnation),
        shards: 2,
        native: Listener {
            addr: format!("127.0.0.{id}:9092"),
            shard_ports: vec![9093, 9094],
        },
        kafka: None,
        previous_epoch: None,
        fsync_every_write: true,
    }
}

fn member(
    controller: SocketAddr,
    id: u32,
    incarnation: u128,
) -> (Member, Arc<Mutex<Vec<Arc<MetadataImage>>>>) {
    let images = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&images);
    let m = Member::start(
        MemberConfig {
            registration: registration(id, incarnation),
            cluster_id: "test-cluster".into(),
            controllers: vec![controller],
            heartbeat_interval: Duration::from_millis(50),
            rpc_timeout: Duration::from_secs(1),
        },
        move |image| seen.lock().unwrap().push(image),
        |why| panic!("evicted: {why}"),
    )
    .unwrap();
    (m, images)
}

fn register(id: u32, incarnation: u128) -> Request {
    Request::Register {
        registration: registration(id, incarnation),
        cluster_id: "test-cluster".into(),
    }
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn state_of(client: &mut ControllerClient, id: u32) -> Option<BrokerState> {
    match client.call(&Request::Status).unwrap() {
        Response::Status(s) => s
            .cluster
            .brokers
            .iter()
            .find(|b| b.id == BrokerId(id))
            .map(|b| b.state),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_member_is_admitted_follows_the_image_and_is_fenced_when_silent() {
    let dir = tempfile::tempdir().unwrap();
    let (_controller, addr) = controller(dir.path());
    let (m, images) = member(addr, 7, 1);
    let standing = m
        .wait_for(Duration::from_secs(20), |s| {
            s.standing == Some(BrokerStanding::Unfenced)
        })
        .expect("admitted");
    let epoch = standing.epoch.unwrap();
    // The images it was handed grow in version and hold its registration.
    let first = images.lock().unwrap().clone();
    assert!(first.windows(2).all(|w| w[0].version() < w[1].version()));
    assert_eq!(
        first.last().unwrap().broker(BrokerId(7)).unwrap().epoch,
        epoch
    );
    // A topic created through the controller reaches the member's image.
    let mut client = ControllerClient::new(vec![addr], Duration::from_secs(2));
    let created = client
        .call(&Request::CreateTopic {
            name: "orders".into(),
            partitions: 4,
            config: TopicConfig {
                retention_ms: None,
                retention_bytes: None,
                segment_bytes: 1 << 20,
                log_append_time: false,
                replication_factor: 1,
                min_insync_replicas: 1,
                unclean_leader_election: false,
            },
            request_id: RequestId(u128::MAX - 1),
        })
        .unwrap();
    let Response::Applied(Applied {
        version,
        result: Ok(Done::TopicCreated { placement }),
    }) = created
    else {
        panic!("{created:?}")
    };
    assert_eq!(placement.len(), 4);
    assert!(placement.iter().all(|p| p.broker == BrokerId(7)));
    m.refresh();
    wait("the topic in the member's image", || {
        m.image()
            .filter(|i| i.version() >= version && i.topic("orders").is_some())
    });
    // Silent past its session timeout (the member thread stopped, no
    // controlled shutdown): fenced by the leader.
    let stopped = Instant::now();
    m.stop(false);
    wait("fenced after the session timeout", || {
        (state_of(&mut client, 7) == Some(BrokerState::Fenced)).then_some(())
    });
    assert!(stopped.elapsed() >= Duration::from_millis(SESSION_MS));
}

#[test]
fn a_controlled_shutdown_fences_at_once_and_a_duplicate_id_is_refused_while_alive() {
    let dir = tempfile::tempdir().unwrap();
    let (_controller, addr) = controller(dir.path());
    let (m, _) = member(addr, 3, 10);
    m.wait_for(Duration::from_secs(20), |s| {
        s.standing == Some(BrokerStanding::Unfenced)
    })
    .expect("admitted");
    // Another process with the same id, while the first is alive.
    let mut client = ControllerClient::new(vec![addr], Duration::from_secs(2));
    match client.call(&register(3, 11)).unwrap() {
        Response::Applied(Applied { result: Err(e), .. }) => {
            assert_eq!(e.kind, RefusalKind::DuplicateBrokerRegistration, "{e}")
        }
        other => panic!("{other:?}"),
    }
    let stopped = Instant::now();
    m.stop(true);
    assert_eq!(state_of(&mut client, 3), Some(BrokerState::ShutDown));
    assert!(stopped.elapsed() < Duration::from_millis(SESSION_MS));
    // Now the new incarnation may register, with a later epoch.
    match client.call(&register(3, 11)).unwrap() {
        Response::Applied(Applied {
            result: Ok(Done::Registered { .. }),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // A broker of another cluster is refused.
    let foreign = Request::Register {
        registration: registration(4, 12),
        cluster_id: "another-cluster".into(),
    };
    assert!(matches!(
        client.call(&foreign).unwrap(),
        Response::BadRequest { .. }
    ));
}

/// Broker `id` admitted (unfenced), and its epoch.
fn admitted(controller: SocketAddr, id: u32) -> (Member, BrokerEpoch) {
    let m = Member::start(
        MemberConfig {
            registration: registration(id, u128::from(id) * 1000),
            cluster_id: "test-cluster".into(),
            controllers: vec![controller],
            heartbeat_interval: Duration::from_millis(50),
            rpc_timeout: Duration::from_secs(1),
        },
        |_| {},
        |why| panic!("evicted: {why}"),
    )
    .unwrap();
    let standing = m
        .wait_for(Duration::from_secs(20), |s| {
            s.standing == Some(BrokerStanding::Unfenced)
        })
        .expect("admitted");
    let epoch = standing.epoch.unwrap();
    (m, epoch)
}

/// The image the controller has applied.
fn image(client: &mut ControllerClient) -> MetadataImage {
    match client
        .call(&Request::FetchImage { since_version: 0 })
        .unwrap()
    {
        Response::Image(Some(image)) => *image,
        other => panic!("{other:?}"),
    }
}

#[test]
fn alter_partition_commits_as_a_compare_and_set_and_fencing_the_leader_elects_from_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let (_controller, addr) = controller(dir.path());
    let mut members = BTreeMap::new();
    let mut epochs = BTreeMap::new();
    for id in 1..=3 {
        let (m, epoch) = admitted(addr, id);
        members.insert(BrokerId(id), m);
        epochs.insert(BrokerId(id), epoch);
    }
    let mut client = ControllerClient::new(vec![addr], Duration::from_secs(2));
    let created = client
        .call(&Request::CreateTopic {
            name: "replicated".into(),
            partitions: 3,
            config: TopicConfig {
                retention_ms: None,
                retention_bytes: None,
                segment_bytes: 1 << 20,
                log_append_time: false,
                replication_factor: 3,
                min_insync_replicas: 2,
                unclean_leader_election: false,
            },
            request_id: RequestId(42),
        })
        .unwrap();
    assert!(
        matches!(
            created,
            Response::Applied(Applied {
                result: Ok(Done::TopicCreated { .. }),
                ..
            })
        ),
        "{created:?}"
    );
    // Four replicas asked of three brokers: INVALID_REPLICATION_FACTOR.
    let too_many = Request::CreateTopic {
        name: "too-many".into(),
        partitions: 1,
        config: TopicConfig {
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: 1 << 20,
            log_append_time: false,
            replication_factor: 4,
            min_insync_replicas: 1,
            unclean_leader_election: false,
        },
        request_id: RequestId(43),
    };
    match client.call(&too_many).unwrap() {
        Response::Applied(Applied { result: Err(e), .. }) => {
            assert_eq!(e.kind, RefusalKind::InvalidReplicationFactor, "{e}")
        }
        other => panic!("{other:?}"),
    }
    let reg = image(&mut client)
        .partition_replicas("replicated", 0)
        .unwrap()
        .clone();
    assert_eq!(reg.replicas.len(), 3);
    assert_eq!(reg.isr.len(), 3);
    let leader = reg.leader.unwrap();
    let follower = reg
        .replicas
        .iter()
        .map(|r| r.broker)
        .find(|b| *b != leader)
        .unwrap();
    // The leader shrinks the ISR by one follower.
    let shrink = Request::AlterPartition(AlterPartition {
        topic: "replicated".into(),
        partition: 0,
        leader,
        leader_broker_epoch: epochs[&leader],
        leader_epoch: reg.leader_epoch,
        partition_epoch: reg.partition_epoch,
        new_isr: reg
            .isr
            .iter()
            .filter(|b| **b != follower)
            .map(|&broker| IsrMember {
                broker,
                broker_epoch: None,
            })
            .collect(),
    });
    match client.call(&shrink).unwrap() {
        Response::Applied(Applied {
            result: Ok(Done::PartitionAltered { replicas }),
            ..
        }) => {
            assert_eq!(replicas.isr.len(), 2);
            assert!(!replicas.isr.contains(&follower));
            assert_eq!(replicas.partition_epoch, reg.partition_epoch + 1);
        }
        other => panic!("{other:?}"),
    }
    // The same request again: the compare-and-set fails.
    match client.call(&shrink).unwrap() {
        Response::Applied(Applied { result: Err(e), .. }) => {
            assert_eq!(e.kind, RefusalKind::InvalidUpdateVersion, "{e}")
        }
        other => panic!("{other:?}"),
    }
    // The leader's member goes silent: fenced, a new leader from the ISR.
    members.remove(&leader).unwrap().stop(false);
    let after = wait("a new leader", || {
        let reg = image(&mut client)
            .partition_replicas("replicated", 0)
            .unwrap()
            .clone();
        reg.leader.filter(|l| *l != leader).map(|_| reg)
    });
    let new = after.leader.unwrap();
    assert_ne!(new, follower, "the follower out of the ISR is not elected");
    assert!(after.leader_epoch > reg.leader_epoch);
    // A stale leader's AlterPartition is refused as fenced.
    match client.call(&shrink).unwrap() {
        Response::Applied(Applied { result: Err(e), .. }) => {
            assert_eq!(e.kind, RefusalKind::FencedLeaderEpoch, "{e}")
        }
        other => panic!("{other:?}"),
    }
    match client
        .call(&Request::ElectPreferredLeaders { topic: None })
        .unwrap()
    {
        Response::Applied(Applied {
            result: Ok(Done::LeadersElected { .. }),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    for (_, m) in members {
        m.stop(true);
    }
}
