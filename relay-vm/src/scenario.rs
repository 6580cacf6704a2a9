//! The scenario run against a booted VM, and the figures it reports.
//!
//! In order, each step a function below:
//!
//! 1. **boot**: connect through the relay (which greets only after the
//!    guest's `core.ready`): boot-to-ready time, and the guest's own boot,
//!    init and ready times from `core.ready`.
//! 2. **uname** through the CLI (`agent-relay exec -- uname -a`): the
//!    release must be the guest kernel's, not the host's.
//! 3. **exit codes**: a plain exit code, `false`, a missing program (127), a
//!    signal death (128 + 9).
//! 4. **stdio**: stdin echoed by `cat`, stdout and stderr kept apart.
//! 5. **round trips**: sequential execs of `true`, and 16-byte echoes
//!    through one `cat` session.
//! 6. **20 MiB stdout**: the guest writes 20 MiB of random bytes to a file
//!    and hashes it; `cat` streams it out and the host's SHA-256 must match.
//! 7. **fs**: a 5 MiB file put and got back, hashed on both sides.
//! 8. **8 clients** at once, each with its own id range, each echoing its
//!    own data through `cat`.
//! 9. **disconnect**: a client starts `sleep 1000` and goes away; a second
//!    client watches `/proc/<pid>` in the guest until it is gone.
//! 10. **orphan**: a background `sleep` whose shell exits is re-parented to
//!     PID 1 (checked in `/proc/<pid>/stat`), and PID 1 reaps it when it
//!     ends (its `/proc` entry goes away instead of staying a zombie).
//! 11. **relay restart**: the relay stops (`SIGTERM`) while the VM runs and
//!     a new one starts on the same chardev; the guest's agent, having seen
//!     the host go, serves the new relay (a fresh `core.ready`), and a
//!     command runs through it.
//! 12. **shutdown** through the CLI (`agent-relay shutdown`): QEMU must
//!     exit with status 0, and the relay too.
//!
//! Waits are hang guards, never thresholds.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use relay_client::{Client, ExecEvent, ExecRequest, Output};
use sha2::{Digest, Sha256};

use crate::error::VmError;
use crate::machine::{Machine, MachineConfig};
use crate::{Progress, host};

/// Guard for the guest to boot and greet.
const BOOT_GUARD: Duration = Duration::from_secs(120);
/// Guard for any one exec or fs operation.
const STEP_GUARD: Duration = Duration::from_secs(120);
/// Guard for a process to disappear from the guest.
const GONE_GUARD: Duration = Duration::from_secs(30);
/// Guard for QEMU and the relay to exit after `core.shutdown`.
const EXIT_GUARD: Duration = Duration::from_secs(60);

/// The streamed stdout transfer.
const STDOUT_BYTES: usize = 20 * 1024 * 1024;
/// The fs put/get transfer.
const FS_BYTES: usize = 5 * 1024 * 1024;
/// Concurrent clients.
const CLIENTS: usize = 8;
/// Sequential `true` execs measured.
const EXEC_ROUNDS: u32 = 20;
/// Echoes measured in one session.
const ECHO_ROUNDS: u32 = 50;

/// What one run measured (printed, never asserted).
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// From starting QEMU until a client got the relay's greeting.
    pub boot_to_ready: Duration,
    /// `core.ready`'s `boot_time_ns`: the guest kernel's boot until `/init`.
    pub guest_boot: Duration,
    /// `core.ready`'s `init_time_ns`: mounts, modules and the port done.
    pub guest_init: Duration,
    /// `core.ready`'s `ready_time_ns`.
    pub guest_ready: Duration,
    /// The line of the guest console with the kernel version.
    pub kernel_line: String,
    /// `uname -a` in the guest.
    pub uname: String,
    /// Mean round trip of an exec of `true` (request to exit code).
    pub exec_rtt: Duration,
    /// Fastest exec round trip.
    pub exec_rtt_min: Duration,
    /// Mean stdin-to-stdout echo round trip in one running `cat`.
    pub echo_rtt: Duration,
    /// Bytes streamed on stdout.
    pub stdout_bytes: usize,
    /// Time of that stream (request to exit code).
    pub stdout_time: Duration,
    /// Bytes of the fs put and get.
    pub fs_bytes: usize,
    /// Time of the put.
    pub put_time: Duration,
    /// Time of the get.
    pub get_time: Duration,
    /// Clients that ran at once.
    pub clients: usize,
    /// From `agent-relay shutdown` to QEMU's exit.
    pub shutdown_time: Duration,
}

