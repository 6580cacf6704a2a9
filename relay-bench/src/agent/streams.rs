//! The bench agent's streams toward clients, and the pump thread that
//! sends them round robin, one frame per turn, each session's stream only
//! while it has credit.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, PoisonError};

use super::console::ConsoleWriter;
use super::credit::{FlowEvent, SessionCredit};
use super::lock;
use crate::protocol;

/// One stream toward a client.
#[derive(Debug)]
struct Stream {
    id: u32,
    /// The frame sent each turn, built once.
    frame: Vec<u8>,
    /// Frames left to send (`u64::MAX`: endless).
    left: u64,
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
    credit: Option<SessionCredit>,
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
            protocol::MIN_TAGGED
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

/// Every stream, shared by the reader (which starts, stops and credits
/// them) and the pump (which sends them).
#[derive(Debug)]
pub(super) struct Streams {
    state: Mutex<StreamState>,
    wake: Condvar,
}

impl Streams {
    pub(super) fn new() -> Streams {
        Streams {
            state: Mutex::new(StreamState::default()),
            wake: Condvar::new(),
        }
    }

    /// The relay accepted flow control with `window`: sessions opened from
    /// now on carry credit.
    pub(super) fn enable_flow(&self, window: u32) {
        lock(&self.state).credit = Some(SessionCredit::new(window));
    }

    /// A client frame with `SESSION_START` arrived on `id` (flow control
    /// only): a new session gets a window of credit, an open one keeps its own.
    pub(super) fn open(&self, id: u32) {
        if let Some(credit) = lock(&self.state).credit.as_mut() {
            credit.open(id);
        }
    }

    /// Starts a stream of `total` bytes (or [`protocol::ENDLESS`]) in
    /// frames of `frame_len` wire bytes toward `id`.
    pub(super) fn start(&self, id: u32, total: u64, frame_len: usize) {
        let frame_len = frame_len.clamp(protocol::MIN_TAGGED, relay_codec::MAX_FRAME_SIZE);
        let left = if total == protocol::ENDLESS {
            u64::MAX
        } else {
            (total / frame_len as u64).max(1)
        };
        let mut state = lock(&self.state);
        state.queue.push_back(Stream {
            id,
            frame: protocol::frame(id, protocol::STREAM, frame_len),
            left,
        });
        drop(state);
        self.wake.notify_one();
    }

    /// Ends the stream toward `id` with its `f` frame, at its next turn.
    pub(super) fn stop(&self, id: u32) {
        let mut state = lock(&self.state);
        let live = state.in_flight == Some(id) || state.queue.iter().any(|s| s.id == id);
        if live && !state.stops.contains(&id) {
            state.stops.push(id);
        }
    }

    /// Ends the session `id`: its stream goes without an `f` frame (nobody
    /// is there to read it) and its credit is forgotten.
    pub(super) fn kill(&self, id: u32) {
        let mut state = lock(&self.state);
        state.queue.retain(|s| s.id != id);
        state.stops.retain(|&s| s != id);
        if state.in_flight == Some(id) && !state.killed.contains(&id) {
            state.killed.push(id);
        }
        if let Some(credit) = state.credit.as_mut() {
            credit.end(id);
        }
    }

    /// Flow control: applies what a batch of reads means for the sessions'
    /// credit, and returns the credit to send back to the relay,
    /// `(id, bytes)`, for sessions that are owed half a window or more.
    ///
    /// Echoes are charged to their session but never wait for credit (the
    /// reader that writes them must stay free to read the credit that would
    /// let them go), so, like a stream's last frame, they may overshoot.
    pub(super) fn account(&self, events: &[FlowEvent]) -> Vec<(u32, u64)> {
        let mut state = lock(&self.state);
        let Some(credit) = state.credit.as_mut() else {
            return Vec::new();
        };
        let applied = credit.apply(events);
        drop(state);
        if applied.granted {
            self.wake.notify_one();
        }
        applied.due
    }

    /// Stops the pump.
    pub(super) fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_all();
    }

    /// Sends the streams round robin until closed or a write fails; waits
    /// while no stream may send.
    pub(super) fn pump(&self, console: &ConsoleWriter) {
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
                Turn::Fin(stream) => {
                    let fin = protocol::frame(stream.id, protocol::FIN, protocol::MIN_TAGGED);
                    (stream.id, console.write_stream_frame(&fin), None)
                }
                Turn::Frame(stream) => (
                    stream.id,
                    console.write_stream_frame(&stream.frame),
                    Some(stream),
                ),
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
    use super::*;

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

    fn granted(id: u32, bytes: u32) -> FlowEvent {
        FlowEvent::Granted { id, bytes }
    }

    #[test]
    fn credit_is_kept_per_session_and_echoes_are_charged_to_theirs() {
        let streams = Streams::new();
        streams.enable_flow(2500);
        streams.open(1);
        streams.open(2);
        streams.start(1, protocol::ENDLESS, 1000);
        streams.start(2, protocol::ENDLESS, 1000);
        // 2500 -> 1500 -> 500 -> -500: three frames each, round robin.
        assert_eq!(turns(&streams), [1, 2, 1, 2, 1, 2]);
        streams.account(&[granted(2, 1000)]);
        assert_eq!(turns(&streams), [2]);
        // 64 bytes of echoes on id 1 eat into the 500 granted: -500 + 500 - 64.
        streams.account(&[granted(1, 500), FlowEvent::Echoed { id: 1, len: 64 }]);
        assert_eq!(turns(&streams), Vec::<u32>::new());
        // Credit must be positive: 0 is not enough, 1 byte lets a frame go.
        streams.account(&[granted(1, 64)]);
        assert_eq!(turns(&streams), Vec::<u32>::new());
        streams.account(&[granted(1, 1)]);
        assert_eq!(turns(&streams), [1]);
        // A new request on the open session does not refill it.
        streams.open(1);
        assert_eq!(turns(&streams), Vec::<u32>::new());
        // A stopped stream's end costs credit too, and waits for it.
        streams.stop(1);
        assert_eq!(turns(&streams), Vec::<u32>::new());
        streams.account(&[granted(1, 2000)]);
        assert_eq!(turns(&streams), [1001]);
    }

    #[test]
    fn without_flow_control_streams_never_wait_and_credit_is_ignored() {
        let streams = Streams::new();
        streams.open(1);
        streams.start(1, 3 * 1000, 1000);
        assert_eq!(
            streams.account(&[
                granted(1, 5),
                FlowEvent::Echoed {
                    id: 1,
                    len: 1_000_000
                },
                FlowEvent::Delivered {
                    id: 1,
                    len: 1_000_000
                },
            ]),
            []
        );
        assert_eq!(turns(&streams), [1, 1, 1, 1001]);
    }

    #[test]
    fn a_killed_stream_leaves_the_queue_without_its_end() {
        let streams = Streams::new();
        streams.start(1, protocol::ENDLESS, 1000);
        streams.start(2, 2 * 1000, 1000);
        streams.kill(1);
        assert_eq!(turns(&streams), [2, 2, 1002]);
    }
}
