//! The bench agent: the guest side of every implementation under test (on
//! a plain socket for raw, on the naive queue, on the real ring). It echoes,
//! sinks and streams frames as told by their tags (see [`crate::protocol`]).
//!
//! One thread reads and answers echoes straight away (one write per batch
//! of frames read together); a second thread, started with the first
//! stream, sends the streams round robin, one frame per turn
//! ([`streams`]). Both write through one [`console::ConsoleWriter`],
//! echoes first.
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
//! the offer with `core.flow.accept`. A stream out of credit waits; the
//! others keep their turns. Frames on other ids are not flow controlled,
//! as the relay credits only the sessions it tracks. The other way, the
//! agent returns credit for the client frames of a session as it reads
//! them (it delivers each at once), in half windows ([`credit`]).
//!
//! A `core.exec.signal` on a session (the relay's kill when a client
//! leaves with the session open) ends its stream at once, as killing a
//! process would.

mod console;
mod credit;
mod streams;

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use relay_codec::payload::{FlowWindow, Ready};
use relay_codec::{CONNECTION_ID, Flags, Frame, Message, Scanned, WIRE_HEADER_SIZE, flow};

use self::console::ConsoleWriter;
use self::credit::FlowEvent;
use self::streams::Streams;
use crate::protocol::{self, malformed};

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
    .to_frame(CONNECTION_ID)
    .unwrap_or_else(|_| unreachable!("a ready message always encodes"))
}

