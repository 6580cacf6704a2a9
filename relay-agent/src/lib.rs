//! The reference generation-1 guest agent: it runs commands and moves files
//! for the host, over one byte stream (its stdio, a Unix socket or a virtio
//! console port).
//!
//! Where it sits: `relay-agent -> relay-codec`, nothing else of this
//! workspace. The relay never links it; the CLI embeds it as the local
//! default guest by running [`Agent::serve`] over its own stdio. In a
//! microVM the binary is the initramfs's `/init`: see the [`init`] module
//! for PID 1's duties (mounts, modules, reaping, power-off).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use relay_agent::{Agent, AgentConfig, Transport};
//!
//! let console = Transport::Port("agent".into()).open().await?;
//! let end = Agent::new(AgentConfig::default())
//!     .serve(console.reader, console.writer)
//!     .await?;
//! println!("agent stopped: {end:?}");
//! # Ok(()) }
//! ```
//!
//! # Protocol rules this agent follows
//!
//! - It sends `core.ready` (id 0) once, first. Its times are nanoseconds of
//!   `CLOCK_BOOTTIME` (time since the guest booted): see [`BootTimes`].
//! - A session is keyed by the id of its `core.exec.request` or
//!   `core.fs.request`; every reply uses that id, and the last one
//!   (`core.exec.exited`, `core.fs.response`) carries `TERMINAL`.
//! - `core.exec.exited` is sent only after the process has exited **and**
//!   its stdout and stderr reached end of file: every byte is sent before the
//!   exit code. A background process that keeps the pipes open keeps the
//!   session open; a `core.exec.signal` that arrives after the main process
//!   ended goes to its process group (each command runs in its own group).
//!   A signal death is reported as `128 + signal`.
//! - `core.shutdown` kills every session's process group with `SIGKILL`,
//!   reaps the processes, sends nothing further for them and ends
//!   [`Agent::serve`] with [`ServeEnd::Shutdown`]; end of the console
//!   stream does the same and ends it with [`ServeEnd::Eof`].
//!
//! # Error rules
//!
//! **A command that cannot start** gets, on its session, one
//! `core.exec.stderr` chunk `relay-agent: cannot run "CMD": REASON\n` and
//! then `core.exec.exited` with code **127** when the program does not exist
//! (`REASON` is `No such file or directory`) or **126** for any other reason
//! (permission denied, not executable, a missing or non-directory `cwd`, an
//! unknown user, an invalid `env` entry or rlimit, `tty` together with
//! `user`). No `core.exec.started` is sent, and the agent keeps serving.
//!
//! **A malformed payload** (a valid frame whose body is not valid CBOR, has
//! an unknown type or another generation, or whose payload does not fit its
//! type) never stops the agent. If the frame carried `SESSION_START` (and no
//! session with that id is open) the agent answers that id so the session
//! closes: a `core.fs.request` with a bad payload gets `core.fs.response
//! {ok: false, error}`; anything else gets `core.exec.stderr` with
//! `relay-agent: malformed request: REASON\n` and `core.exec.exited` with
//! code **2**. Without `SESSION_START` the frame is logged and ignored.
//! Other sessions continue either way.
//!
//! **A malformed frame** on the console (a length below 5 or above 4 MiB)
//! is fatal: the stream cannot be trusted any more, so sessions are ended
//! as on shutdown and [`Agent::serve`] returns
//! [`AgentError::MalformedStream`]. The console ending inside a frame (a
//! host that stopped mid-write) is an end of file like any other.
//!
//! # Backpressure and flow control
//!
//! One reader decodes console frames and dispatches them; it never awaits a
//! session's output. Output from all sessions reaches the console through
//! one writer task fed by a channel bounded in bytes
//! ([`AgentConfig::outbound_budget`]); when the console is slow, session
//! pumps wait for room and stop reading their pipes, so processes block on
//! their own stdout. Client input (stdin, fs upload data) goes into a
//! per-session queue bounded in bytes ([`AgentConfig::input_queue_bytes`]).
//!
//! With flow control (offered by default, see [`AgentConfig::flow_window`]
//! and `docs/flow-control.md`) every session's output first takes credit
//! the relay returns as its client reads, and the relay sends a session's
//! input only while the agent has returned credit for what it delivered;
//! the input queue holds a window and one frame, so the reader never waits
//! for one session. Without it (plain generation 1) a full queue makes the
//! reader wait for it to drain, and one process that does not read its
//! stdin can hold up the console.
//!
//! A signal on an fs session cancels it (`ok: false`, "cancelled by a
//! signal"): the relay signals every session of a client that has gone.
//!
//! # Process groups
//!
//! Every exec runs in a process group of its own (a pty session is its
//! own session). `SIGKILL`, the relay's kill of a departed client's
//! sessions, goes to the whole group, so background jobs (`cmd &`,
//! `(cmd &)`) die with the command and stop holding its pipes; other
//! signals go to the main process while it runs and to the group after.
//! A process that leaves the group on purpose (`setsid`, a daemon's double
//! fork) escapes the kill: it keeps running, and if it still holds the
//! session's stdout or stderr the session stays open until it closes them.
//! As PID 1 (`--init`) the agent reaps such orphans when they exit.
//!
//! # What is left out
//!
//! - `tty` with `user`: the pty crate used here cannot switch users and
//!   doing it by hand needs `unsafe` `pre_exec`, which this crate forbids.
//! - rlimits are applied with `prlimit(2)` right after the process started
//!   and before `core.exec.started` is sent; the program's very first
//!   instructions (the dynamic loader) run before them. Setting them before
//!   `exec` needs `unsafe` `pre_exec`.
//! - Supplementary groups: a process started as another user gets that
//!   user's primary group only (std clears the supplementary groups).
//! - Realtime signals (`SIGRTMIN..`): only named signals are delivered.
#![forbid(unsafe_code)]

mod agent;
mod clock;
mod error;
mod exec;
mod flow;
mod fs;
pub mod init;
mod outbound;
mod pollfd;
mod pty;
mod queue;
mod sessions;
mod spawn;
mod transport;

pub use agent::{Agent, AgentConfig, ServeEnd};
pub use clock::BootTimes;
pub use error::{AgentError, TransportError};
pub use transport::{
    BoxedReader, BoxedWriter, Console, SYSFS_VIRTIO_PORTS, Transport, connect_unix, find_port,
    find_port_in, open_device, open_port,
};
