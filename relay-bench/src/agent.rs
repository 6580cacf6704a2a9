//! The bench agent: the guest side of every implementation under test (on
//! a plain socket for raw, on the naive queue, on the real ring). It echoes,
//! sinks and streams frames as told by their tags (see [`crate::wire`]).
//!
//! One thread reads and answers echoes straight away (one write per batch
//! of echoes read together); a second thread, started with the first
//! stream, sends the streams round robin, one frame per turn. Both write
//! through one lock, as an agent with one console must, and echoes go
//! first: the stream thread steps aside while an echo waits for the lock,
//! so an echo waits for at most the one stream frame being written (a
//! plain mutex would let the stream thread take it again and again).
//!
//! Behind our relay the agent may offer per-session flow control
//! (`docs/flow-control.md`): its `core.ready` then carries `flow: {window}`.
//! A session is an id opened by a client frame with `SESSION_START` (the
//! bench's clients set it on their stream requests when flow control is
//! on); it starts with `window` bytes of credit, its stream is sent only
//! while that credit is positive (one frame may overshoot; `f` frames cost
//! like any other, they carry no `TERMINAL` flag), and the reader adds the
//! credit of the relay's `core.flow.credit` frames (on the connection id,
//! naming the session). Credit applies only once the relay has answered
//! the offer with `core.flow.accept`. A stream out of credit waits on the condvar;
//! the others keep their turns. Frames on other ids are not flow
//! controlled, as the relay credits only the sessions it tracks. The other
//! way, the agent returns credit for the client frames of a session as it
//! reads them (it delivers each at once), in half windows.
//!
//! A `core.exec.signal` on a session (the relay's kill when a client
//! leaves with the session open) ends its stream at once, as killing a
//! process would.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use relay_codec::payload::{FlowWindow, Ready};
use relay_codec::{CONNECTION_ID, Flags, Frame, Message, WIRE_HEADER_SIZE};

use crate::wire::{self, Item, Scanner};

/// How the agent starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Setup {
    /// Send `core.ready` first: behind a relay. The raw floor has its
    /// server send the greeting instead.
    pub(crate) ready: bool,
    /// Offer flow control with this window (bytes per session) in
    /// `core.ready`; in force once the relay accepts it (the naive relay
    /// never does, and the agent then stays plain generation 1).
    pub(crate) flow: Option<u32>,
}

impl Setup {
    /// On a client's own socket (the raw floor): no greeting, no flow control.
    pub(crate) const RAW: Setup = Setup {
        ready: false,
        flow: None,
    };

    /// Behind a relay, offering flow control with `flow` as the window.
    pub(crate) fn behind_relay(flow: Option<u32>) -> Setup {
        Setup { ready: true, flow }
    }
}

/// The `core.ready` frame the bench agent sends, with the flow-control
/// offer when `flow` is set.
pub(crate) fn ready_frame(flow: Option<u32>) -> Frame {
    Message::Ready(Ready {
        boot_time_ns: 1,
        init_time_ns: 2,
        ready_time_ns: 3,
        flow: flow.map(|window| FlowWindow { window }),
    })
    .to_frame(0)
    .unwrap_or_else(|_| unreachable!("a ready message always encodes"))
}

/// The agent's one output, shared by its reader (echoes) and its pump
/// (streams), echoes first.
pub(crate) struct Output {
    writer: Mutex<Box<dyn Write + Send>>,
    /// Echo batches waiting for the writer; the pump waits while any do.
    echoes_waiting: AtomicUsize,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").finish_non_exhaustive()
    }
}

impl Output {
    /// Writes an echo batch, ahead of any stream frame not yet started.
    fn echo(&self, bytes: &[u8]) -> io::Result<()> {
        self.echoes_waiting.fetch_add(1, Ordering::SeqCst);
        let mut w = lock(&self.writer);
        self.echoes_waiting.fetch_sub(1, Ordering::SeqCst);
        w.write_all(bytes)?;
        w.flush()
    }

