//! Process limits: the open-file limit decides how many connections fit.

use std::io;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns `(old_soft, new_soft)`.
///
/// Each relay costs two descriptors, so the common default soft limit of 1024 would cap the
/// proxy near 500 clients for no reason: the hard limit is what the administrator allowed.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let old = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((old, limit.rlim_cur))
}

/// The current soft `RLIMIT_NOFILE`.
pub fn nofile_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// The connection cap implied by the fd limit: two descriptors per relay, minus a reserve
/// for listeners, the poll, the waker, resolver sockets and logging.
pub fn connections_for_fd_limit(nofile: u64) -> usize {
    const RESERVE: u64 = 64;
    (nofile.saturating_sub(RESERVE) / 2).max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_from_fd_limit() {
        assert_eq!(connections_for_fd_limit(20_000), 9_968);
        assert_eq!(connections_for_fd_limit(1024), 480);
        assert_eq!(connections_for_fd_limit(10), 1);
    }
}
