//! Core placement. The machine this harness was written for has 2 cores,
//! shared by the system under test and loadgen: by default the system gets
//! core 0 and loadgen every other core, so neither steals the other's cache
//! or time slices. `--loadgen-cores` chooses otherwise: a list of cores,
//! `all` (loadgen's threads spread round-robin over every core, the
//! system's too) or `none` (not pinned: the scheduler places them). A
//! thread's affinity is inherited by the threads it starts, which is how
//! the client library's sender and reader threads end up on their loadgen
//! thread's core too.

use std::{process::Command, sync::OnceLock};

/// The core the system under test (our broker or a peer) runs on.
pub const SYSTEM_CORE: usize = 0;

/// Where loadgen's threads run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Every core but the system's (core 0 alone on a one-core machine).
    Others,
    /// Every core, round-robin.
    All,
    /// These cores, round-robin.
    Cores(Vec<usize>),
    /// Not pinned.
    Unpinned,
}

impl std::str::FromStr for Placement {
    type Err = String;

    fn from_str(s: &str) -> Result<Placement, String> {
        match s {
            "others" => Ok(Placement::Others),
            "all" => Ok(Placement::All),
            "none" => Ok(Placement::Unpinned),
            list => {
                let cores = list
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        format!("{list:?}: expected others, all, none or a list of cores (1,2)")
                    })?;
                if cores.is_empty() {
                    return Err("an empty list of cores".into());
                }
                Ok(Placement::Cores(cores))
            }
        }
    }
}

static PLACEMENT: OnceLock<Placement> = OnceLock::new();

/// Sets where loadgen's threads run, once, before any is started; later
/// calls are ignored.
pub fn set_placement(placement: Placement) {
    let _ = PLACEMENT.set(placement);
}

fn placement() -> &'static Placement {
    PLACEMENT.get_or_init(|| Placement::Others)
}

fn all_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// The cores loadgen's threads run on (empty: not pinned).
pub fn loadgen_cores() -> Vec<usize> {
    match placement() {
        Placement::Others => {
            let rest: Vec<usize> = all_cores()
                .into_iter()
                .filter(|&c| c != SYSTEM_CORE)
                .collect();
            if rest.is_empty() {
                vec![SYSTEM_CORE]
            } else {
                rest
            }
        }
        Placement::All => all_cores(),
        Placement::Cores(cores) => cores.clone(),
        Placement::Unpinned => Vec::new(),
    }
}

/// Pins the calling thread (and the threads it starts afterwards) to
/// loadgen core number `i` (round-robin). Returns the core, or `None` if
/// loadgen is not pinned or the kernel refused.
pub fn pin_loadgen_thread(i: usize) -> Option<usize> {
    let cores = loadgen_cores();
    let core = *cores.get(i % cores.len().max(1))?;
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

/// The placement in words, for result files. It names the system's core
/// as the one loadgen starts it on; a system started by hand may be
/// placed otherwise.
pub fn describe(system: &str) -> String {
    let threads = match placement() {
        Placement::Unpinned => "loadgen threads not pinned".to_owned(),
        _ => format!("loadgen threads pinned to core(s) {:?}", loadgen_cores()),
    };
    format!(
        "{system} pinned to core {SYSTEM_CORE}; {threads}; {} cores in all",
        // The machine's, not this process's affinity mask (which is one
        // core when loadgen itself was started under taskset).
        broker_shard::online_cpus().map_or(0, |c| c.len())
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may unwrap: a failure is the test failing
mod tests {
    use super::*;

    #[test]
    fn placements_parse_from_their_flag() {
        assert_eq!("others".parse(), Ok(Placement::Others));
        assert_eq!("all".parse(), Ok(Placement::All));
        assert_eq!("none".parse(), Ok(Placement::Unpinned));
        assert_eq!("1".parse(), Ok(Placement::Cores(vec![1])));
        assert_eq!("0, 1".parse(), Ok(Placement::Cores(vec![0, 1])));
        assert!("1,x".parse::<Placement>().is_err());
        assert!("".parse::<Placement>().is_err());
    }
}
