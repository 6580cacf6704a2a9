//! Fault injection and soak tests: clients and agents that die mid-frame
//! (`churn`), an agent that stops reading and a client that stops reading
//! under a flood of maximal frames (`pressure`), and a peer of another user
//! (here). Each test checks that nothing leaks (descriptors, sessions,
//! memory), nothing is lost, and nobody else is disturbed.
//!
//! Sizes are small by default so `cargo xtask ci` stays fast. `RELAY_SOAK=1`
//! selects the large sizes reported in the README; `RELAY_SOAK_CYCLES=N`
//! sets the connect/disconnect cycles alone. Each test prints its figures on
//! lines starting with `figure:` (run with `--no-capture` to see them).
//! There are no timing thresholds: time is only reported, and waits have a
//! generous hang guard.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "test code: a panic is the failure report, and figures are printed"
)]

mod support;

#[path = "faults/churn.rs"]
mod churn;
#[path = "faults/pressure.rs"]
mod pressure;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use relay_codec::payload::{ExecExited, ExecSignal};
use relay_codec::{Flags, Frame, Message};
use relay_server::{RelayConfig, StatsSnapshot};
use relay_test_support::{
    Behaviour, BlockingClient, HANG_GUARD, RawClient, WireError, sink, temp_dir,
};
use support::Harness;

type Test = Result<(), Box<dyn std::error::Error>>;

/// Tests of this binary measure the whole process (descriptors, memory), so
/// they take turns even when a harness runs them as threads of one process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: usize = 1 << 20;

/// The size of a soak: `large` with `RELAY_SOAK=1`, else `default`;
/// `override_var` (when set to a number) wins over both.
fn soak_size(override_var: &str, default: usize, large: usize) -> usize {
    if let Some(n) = std::env::var(override_var)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if std::env::var("RELAY_SOAK").is_ok_and(|v| v == "1") {
        large
    } else {
        default
    }
}

/// Open descriptors of this process.
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A `Vm*` line of /proc/self/status, in bytes.
fn vm(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / MIB as f64
}

/// The relay holds no client, session, resting slot or queued byte.
fn idle(stats: &StatsSnapshot) -> bool {
    stats.clients_connected == 0
        && stats.sessions_open == 0
        && stats.slots_quarantined == 0
        && stats.queued_bytes == 0
}

/// An agent that answers a kill (`core.exec.signal` 9) with the session's
/// end (`core.exec.exited` 137), as a real agent does once the process dies,
/// and echoes frames whose body starts with "ping".
fn kill_responder() -> Behaviour {
    Box::new(|frame| {
        if frame.body().starts_with(b"ping") {
            return vec![frame.clone()];
        }
        match Message::from_frame(frame) {
            Ok(Message::ExecSignal(ExecSignal { signal: 9 })) => vec![
                Message::ExecExited(ExecExited { code: 137 })
                    .to_frame(frame.id())
                    .unwrap(),
            ],
            _ => Vec::new(),
        }
    })
}

fn is_kill(frame: &Frame) -> bool {
    Message::from_frame(frame) == Ok(Message::ExecSignal(ExecSignal { signal: 9 }))
}

/// Sends pings on its own id until `stop`, then `tail` more; each must come
/// back intact and in order. Returns how many round trips it made, and the
/// client, still connected.
async fn ping_until(
    mut client: RawClient,
    stop: Arc<AtomicBool>,
    tail: usize,
) -> (usize, RawClient) {
    let id = client.ids.first() + 1;
    let mut n = 0;
    let mut after_stop = 0;
    while after_stop < tail {
        if stop.load(Ordering::Relaxed) {
            after_stop += 1;
        }
        let body = format!("ping {n}");
        client.frame(id, Flags::NONE, body.as_bytes()).await;
        let reply = client.next().await.expect("a reply");
        assert_eq!((reply.id(), reply.body()), (id, body.as_bytes()));
        n += 1;
    }
    (n, client)
}

