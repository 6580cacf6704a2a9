//! `Read`/`Write` adapters over the device end of the real ring, so the
//! bench agent can sit behind the relay-server as a console device would.

use std::io::{self, Read, Write};

use relay_ring::{DeviceReader, DeviceWriter};

/// How the device side waits for the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceWait {
    /// The ring's blocking helpers: watch the ring for about 20 µs, then
    /// park on the eventfd.
    Spin,
    /// Park on the eventfd at once (poll(2)), like a VMM event loop that
    /// watches the eventfd with everything else it serves.
    Park,
}

impl DeviceWait {
    pub(crate) fn parse(text: &str) -> Option<DeviceWait> {
        match text {
            "spin" => Some(DeviceWait::Spin),
            "park" => Some(DeviceWait::Park),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            DeviceWait::Spin => "spin",
            DeviceWait::Park => "park",
        }
    }
}

fn is_would_block<T>(result: &io::Result<T>) -> bool {
    matches!(result, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// The device's reading half (host to guest) as a blocking `Read`.
#[derive(Debug)]
pub(crate) struct RingRead {
    pub(crate) inner: DeviceReader,
    pub(crate) wait: DeviceWait,
}

impl Read for RingRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.wait {
            DeviceWait::Spin => self.inner.read_blocking(buf),
            DeviceWait::Park => loop {
                let result = self.inner.read(buf);
                if !is_would_block(&result) {
                    return result;
                }
                self.inner.wait_readable(None)?;
            },
        }
    }
}

/// The device's writing half (guest to host) as a blocking `Write`.
#[derive(Debug)]
pub(crate) struct RingWrite {
    pub(crate) inner: DeviceWriter,
    pub(crate) wait: DeviceWait,
}

impl Write for RingWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.wait {
            DeviceWait::Spin => self.inner.write_blocking(buf),
            DeviceWait::Park => loop {
                let result = self.inner.write(buf);
                if !is_would_block(&result) {
                    return result;
                }
                self.inner.wait_writable(None)?;
            },
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_wait_modes_carry_every_byte_through_a_small_ring() {
        for wait in [DeviceWait::Spin, DeviceWait::Park] {
            let (writer, reader) = relay_ring::pipe(1024).unwrap();
            let data: Vec<u8> = (0..100_000u32).map(|i| i.to_le_bytes()[1]).collect();
            let sent = data.clone();
            let producer = std::thread::spawn(move || {
                let mut w = RingWrite {
                    inner: writer,
                    wait,
                };
                w.write_all(&sent).unwrap();
            });
            let mut r = RingRead {
                inner: reader,
                wait,
            };
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            producer.join().unwrap();
            assert_eq!(got, data, "{}", wait.name());
        }
    }
}
