//! `flock` on a file: the state directory's lock, held for the process's life (and
//! passed with its fd to the process an upgrade hands over to: a lock belongs to the
//! open file, which the fd shares).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Takes an exclusive lock on `file` without waiting. `Ok(false)`: another open of the
/// file holds one.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: flock only reads the fd, which `file` keeps open for the call.
        let ret = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if ret == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_a_locked_file_is_refused_and_a_shared_fd_keeps_the_lock() {
        let path = std::env::temp_dir().join(format!("tapswitch-lock-{}", std::process::id()));
        let first = File::create(&path).unwrap();
        assert!(try_lock_exclusive(&first).unwrap());
        let second = File::open(&path).unwrap();
        assert!(!try_lock_exclusive(&second).unwrap());
        // A duplicate of the fd (as SCM_RIGHTS makes) is the same open file: it holds
        // the lock after the original is closed.
        let duplicate = first.try_clone().unwrap();
        drop(first);
        assert!(!try_lock_exclusive(&second).unwrap());
        drop(duplicate);
        assert!(try_lock_exclusive(&second).unwrap());
        let _ = std::fs::remove_file(&path);
    }
}