/// Set in a re-executed copy of this test binary: connect to this socket
/// as a client, report what happened on stdout, and exit.
const PEER_CHILD_SOCKET: &str = "RELAY_FAULTS_PEER_SOCKET";
const PEER_RESULT: &str = "peer-result:";
/// The uid and gid the child runs as (`nobody` / `nogroup`).
const OTHER_ID: u32 = 65_534;

/// The child's side: connect, read until a greeting or EOF, report.
fn peer_child(socket: &str) {
    let outcome = match BlockingClient::connect(Path::new(socket)) {
        Ok(_) => "greeting".to_owned(),
        Err(WireError::ClosedBeforeGreeting { .. }) => "closed before a greeting".to_owned(),
        Err(error) => error.to_string(),
    };
    println!("{PEER_RESULT} {outcome}");
}

/// Runs this test binary again as `uid`, playing [`peer_child`] against
/// `socket`; returns its report.
fn connect_as(uid: u32, socket: &Path, test_name: &str) -> String {
    use std::os::unix::process::CommandExt;
    let run = |exe: &Path| {
        std::process::Command::new(exe)
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(PEER_CHILD_SOCKET, socket)
            .current_dir("/")
            .gid(uid)
            .uid(uid)
            .output()
    };
    let exe = std::env::current_exe().unwrap();
    let output = match run(&exe) {
        // The build directory may be private (a checkout under /root):
        // run a copy that the other user can read.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let tmp = temp_dir();
            let dir = tmp.path().join("exe");
            std::fs::create_dir_all(&dir).unwrap();
            for path in [tmp.path(), &dir] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            let copy = dir.join("faults");
            std::fs::copy(&exe, &copy).unwrap();
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
            let output = run(&copy);
            let _ = std::fs::remove_dir_all(&dir);
            output
        }
        other => other,
    }
    .unwrap_or_else(|e| panic!("cannot run {} as uid {uid}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        // libtest may print "test NAME ... " on the same line first.
        .find_map(|l| l.split_once(PEER_RESULT))
        .map(|(_, result)| result.trim().to_owned())
        .unwrap_or_else(|| {
            panic!(
                "the child reported nothing ({}):\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_another_uid_is_refused_when_the_uid_check_is_on() -> Test {
    if let Ok(socket) = std::env::var(PEER_CHILD_SOCKET) {
        peer_child(&socket);
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    if std::fs::metadata("/proc/self")?.uid() != 0 {
        println!("skipped: running a client under another uid needs root");
        return Ok(());
    }
    // A socket anyone may open, so the uid check is what refuses.
    let harness = Harness::start(
        |c| {
            let dir = c.socket_path().parent().unwrap().join("open");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            RelayConfig::new(dir.join("agent.sock")).with_socket_mode(0o666)
        },
        sink(),
    )
    .await;
    let socket = harness.relay.socket_path().to_owned();
    let mode = std::fs::metadata(&socket)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    let parent = socket.parent().unwrap();
    std::fs::set_permissions(
        parent.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )?;

    let child = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || {
            connect_as(
                OTHER_ID,
                &socket,
                "a_peer_with_another_uid_is_refused_when_the_uid_check_is_on",
            )
        }
    });
    let outcome = tokio::time::timeout(HANG_GUARD, child).await??;
    assert_eq!(outcome, "closed before a greeting");
    let stats = harness
        .wait_stats("the refusal counted", |s| s.peers_refused == 1)
        .await;
    assert_eq!(stats.clients_admitted, 0, "the stranger never took a slot");
    let _owner = RawClient::connect(&socket).await;
    println!(
        "figure: a client of uid {OTHER_ID} on a 0666 socket: {outcome:?}; peers_refused {}, \
         admitted {}; the relay's own uid then connected",
        stats.peers_refused, stats.clients_admitted
    );
    Ok(())
}
