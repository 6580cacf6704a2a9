//! [`EventFd`]: an owned Linux eventfd used as a wakeup counter, and its loom model.
//!
//! Every libc call of the crate is wrapped once here. Under `cfg(loom)` the
//! crate uses a model with the same methods instead.

#[cfg(loom)]
pub(crate) use self::model::Event;
#[cfg(not(loom))]
pub(crate) use self::real::EventFd as Event;

#[cfg(not(loom))]
mod real {
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
    use std::time::{Duration, Instant};

    /// An eventfd: a kernel-held 64-bit counter behind a file descriptor.
    ///
    /// Counter semantics (eventfd(2), without `EFD_SEMAPHORE`):
    /// - [`write`](Self::write) adds to the counter and makes the fd readable
    ///   (it fails with `EAGAIN` only if the counter would pass
    ///   `u64::MAX - 1`, in which case the fd is readable already);
    /// - [`read`](Self::read) returns the counter and resets it to zero, or
    ///   fails with `WouldBlock` (`EAGAIN`) when it is zero;
    /// - the fd polls readable (`POLLIN`) exactly while the counter is non-zero.
    ///
    /// The fd is created with `EFD_NONBLOCK | EFD_CLOEXEC` and closed on drop.
    #[derive(Debug)]
    pub(crate) struct EventFd {
        fd: OwnedFd,
    }

    impl EventFd {
        /// Creates an eventfd with a zero counter.
        pub(crate) fn new() -> io::Result<Self> {
            // SAFETY: eventfd(2) takes no pointers; it returns a new fd or -1.
            let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a freshly created fd that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            Ok(Self { fd })
        }

        /// Adds `value` to the counter.
        pub(crate) fn write(&self, value: u64) -> io::Result<()> {
            let bytes = value.to_ne_bytes();
            loop {
                // SAFETY: the fd is open for the lifetime of `self`, and the
                // pointer and length describe the 8 readable bytes of `bytes`.
                let rc =
                    unsafe { libc::write(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
                if rc >= 0 {
                    return Ok(());
                }
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }

        /// Returns the counter and resets it to zero; `WouldBlock` when it is zero.
        pub(crate) fn read(&self) -> io::Result<u64> {
            let mut bytes = [0u8; 8];
            loop {
                // SAFETY: the fd is open for the lifetime of `self`, and the
                // pointer and length describe the 8 writable bytes of `bytes`.
                let rc = unsafe {
                    libc::read(self.fd.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len())
                };
                if rc >= 0 {
                    return Ok(u64::from_ne_bytes(bytes));
                }
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }

        /// Waits with poll(2) until the fd is readable or `timeout` passes;
        /// returns whether it is readable. `None` waits without limit.
        pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
            let deadline = timeout.map(|t| Instant::now() + t);
            loop {
                let timeout_ms = match deadline {
                    None => -1,
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        // Round up so that a short wait does not become a busy poll.
                        let ms = left.as_nanos().div_ceil(1_000_000);
                        libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
                    }
                };
                let mut pollfd = libc::pollfd {
                    fd: self.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: `pollfd` is a valid, exclusively borrowed array of one
                // element for the duration of the call.
                let rc = unsafe { libc::poll(&raw mut pollfd, 1, timeout_ms) };
                if rc >= 0 {
                    return Ok(rc > 0);
                }
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }

        /// Makes the fd readable, for a waiter that announced itself.
        pub(crate) fn signal(&self) {
            if let Err(err) = self.write(1) {
                // EAGAIN means the counter is saturated, so the fd is readable
                // and the wakeup is not lost. EBADF/EINVAL cannot happen: we own
                // an eventfd and write exactly 8 bytes.
                debug_assert_eq!(
                    err.kind(),
                    io::ErrorKind::WouldBlock,
                    "eventfd write failed: {err}"
                );
            }
        }

        /// Resets the counter; returns how many signals it held (0 if none).
        pub(crate) fn drain(&self) -> u64 {
            // WouldBlock means zero; no other error is possible on an eventfd
            // we own with an 8-byte buffer.
            self.read().unwrap_or(0)
        }
    }

    impl AsFd for EventFd {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.fd.as_fd()
        }
    }

    impl AsRawFd for EventFd {
        fn as_raw_fd(&self) -> RawFd {
            self.fd.as_raw_fd()
        }
    }
}

/// Under loom: an eventfd modelled with a loom mutex and condition variable,
/// so that a lost wakeup shows up as a deadlock that loom reports.
#[cfg(loom)]
mod model {
    use std::io;
    use std::sync::PoisonError;
    use std::time::Duration;

    use loom::sync::{Condvar, Mutex};

    #[derive(Debug)]
    pub(crate) struct Event {
        counter: Mutex<u64>,
        readable: Condvar,
    }

    impl Event {
        pub(crate) fn new() -> io::Result<Self> {
            Ok(Self {
                counter: Mutex::new(0),
                readable: Condvar::new(),
            })
        }

        pub(crate) fn signal(&self) {
            let mut counter = self.counter.lock().unwrap_or_else(PoisonError::into_inner);
            *counter += 1;
            self.readable.notify_all();
        }

        pub(crate) fn drain(&self) -> u64 {
            let mut counter = self.counter.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut *counter)
        }

        /// Timeouts are not modelled: loom tests wait without limit.
        pub(crate) fn wait(&self, _timeout: Option<Duration>) -> io::Result<bool> {
            let mut counter = self.counter.lock().unwrap_or_else(PoisonError::into_inner);
            while *counter == 0 {
                counter = self
                    .readable
                    .wait(counter)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
#[cfg(not(loom))]
mod tests {
    use std::io;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_new_eventfd_is_not_readable_and_reads_would_block() {
        let event = Event::new().unwrap();
        assert!(!event.wait(Some(Duration::ZERO)).unwrap());
        assert_eq!(event.read().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(event.drain(), 0);
    }

    #[test]
    fn reading_returns_the_sum_of_writes_and_resets_the_counter() {
        let event = Event::new().unwrap();
        event.write(2).unwrap();
        event.signal();
        assert!(event.wait(Some(Duration::ZERO)).unwrap());
        assert_eq!(event.read().unwrap(), 3);
        assert!(!event.wait(Some(Duration::ZERO)).unwrap());
    }

    #[test]
    fn waiting_with_a_timeout_on_a_quiet_eventfd_returns_false() {
        let event = Event::new().unwrap();
        assert!(!event.wait(Some(Duration::from_millis(5))).unwrap());
    }

    #[test]
    fn a_write_from_another_thread_ends_a_wait() {
        let event = std::sync::Arc::new(Event::new().unwrap());
        let writer = std::sync::Arc::clone(&event);
        let thread = std::thread::spawn(move || writer.signal());
        assert!(event.wait(None).unwrap());
        thread.join().unwrap();
    }
}
