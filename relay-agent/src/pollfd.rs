//! A console descriptor served on epoll: read and written without
//! blocking, so no thread hop per read or write (which `tokio::fs::File`
//! and tokio's stdio pay, on tokio's blocking pool).

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{FileType, OFlags};
use tokio::net::unix::pipe;

/// Whether epoll can watch this descriptor and it is ours alone to make
/// non-blocking: a pipe, a socket, or a character device that is not a
/// terminal (a virtio port). Not a regular file, and not a terminal that
/// other programs share.
fn pollable(fd: &OwnedFd) -> bool {
    let Ok(stat) = rustix::fs::fstat(fd) else {
        return false;
    };
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Fifo | FileType::Socket => true,
        FileType::CharacterDevice => !rustix::termios::isatty(fd),
        _ => false,
    }
}

/// A duplicate of `fd`, made non-blocking, if it is [`pollable`]. The
/// duplicate shares the open file, non-blocking flag included.
fn nonblocking_duplicate(fd: impl AsFd) -> Option<OwnedFd> {
    let fd = rustix::io::dup(fd.as_fd()).ok()?;
    if !pollable(&fd) {
        return None;
    }
    let flags = rustix::fs::fcntl_getfl(&fd).ok()?;
    rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK).ok()?;
    Some(fd)
}

/// The reading end of a console on epoll, if `fd` allows it. Must be
/// called within a Tokio runtime.
pub(crate) fn reader(fd: impl AsFd) -> Option<pipe::Receiver> {
    // Tokio's pipe halves are plain non-blocking reads and writes on a
    // registered descriptor; the unchecked constructors take any pollable
    // one (the checked ones insist on a FIFO).
    pipe::Receiver::from_owned_fd_unchecked(nonblocking_duplicate(fd)?).ok()
}

/// The writing end of a console on epoll, if `fd` allows it.
pub(crate) fn writer(fd: impl AsFd) -> Option<pipe::Sender> {
    pipe::Sender::from_owned_fd_unchecked(nonblocking_duplicate(fd)?).ok()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_pipe_carries_bytes_without_blocking_a_thread() {
        let (read, write) = rustix::pipe::pipe().unwrap();
        let mut rx = reader(&read).expect("a pipe is pollable");
        let mut tx = writer(&write).expect("a pipe is pollable");
        drop((read, write));
        let data: Vec<u8> = (0..200_000u32).map(|n| n as u8).collect();
        let sent = data.clone();
        let send = tokio::spawn(async move {
            tx.write_all(&sent).await.unwrap();
        });
        let mut got = vec![0u8; data.len()];
        rx.read_exact(&mut got).await.unwrap();
        send.await.unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn a_regular_file_is_left_to_the_blocking_path() {
        let file = tempfile::tempfile().unwrap();
        assert!(reader(&file).is_none());
        assert!(writer(&file).is_none());
    }
}
