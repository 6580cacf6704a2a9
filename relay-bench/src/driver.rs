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

    /// CPU the relay's own threads (every thread but the guest's) have
    /// used so far.
    pub(crate) fn relay_cpu(&self) -> CpuUse {
        CpuUse::of_threads(self.pid(), |name| name != AGENT_THREAD)
    }

    /// CPU the guest has used so far: the bench agent's threads, and the
    /// processes the server started (the reference agent; not the commands
    /// the agent runs).
    pub(crate) fn agent_cpu(&self) -> CpuUse {
        children(self.pid())
            .into_iter()
            .map(|child| CpuUse::of_threads(child, |_| true))
            .fold(
                CpuUse::of_threads(self.pid(), |name| name == AGENT_THREAD),
                CpuUse::plus,
            )
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

/// The name of every thread in a `serve` process that plays the guest
/// (the bench agent and its helpers), so CPU accounting can tell the
/// relay's own work from the agent's.
pub(crate) const AGENT_THREAD: &str = "bench-agent";

/// CPU a set of threads used: time on a CPU and how many times they were
/// scheduled in (each a wakeup or a preemption), from
/// `/proc/<pid>/task/<tid>/schedstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuUse {
    /// Nanoseconds on a CPU.
    pub(crate) ns: u64,
    /// Times scheduled in.
    pub(crate) runs: u64,
}

impl CpuUse {
    /// What the threads of `pid` whose name `keep` accepts have used so far
    /// (threads that ended take their share with them).
    pub(crate) fn of_threads(pid: u32, keep: impl Fn(&str) -> bool) -> CpuUse {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return CpuUse::default();
        };
        tasks
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|name| keep(name.trim_end()))
            })
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .map(|line| CpuUse::parse(&line))
            .fold(CpuUse::default(), CpuUse::plus)
    }

    fn parse(schedstat: &str) -> CpuUse {
        let mut fields = schedstat.split_whitespace().map(|f| f.parse().unwrap_or(0));
        let ns = fields.next().unwrap_or(0);
        let runs = fields.nth(1).unwrap_or(0);
        CpuUse { ns, runs }
    }

    fn plus(self, other: CpuUse) -> CpuUse {
        CpuUse {
            ns: self.ns + other.ns,
            runs: self.runs + other.runs,
        }
    }

    /// What was used between `earlier` and this.
    pub(crate) fn since(self, earlier: CpuUse) -> CpuUse {
        CpuUse {
            ns: self.ns.saturating_sub(earlier.ns),
            runs: self.runs.saturating_sub(earlier.runs),
        }
    }

    /// Microseconds on a CPU per one of `count` operations.
    pub(crate) fn us_per(self, count: usize) -> f64 {
        self.ns as f64 / 1000.0 / count.max(1) as f64
    }

    /// Times scheduled in per one of `count` operations.
    pub(crate) fn runs_per(self, count: usize) -> f64 {
        self.runs as f64 / count.max(1) as f64
    }
}

/// The processes `pid` started that still run.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
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
    fn cpu_use_is_read_from_schedstat_and_counts_a_busy_thread() {
        assert_eq!(
            CpuUse::parse("294032 2036204 2\n"),
            CpuUse {
                ns: 294_032,
                runs: 2
            }
        );
        let me = std::process::id();
        let relay = |name: &str| name != AGENT_THREAD;
        let before = CpuUse::of_threads(me, relay);
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let used = CpuUse::of_threads(me, relay).since(before);
        assert!(used.ns > 0 && used.runs > 0, "{used:?}");
        assert_eq!(CpuUse::of_threads(me, |_| false), CpuUse::default());
    }

    #[test]
    fn the_children_of_a_process_are_listed() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let listed = children(std::process::id()).contains(&child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(listed);
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
