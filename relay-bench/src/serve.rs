//! `relay-bench serve`: one implementation under test, alone in its own
//! process so that the client load never shares its threads and its memory
//! can be read from `/proc/<pid>/status`.
//!
//! The process prints `ready` on stdout once clients can connect, answers
//! a `stats` line on stdin with one JSON line, and exits at end of stdin.

use std::io::{self, BufRead, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

use bytes::BytesMut;
use relay_codec::{Frame, Handshake, LEGACY_SLOTS, LEGACY_STEP, bounds_slot_range};
use relay_server::{HandshakeForm, Relay, RelayConfig, StatsHandle};

use crate::agent::{self, Setup};
use crate::driver::AGENT_THREAD;
use crate::naive;
use crate::transport::{DeviceWait, RingRead, RingWrite};

/// Which relay is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Impl {
    /// No relay: the bench agent answers on the client's socket itself.
    Raw,
    /// The hop floor: the relay's two hops (client socket, a thread, a
    /// ring with eventfds, the device thread, and back) with no routing or
    /// policy: each client gets its own ring and agent, bytes copied as
    /// they come. What the relay's work costs is ours over this.
    Floor,
    /// The reference design, in [`crate::naive`].
    Naive,
    /// relay-server over relay-ring.
    Ours,
}

impl Impl {
    pub(crate) const ALL: [Impl; 4] = [Impl::Raw, Impl::Floor, Impl::Naive, Impl::Ours];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Impl::Raw => "raw",
            Impl::Floor => "floor",
            Impl::Naive => "naive",
            Impl::Ours => "ours",
        }
    }

    fn parse(text: &str) -> Option<Impl> {
        Impl::ALL.into_iter().find(|i| i.name() == text)
    }
}

/// The handshake form, and so the number of client slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// 16 slots, 4-byte offset.
    Legacy,
    /// This many slots, 8-byte bounds.
    Bounds(u32),
}

impl Form {
    pub(crate) fn slots(self) -> u32 {
        match self {
            Form::Legacy => LEGACY_SLOTS,
            Form::Bounds(slots) => slots,
        }
    }

    fn arg(self) -> String {
        match self {
            Form::Legacy => "legacy".into(),
            Form::Bounds(slots) => format!("bounds:{slots}"),
        }
    }

    fn parse(text: &str) -> Option<Form> {
        match text.split_once(':') {
            None if text == "legacy" => Some(Form::Legacy),
            Some(("bounds", n)) => n.parse().ok().filter(|&n| n > 0).map(Form::Bounds),
            _ => None,
        }
    }

    /// The greeting the relay sends a client in `slot`.
    fn greeting(self, slot: u32, ready: &Frame) -> Vec<u8> {
        let handshake = match self {
            Form::Legacy => Handshake::Legacy {
                offset: (slot % LEGACY_SLOTS) * LEGACY_STEP,
            },
            Form::Bounds(slots) => match bounds_slot_range(slot % slots, slots) {
                Some(range) => Handshake::Bounds { range },
                None => return Vec::new(),
            },
        };
        let mut out = BytesMut::new();
        handshake.encode(ready, &mut out);
        out.to_vec()
    }
}

/// What plays the guest behind the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Device {
    /// The bench agent ([`crate::agent`]) on a thread.
    Bench,
    /// The reference agent (relay-agent) as a child process whose stdio is
    /// pumped into the ring; ours only. It offers flow control with its
    /// default window (1 MiB) whatever `flow` says.
    Agent,
}

/// The tokio runtime of a relay process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runtime {
    /// One worker per CPU.
    Multi,
    /// Everything on one thread.
    Current,
}

/// Everything `serve` needs; turned into arguments for the child process.
#[derive(Debug, Clone)]
pub(crate) struct ServeOptions {
    pub(crate) imp: Impl,
    pub(crate) socket: PathBuf,
    pub(crate) form: Form,
    pub(crate) wait: DeviceWait,
    pub(crate) device: Device,
    pub(crate) runtime: Runtime,
    pub(crate) ring: usize,
    pub(crate) client_budget: usize,
    pub(crate) total_budget: usize,
    /// `MALLOC_ARENA_MAX` for the process (an environment variable, not an
    /// argument); `None` leaves glibc's default (arenas per thread).
    pub(crate) malloc_arenas: Option<u32>,
    /// The bench agent offers flow control with this window (ours only:
    /// no other implementation returns credit).
    pub(crate) flow: Option<u32>,
}

