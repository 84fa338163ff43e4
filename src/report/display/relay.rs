//! Puts a pipe on fd 1 so that everything written to stdout (libtest-mimic's lines above all)
//! reaches the reporter, which then writes it to where stdout was. This is how the reporter can
//! keep its own lines out of a half-written `test X ... `.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use super::global;

/// How long the end of the run waits for the last relayed bytes.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// While it lives, stdout goes through the reporter; dropping it puts stdout back and writes
/// out whatever is left.
pub struct Relay {
    saved: Option<OwnedFd>,
    done: mpsc::Receiver<()>,
}

/// Starts relaying stdout; `None` (and stdout untouched) when the pipe cannot be made.
pub fn start() -> Option<Relay> {
    let _ = std::io::stdout().flush();
    let mut fds = [0; 2];
    // SAFETY: plain libc calls on descriptors this function owns; each result is checked.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return None;
        }
        let saved = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if saved < 0 {
            libc::close(fds[0]);
            libc::close(fds[1]);
            return None;
        }
        if libc::dup2(fds[1], 1) < 0 {
            libc::close(fds[0]);
            libc::close(fds[1]);
            libc::close(saved);
            return None;
        }
        libc::close(fds[1]);
        let writer = libc::fcntl(saved, libc::F_DUPFD_CLOEXEC, 3);
        if writer < 0 {
            libc::dup2(saved, 1);
            libc::close(saved);
            libc::close(fds[0]);
            return None;
        }
        let real = File::from_raw_fd(writer);
        *global().stdout.lock().unwrap_or_else(|p| p.into_inner()) = Some(real);
        let mut reader = File::from_raw_fd(fds[0]);
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => global().stdout_bytes(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            global().flush_stdout();
            let _ = tx.send(());
        });
        Some(Relay {
            saved: Some(OwnedFd::from_raw_fd(saved)),
            done,
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = std::io::stdout().flush();
        if let Some(saved) = self.saved.take() {
            use std::os::fd::AsRawFd;
            // SAFETY: fd 1 is ours to replace; `saved` stays open until the end of this scope.
            unsafe {
                libc::dup2(saved.as_raw_fd(), 1);
            }
        }
        // A child that kept the pipe open (it should not: children get pipes of their own)
        // must not hold up the exit.
        if self.done.recv_timeout(DRAIN_WAIT).is_err() {
            global().flush_stdout();
        }
    }
}
