//! Core placement. The machine this harness was written for has 2 cores,
//! shared by the system under test and loadgen: the system gets core 0 and
//! loadgen core 1, so neither steals the other's cache or time slices. A
//! thread's affinity is inherited by the threads it starts, which is how the
//! client library's sender and reader threads end up on loadgen's core too.

use std::process::Command;

/// The core the system under test (our broker or a peer) runs on.
pub const SYSTEM_CORE: usize = 0;

/// The cores loadgen's threads run on: every core but the system's, or
/// core 0 on a one-core machine.
pub fn loadgen_cores() -> Vec<usize> {
    let all: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let rest: Vec<usize> = all.iter().copied().filter(|&c| c != SYSTEM_CORE).collect();
    if rest.is_empty() {
        vec![SYSTEM_CORE]
    } else {
        rest
    }
}

/// Pins the calling thread (and the threads it starts afterwards) to
/// loadgen core number `i` (round-robin). Returns the core, or `None` if
/// the kernel refused.
pub fn pin_loadgen_thread(i: usize) -> Option<usize> {
    let cores = loadgen_cores();
    let core = cores[i % cores.len()];
    core_affinity::set_for_current(core_affinity::CoreId { id: core }).then_some(core)
}

/// Makes `cmd`'s process run on `core` only (sched_setaffinity between
/// fork and exec, so every thread it starts inherits it).
pub fn pin_command(cmd: &mut Command, core: usize) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (CPU_ZERO/CPU_SET are plain bit writes,
    // sched_setaffinity a system call); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_ZERO(&mut set);
            libc::CPU_SET(core, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The placement in words, for result files.
pub fn describe(system: &str) -> String {
    let cores = loadgen_cores();
    format!(
        "{system} pinned to core {SYSTEM_CORE}; loadgen threads pinned to core(s) {cores:?}; {} cores in all",
        // The machine's, not this process's affinity mask (which is one
        // core when loadgen itself was started under taskset).
        broker_shard::online_cpus().map_or(0, |c| c.len())
    )
}
