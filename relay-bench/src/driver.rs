//! The driver's side of a `serve` process: start it in a private directory,
//! wait until it is ready, read its memory from `/proc`, stop it.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::serve::ServeOptions;

/// A running `relay-bench serve` child. Dropping it ends the process and
/// removes its directory.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    dir: PathBuf,
    socket: PathBuf,
}

impl Server {
    /// Starts `serve` with `opts` (its socket is placed in a fresh
    /// directory) and waits for its `ready` line.
    pub(crate) fn start(opts: &ServeOptions) -> io::Result<Server> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("relay-bench-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("relay.sock");
        let mut opts = opts.clone();
        opts.socket = socket.clone();
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(opts.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(arenas) = opts.malloc_arenas {
            command.env("MALLOC_ARENA_MAX", arenas.to_string());
        }
        let mut child = command.spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(io::Error::other("serve: stdio not piped"));
        };
        let mut server = Server {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            dir,
            socket,
        };
        let mut line = String::new();
        server.stdout.read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err(io::Error::other(format!(
                "serve {} did not get ready (said {line:?})",
                opts.imp.name()
            )));
        }
        Ok(server)
    }

    /// Where clients connect.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's memory now.
    pub(crate) fn memory(&self) -> Memory {
        Memory::of(self.pid())
    }

    /// The relay's statistics as JSON (`{}` for implementations without).
    pub(crate) fn stats(&mut self) -> Option<serde_json::Value> {
        let stdin = self.stdin.as_mut()?;
        writeln!(stdin, "stats").ok()?;
        stdin.flush().ok()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).ok()?;
        serde_json::from_str(&line).ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Memory {
    /// `VmRSS`: resident now, in bytes.
    pub(crate) rss: u64,
    /// `VmHWM`: the most ever resident, in bytes.
    pub(crate) peak: u64,
}

impl Memory {
    pub(crate) fn of(pid: u32) -> Memory {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|status| Memory::parse(&status))
            .unwrap_or_default()
    }

    fn parse(status: &str) -> Memory {
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .map_or(0, |n| n * 1024)
        };
        Memory {
            rss: kib("VmRSS:"),
            peak: kib("VmHWM:"),
        }
    }
}

/// Restricts the calling thread (and so every thread and process it starts
/// afterwards) to CPU `cpu`.
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(io::Error::from)
}

/// The CPUs a process may run on, as the kernel lists them.
pub(crate) fn cpus_allowed(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_proc_status_lines() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(
            Memory::parse(status),
            Memory {
                rss: 1024 * 1024,
                peak: 2048 * 1024
            }
        );
        let own = Memory::of(std::process::id());
        assert!(own.rss > 0 && own.peak >= own.rss);
    }

    #[test]
    fn a_pinned_thread_runs_on_one_cpu() {
        let allowed = std::thread::spawn(|| {
            pin_current_thread(0).unwrap();
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
                .unwrap()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Cpus_allowed_list:")
                        .map(|s| s.trim().to_owned())
                })
                .unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(allowed, "0");
    }
}
