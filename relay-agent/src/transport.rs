//! Consoles the agent can serve over: its own stdio, a Unix socket, or a
//! character device (a virtio port found by name, or a path such as
//! `/dev/hvc0`).
//!
//! Devices are opened once, read and write, and the descriptor is
//! duplicated so reading and writing proceed independently (a virtio port
//! refuses a second `open` with `EBUSY`). Pipes, sockets and character
//! devices that are not terminals (a virtio port) are served on epoll
//! through a non-blocking descriptor, with no thread hop per
//! read or write; anything else (a terminal, put into raw mode first so
//! bytes pass unchanged, or a regular file) as a `tokio::fs::File` or
//! tokio's stdio, which run blocking reads and writes on tokio's blocking
//! pool.
//!
//! Those keep a blocking read parked on a pool thread, so a program that
//! serves over them should not wait for that read when it exits: shut its
//! runtime down with `Runtime::shutdown_background` (the binary does).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::TransportError;
use crate::pollfd;

/// Where virtio ports are listed: one directory per port, each with a
/// `name` file.
pub const SYSFS_VIRTIO_PORTS: &str = "/sys/class/virtio-ports";

/// A console's read half, type-erased.
pub type BoxedReader = Box<dyn AsyncRead + Unpin + Send>;
/// A console's write half, type-erased.
pub type BoxedWriter = Box<dyn AsyncWrite + Unpin + Send>;

/// An open console: the two halves [`Agent::serve`](crate::Agent::serve) takes.
pub struct Console {
    /// Frames from the host.
    pub reader: BoxedReader,
    /// Frames to the host.
    pub writer: BoxedWriter,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// Which console to serve over.
///
/// A device is opened once, read and write, and its descriptor duplicated
/// so reads and writes proceed independently (a virtio port refuses a
/// second `open`); a terminal device is put into raw mode first.
///
/// [`Transport::Stdio`] and devices read on tokio's blocking pool, and such
/// a read stays parked after [`Agent::serve`](crate::Agent::serve) returns:
/// a program serving them should end its runtime with
/// `Runtime::shutdown_background` (or exit) rather than wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The process's stdin and stdout (stdout then carries nothing but frames).
    Stdio,
    /// Connect to a Unix stream socket at this path.
    Unix(PathBuf),
    /// The virtio port with this name (see [`find_port`]).
    Port(String),
    /// A character device at this path, such as `/dev/hvc0`.
    Device(PathBuf),
}

impl Transport {
    /// Opens the console.
    pub async fn open(&self) -> Result<Console, TransportError> {
        match self {
            Transport::Stdio => Ok(Console {
                reader: match pollfd::reader(std::io::stdin()) {
                    Some(fd) => Box::new(fd),
                    None => Box::new(tokio::io::stdin()),
                },
                writer: match pollfd::writer(std::io::stdout()) {
                    Some(fd) => Box::new(fd),
                    None => Box::new(tokio::io::stdout()),
                },
            }),
            Transport::Unix(path) => {
                let (reader, writer) = connect_unix(path).await?;
                Ok(Console {
                    reader: Box::new(reader),
                    writer: Box::new(writer),
                })
            }
            Transport::Port(name) => {
                let (reader, writer) = open_port(name).await?;
                Ok(pollable(reader, writer).await)
            }
            Transport::Device(path) => {
                let (reader, writer) = open_device(path).await?;
                Ok(pollable(reader, writer).await)
            }
        }
    }
}

/// A device's two halves, on epoll when the device supports it (a virtio
/// port does), else as they are.
async fn pollable(reader: tokio::fs::File, writer: tokio::fs::File) -> Console {
    let reader = reader.into_std().await;
    let writer = writer.into_std().await;
    match (pollfd::reader(&reader), pollfd::writer(&writer)) {
        (Some(r), Some(w)) => Console {
            reader: Box::new(r),
            writer: Box::new(w),
        },
        _ => Console {
            reader: Box::new(tokio::fs::File::from_std(reader)),
            writer: Box::new(tokio::fs::File::from_std(writer)),
        },
    }
}

/// Connects to a Unix stream socket (for example a QEMU chardev socket in
/// server mode, or a test's listener).
pub async fn connect_unix(
    path: impl AsRef<Path>,
) -> Result<(OwnedReadHalf, OwnedWriteHalf), TransportError> {
    let path = path.as_ref();
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| TransportError::Connect {
            path: path.to_owned(),
            source,
        })?;
    Ok(stream.into_split())
}

/// The device path of the virtio port named `name` (`/dev/vportNpM`).
pub fn find_port(name: &str) -> Result<PathBuf, TransportError> {
    find_port_in(Path::new(SYSFS_VIRTIO_PORTS), Path::new("/dev"), name)
}

/// [`find_port`] with the sysfs directory and the device directory given
/// (for tests and unusual layouts). Ports are tried in name order.
pub fn find_port_in(sysfs: &Path, dev: &Path, name: &str) -> Result<PathBuf, TransportError> {
    let list_error = |source| TransportError::ListPorts {
        dir: sysfs.to_owned(),
        source,
    };
    let mut ports = std::fs::read_dir(sysfs)
        .map_err(list_error)?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(list_error)?;
    ports.sort();
    for port in ports {
        // A port without a name file (or an unreadable one) is not ours.
        let Ok(found) = std::fs::read_to_string(sysfs.join(&port).join("name")) else {
            continue;
        };
        if found.trim_end_matches(['\n', '\0']) == name {
            return Ok(dev.join(port));
        }
    }
    Err(TransportError::PortNotFound {
        name: name.to_owned(),
        dir: sysfs.to_owned(),
    })
}

/// Opens the virtio port named `name` (see [`find_port`] and [`open_device`]).
pub async fn open_port(name: &str) -> Result<(tokio::fs::File, tokio::fs::File), TransportError> {
    let path = find_port(name)?;
    open_device(&path).await
}

/// Opens a character device read and write as a (reader, writer) pair. A
/// terminal is put into raw mode first and never becomes the agent's
/// controlling terminal.
pub async fn open_device(
    path: impl AsRef<Path>,
) -> Result<(tokio::fs::File, tokio::fs::File), TransportError> {
    let path = path.as_ref().to_owned();
    let opening = path.clone();
    tokio::task::spawn_blocking(move || open_device_blocking(&opening))
        .await
        .map_err(|join| TransportError::OpenDevice {
            path,
            source: std::io::Error::other(join),
        })?
}

fn open_device_blocking(path: &Path) -> Result<(tokio::fs::File, tokio::fs::File), TransportError> {
    let open_error = |source| TransportError::OpenDevice {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(path)
        .map_err(open_error)?;
    if rustix::termios::isatty(&file) {
        let raw = rustix::termios::tcgetattr(&file).and_then(|mut termios| {
            termios.make_raw();
            rustix::termios::tcsetattr(&file, rustix::termios::OptionalActions::Now, &termios)
        });
        raw.map_err(|errno| TransportError::RawMode {
            path: path.to_owned(),
            source: errno.into(),
        })?;
    }
    let writer = file.try_clone().map_err(open_error)?;
    Ok((
        tokio::fs::File::from_std(file),
        tokio::fs::File::from_std(writer),
    ))
}
