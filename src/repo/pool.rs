//! The worker pools the repository's operations run their parallel work
//! on, sized for work that mixes disk or network waits with CPU.

/// Runs `f` on a rayon pool sized for mixed I/O and CPU work: one thread
/// per core, plus [`BLOCKING_READERS`] + 1 so that threads blocked on
/// cold-cache reads (a backup opens files one after another) or file writes
/// do not leave the cores idle. Measured on /usr/share (45,000 files, page
/// cache dropped) with two cores: a backup took 3.9 s with 3 threads and
/// 2.9 s with 7 to a local repository, 6.1 s and 5.0 s to object storage,
/// for about 12 MiB more peak memory locally. Falls back to the global pool
/// if a pool cannot be built.
pub(crate) fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    in_pool_of(0, f)
}

/// Worker threads beyond the cores, for those waiting on the disk.
const BLOCKING_READERS: usize = 4;

/// [`in_pool`] with at least `min_threads` workers: for work that waits on
/// the network more than on the CPU (reads from object storage).
pub(crate) fn in_pool_of<R: Send>(min_threads: usize, f: impl FnOnce() -> R + Send) -> R {
    run_in_pool(pool_threads().max(min_threads), f)
}

/// [`in_pool`] for work that holds a whole pack in each thread (prune's
/// repacking, `verify --read-data` on object storage): at most as many
/// threads as keep [`PACKS_IN_MEMORY`] of packs of `pack_size`, and two.
pub(crate) fn in_pool_holding_packs<R: Send>(pack_size: u32, f: impl FnOnce() -> R + Send) -> R {
    let fit = usize::try_from(PACKS_IN_MEMORY / u64::from(pack_size.max(1))).unwrap_or(2);
    run_in_pool(pool_threads().min(fit).max(2), f)
}

/// Whole packs held at once by [`in_pool_holding_packs`].
const PACKS_IN_MEMORY: u64 = 256 << 20;

fn pool_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    (cores + 1 + BLOCKING_READERS).clamp(2, 64)
}

fn run_in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("cairn-worker-{i}"))
        // Directories are walked recursively, one frame chain per level:
        // room for trees thousands of levels deep.
        .stack_size(16 << 20)
        .build()
    {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}
