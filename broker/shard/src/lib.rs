//! Shards: one glommio executor per core, pinned to it, and the channel mesh
//! they talk through. This module is the only place that starts executors,
//! so that a move away from glommio touches one file for this concern.
//!
//! A shard owns what is placed on it (partitions, the control of some
//! topics) and nothing else; shards never share memory on the data path.
//! Everything that crosses shards is a `Send` message on the mesh.

use std::{future::Future, io, time::Duration};

use glommio::{
    channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders},
    CpuSet, ExecutorJoinHandle, LocalExecutorBuilder, Placement,
};

/// A shard's index: 0 to the shard count - 1. Not glommio's executor id.
pub type ShardId = u16;

/// Bytes of memory each executor registers with io_uring. glommio's default
/// (10 MiB) is charged against RLIMIT_MEMLOCK when the broker runs without
/// CAP_IPC_LOCK; glommio falls back (with a warning) when it cannot lock it.
pub const IO_MEMORY_BYTES: usize = 10 << 20;

/// Capacity of each one-way channel between two shards. A sender waits when
/// its peer is this far behind: backpressure, not unbounded queues.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// The CPUs this process may run on, in order: shard `i` is pinned to the
/// `i`-th of them.
pub fn online_cpus() -> io::Result<Vec<usize>> {
    let set = CpuSet::online().map_err(|e| io::Error::other(e.to_string()))?;
    let mut cpus: Vec<usize> = set.iter().map(|l| l.cpu).collect();
    cpus.sort_unstable();
    cpus.dedup();
    // Respect an affinity mask the broker was started with (taskset, cgroups).
    let allowed = current_affinity()?;
    cpus.retain(|c| allowed.contains(c));
    Ok(cpus)
}

/// The CPUs the calling thread may run on.
pub fn current_affinity() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, and sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE, the set's capacity.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// The name of shard `id`'s thread, as `ps -L` and /proc show it.
pub fn thread_name(id: ShardId) -> String {
    format!("shard-{id}")
}

/// The mesh endpoints a shard gets once every shard has joined.
pub struct MeshEnd<T: Send> {
    /// Senders to every other shard (`send_to(peer)`; not to itself).
    pub senders: Senders<T>,
    /// Receivers from every other shard.
    pub receivers: Receivers<T>,
}

/// Starts one pinned executor per CPU of `cpus`, each running
/// `main(shard_id, mesh)` to completion, and returns their join handles.
/// Each shard must call [`join_mesh`] on its `mesh` once (all shards must,
/// or the others wait forever).
pub fn spawn<T, F, Fut, R>(cpus: &[usize], main: F) -> io::Result<Vec<ExecutorJoinHandle<R>>>
where
    T: Send + 'static,
    F: Fn(ShardId, MeshBuilder<T, Full>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let mesh = MeshBuilder::full(cpus.len(), MESH_CHANNEL_CAPACITY);
    let mut handles = Vec::with_capacity(cpus.len());
    for (i, &cpu) in cpus.iter().enumerate() {
        let id = i as ShardId;
        let main = main.clone();
        let mesh = mesh.clone();
        let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&thread_name(id))
            .io_memory(IO_MEMORY_BYTES);
        let handle = builder
            .spawn(move || async move {
                spawn_park_guard();
                main(id, mesh).await
            })
            .map_err(|e| io::Error::other(format!("cannot start shard {id} on cpu {cpu}: {e}")))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// How often the park guard's timer fires: the longest an executor can
/// stay wrongly parked.
pub const PARK_GUARD_TICK: Duration = Duration::from_millis(10);

/// Spawns, on the current glommio executor, a task whose timer is always
/// due within [`PARK_GUARD_TICK`]. glommio 0.9 can park an executor that
/// still has runnable tasks: `run_task_queues` returns "nothing ran" both
/// when the queues are empty and when it was told to preempt before
/// running anything (a completion landed in the latency ring, e.g. from
/// glommio's blocking-thread pool that runs truncate, rename and directory
/// fsync), and the executor then sleeps in `io_uring_enter` until the next
/// completion or timer: forever if none is due (fixed upstream in
/// glommio/glommio#53, not in the 0.9 release on crates.io). Seen here
/// once: the log crash test's executor parked for good after recovering a
/// log. The guard's timer bounds such a sleep; after it the executor polls
/// its rings and runs the waiting tasks. Every executor of ours calls this
/// first (shards, the log benchmark, the tests' `run`). Costs one timer
/// wake-up per tick.
pub fn spawn_park_guard() {
    glommio::spawn_local(async {
        loop {
            glommio::timer::sleep(PARK_GUARD_TICK).await;
        }
    })
    .detach();
}

/// Joins the mesh: resolves once every shard has joined.
pub async fn join_mesh<T: Send + 'static>(mesh: MeshBuilder<T, Full>) -> io::Result<MeshEnd<T>> {
    let (senders, receivers) = mesh
        .join()
        .await
        .map_err(|e| io::Error::other(format!("cannot join the shard mesh: {e}")))?;
    Ok(MeshEnd { senders, receivers })
}
