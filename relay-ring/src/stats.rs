//! Statistics snapshots of the rings ([`RingStats`], [`DuplexStats`]) and the cloneable [`RingMonitor`] that takes them.

use crate::pipe::Pipe;
use crate::sync::Arc;

/// A snapshot of one ring direction.
///
/// Fields are read one after another with no lock, so a snapshot taken while
/// data moves can be slightly inconsistent (for example `len` may lag
/// `bytes_written - bytes_read`); each field on its own is exact at the moment
/// it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RingStats {
    /// Size of the ring in bytes.
    pub capacity: usize,
    /// Bytes in the ring, written and not yet read.
    pub len: usize,
    /// Bytes written into the ring since it was created (wrapping).
    pub bytes_written: u64,
    /// Bytes read out of the ring since it was created (wrapping).
    pub bytes_read: u64,
    /// Times the reader found the ring empty and announced that it would wait
    /// for data.
    pub data_parks: u64,
    /// Times the writer wrote the data-available eventfd because it found the
    /// reader parked. Never above `data_parks` (each wakeup answers one
    /// parking), and far below the number of writes: wakeups coalesce.
    pub data_wakeups: u64,
    /// Times the writer found the ring full and announced that it would wait
    /// for space (backpressure stalls).
    pub space_parks: u64,
    /// Times the reader wrote the space-available eventfd because it found the
    /// writer parked. Never above `space_parks`.
    pub space_wakeups: u64,
    /// The writer closed or was dropped.
    pub writer_closed: bool,
    /// The reader was dropped.
    pub reader_closed: bool,
}

/// Snapshots of both directions of a [`duplex`](crate::duplex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DuplexStats {
    /// The ring the device writes and the relay reads.
    pub guest_to_host: RingStats,
    /// The ring the relay writes and the device reads.
    pub host_to_guest: RingStats,
}

/// A cheap, cloneable, thread-safe handle that takes [`DuplexStats`]
/// snapshots without disturbing either end.
///
/// It keeps the rings' memory and eventfds alive until it is dropped, but
/// does not keep either end open: dropping a half closes it as usual.
#[derive(Clone)]
pub struct RingMonitor {
    guest_to_host: Arc<Pipe>,
    host_to_guest: Arc<Pipe>,
}

impl RingMonitor {
    pub(crate) fn new(guest_to_host: Arc<Pipe>, host_to_guest: Arc<Pipe>) -> Self {
        Self {
            guest_to_host,
            host_to_guest,
        }
    }

    /// Both directions.
    pub fn snapshot(&self) -> DuplexStats {
        DuplexStats {
            guest_to_host: self.guest_to_host(),
            host_to_guest: self.host_to_guest(),
        }
    }

    /// The ring the device writes and the relay reads.
    pub fn guest_to_host(&self) -> RingStats {
        self.guest_to_host.stats()
    }

    /// The ring the relay writes and the device reads.
    pub fn host_to_guest(&self) -> RingStats {
        self.host_to_guest.stats()
    }
}

impl std::fmt::Debug for RingMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingMonitor")
            .field("stats", &self.snapshot())
            .finish()
    }
}