/// Bytes the reader asks for per read.
const READ_BUFFER: usize = 256 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves until `reader` ends (or a write fails, or the stream is
/// malformed), starting as `setup` says.
pub(crate) fn serve(
    mut reader: impl Read,
    writer: Box<dyn Write + Send>,
    setup: Setup,
) -> io::Result<()> {
    let console = Arc::new(ConsoleWriter::new(writer));
    if setup.ready {
        console.write_replies(ready_frame(setup.flow).as_wire())?;
    }
    let mut dispatcher = Dispatcher {
        setup,
        console,
        streams: Arc::new(Streams::new()),
        pump: None,
        replies: Vec::new(),
        flow_on: false,
        events: Vec::new(),
    };
    let mut scanner = protocol::scanner(READ_BUFFER);
    let result = loop {
        match scanner.fill(&mut reader) {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => break Err(error),
        }
        let scanned = loop {
            match scanner.next_frame() {
                Ok(Some(found)) => dispatcher.frame(found),
                Ok(None) => break Ok(()),
                Err(error) => break Err(malformed(error)),
            }
        };
        if let Err(error) = scanned.and_then(|()| dispatcher.answer()) {
            break Err(error);
        }
    };
    dispatcher.streams.close();
    if let Some(pump) = dispatcher.pump {
        let _ = pump.join();
    }
    match result {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The reader's side of the agent: acts on each frame read, and answers a
/// batch of reads with one write.
#[derive(Debug)]
struct Dispatcher {
    setup: Setup,
    console: Arc<ConsoleWriter>,
    streams: Arc<Streams>,
    /// The stream thread, once a stream was asked for.
    pump: Option<JoinHandle<()>>,
    /// Echoes and credit frames of this batch of reads.
    replies: Vec<u8>,
    /// Set when the relay accepts the offer.
    flow_on: bool,
    /// Flow control only: what this batch of reads means for credit.
    events: Vec<FlowEvent>,
}

impl Dispatcher {
    /// Acts on one frame.
    fn frame(&mut self, found: Scanned<'_>) {
        let header = found.header();
        let wire = match found {
            Scanned::Whole { wire, .. } => wire,
            // A large data frame: sunk, which delivers it.
            Scanned::Large { wire_len, .. } => {
                if self.flow_on {
                    self.events.push(FlowEvent::Delivered {
                        id: header.id,
                        len: wire_len,
                    });
                }
                return;
            }
        };
        if header.id == CONNECTION_ID {
            match Message::from_body(body(wire)) {
                Ok(Message::FlowAccept(accept)) if self.setup.flow.is_some() && !self.flow_on => {
                    self.streams.enable_flow(accept.window);
                    self.flow_on = true;
                }
                Ok(Message::FlowCredit(credit)) => {
                    self.events.push(FlowEvent::Granted {
                        id: credit.id,
                        bytes: credit.bytes,
                    });
                }
                _ => {}
            }
            return;
        }
        if self.flow_on {
            if header.flags.contains(Flags::SESSION_START) {
                self.streams.open(header.id);
            }
            self.events.push(FlowEvent::Delivered {
                id: header.id,
                len: wire.len(),
            });
        }
        match wire.get(WIRE_HEADER_SIZE).copied() {
            Some(protocol::ECHO) => {
                self.replies.extend_from_slice(wire);
                if self.flow_on {
                    self.events.push(FlowEvent::Echoed {
                        id: header.id,
                        len: wire.len(),
                    });
                }
            }
            Some(protocol::SOURCE) => {
                if let Some((total, frame_len)) = protocol::source_args(wire) {
                    self.streams.start(header.id, total, frame_len);
                    if self.pump.is_none() {
                        let (streams, console) = (self.streams.clone(), self.console.clone());
                        self.pump = Some(std::thread::spawn(move || streams.pump(&console)));
                    }
                }
            }
            Some(protocol::STOP) => {
                if let Some(target) = protocol::stop_target(wire) {
                    self.streams.stop(target);
                }
            }
            Some(protocol::DATA | protocol::STREAM | protocol::FIN) => {}
            // Not the bench's own: a relay's kill of a departed client's session.
            _ => {
                if let Ok(Message::ExecSignal(_)) = Message::from_body(body(wire)) {
                    self.streams.kill(header.id);
                }
            }
        }
    }

    /// Writes the batch's echoes and the credit it earned, in one write.
    fn answer(&mut self) -> io::Result<()> {
        if !self.events.is_empty() {
            for (id, bytes) in self.streams.account(&self.events) {
                for frame in flow::credit_frames(id, bytes) {
                    self.replies.extend_from_slice(frame.as_wire());
                }
            }
            self.events.clear();
        }
        if self.replies.is_empty() {
            return Ok(());
        }
        let written = self.console.write_replies(&self.replies);
        self.replies.clear();
        written
    }
}

/// The body of a whole frame: what follows id and flags.
fn body(frame: &[u8]) -> &[u8] {
    frame.get(WIRE_HEADER_SIZE..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use relay_codec::{FrameScanner, flow};

    use super::*;
    use crate::protocol::{
        DATA, ECHO, ENDLESS, FIN, STREAM, frame, opening_session, source_request, stop_request,
    };

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
    fn next(stream: &mut UnixStream, scanner: &mut FrameScanner) -> (u32, u8) {
        loop {
            if let Some(found) = scanner.next_frame().unwrap() {
                return (found.header().id, found.first_body_byte().unwrap_or(0));
            }
            assert!(scanner.fill(stream).unwrap() > 0, "agent ended early");
        }
    }

    fn frames(stream: &mut UnixStream, scanner: &mut FrameScanner, until: u8) -> Vec<(u32, u8)> {
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
    fn greeting(stream: &mut UnixStream, scanner: &mut FrameScanner) -> Option<FlowWindow> {
        loop {
            if let Some(Scanned::Whole { header, wire }) = scanner.next_frame().unwrap() {
                assert_eq!(header.id, CONNECTION_ID);
                let frame = Frame::from_wire(wire.to_vec().into()).unwrap();
                match Message::from_frame(&frame).unwrap() {
                    Message::Ready(ready) => return ready.flow,
                    other => panic!("expected core.ready, got {other:?}"),
                }
            }
            assert!(scanner.fill(stream).unwrap() > 0, "agent ended early");
        }
    }

    /// The relay's grant of `bytes` more on session `id`.
    fn credit(id: u32, bytes: u32) -> Vec<u8> {
        let mut frames = flow::credit_frames(id, u64::from(bytes));
        frames.next().unwrap().as_wire().to_vec()
    }

    /// What a relay that takes up the offer writes first.
    fn accept(window: u32) -> Vec<u8> {
        flow::accept_frame(window).as_wire().to_vec()
    }

    /// A stream of 30 frames (more than a window) on a session runs to its
    /// end when nobody accepted the offer: plain generation 1.
    #[test]
    fn an_offer_nobody_accepts_holds_nothing_back() {
        let (mut client, agent) = start(Setup::behind_relay(Some(10_000)));
        let mut scanner = protocol::scanner(1 << 16);
        greeting(&mut client, &mut scanner);
        client
            .write_all(&opening_session(source_request(4, 30 * 1000, 1000)))
            .unwrap();
        let seen = frames(&mut client, &mut scanner, FIN);
        assert_eq!(seen.len(), 31);
        drop(client);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn the_agent_greets_echoes_sinks_and_streams() {
        let (mut client, agent) = start(Setup::behind_relay(None));
        let mut scanner = protocol::scanner(1 << 16);
        assert_eq!(greeting(&mut client, &mut scanner), None);

        client.write_all(&frame(3, DATA, 100_000)).unwrap();
        client.write_all(&frame(3, ECHO, 64)).unwrap();
        assert_eq!(frames(&mut client, &mut scanner, ECHO), [(3, ECHO)]);

        client
            .write_all(&source_request(4, 10 * 5000, 5000))
            .unwrap();
        let seen = frames(&mut client, &mut scanner, FIN);
        assert_eq!(seen.len(), 11);
        assert!(seen[..10].iter().all(|&s| s == (4, STREAM)));

        drop(client);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn an_endless_stream_ends_when_stopped() {
        let (mut client, agent) = start(Setup::behind_relay(None));
        let mut scanner = protocol::scanner(1 << 16);
        greeting(&mut client, &mut scanner);
        client.write_all(&source_request(8, ENDLESS, 1000)).unwrap();
        for _ in 0..50 {
            assert_eq!(next(&mut client, &mut scanner), (8, STREAM));
        }
        client.write_all(&stop_request(9, 8)).unwrap();
        let seen = frames(&mut client, &mut scanner, FIN);
        assert_eq!(seen.last(), Some(&(8, FIN)));
        drop(client);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn with_flow_a_session_stops_at_its_window_and_resumes_on_credit() {
        let (mut client, agent) = start(Setup::behind_relay(Some(10_000)));
        let mut scanner = protocol::scanner(1 << 16);
        assert_eq!(
            greeting(&mut client, &mut scanner),
            Some(FlowWindow { window: 10_000 })
        );
        client.write_all(&accept(10_000)).unwrap();
        client
            .write_all(&opening_session(source_request(4, 30 * 1000, 1000)))
            .unwrap();
        for _ in 0..10 {
            assert_eq!(next(&mut client, &mut scanner), (4, STREAM));
        }
        // The window is spent: an echo asked for now is the next frame, and
        // stays so however long the agent takes to answer.
        client.write_all(&frame(7, ECHO, 64)).unwrap();
        assert_eq!(next(&mut client, &mut scanner), (7, ECHO));

        // One byte of credit lets one whole frame go (it overshoots).
        client.write_all(&credit(4, 1)).unwrap();
        assert_eq!(next(&mut client, &mut scanner), (4, STREAM));
        client.write_all(&frame(7, ECHO, 64)).unwrap();
        assert_eq!(next(&mut client, &mut scanner), (7, ECHO));

        // Credit for another id does not move this stream.
        client.write_all(&credit(5, 100_000)).unwrap();
        client.write_all(&frame(7, ECHO, 64)).unwrap();
        assert_eq!(next(&mut client, &mut scanner), (7, ECHO));

        // Enough credit: the rest of the stream, then its end.
        client.write_all(&credit(4, 30_000)).unwrap();
        let rest = frames(&mut client, &mut scanner, FIN);
        assert_eq!(rest.len(), 19 + 1);
        assert!(rest[..19].iter().all(|&s| s == (4, STREAM)));
        drop(client);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn with_flow_a_stream_outside_any_session_is_not_held() {
        let (mut client, agent) = start(Setup::behind_relay(Some(1000)));
        let mut scanner = protocol::scanner(1 << 16);
        greeting(&mut client, &mut scanner);
        client.write_all(&accept(1000)).unwrap();
        client
            .write_all(&source_request(4, 20 * 1000, 1000))
            .unwrap();
        let seen = frames(&mut client, &mut scanner, FIN);
        assert_eq!(seen.len(), 21, "20 windows' worth, no credit needed");
        drop(client);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn a_kill_ends_a_session_stream_without_its_end_frame() {
        let (mut client, agent) = start(Setup::behind_relay(Some(1000)));
        let mut scanner = protocol::scanner(1 << 16);
        greeting(&mut client, &mut scanner);
        client.write_all(&accept(1000)).unwrap();
        client
            .write_all(&opening_session(source_request(4, ENDLESS, 1000)))
            .unwrap();
        assert_eq!(next(&mut client, &mut scanner), (4, STREAM));
        let kill = Message::ExecSignal(relay_codec::payload::ExecSignal { signal: 9 })
            .to_frame(4)
            .unwrap();
        client.write_all(kill.as_wire()).unwrap();
        // Credit for the killed session changes nothing; an echo comes next.
        client.write_all(&credit(4, 1_000_000)).unwrap();
        client.write_all(&frame(7, ECHO, 64)).unwrap();
        assert_eq!(next(&mut client, &mut scanner), (7, ECHO));
        drop(client);
        agent.join().unwrap().unwrap();
    }
}
