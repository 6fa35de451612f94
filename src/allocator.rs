//! The memory allocator of blobgc's processes: mimalloc, tuned for a run's reads.
//!
//! A run reads each Parquet column chunk into one buffer of tens of MB and frees it. The
//! system allocator returned each such buffer to the OS and faulted the next one in page by
//! page: a third of a run's CPU time went to the kernel. mimalloc reuses them; its defaults keep
//! freed memory committed for a second, which at 10M listed blobs raised the peak by ~80 MB, so
//! [`tune`] purges sooner and commits arenas on demand (measured side by side; the README's
//! benchmark section).
//!
//! The binaries declare it as their `#[global_allocator]` (`src/main.rs`, the `gc` benchmark): a
//! library leaves that choice to the program that embeds it.

/// Options of mimalloc 3 the Rust bindings do not name (`mi_option_e` in `mimalloc.h`).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory is returned to the OS after this long unused (mimalloc's default: 1 s).
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// Sets the options: call first thing in `main`. A variable `MIMALLOC_PURGE_DELAY` or
/// `MIMALLOC_ARENA_EAGER_COMMIT` set by the operator wins.
pub fn tune() {
    let unset = |name: &str| std::env::var_os(name).is_none();
    // SAFETY: `mi_option_set` only stores an integer in mimalloc's option table.
    unsafe {
        if unset("MIMALLOC_ARENA_EAGER_COMMIT") {
            libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        }
        if unset("MIMALLOC_PURGE_DELAY") {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option numbers are mimalloc 3's: its documented defaults are found under them.
    #[test]
    fn option_numbers_name_the_options_meant() {
        // SAFETY: reads an integer from mimalloc's option table.
        let get = |o| unsafe { libmimalloc_sys::mi_option_get(o) };
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            assert_eq!(
                get(ARENA_EAGER_COMMIT),
                2,
                "arena_eager_commit defaults to 2"
            );
        }
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(PURGE_DELAY), 1000, "purge_delay defaults to 1000 ms");
        }
    }
}
