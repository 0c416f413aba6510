//! The rayon pool a training step runs in.

/// Runs `f` in a rayon pool that the calling thread belongs to, so the
/// step's many short parallel sections (the fast step's kernels; on the
/// candle path the convolutions' custom ops and candle's matrix products)
/// start without handing work to another thread and waiting to be woken
/// each time (which costs milliseconds per step on a small VM). `f` runs on
/// the calling thread. Each thread that steps gets its own pool, sized like
/// rayon's default (`RAYON_NUM_THREADS` or the CPU count); with one thread
/// the pool is the caller alone, so nothing is handed to the global pool's
/// worker. Inside a pool already (a caller chose the threads), `f` runs as
/// it is.
pub fn in_own_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    thread_local! {
        static POOL: std::cell::OnceCell<Option<rayon::ThreadPool>> =
            const { std::cell::OnceCell::new() };
    }
    if rayon::current_thread_index().is_some() {
        return f();
    }
    POOL.with(|pool| {
        let pool = pool.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(rayon::current_num_threads())
                .thread_name(|i| format!("kusari-fast-{i}"))
                .use_current_thread()
                .build()
                .ok()
        });
        match pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn the_caller_runs_the_closure_as_worker_zero_of_its_pool() {
        let (on_caller, index, sum) = std::thread::spawn(|| {
            let caller = std::thread::current().id();
            in_own_pool(|| {
                let sum: u64 = (0..10_000u64).into_par_iter().sum();
                (
                    std::thread::current().id() == caller,
                    rayon::current_thread_index(),
                    sum,
                )
            })
        })
        .join()
        .unwrap();
        assert!(on_caller);
        assert_eq!(index, Some(0));
        assert_eq!(sum, 49_995_000);
    }
}
