//! Replicated partitions through the real quorum (one controller, three
//! members in this process): an RF-3 topic is placed on the three
//! brokers, all in sync; a leader's AlterPartition commits as a
//! compare-and-set on the partition epoch and a stale copy of it is
//! refused with its typed reason; fencing the leader (its member silent
//! past the session timeout) elects a new one from the ISR in a higher
//! leader epoch; a preferred-leader election is answered with its count.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    time::{Duration, Instant},
};

use broker_cluster::{
    BrokerEpoch, BrokerId, BrokerRegistration, Incarnation, IsrMember, Listener, MetadataImage,
    RequestId, TopicConfig,
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

fn registration(id: u32) -> BrokerRegistration {
    BrokerRegistration {
        id: BrokerId(id),
        incarnation: Incarnation(u128::from(id) * 1000),
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

fn member(controller: SocketAddr, id: u32) -> (Member, BrokerEpoch) {
    let m = Member::start(
        MemberConfig {
            registration: registration(id),
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

fn image(client: &mut ControllerClient) -> MetadataImage {
    match client
        .call(&Request::FetchImage { since_version: 0 })
        .unwrap()
    {
        Response::Image(Some(image)) => *image,
        other => panic!("{other:?}"),
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

#[test]
fn alter_partition_commits_as_a_compare_and_set_and_fencing_the_leader_elects_from_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _controller = Controller::start(ControllerConfig {
        node_id: 1,
        voters: BTreeMap::from([(1, addr)]),
        dir: dir.path().to_owned(),
        cluster_id: "test-cluster".into(),
        session_timeout_ms: SESSION_MS,
    })
    .unwrap();
    let mut members = BTreeMap::new();
    let mut epochs = BTreeMap::new();
    for id in 1..=3 {
        let (m, epoch) = member(addr, id);
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
    let shrink = Request::AlterPartition {
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
    };
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
