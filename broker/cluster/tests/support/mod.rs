//! Helpers shared by broker-cluster's integration tests: a broker's
//! registration and a seeded proptest configuration.

use broker_cluster::{BrokerId, BrokerRegistration, Incarnation, Listener};
use proptest::test_runner::{Config as ProptestConfig, RngSeed};

/// Broker `id`'s registration (incarnation `incarnation`, `shards`
/// shards, ports from 9000 native and 19000 Kafka), fsyncing every write
/// if `fsync_every_write`.
pub fn registration(
    id: u32,
    incarnation: u128,
    shards: u16,
    fsync_every_write: bool,
) -> BrokerRegistration {
    let ports = |base: u16| Listener {
        addr: format!("b{id}.local:{base}"),
        shard_ports: (0..shards).map(|s| base + 1 + s).collect(),
    };
    BrokerRegistration {
        id: BrokerId(id),
        incarnation: Incarnation(incarnation),
        shards,
        native: ports(9000),
        kafka: Some(ports(19000)),
        previous_epoch: None,
        fsync_every_write,
    }
}

/// Proptest's default configuration with `seed` unless
/// `PROPTEST_RNG_SEED` gives another, so runs are reproducible; the seed
/// is printed (shown only when a property fails).
pub fn seeded(seed: u64) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(seed);
    }
    eprintln!("proptest seed: {}", config.rng_seed);
    config
}
