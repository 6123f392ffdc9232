//! Memory given back after a burst: glibc malloc's mmap threshold, fixed at start-up.
//!
//! glibc serves blocks at or above its mmap threshold (128 KiB to start) with their own
//! mappings, unmapped on free. But each time such a block is freed it raises the
//! threshold to that block's size (up to 32 MiB), so after one burst of large requests
//! their buffers come from the heap arenas, which keep the memory once freed (issue 6:
//! 447 MB held after the load). Setting the threshold explicitly turns the raising off.
//!
//! glibc reads `GLIBC_TUNABLES` only when the process starts, and `mallopt` needs unsafe
//! code, so the broker re-executes itself once with the tunable added. The operator's
//! own `GLIBC_TUNABLES` is kept, and one that already sets the threshold wins.
//!
//! Measured with `scripts/memory-burst` (200 clients x one 5 MB produce, 128 MiB
//! request budget), RSS 10 s after the burst: 21-73 MiB without, 19-20 MiB with; the
//! mimalloc allocator instead gave 41-45 MiB (and 14 MiB idle), so no allocator crate.

/// Blocks of 1 MiB and more get their own mappings: large request and batch buffers go
/// back to the OS when freed, small ones stay in the arenas (no syscall per request).
pub const MMAP_THRESHOLD_TUNABLE: &str = "glibc.malloc.mmap_threshold=1048576";

const TUNABLES_VARIABLE: &str = "GLIBC_TUNABLES";
/// Set in the re-executed process: it never re-executes again, even where the C library
/// drops `GLIBC_TUNABLES` (a secure-execution binary: setuid or file capabilities), which
/// would otherwise make the broker exec itself forever.
const REEXECUTED_VARIABLE: &str = "GRACCHUS_MALLOC_REEXECUTED";

/// The `GLIBC_TUNABLES` value to re-execute with, or `None` if the current one already
/// fixes the mmap threshold (so the re-executed process does not do it again).
pub fn tunables_with_threshold(current: Option<&str>) -> Option<String> {
    match current {
        Some(value) if value.contains("glibc.malloc.mmap_threshold=") => None,
        Some(value) if !value.is_empty() => Some(format!("{value}:{MMAP_THRESHOLD_TUNABLE}")),
        _ => Some(MMAP_THRESHOLD_TUNABLE.to_string()),
    }
}

/// Replaces this process with itself, same arguments, the mmap threshold fixed; returns
/// only when nothing needs doing or the exec failed (then the broker runs on as it is).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn fix_mmap_threshold() -> Result<(), std::io::Error> {
    use std::os::unix::process::CommandExt;

    if std::env::var_os(REEXECUTED_VARIABLE).is_some() {
        return Ok(());
    }
    let current = std::env::var(TUNABLES_VARIABLE).ok();
    let Some(tunables) = tunables_with_threshold(current.as_deref()) else {
        return Ok(());
    };
    let error = std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(TUNABLES_VARIABLE, tunables)
        .env(REEXECUTED_VARIABLE, "1")
        .exec();
    Err(error)
}

/// Other C libraries do not raise their threshold this way: nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn fix_mmap_threshold() -> Result<(), std::io::Error> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_added_once_and_the_operators_tunables_are_kept() {
        assert_eq!(
            tunables_with_threshold(None).as_deref(),
            Some(MMAP_THRESHOLD_TUNABLE)
        );
        assert_eq!(
            tunables_with_threshold(Some("")).as_deref(),
            Some(MMAP_THRESHOLD_TUNABLE)
        );
        let theirs = "glibc.malloc.arena_max=2";
        let both = tunables_with_threshold(Some(theirs)).unwrap();
        assert_eq!(both, format!("{theirs}:{MMAP_THRESHOLD_TUNABLE}"));
        // After the re-exec (or with the operator's own threshold) nothing more happens.
        assert_eq!(tunables_with_threshold(Some(&both)), None);
        let own = "glibc.malloc.mmap_threshold=65536";
        assert_eq!(tunables_with_threshold(Some(own)), None);
    }
}