impl ServeOptions {
    pub(crate) fn new(imp: Impl) -> ServeOptions {
        ServeOptions {
            imp,
            socket: PathBuf::new(),
            form: Form::Legacy,
            wait: DeviceWait::Park,
            device: Device::Bench,
            runtime: Runtime::Current,
            ring: relay_ring::DEFAULT_CAPACITY,
            client_budget: 16 << 20,
            total_budget: 256 << 20,
            malloc_arenas: None,
            flow: None,
        }
    }

    pub(crate) fn to_args(&self) -> Vec<String> {
        vec![
            "serve".into(),
            format!("--impl={}", self.imp.name()),
            format!("--socket={}", self.socket.display()),
            format!("--form={}", self.form.arg()),
            format!("--device-wait={}", self.wait.name()),
            format!(
                "--device={}",
                match self.device {
                    Device::Bench => "bench",
                    Device::Agent => "agent",
                }
            ),
            format!(
                "--runtime={}",
                match self.runtime {
                    Runtime::Multi => "multi",
                    Runtime::Current => "current",
                }
            ),
            format!("--ring={}", self.ring),
            format!("--client-budget={}", self.client_budget),
            format!("--total-budget={}", self.total_budget),
            format!("--flow={}", self.flow.unwrap_or(0)),
        ]
    }

    pub(crate) fn parse(args: &[String]) -> Result<ServeOptions, String> {
        let mut opts = ServeOptions::new(Impl::Ours);
        for arg in args {
            let (key, value) = arg
                .split_once('=')
                .ok_or_else(|| format!("expected --key=value, got `{arg}`"))?;
            let bad = || format!("bad value for {key}: `{value}`");
            let number = || value.parse::<usize>().map_err(|_| bad());
            match key {
                "--impl" => opts.imp = Impl::parse(value).ok_or_else(bad)?,
                "--socket" => opts.socket = value.into(),
                "--form" => opts.form = Form::parse(value).ok_or_else(bad)?,
                "--device-wait" => opts.wait = DeviceWait::parse(value).ok_or_else(bad)?,
                "--device" => {
                    opts.device = match value {
                        "bench" => Device::Bench,
                        "agent" => Device::Agent,
                        _ => return Err(bad()),
                    }
                }
                "--runtime" => {
                    opts.runtime = match value {
                        "multi" => Runtime::Multi,
                        "current" => Runtime::Current,
                        _ => return Err(bad()),
                    }
                }
                "--ring" => opts.ring = number()?,
                "--client-budget" => opts.client_budget = number()?,
                "--total-budget" => opts.total_budget = number()?,
                "--flow" => {
                    let window = u32::try_from(number()?).map_err(|_| bad())?;
                    opts.flow = (window > 0).then_some(window);
                }
                _ => return Err(format!("unknown option `{key}`")),
            }
        }
        if opts.socket.as_os_str().is_empty() {
            return Err("--socket is required".into());
        }
        Ok(opts)
    }
}

/// Runs `serve` until stdin ends.
pub(crate) fn run(opts: &ServeOptions) -> Result<(), String> {
    let fail =
        |what: &str, e: &dyn std::fmt::Display| format!("serve {}: {what}: {e}", opts.imp.name());
    match opts.imp {
        Impl::Raw => serve_raw(opts).map_err(|e| fail("raw", &e)),
        Impl::Floor => {
            let runtime = runtime(opts.runtime).map_err(|e| fail("runtime", &e))?;
            runtime
                .block_on(serve_floor(opts))
                .map_err(|e| fail("floor", &e))
        }
        Impl::Naive => {
            let runtime = runtime(opts.runtime).map_err(|e| fail("runtime", &e))?;
            let (device, end) = naive::duplex().map_err(|e| fail("queues", &e))?;
            // The naive relay knows nothing of flow control.
            spawn_agent(move || {
                agent::serve(device.rx, Box::new(device.tx), Setup::behind_relay(None))
            })
            .map_err(|e| fail("agent thread", &e))?;
            runtime
                .block_on(async {
                    let listener = tokio::net::UnixListener::bind(&opts.socket)?;
                    announce(None);
                    naive::run(listener, end, opts.form).await
                })
                .map_err(|e| fail("relay", &e))
        }
        Impl::Ours => {
            let runtime = runtime(opts.runtime).map_err(|e| fail("runtime", &e))?;
            let (device, relay_end) =
                relay_ring::duplex(opts.ring).map_err(|e| fail("ring", &e))?;
            match opts.device {
                Device::Bench => {
                    let (rx, tx) = device.split();
                    let wait = opts.wait;
                    let setup = Setup::behind_relay(opts.flow);
                    spawn_agent(move || {
                        agent::serve(
                            RingRead { inner: rx, wait },
                            Box::new(RingWrite { inner: tx, wait }),
                            setup,
                        )
                    })
                    .map_err(|e| fail("agent thread", &e))?;
                }
                Device::Agent => start_reference_agent(device, opts.wait)
                    .map_err(|e| fail("reference agent", &e))?,
            }
            let form = match opts.form {
                Form::Legacy => HandshakeForm::Legacy,
                Form::Bounds(slots) => HandshakeForm::Bounds { slots },
            };
            let config = RelayConfig::new(&opts.socket)
                .with_handshake(form)
                .with_client_queue_budget(opts.client_budget)
                .with_total_queue_budget(opts.total_budget);
            runtime.block_on(async {
                let mut relay =
                    Relay::start_on_ring(config, relay_end).map_err(|e| fail("start", &e))?;
                if !relay.ready().await {
                    return Err(format!(
                        "relay ended before ready: {:?}",
                        relay.join().await
                    ));
                }
                announce(Some(relay.stats_handle()));
                relay
                    .join()
                    .await
                    .map(|_| ())
                    .map_err(|e| fail("relay", &e))
            })
        }
    }
}