    /// Writes a stream frame once no echo is waiting.
    fn stream(&self, bytes: &[u8]) -> io::Result<()> {
        let mut w = loop {
            while self.echoes_waiting.load(Ordering::SeqCst) > 0 {
                std::thread::yield_now();
            }
            let w = lock(&self.writer);
            if self.echoes_waiting.load(Ordering::SeqCst) == 0 {
                break w;
            }
        };
        w.write_all(bytes)?;
        w.flush()
    }
}

type SharedWriter = Arc<Output>;

/// Bytes the reader asks for per read.
const READ_BUFFER: usize = 256 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves until `reader` ends (or a write fails), starting as `setup` says.
pub(crate) fn serve(
    mut reader: impl Read,
    writer: Box<dyn Write + Send>,
    setup: Setup,
) -> io::Result<()> {
    let writer: SharedWriter = Arc::new(Output {
        writer: Mutex::new(writer),
        echoes_waiting: AtomicUsize::new(0),
    });
    if setup.ready {
        writer.echo(ready_frame(setup.flow).as_wire())?;
    }
    let streams = Arc::new(Streams::new());
    let mut pump: Option<JoinHandle<()>> = None;
    let mut scanner = Scanner::new(READ_BUFFER);
    let mut out = Vec::new();
    // Set when the relay accepts the offer.
    let mut flow = false;
    // Flow control only: what this batch of reads means for credit.
    let mut seen: Vec<Seen> = Vec::new();
    let result = loop {
        match scanner.fill(&mut reader) {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => break Err(error),
        }
        while let Some(item) = scanner.next_item() {
            let (header, bytes) = match item {
                Item::Whole(header, bytes) => (header, bytes),
                // A large data frame: sunk, which delivers it.
                Item::Large(header) => {
                    if flow {
                        seen.push(Seen::Input(header.id, header.wire_len));
                    }
                    continue;
                }
            };
            let flags = Flags::from_bits(header.flags);
            if header.id == CONNECTION_ID {
                match Message::from_body(body(bytes)) {
                    Ok(Message::FlowAccept(accept)) if setup.flow.is_some() && !flow => {
                        streams.enable_flow(accept.window);
                        flow = true;
                    }
                    Ok(Message::FlowCredit(credit)) => {
                        seen.push(Seen::Credit(credit.id, credit.bytes));
                    }
                    _ => {}
                }
                continue;
            }
            if flow {
                if flags.contains(Flags::SESSION_START) {
                    streams.open(header.id);
                }
                seen.push(Seen::Input(header.id, header.wire_len));
            }
            match header.tag {
                wire::ECHO => {
                    out.extend_from_slice(bytes);
                    if flow {
                        seen.push(Seen::Echo(header.id, bytes.len()));
                    }
                }
                wire::SOURCE => {
                    if let Some((total, frame_len)) = wire::source_args(bytes) {
                        streams.start(header.id, total, frame_len);
                        if pump.is_none() {
                            let (streams, writer) = (streams.clone(), writer.clone());
                            pump = Some(std::thread::spawn(move || streams.pump(&writer)));
                        }
                    }
                }
                wire::STOP => {
                    if let Some(target) = wire::stop_target(bytes) {
                        streams.stop(target);
                    }
                }
                wire::DATA | wire::STREAM | wire::FIN => {}
                // Not the bench's own: a relay's kill of a departed client's session.
                _ => {
                    if let Ok(Message::ExecSignal(_)) = Message::from_body(body(bytes)) {
                        streams.kill(header.id);
                    }
                }
            }
        }
        if !seen.is_empty() {
            for (id, bytes) in streams.account(&seen) {
                for frame in relay_codec::flow::credit_frames(id, u64::from(bytes)) {
                    out.extend_from_slice(frame.as_wire());
                }
            }
            seen.clear();
        }
        if !out.is_empty() {
            let written = writer.echo(&out);
            out.clear();
            if let Err(error) = written {
                break Err(error);
            }
        }
    };
    streams.close();
    if let Some(pump) = pump {
        let _ = pump.join();
    }
    match result {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The body of a whole frame: what follows id and flags.
fn body(frame: &[u8]) -> &[u8] {
    frame.get(WIRE_HEADER_SIZE..).unwrap_or_default()
}

/// What a batch of reads means for flow control, in the order read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// The relay granted `bytes` more on a session.
    Credit(u32, u32),
    /// A client frame of this many bytes arrived (and, read, was delivered).
    Input(u32, usize),
    /// An echo of this many bytes is about to be written.
    Echo(u32, usize),
}

/// One stream toward a client.
#[derive(Debug)]
struct Stream {
    id: u32,
    /// The frame sent each turn, built once.
    frame: Vec<u8>,
    /// Frames left to send (`u64::MAX`: endless).
    left: u64,
}

/// One session's credit.
#[derive(Debug, Clone, Copy)]
struct Session {
    /// Bytes of frames the agent may still send (may go negative by one frame).
    avail: i64,
    /// Bytes of client frames delivered and not yet credited back.
    owed: u64,
}

/// Credit of every session while flow control is on.
///
/// Like the relay, the agent keeps a session's credit until the session
/// ends: a `TERMINAL` frame (which the bench never sends) or, here, the
/// relay's kill. A repeated `SESSION_START` on an open session does not
/// refill it (the relay does not either), so a client may run one stream
/// after another on the same id.
#[derive(Debug)]
struct Credit {
    window: u32,
    sessions: HashMap<u32, Session>,
}

impl Credit {
    /// Whether frames on `id` may go: always, unless it is a session out of credit.
    fn may_send(&self, id: u32) -> bool {
        self.sessions.get(&id).is_none_or(|s| s.avail > 0)
    }

    /// Spends `len` bytes of a session's credit (nothing outside sessions).
    fn charge(&mut self, id: u32, len: usize) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.avail -= len as i64;
        }
    }
}