fn mib_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / time.as_secs_f64().max(1e-9)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "guest kernel:     {}", self.kernel_line)?;
        writeln!(f, "guest uname -a:   {}", self.uname)?;
        writeln!(
            f,
            "boot-to-ready:    {:.0} ms (QEMU start to the relay's greeting); in the guest: \
             kernel {:.0} ms, init {:.0} ms, ready {:.0} ms after boot",
            ms(self.boot_to_ready),
            ms(self.guest_boot),
            ms(self.guest_init),
            ms(self.guest_ready)
        )?;
        writeln!(
            f,
            "exec round trip:  {:.2} ms mean, {:.2} ms min ({EXEC_ROUNDS} x `true`); \
             stdin echo {:.3} ms mean ({ECHO_ROUNDS} x 16 bytes through `cat`)",
            ms(self.exec_rtt),
            ms(self.exec_rtt_min),
            ms(self.echo_rtt)
        )?;
        writeln!(
            f,
            "stdout transfer:  {:.1} MiB/s ({} MiB in {:.2} s, SHA-256 matched)",
            mib_per_s(self.stdout_bytes, self.stdout_time),
            self.stdout_bytes >> 20,
            self.stdout_time.as_secs_f64()
        )?;
        writeln!(
            f,
            "fs put / get:     {:.1} / {:.1} MiB/s ({} MiB each way, SHA-256 matched)",
            mib_per_s(self.fs_bytes, self.put_time),
            mib_per_s(self.fs_bytes, self.get_time),
            self.fs_bytes >> 20
        )?;
        writeln!(
            f,
            "clients:          {} at once, each with its own id range",
            self.clients
        )?;
        write!(
            f,
            "shutdown:         QEMU exited 0 {:.0} ms after `agent-relay shutdown`",
            ms(self.shutdown_time)
        )
    }
}

/// Boots the VM and runs every step. On failure the error says which step,
/// and the guest's and the relay's last log lines are reported through
/// `progress`.
pub async fn run(config: &MachineConfig, progress: Progress<'_>) -> Result<Report, VmError> {
    let mut machine = Machine::boot(config)?;
    let result = steps(&mut machine, config, progress).await;
    if result.is_err() {
        progress(&format!(
            "guest console (last lines):\n{}",
            host::tail(&machine.serial(), 30)
        ));
        progress(&format!(
            "relay log (last lines):\n{}",
            host::tail(&machine.relay_log(), 15)
        ));
    }
    progress(&format!("logs kept in {}", machine.kept_logs().display()));
    result
}

async fn steps(
    machine: &mut Machine,
    config: &MachineConfig,
    progress: Progress<'_>,
) -> Result<Report, VmError> {
    let mut report = Report::default();
    let client = boot(machine, &mut report).await?;
    progress(&format!(
        "guest ready {:.0} ms after QEMU started",
        ms(report.boot_to_ready)
    ));
    report.kernel_line = kernel_line(&machine.serial());
    uname(machine, config, &mut report).await?;
    progress(&format!("uname -a: {}", report.uname));
    exit_codes(&client).await?;
    stdio(&client).await?;
    round_trips(&client, &mut report).await?;
    progress("exit codes, stdio and round trips checked");
    stdout_transfer(&client, &mut report).await?;
    progress(&format!(
        "{} MiB streamed on stdout, SHA-256 matched",
        report.stdout_bytes >> 20
    ));
    fs_transfer(&client, &mut report).await?;
    progress(&format!(
        "{} MiB put and got back, SHA-256 matched",
        report.fs_bytes >> 20
    ));
    concurrent_clients(machine.socket(), &mut report).await?;
    progress(&format!("{CLIENTS} concurrent clients checked"));
    disconnect_kills(machine.socket(), &client).await?;
    progress("a disconnected client's `sleep` was killed in the guest");
    orphan_reaped(&client).await?;
    progress("an orphan was re-parented to PID 1 and reaped");
    drop(client);
    relay_restart(machine).await?;
    progress("the guest agent served a restarted relay");
    shutdown(machine, &mut report).await?;
    Ok(report)
}