fn runtime(kind: Runtime) -> io::Result<tokio::runtime::Runtime> {
    match kind {
        Runtime::Multi => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        Runtime::Current => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
}

/// Tells the driver the relay is ready, and serves its stdin commands on a
/// thread: `stats` prints one JSON line; end of stdin ends the process.
fn announce(stats: Option<StatsHandle>) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim() == "stats" {
                let json = stats
                    .as_ref()
                    .and_then(|s| serde_json::to_string(&s.stats()).ok())
                    .unwrap_or_else(|| "{}".into());
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{json}");
                let _ = out.flush();
            }
        }
        std::process::exit(0);
    });
}

/// The floor: the bench agent answers on each client's own socket, after
/// the same greeting a relay sends.
fn serve_raw(opts: &ServeOptions) -> io::Result<()> {
    let listener = UnixListener::bind(&opts.socket)?;
    announce(None);
    let ready = Arc::new(agent::ready_frame(None));
    let form = opts.form;
    for (slot, stream) in (0u32..).zip(listener.incoming()) {
        let stream = stream?;
        let ready = ready.clone();
        spawn_agent(move || -> io::Result<()> {
            let mut stream: UnixStream = stream;
            stream.write_all(&form.greeting(slot, &ready))?;
            let reader = stream.try_clone()?;
            agent::serve(reader, Box::new(stream), Setup::RAW)
        })?;
    }
    Ok(())
}

/// The hop floor: per client a ring, the bench agent on its device end
/// (greeting the client itself, as on the raw floor), and two copies
/// between the socket and the ring's relay end.
async fn serve_floor(opts: &ServeOptions) -> io::Result<()> {
    let listener = tokio::net::UnixListener::bind(&opts.socket)?;
    announce(None);
    let ready = Arc::new(agent::ready_frame(None));
    let (form, ring, wait) = (opts.form, opts.ring, opts.wait);
    for slot in 0u32.. {
        let (stream, _) = listener.accept().await?;
        let (device, relay_end) = relay_ring::duplex(ring)?;
        let (rx, tx) = device.split();
        spawn_agent(move || {
            agent::serve(
                RingRead { inner: rx, wait },
                Box::new(RingWrite { inner: tx, wait }),
                Setup::RAW,
            )
        })?;
        let greeting = form.greeting(slot, &ready);
        tokio::spawn(async move {
            let (mut from_ring, mut to_ring) = relay_end.into_split()?;
            let (mut from_client, mut to_client) = stream.into_split();
            to_client.write_all(&greeting).await?;
            let up = tokio::io::copy(&mut from_client, &mut to_ring);
            let down = tokio::io::copy(&mut from_ring, &mut to_client);
            tokio::select! {
                _ = up => {}
                _ = down => {}
            }
            io::Result::Ok(())
        });
    }
    Ok(())
}

/// Starts a thread that plays the guest, named so that CPU accounting
/// leaves it out of the relay's share (threads it starts inherit the name).
fn spawn_agent<T: Send + 'static>(
    body: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new()
        .name(AGENT_THREAD.into())
        .spawn(body)
}