#[derive(Debug, Default)]
struct StreamState {
    queue: VecDeque<Stream>,
    /// The id of the stream the pump is writing now, out of the queue.
    in_flight: Option<u32>,
    /// Ids asked to stop (only ids of live streams are recorded).
    stops: Vec<u32>,
    /// Ids killed while their stream was in flight: not queued again.
    killed: Vec<u32>,
    closed: bool,
    /// `None` without flow control.
    credit: Option<Credit>,
}

/// What the pump writes next.
#[derive(Debug)]
enum Turn {
    /// The stream's next frame; the stream goes back in the queue after.
    Frame(Stream),
    /// The stream's `f` frame: it ended or was stopped.
    Fin(Stream),
}

impl StreamState {
    /// Takes the first queued stream that may send, charging its session
    /// for the frame; `None` if none may (all out of credit, or none queued).
    fn next_turn(&mut self) -> Option<Turn> {
        let credit = &self.credit;
        let at = self
            .queue
            .iter()
            .position(|s| credit.as_ref().is_none_or(|c| c.may_send(s.id)))?;
        let mut stream = self.queue.remove(at)?;
        let stopped = self.stops.iter().position(|&id| id == stream.id);
        if let Some(at) = stopped {
            self.stops.swap_remove(at);
        }
        let finished = stopped.is_some() || stream.left == 0;
        let cost = if finished {
            wire::MIN_TAGGED
        } else {
            stream.frame.len()
        };
        if let Some(credit) = self.credit.as_mut() {
            credit.charge(stream.id, cost);
        }
        self.in_flight = Some(stream.id);
        Some(if finished {
            Turn::Fin(stream)
        } else {
            if stream.left != u64::MAX {
                stream.left -= 1;
            }
            Turn::Frame(stream)
        })
    }
}

#[derive(Debug)]
struct Streams {
    state: Mutex<StreamState>,
    wake: Condvar,
}

impl Streams {
    fn new() -> Streams {
        Streams {
            state: Mutex::new(StreamState::default()),
            wake: Condvar::new(),
        }
    }

