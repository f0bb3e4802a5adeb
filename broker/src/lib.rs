//! The `broker` command line: `broker serve` runs the broker
//! ([`broker_server`]); every other subcommand is a client of a running
//! broker ([`broker_client`]).
//!
//! The crates, from the bottom up (see ARCHITECTURE.md):
//! - `broker-format`: the record batch format, identical on the wire and on disk.
//! - `broker-log`: the partition log (segments on direct I/O, indexes,
//!   recovery, retention). It knows nothing of sockets.
//! - `broker-protocol`: the native wire frames and their codec.
//! - `broker-shard`: pinned executors, one per core, and their channel mesh.
//! - `broker-server`: the broker: partitions, the service, codecs, connections.
//! - `broker-client`: the client library (producer, consumer, admin): no glommio.

pub mod cli;