/// The kernel version as the guest's init logged it (or the kernel's own
/// `Linux version` line, if it was not quiet).
fn kernel_line(serial: &str) -> String {
    serial
        .lines()
        .find(|line| line.contains("Linux version"))
        .map(|line| {
            let at = line.find("Linux version").unwrap_or(0);
            // The init logs it as a quoted field.
            line[at..].split('"').next().unwrap_or_default().to_owned()
        })
        .unwrap_or_else(|| "(no `Linux version` line on the guest console)".to_owned())
}

async fn guarded<T>(
    step: &'static str,
    what: &'static str,
    future: impl Future<Output = Result<T, VmError>>,
) -> Result<T, VmError> {
    match tokio::time::timeout(STEP_GUARD, future).await {
        Ok(result) => result,
        Err(_) => Err(VmError::Timeout {
            step,
            what,
            after: STEP_GUARD,
        }),
    }
}

/// Runs a command to completion with `stdin`.
async fn exec(
    client: &Client,
    step: &'static str,
    cmd: &str,
    args: &[&str],
    stdin: Option<Bytes>,
) -> Result<Output, VmError> {
    let request = ExecRequest::new(cmd, args.iter().copied());
    guarded(step, "an exec", async {
        client
            .exec_output(request, stdin)
            .await
            .map_err(VmError::client(step))
    })
    .await
}