    /// The relay accepted flow control with `window`: sessions opened from
    /// now on carry credit.
    fn enable_flow(&self, window: u32) {
        lock(&self.state).credit = Some(Credit {
            window: window.max(1),
            sessions: HashMap::new(),
        });
    }

    /// A client frame with `SESSION_START` arrived on `id` (flow control
    /// only): a new session gets a window of credit, an open one keeps its own.
    fn open(&self, id: u32) {
        let mut state = lock(&self.state);
        if let Some(credit) = state.credit.as_mut() {
            let avail = i64::from(credit.window);
            credit
                .sessions
                .entry(id)
                .or_insert(Session { avail, owed: 0 });
        }
    }

    fn start(&self, id: u32, total: u64, frame_len: usize) {
        let frame_len = frame_len.clamp(wire::MIN_TAGGED, relay_codec::MAX_FRAME_SIZE);
        let left = if total == wire::ENDLESS {
            u64::MAX
        } else {
            (total / frame_len as u64).max(1)
        };
        let mut state = lock(&self.state);
        state.queue.push_back(Stream {
            id,
            frame: wire::frame(id, wire::STREAM, frame_len),
            left,
        });
        drop(state);
        self.wake.notify_one();
    }

    fn stop(&self, id: u32) {
        let mut state = lock(&self.state);
        let live = state.in_flight == Some(id) || state.queue.iter().any(|s| s.id == id);
        if live && !state.stops.contains(&id) {
            state.stops.push(id);
        }
    }

    /// Ends the session `id`: its stream goes without an `f` frame (nobody
    /// is there to read it) and its credit is forgotten.
    fn kill(&self, id: u32) {
        let mut state = lock(&self.state);
        state.queue.retain(|s| s.id != id);
        state.stops.retain(|&s| s != id);
        if state.in_flight == Some(id) && !state.killed.contains(&id) {
            state.killed.push(id);
        }
        if let Some(credit) = state.credit.as_mut() {
            credit.sessions.remove(&id);
        }
    }

    /// Flow control: applies what a batch of reads `seen` means for the
    /// sessions' credit, and returns the credit to send back to the relay,
    /// `(id, bytes)`, for sessions that are owed half a window or more.
    ///
    /// Echoes are charged to their session but never wait for credit (the
    /// reader that writes them must stay free to read the credit that would
    /// let them go), so, like a stream's last frame, they may overshoot.
    fn account(&self, seen: &[Seen]) -> Vec<(u32, u32)> {
        let mut state = lock(&self.state);
        let Some(credit) = state.credit.as_mut() else {
            return Vec::new();
        };
        let half = relay_codec::flow::return_threshold(credit.window);
        let mut granted = false;
        let mut back = Vec::new();
        for &event in seen {
            match event {
                Seen::Credit(id, bytes) => {
                    if let Some(session) = credit.sessions.get_mut(&id) {
                        session.avail += i64::from(bytes);
                        granted = true;
                    }
                }
                Seen::Echo(id, len) => credit.charge(id, len),
                Seen::Input(id, len) => {
                    if let Some(session) = credit.sessions.get_mut(&id) {
                        session.owed += len as u64;
                        if session.owed >= half {
                            let bytes = u32::try_from(session.owed).unwrap_or(u32::MAX);
                            session.owed -= u64::from(bytes);
                            back.push((id, bytes));
                        }
                    }
                }
            }
        }
        drop(state);
        if granted {
            self.wake.notify_one();
        }
        back
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_all();
    }

