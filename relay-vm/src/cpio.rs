//! A writer of `newc` cpio archives (the format the kernel unpacks as an
//! initramfs), so building one needs neither root nor the `cpio` tool:
//! device nodes are just header fields.
//!
//! Each entry is a 110-byte ASCII header (`070701`, then 13 fields of 8 hex
//! digits), the NUL-terminated name padded to a multiple of 4 bytes, and the
//! data padded the same way. The archive ends with an entry named
//! `TRAILER!!!`. Entries get increasing inode numbers, one link each, owner
//! root and mtime 0, so the same inputs always give the same bytes.

use std::io::{self, Write};

/// The magic of the `newc` format (no checksums).
const MAGIC: &[u8; 6] = b"070701";
/// Name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Writes a `newc` archive entry by entry; [`Archive::finish`] adds the
/// trailer. Names are paths inside the archive, without a leading `/`
/// (one is stripped if given).
#[derive(Debug)]
pub struct Archive<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

/// The fields of one header that differ between entries.
struct Header<'a> {
    name: &'a str,
    mode: u32,
    size: u32,
    rdev: (u32, u32),
}

impl<W: Write> Archive<W> {
    /// An empty archive writing to `out`.
    pub fn new(out: W) -> Archive<W> {
        Archive {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    /// A directory with permission bits `perm` (such as `0o755`).
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.entry(
            &Header {
                name,
                mode: S_IFDIR | perm,
                size: 0,
                rdev: (0, 0),
            },
            &[],
        )
    }

    /// A regular file with permission bits `perm` and content `data`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: larger than 4 GiB"),
            )
        })?;
        self.entry(
            &Header {
                name,
                mode: S_IFREG | perm,
                size,
                rdev: (0, 0),
            },
            data,
        )
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        let data = target.as_bytes();
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: link target too long"),
            )
        })?;
        self.entry(
            &Header {
                name,
                mode: S_IFLNK | 0o777,
                size,
                rdev: (0, 0),
            },
            data,
        )
    }

    /// A character device node `major:minor` with permission bits `perm`.
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(
            &Header {
                name,
                mode: S_IFCHR | perm,
                size: 0,
                rdev: (major, minor),
            },
            &[],
        )
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        // The trailer has inode 0, like GNU cpio's.
        self.next_ino = 0;
        self.entry(
            &Header {
                name: TRAILER,
                mode: 0,
                size: 0,
                rdev: (0, 0),
            },
            &[],
        )?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(&mut self, header: &Header<'_>, data: &[u8]) -> io::Result<()> {
        let name = header.name.trim_start_matches('/');
        if name.is_empty() || name.as_bytes().contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad archive name {:?}", header.name),
            ));
        }
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        let is_dir = header.mode & 0o170_000 == S_IFDIR;
        let fields: [u32; 13] = [
            ino,
            header.mode,
            0,                          // uid
            0,                          // gid
            if is_dir { 2 } else { 1 }, // nlink
            0,                          // mtime
            header.size,
            0, // devmajor
            0, // devminor
            header.rdev.0,
            header.rdev.1,
            u32::try_from(name.len() + 1).unwrap_or(u32::MAX), // namesize, NUL included
            0,                                                 // check
        ];
        let mut head = Vec::with_capacity(110 + name.len() + 4);
        head.extend_from_slice(MAGIC);
        for field in fields {
            head.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        head.extend_from_slice(name.as_bytes());
        head.push(0);
        self.write_padded(&head)?;
        self.write_padded(data)
    }

    /// Writes `bytes` and pads the archive to a multiple of 4 bytes.
    fn write_padded(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..pad])?;
        self.written += pad as u64;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One entry read back: name, mode, rdev, data.
    pub(crate) type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// A reader for the tests, written from the format description.
    pub(crate) fn read_all(mut bytes: &[u8]) -> Vec<Entry> {
        let mut total = 0usize;
        let mut entries = Vec::new();
        let field = |head: &[u8], i: usize| {
            let text = std::str::from_utf8(&head[6 + 8 * i..6 + 8 * (i + 1)]).unwrap();
            u32::from_str_radix(text, 16).unwrap()
        };
        loop {
            assert_eq!(&bytes[..6], MAGIC);
            let head = &bytes[..110];
            let (mode, size, namesize) = (field(head, 1), field(head, 6), field(head, 11));
            let name_end = 110 + namesize as usize;
            let name = std::str::from_utf8(&bytes[110..name_end - 1])
                .unwrap()
                .to_owned();
            assert_eq!(bytes[name_end - 1], 0);
            let data_start = (total + name_end).next_multiple_of(4) - total;
            let data_end = data_start + size as usize;
            let data = bytes[data_start..data_end].to_vec();
            let next = (total + data_end).next_multiple_of(4) - total;
            total += next;
            bytes = &bytes[next..];
            if name == TRAILER {
                assert!(bytes.is_empty());
                return entries;
            }
            entries.push((name, mode, (field(head, 9), field(head, 10)), data));
        }
    }

    #[test]
    fn entries_read_back_with_their_types_and_data() {
        let mut archive = Archive::new(Vec::new());
        archive.dir("dev", 0o755).unwrap();
        archive.char_device("/dev/console", 0o600, 5, 1).unwrap();
        archive.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        archive.file("empty", 0o644, b"").unwrap();
        archive.symlink("bin/sh", "busybox").unwrap();
        let bytes = archive.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = read_all(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["dev", "dev/console", "init", "empty", "bin/sh"]);
        assert_eq!(entries[0].1, 0o040_755);
        assert_eq!((entries[1].1, entries[1].2), (0o020_600, (5, 1)));
        assert_eq!(
            (entries[2].1, entries[2].3.as_slice()),
            (0o100_755, &b"#!/bin/sh\n"[..])
        );
        assert_eq!(
            (entries[4].1, entries[4].3.as_slice()),
            (0o120_777, &b"busybox"[..])
        );
    }

    #[test]
    fn a_header_has_the_exact_newc_layout() {
        let mut archive = Archive::new(Vec::new());
        archive.file("a", 0o644, b"xyz").unwrap();
        let bytes = archive.finish().unwrap();
        let expected_head = concat!(
            "070701", "00000001", "000081A4", "00000000", "00000000", "00000001", "00000000",
            "00000003", "00000000", "00000000", "00000000", "00000000", "00000002", "00000000",
        );
        assert_eq!(&bytes[..110], expected_head.as_bytes());
        // "a\0" ends at 112, already aligned; then "xyz" and one pad byte.
        assert_eq!(&bytes[110..116], b"a\0xyz\0");
        assert_eq!(&bytes[116..122], b"070701");
    }

    #[test]
    fn empty_or_nul_names_are_refused() {
        let mut archive = Archive::new(Vec::new());
        assert!(archive.file("/", 0o644, b"").is_err());
        assert!(archive.file("a\0b", 0o644, b"").is_err());
    }
}