/// [`exec`] that must exit 0; its stdout as text.
async fn exec_ok(
    client: &Client,
    step: &'static str,
    cmd: &str,
    args: &[&str],
) -> Result<String, VmError> {
    let out = exec(client, step, cmd, args, None).await?;
    if out.code != 0 {
        return Err(VmError::check(
            step,
            format!(
                "`{cmd} {}` exited {}: {}",
                args.join(" "),
                out.code,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Connects once the relay greets (it does after the guest's `core.ready`).
async fn connect(socket: &Path, step: &'static str) -> Result<Client, VmError> {
    let start = Instant::now();
    loop {
        match Client::connect(socket).await {
            Ok(client) => return Ok(client),
            Err(_) if start.elapsed() < BOOT_GUARD => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(source) => return Err(VmError::Client { step, source }),
        }
    }
}

async fn boot(machine: &Machine, report: &mut Report) -> Result<Client, VmError> {
    let client = connect(machine.socket(), "boot").await?;
    report.boot_to_ready = machine.started().elapsed();
    let ready = client.ready();
    report.guest_boot = Duration::from_nanos(ready.boot_time_ns);
    report.guest_init = Duration::from_nanos(ready.init_time_ns);
    report.guest_ready = Duration::from_nanos(ready.ready_time_ns);
    Ok(client)
}

async fn cli(machine: &Machine, step: &'static str, args: &[&str]) -> Result<String, VmError> {
    let mut cmd = tokio::process::Command::new(machine.agent_relay());
    cmd.args(args)
        .env("AGENT_RELAY_SOCKET", machine.socket())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let shown = format!("agent-relay {}", args.join(" "));
    let out = guarded(step, "an agent-relay command", async {
        cmd.output().await.map_err(|err| VmError::Command {
            command: shown.clone(),
            detail: format!("cannot start: {err}"),
        })
    })
    .await?;
    if !out.status.success() {
        return Err(VmError::Command {
            command: shown,
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn uname(
    machine: &Machine,
    config: &MachineConfig,
    report: &mut Report,
) -> Result<(), VmError> {
    let out = cli(machine, "uname", &["exec", "--", "uname", "-a"]).await?;
    report.uname = out.trim().to_owned();
    let release = report.uname.split_whitespace().nth(2).unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if release != config.release || !release.starts_with("6.1.") || release == host.trim() {
        return Err(VmError::check(
            "uname",
            format!(
                "guest release {release:?}: expected {:?} (the host runs {:?})",
                config.release,
                host.trim()
            ),
        ));
    }
    Ok(())
}

async fn exit_codes(client: &Client) -> Result<(), VmError> {
    let step = "exit codes";
    let cases: [(&str, &[&str], i32); 4] = [
        ("sh", &["-c", "exit 7"], 7),
        ("false", &[], 1),
        ("/no/such/program", &[], 127),
        ("sh", &["-c", "kill -9 $$"], 128 + 9),
    ];
    for (cmd, args, expected) in cases {
        let out = exec(client, step, cmd, args, None).await?;
        if out.code != expected {
            return Err(VmError::check(
                step,
                format!(
                    "`{cmd} {}` exited {}, expected {expected}",
                    args.join(" "),
                    out.code
                ),
            ));
        }
    }
    Ok(())
}

async fn stdio(client: &Client) -> Result<(), VmError> {
    let step = "stdio";
    let data = Bytes::from(pattern(256 * 1024, 1));
    let out = exec(client, step, "cat", &[], Some(data.clone())).await?;
    if out.code != 0 || out.stdout != data || !out.stderr.is_empty() {
        return Err(VmError::check(
            step,
            format!(
                "`cat` gave code {} and {} of {} bytes back",
                out.code,
                out.stdout.len(),
                data.len()
            ),
        ));
    }
    let out = exec(
        client,
        step,
        "sh",
        &["-c", "echo out; echo err >&2; exit 3"],
        None,
    )
    .await?;
    if (out.stdout.as_slice(), out.stderr.as_slice(), out.code) != (b"out\n", b"err\n", 3) {
        return Err(VmError::check(
            step,
            format!("stdout and stderr mixed up: {out:?}"),
        ));
    }
    Ok(())
}

async fn round_trips(client: &Client, report: &mut Report) -> Result<(), VmError> {
    let step = "round trips";
    let mut total = Duration::ZERO;
    let mut min = Duration::MAX;
    for _ in 0..EXEC_ROUNDS {
        let start = Instant::now();
        exec_ok(client, step, "true", &[]).await?;
        let took = start.elapsed();
        total += took;
        min = min.min(took);
    }
    report.exec_rtt = total / EXEC_ROUNDS;
    report.exec_rtt_min = min;

    let mut session = client
        .exec(ExecRequest::new("cat", Vec::<String>::new()))
        .await
        .map_err(VmError::client(step))?;
    let start = Instant::now();
    let echoed = guarded(step, "echoes through `cat`", async {
        for round in 0..ECHO_ROUNDS {
            let line = format!("echo {round:>9} ..\n");
            session
                .write_stdin(line.as_bytes())
                .await
                .map_err(VmError::client(step))?;
            let mut got = Vec::new();
            while got.len() < line.len() {
                match session.next_event().await.map_err(VmError::client(step))? {
                    Some(ExecEvent::Stdout(data)) => got.extend_from_slice(&data),
                    Some(ExecEvent::Started { .. }) => {}
                    other => {
                        return Err(VmError::check(step, format!("`cat` sent {other:?}")));
                    }
                }
            }
            if got != line.as_bytes() {
                return Err(VmError::check(
                    step,
                    format!("echo {round} came back as {got:?}"),
                ));
            }
        }
        Ok(start.elapsed())
    })
    .await?;
    report.echo_rtt = echoed / ECHO_ROUNDS;
    session.close_stdin().await.map_err(VmError::client(step))?;
    let status = guarded(step, "`cat` to exit", async {
        session.wait().await.map_err(VmError::client(step))
    })
    .await?;
    if !status.success() {
        return Err(VmError::check(
            step,
            format!("`cat` exited {}", status.code),
        ));
    }
    Ok(())
}

async fn stdout_transfer(client: &Client, report: &mut Report) -> Result<(), VmError> {
    let step = "20 MiB stdout";
    let script = format!("head -c {STDOUT_BYTES} /dev/urandom > /tmp/big && sha256sum /tmp/big");
    let guest_sum = exec_ok(client, step, "sh", &["-c", &script]).await?;
    let guest_sum = guest_sum
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();

    let start = Instant::now();
    let mut session = client
        .exec(ExecRequest::new("cat", ["/tmp/big"]))
        .await
        .map_err(VmError::client(step))?;
    let (bytes, sum, code) = guarded(step, "the stream", async {
        let mut hasher = Sha256::new();
        let mut bytes = 0usize;
        loop {
            match session.next_event().await.map_err(VmError::client(step))? {
                Some(ExecEvent::Stdout(data)) => {
                    bytes += data.len();
                    hasher.update(&data);
                }
                Some(ExecEvent::Exited(status)) => {
                    break Ok((bytes, hex(&hasher.finalize()), status.code));
                }
                Some(_) => {}
                None => {
                    break Err(VmError::check(
                        step,
                        "the session ended without an exit code",
                    ));
                }
            }
        }
    })
    .await?;
    report.stdout_time = start.elapsed();
    report.stdout_bytes = bytes;
    if code != 0 || bytes != STDOUT_BYTES || sum != guest_sum {
        return Err(VmError::check(
            step,
            format!(
                "got {bytes} bytes with SHA-256 {sum} and code {code}; \
                 the guest wrote {STDOUT_BYTES} bytes with SHA-256 {guest_sum}"
            ),
        ));
    }
    exec_ok(client, step, "rm", &["/tmp/big"]).await?;
    Ok(())
}

async fn fs_transfer(client: &Client, report: &mut Report) -> Result<(), VmError> {
    let step = "fs put/get";
    let data = pattern(FS_BYTES, 2);
    let sum = hex(&Sha256::digest(&data));
    let path = "/tmp/put.bin";
    let start = Instant::now();
    guarded(step, "the put", async {
        client
            .fs()
            .write(path, Some(0o644), &data)
            .await
            .map_err(VmError::client(step))
    })
    .await?;
    report.put_time = start.elapsed();
    let guest_sum = exec_ok(client, step, "sha256sum", &[path]).await?;
    if guest_sum.split_whitespace().next() != Some(sum.as_str()) {
        return Err(VmError::check(
            step,
            format!("the guest's file hashes to {guest_sum}, the host's data to {sum}"),
        ));
    }
    let start = Instant::now();
    let back = guarded(step, "the get", async {
        client
            .fs()
            .read_all(path)
            .await
            .map_err(VmError::client(step))
    })
    .await?;
    report.get_time = start.elapsed();
    report.fs_bytes = data.len();
    if back != data {
        return Err(VmError::check(
            step,
            format!("got {} bytes back, not the {} put", back.len(), data.len()),
        ));
    }
    client
        .fs()
        .remove(path)
        .await
        .map_err(VmError::client(step))?;
    Ok(())
}

async fn concurrent_clients(socket: &Path, report: &mut Report) -> Result<(), VmError> {
    let step = "8 clients";
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(
            Client::connect(socket)
                .await
                .map_err(VmError::client(step))?,
        );
    }
    let mut ranges: Vec<(u32, u32)> = clients
        .iter()
        .map(|c| (c.ids().first(), c.ids().last()))
        .collect();
    ranges.sort_unstable();
    if ranges.windows(2).any(|pair| pair[0].1 >= pair[1].0) {
        return Err(VmError::check(
            step,
            format!("id ranges overlap: {ranges:?}"),
        ));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        tasks.spawn(async move {
            let data = Bytes::from(pattern(128 * 1024, 100 + index as u64));
            let echo = exec(&client, step, "cat", &[], Some(data.clone())).await?;
            let tag = format!("client {index}");
            let said = exec_ok(&client, step, "sh", &["-c", "echo $0", &tag]).await?;
            if echo.code != 0 || echo.stdout != data || said.trim() != tag {
                return Err(VmError::check(
                    step,
                    format!("client {index} got someone else's or partial output"),
                ));
            }
            Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|err| VmError::check(step, format!("a client task failed: {err}")))??;
    }
    report.clients = CLIENTS;
    Ok(())
}

/// Whether `/proc/<pid>` exists in the guest.
async fn guest_has_pid(client: &Client, step: &'static str, pid: u32) -> Result<bool, VmError> {
    let out = exec(client, step, "test", &["-d", &format!("/proc/{pid}")], None).await?;
    Ok(out.code == 0)
}

/// Polls until `/proc/<pid>` is gone from the guest.
async fn wait_gone(
    client: &Client,
    step: &'static str,
    pid: u32,
    what: &'static str,
) -> Result<(), VmError> {
    let start = Instant::now();
    while guest_has_pid(client, step, pid).await? {
        if start.elapsed() >= GONE_GUARD {
            let stat = exec(client, step, "cat", &[&format!("/proc/{pid}/stat")], None).await?;
            return Err(VmError::check(
                step,
                format!(
                    "{what} did not happen within {GONE_GUARD:?}: /proc/{pid}/stat is {:?}",
                    String::from_utf8_lossy(&stat.stdout).trim()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn disconnect_kills(socket: &Path, watcher: &Client) -> Result<(), VmError> {
    let step = "disconnect";
    let doomed = Client::connect(socket)
        .await
        .map_err(VmError::client(step))?;
    let mut session = doomed
        .exec(ExecRequest::new("sleep", ["1000"]))
        .await
        .map_err(VmError::client(step))?;
    let pid = guarded(step, "`sleep` to start", async {
        match session.next_event().await.map_err(VmError::client(step))? {
            Some(ExecEvent::Started { pid }) => Ok(pid),
            other => Err(VmError::check(
                step,
                format!("expected Started, got {other:?}"),
            )),
        }
    })
    .await?;
    if !guest_has_pid(watcher, step, pid).await? {
        return Err(VmError::check(
            step,
            format!("`sleep` (pid {pid}) is not running"),
        ));
    }
    // The connection closes when its last handle goes.
    drop(session);
    drop(doomed);
    wait_gone(
        watcher,
        step,
        pid,
        "killing the disconnected client's `sleep`",
    )
    .await
}

async fn orphan_reaped(client: &Client) -> Result<(), VmError> {
    let step = "orphan";
    let out = exec_ok(
        client,
        step,
        "sh",
        &["-c", "sleep 2 </dev/null >/dev/null 2>&1 & echo $!"],
    )
    .await?;
    let pid: u32 = out
        .trim()
        .parse()
        .map_err(|_| VmError::check(step, format!("no pid from the shell: {out:?}")))?;
    // The shell has exited: the `sleep` now belongs to PID 1.
    let stat = exec(client, step, "cat", &[&format!("/proc/{pid}/stat")], None).await?;
    let stat = String::from_utf8_lossy(&stat.stdout).into_owned();
    let ppid = stat
        .rfind(')')
        .and_then(|at| stat[at + 1..].split_whitespace().nth(1))
        .unwrap_or_default();
    if !stat.is_empty() && ppid != "1" {
        return Err(VmError::check(
            step,
            format!("the orphan's parent is {ppid}, not PID 1 ({stat:?})"),
        ));
    }
    wait_gone(client, step, pid, "PID 1 reaping the orphan").await
}

async fn relay_restart(machine: &mut Machine) -> Result<(), VmError> {
    let step = "relay restart";
    match machine.restart_relay(EXIT_GUARD).await? {
        Some(status) if status.success() => {}
        Some(status) => {
            return Err(VmError::check(
                step,
                format!("the old relay exited with {status}"),
            ));
        }
        None => {
            return Err(VmError::Timeout {
                step,
                what: "the old relay's exit after SIGTERM",
                after: EXIT_GUARD,
            });
        }
    }
    let client = connect(machine.socket(), step).await?;
    let said = exec_ok(&client, step, "echo", &["served", "again"]).await?;
    if said != "served again\n" {
        return Err(VmError::check(step, format!("`echo` said {said:?}")));
    }
    Ok(())
}

async fn shutdown(machine: &mut Machine, report: &mut Report) -> Result<(), VmError> {
    let step = "shutdown";
    let start = Instant::now();
    cli(machine, step, &["shutdown"]).await?;
    let qemu = machine.wait_qemu(EXIT_GUARD).await?;
    report.shutdown_time = start.elapsed();
    match qemu {
        Some(status) if status.success() => {}
        Some(status) => {
            return Err(VmError::check(step, format!("QEMU exited with {status}")));
        }
        None => {
            return Err(VmError::Timeout {
                step,
                what: "QEMU's exit",
                after: EXIT_GUARD,
            });
        }
    }
    match machine.wait_relay(EXIT_GUARD).await? {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(VmError::check(
            step,
            format!("the relay exited with {status}"),
        )),
        None => Err(VmError::Timeout {
            step,
            what: "the relay's exit",
            after: EXIT_GUARD,
        }),
    }
}

/// Deterministic bytes that do not repeat in any short period (xorshift64*).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_line_is_cut_out_of_the_init_log() {
        let serial = "[    0.37] PCI: Fatal\n[    1.69]  INFO relay_agent::init: init: PID 1 started \
                      kernel=\"Linux version 6.1.0-56-cloud-amd64 (gcc) #1 SMP\" uptime=\"1.69\"\n";
        assert_eq!(
            kernel_line(serial),
            "Linux version 6.1.0-56-cloud-amd64 (gcc) #1 SMP"
        );
        assert!(kernel_line("nothing\n").starts_with("(no"));
    }

    #[test]
    fn patterns_differ_by_seed_and_have_the_length_asked() {
        assert_eq!(pattern(13, 1).len(), 13);
        assert_ne!(pattern(64, 1), pattern(64, 2));
        assert_eq!(pattern(64, 1), pattern(64, 1));
    }
}