    /// Sends the streams round robin until closed or a write fails; waits
    /// while no stream may send.
    fn pump(&self, writer: &SharedWriter) {
        loop {
            let mut state = lock(&self.state);
            let turn = loop {
                if state.closed {
                    return;
                }
                if let Some(turn) = state.next_turn() {
                    break turn;
                }
                state = self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            };
            drop(state);

            let (id, result, again) = match turn {
                Turn::Fin(stream) => (
                    stream.id,
                    writer.stream(&wire::frame(stream.id, wire::FIN, wire::MIN_TAGGED)),
                    None,
                ),
                Turn::Frame(stream) => (stream.id, writer.stream(&stream.frame), Some(stream)),
            };
            let mut state = lock(&self.state);
            state.in_flight = None;
            if result.is_err() {
                state.closed = true;
                return;
            }
            let killed = state.killed.iter().position(|&k| k == id);
            if let Some(at) = killed {
                state.killed.swap_remove(at);
            }
            if let Some(stream) = again
                && killed.is_none()
            {
                state.queue.push_back(stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use relay_codec::payload::{FlowAccept, FlowCredit};

    use super::*;

    fn start(setup: Setup) -> (UnixStream, JoinHandle<io::Result<()>>) {
        let (near, far) = UnixStream::pair().unwrap();
        // A hang guard, so a broken agent fails the test instead of hanging it.
        near.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let reader = far.try_clone().unwrap();
        let agent = std::thread::spawn(move || serve(reader, Box::new(far), setup));
        (near, agent)
    }

    /// The next frame, as `(id, tag)`.
    fn next(stream: &mut UnixStream, scanner: &mut Scanner) -> (u32, u8) {
        loop {
            if let Some(item) = scanner.next_item() {
                let header = match item {
                    Item::Whole(h, _) | Item::Large(h) => h,
                };
                return (header.id, header.tag);
            }
            assert!(scanner.fill(stream).unwrap() > 0, "agent ended early");
        }
    }

    fn frames(stream: &mut UnixStream, scanner: &mut Scanner, until: u8) -> Vec<(u32, u8)> {
        let mut seen = Vec::new();
        loop {
            let frame = next(stream, scanner);
            seen.push(frame);
            if frame.1 == until {
                return seen;
            }
        }
    }

    /// Reads the agent's `core.ready` and returns its flow offer.
    fn greeting(stream: &mut UnixStream, scanner: &mut Scanner) -> Option<FlowWindow> {
        loop {
            if let Some(Item::Whole(header, bytes)) = scanner.next_item() {
                assert_eq!(header.id, 0);
                let frame = Frame::from_wire(bytes.to_vec().into()).unwrap();
                match Message::from_frame(&frame).unwrap() {
                    Message::Ready(ready) => return ready.flow,
                    other => panic!("expected core.ready, got {other:?}"),
                }
            }
            assert!(scanner.fill(stream).unwrap() > 0, "agent ended early");
        }
    }

    fn credit(id: u32, bytes: u32) -> Vec<u8> {
        Message::FlowCredit(FlowCredit { id, bytes })
            .to_frame(CONNECTION_ID)
            .unwrap()
            .as_wire()
            .to_vec()
    }

    /// What a relay that takes up the offer writes first.
    fn accept(window: u32) -> Vec<u8> {
        Message::FlowAccept(FlowAccept { window })
            .to_frame(CONNECTION_ID)
            .unwrap()
            .as_wire()
            .to_vec()
    }

    /// A stream of 30 frames (more than a window) on a session runs to its
    /// end when nobody accepted the offer: plain generation 1.
    #[test]
    fn an_offer_nobody_accepts_holds_nothing_back() {
        let (mut client, agent) = start(Setup::behind_relay(Some(10_000)));
        let mut scanner = Scanner::new(1 << 16);
        greeting(&mut client, &mut scanner);
        client
            .write_all(&wire::opening_session(wire::source_request(
                4,
                30 * 1000,
                1000,
            )))
            .unwrap();
        let seen = frames(&mut client, &mut scanner, wire::FIN);
        assert_eq!(seen.len(), 31);
        drop(client);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn the_agent_greets_echoes_sinks_and_streams() {
        let (mut client, agent) = start(Setup::behind_relay(None));
        let mut scanner = Scanner::new(1 << 16);
        assert_eq!(greeting(&mut client, &mut scanner), None);

        client
            .write_all(&wire::frame(3, wire::DATA, 100_000))
            .unwrap();
        client.write_all(&wire::frame(3, wire::ECHO, 64)).unwrap();
        assert_eq!(
            frames(&mut client, &mut scanner, wire::ECHO),
            [(3, wire::ECHO)]
        );

        client
            .write_all(&wire::source_request(4, 10 * 5000, 5000))
            .unwrap();
        let seen = frames(&mut client, &mut scanner, wire::FIN);
        assert_eq!(seen.len(), 11);
        assert!(seen[..10].iter().all(|&s| s == (4, wire::STREAM)));

        drop(client);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn an_endless_stream_ends_when_stopped() {
        let (mut client, agent) = start(Setup::behind_relay(None));
        let mut scanner = Scanner::new(1 << 16);
        greeting(&mut client, &mut scanner);
        client
            .write_all(&wire::source_request(8, wire::ENDLESS, 1000))
            .unwrap();
        for _ in 0..50 {
            assert_eq!(next(&mut client, &mut scanner), (8, wire::STREAM));
        }
        client.write_all(&wire::stop_request(9, 8)).unwrap();
        let seen = frames(&mut client, &mut scanner, wire::FIN);
        assert_eq!(seen.last(), Some(&(8, wire::FIN)));
        drop(client);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn with_flow_a_session_stops_at_its_window_and_resumes_on_credit() {
        let (mut client, agent) = start(Setup::behind_relay(Some(10_000)));
        let mut scanner = Scanner::new(1 << 16);
        assert_eq!(
            greeting(&mut client, &mut scanner),
            Some(FlowWindow { window: 10_000 })
        );
        client.write_all(&accept(10_000)).unwrap();
        client
            .write_all(&wire::opening_session(wire::source_request(
                4,
                30 * 1000,
                1000,
            )))
            .unwrap();
        for _ in 0..10 {
            assert_eq!(next(&mut client, &mut scanner), (4, wire::STREAM));
        }
        // The window is spent: an echo asked for now is the next frame, and
        // stays so however long the agent takes to answer.
        client.write_all(&wire::frame(7, wire::ECHO, 64)).unwrap();
        assert_eq!(next(&mut client, &mut scanner), (7, wire::ECHO));

        // One byte of credit lets one whole frame go (it overshoots).
        client.write_all(&credit(4, 1)).unwrap();
        assert_eq!(next(&mut client, &mut scanner), (4, wire::STREAM));
        client.write_all(&wire::frame(7, wire::ECHO, 64)).unwrap();
        assert_eq!(next(&mut client, &mut scanner), (7, wire::ECHO));

        // Credit for another id does not move this stream.
        client.write_all(&credit(5, 100_000)).unwrap();
        client.write_all(&wire::frame(7, wire::ECHO, 64)).unwrap();
        assert_eq!(next(&mut client, &mut scanner), (7, wire::ECHO));

        // Enough credit: the rest of the stream, then its end.
        client.write_all(&credit(4, 30_000)).unwrap();
        let rest = frames(&mut client, &mut scanner, wire::FIN);
        assert_eq!(rest.len(), 19 + 1);
        assert!(rest[..19].iter().all(|&s| s == (4, wire::STREAM)));
        drop(client);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn with_flow_a_stream_outside_any_session_is_not_held() {
        let (mut client, agent) = start(Setup::behind_relay(Some(1000)));
        let mut scanner = Scanner::new(1 << 16);
        greeting(&mut client, &mut scanner);
        client.write_all(&accept(1000)).unwrap();
        client
            .write_all(&wire::source_request(4, 20 * 1000, 1000))
            .unwrap();
        let seen = frames(&mut client, &mut scanner, wire::FIN);
        assert_eq!(seen.len(), 21, "20 windows' worth, no credit needed");
        drop(client);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn a_kill_ends_a_session_stream_without_its_end_frame() {
        let (mut client, agent) = start(Setup::behind_relay(Some(1000)));
        let mut scanner = Scanner::new(1 << 16);
        greeting(&mut client, &mut scanner);
        client.write_all(&accept(1000)).unwrap();
        client
            .write_all(&wire::opening_session(wire::source_request(
                4,
                wire::ENDLESS,
                1000,
            )))
            .unwrap();
        assert_eq!(next(&mut client, &mut scanner), (4, wire::STREAM));
        let kill = Message::ExecSignal(relay_codec::payload::ExecSignal { signal: 9 })
            .to_frame(4)
            .unwrap();
        client.write_all(kill.as_wire()).unwrap();
        // Credit for the killed session changes nothing; an echo comes next.
        client.write_all(&credit(4, 1_000_000)).unwrap();
        client.write_all(&wire::frame(7, wire::ECHO, 64)).unwrap();
        assert_eq!(next(&mut client, &mut scanner), (7, wire::ECHO));
        drop(client);
        agent.join().unwrap().unwrap();
    }

    /// Ids of the frames the pump would send, in order, until no stream may
    /// (an `f` frame shows as its id + 1000).
    fn turns(streams: &Streams) -> Vec<u32> {
        let mut state = lock(&streams.state);
        let mut sent = Vec::new();
        while let Some(turn) = state.next_turn() {
            state.in_flight = None;
            match turn {
                Turn::Frame(stream) => {
                    sent.push(stream.id);
                    state.queue.push_back(stream);
                }
                Turn::Fin(stream) => sent.push(stream.id + 1000),
            }
        }
        sent
    }

    #[test]
    fn credit_is_kept_per_session_and_echoes_are_charged_to_theirs() {
        let streams = Streams::new();
        streams.enable_flow(2500);
        streams.open(1);
        streams.open(2);
        streams.start(1, wire::ENDLESS, 1000);
        streams.start(2, wire::ENDLESS, 1000);
        // 2500 -> 1500 -> 500 -> -500: three frames each, round robin.
        assert_eq!(turns(&streams), [1, 2, 1, 2, 1, 2]);
        streams.account(&[Seen::Credit(2, 1000)]);
        assert_eq!(turns(&streams), [2]);
        // 64 bytes of echoes on id 1 eat into the 500 granted: -500 + 500 - 64.
        streams.account(&[Seen::Credit(1, 500), Seen::Echo(1, 64)]);
        assert_eq!(turns(&streams), Vec::<u32>::new());
        // Credit must be positive: 0 is not enough, 1 byte lets a frame go.
        streams.account(&[Seen::Credit(1, 64)]);
        assert_eq!(turns(&streams), Vec::<u32>::new());
        streams.account(&[Seen::Credit(1, 1)]);
        assert_eq!(turns(&streams), [1]);
        // A new request on the open session does not refill it.
        streams.open(1);
        assert_eq!(turns(&streams), Vec::<u32>::new());
        // A stopped stream's end costs credit too, and waits for it.
        streams.stop(1);
        assert_eq!(turns(&streams), Vec::<u32>::new());
        streams.account(&[Seen::Credit(1, 2000)]);
        assert_eq!(turns(&streams), [1001]);
    }

    #[test]
    fn client_frames_of_a_session_are_credited_back_in_half_windows() {
        let streams = Streams::new();
        streams.enable_flow(1000);
        streams.open(3);
        assert_eq!(
            streams.account(&[Seen::Input(3, 300), Seen::Input(9, 5000)]),
            [],
            "under half a window owed, and id 9 is no session"
        );
        assert_eq!(
            streams.account(&[Seen::Input(3, 300), Seen::Input(3, 10)]),
            [(3, 600)]
        );
        assert_eq!(streams.account(&[Seen::Input(3, 500)]), [(3, 510)]);
    }

    #[test]
    fn without_flow_control_streams_never_wait_and_credit_is_ignored() {
        let streams = Streams::new();
        streams.open(1);
        streams.start(1, 3 * 1000, 1000);
        assert_eq!(
            streams.account(&[
                Seen::Credit(1, 5),
                Seen::Echo(1, 1_000_000),
                Seen::Input(1, 1_000_000)
            ]),
            []
        );
        assert_eq!(turns(&streams), [1, 1, 1, 1001]);
    }
}