/// Runs `relay-bench agent` (the reference agent on its stdio) as a child
/// and pumps its stdio into the device end of the ring, as a console
/// backend would.
fn start_reference_agent(device: relay_ring::DeviceEnd, wait: DeviceWait) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("agent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let (mut child_in, mut child_out) = match (child.stdin.take(), child.stdout.take()) {
        (Some(i), Some(o)) => (i, o),
        _ => return Err(io::Error::other("child stdio not piped")),
    };
    let (rx, tx) = device.split();
    std::thread::spawn(move || -> io::Result<()> {
        let mut ring = RingWrite { inner: tx, wait };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = child_out.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            ring.write_all(&buf[..n])?;
        }
    });
    std::thread::spawn(move || -> io::Result<()> {
        let mut ring = RingRead { inner: rx, wait };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = ring.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            child_in.write_all(&buf[..n])?;
        }
    });
    // The child ends at end of its stdin, when this process ends.
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// `relay-bench agent`: the reference agent over this process's stdio.
pub(crate) fn run_reference_agent() -> Result<(), String> {
    use relay_agent::{Agent, AgentConfig, Transport};
    let agent = Agent::new(AgentConfig::default());
    let runtime = runtime(Runtime::Current).map_err(|e| e.to_string())?;
    let result = runtime.block_on(async {
        let console = Transport::Stdio.open().await.map_err(|e| e.to_string())?;
        agent
            .serve(console.reader, console.writer)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    runtime.shutdown_background();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_options_survive_the_command_line() {
        let mut opts = ServeOptions::new(Impl::Naive);
        opts.socket = "/tmp/x/s.sock".into();
        opts.form = Form::Bounds(128);
        opts.wait = DeviceWait::Spin;
        opts.device = Device::Agent;
        opts.runtime = Runtime::Current;
        opts.client_budget = 5;
        opts.flow = Some(1 << 20);
        let args = opts.to_args();
        assert_eq!(args[0], "serve");
        let back = ServeOptions::parse(&args[1..]).unwrap();
        assert_eq!(back.to_args(), args);
        assert!(ServeOptions::parse(&["--impl=other".into()]).is_err());
    }

    #[test]
    fn greetings_decode_as_the_form_they_were_made_in() {
        let ready = agent::ready_frame(None);
        let legacy = Form::Legacy.greeting(3, &ready);
        let (handshake, frame, used) = Handshake::decode(&legacy).unwrap().unwrap();
        assert_eq!(
            handshake,
            Handshake::Legacy {
                offset: 3 * LEGACY_STEP
            }
        );
        assert_eq!((frame, used), (ready.clone(), legacy.len()));
        let bounds = Form::Bounds(128).greeting(127, &ready);
        let (handshake, _, _) = Handshake::decode(&bounds).unwrap().unwrap();
        assert!(matches!(handshake, Handshake::Bounds { .. }));
    }

    /// The bench agent with flow control behind the real relay: a stream of
    /// many windows arrives whole only if credit makes the round trip.
    #[test]
    fn a_flow_controlled_stream_of_many_windows_crosses_our_relay() {
        use crate::load::{self, Conn};
        use crate::protocol;
        use crate::transport::{DeviceWait, RingRead, RingWrite};

        let dir = std::env::temp_dir().join(format!("relay-bench-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("relay.sock");
        let window = 64 * 1024;
        let (device, relay_end) = relay_ring::duplex(64 * 1024).unwrap();
        let (rx, tx) = device.split();
        let wait = DeviceWait::Park;
        std::thread::spawn(move || {
            agent::serve(
                RingRead { inner: rx, wait },
                Box::new(RingWrite { inner: tx, wait }),
                Setup::behind_relay(Some(window)),
            )
        });
        let config = RelayConfig::new(&socket);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let relay = std::thread::spawn(move || {
            let runtime = runtime(Runtime::Current).unwrap();
            runtime.block_on(async move {
                let mut relay = Relay::start_on_ring(config, relay_end).unwrap();
                assert!(relay.ready().await);
                ready_tx
                    .send((relay.stats_handle(), relay.shutdown_handle()))
                    .unwrap();
                relay.join().await.map(|_| ())
            })
        });
        let (stats, shutdown) = ready_rx.recv().unwrap();

        let mut conn = Conn::connect(&socket).unwrap();
        conn.sessions = true;
        let total = 64 * u64::from(window);
        let got = load::bulk_down(&mut conn, total, 4096).unwrap();
        assert!(!got.cut_off);
        assert_eq!(
            got.bytes,
            total + protocol::MIN_TAGGED as u64,
            "every frame and the end"
        );
        // A second stream on the same session goes on with its credit.
        let again = load::bulk_down(&mut conn, total, 4096).unwrap();
        assert_eq!(again.bytes, got.bytes);
        let flow = stats.stats().flow.unwrap();
        assert_eq!(flow.window, window);
        assert!(flow.credits_sent >= 2 * 64, "{flow:?}");

        drop(conn);
        shutdown.shutdown();
        relay.join().unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
