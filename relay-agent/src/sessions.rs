//! The table of open sessions the console reader dispatches to: each
//! session's input (stdin, upload, signals), its task, its credit, and the
//! limits that keep the agent's input queues bounded.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use relay_codec::payload::{ExecRequest, FsRequest, FsResponse};
use relay_codec::{CONNECTION_ID, Envelope, Flags, Frame, Message, MessageError, MessageType};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::agent::{AgentConfig, ServeEnd};
use crate::exec::{self, Control, ExecIo};
use crate::flow::{FlowControl, return_credit};
use crate::fs;
use crate::outbound::{Outbound, SessionOut, SessionState};
use crate::pty::PtyControl;
use crate::queue::{InputSender, Rejected, input_queue};
use crate::spawn::StartError;

/// Signals queued for one exec session before the reader waits.
const CONTROL_QUEUE: usize = 16;

/// Room in a session's input queue, with flow control, beyond what the
/// relay's credit allows: small frames are never held by the relay.
const INPUT_SLACK: usize = 64 * 1024;

/// What the reader passes to an open session.
#[derive(Debug)]
enum Input {
    Exec {
        stdin: InputSender,
        control: mpsc::Sender<Control>,
        /// Present for tty sessions.
        pty: Option<Arc<PtyControl>>,
    },
    Fs {
        upload: InputSender,
        /// Cancels the operation (a signal: the relay kills the sessions of
        /// a client that has gone).
        cancel: CancellationToken,
    },
    /// A session that only answers (a malformed request).
    Reply,
}

#[derive(Debug)]
struct Entry {
    state: Arc<SessionState>,
    task: tokio::task::Id,
    input: Input,
}

/// The open sessions and their tasks. Owned by the console reader alone.
#[derive(Debug)]
pub(crate) struct Sessions {
    outbound: Outbound,
    /// The window offered in `core.ready`, if any.
    offered: Option<u32>,
    /// Credit with the relay, once the relay accepted the offer. Sessions
    /// opened before that carry no credit.
    flow: Option<Arc<FlowControl>>,
    /// The task returning credit to the relay, once accepted.
    credit_task: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    input_queue_floor: usize,
    cancel: CancellationToken,
    map: HashMap<u32, Entry>,
    pub(crate) tasks: JoinSet<u32>,
    input_queue_bytes: usize,
    output_chunk: usize,
    fs_chunk: usize,
    max_sessions: usize,
}

impl Sessions {
    pub(crate) fn new(config: &AgentConfig, outbound: Outbound) -> Sessions {
        Sessions {
            outbound,
            offered: config.flow_window,
            flow: None,
            credit_task: None,
            input_queue_floor: config.input_queue_bytes,
            cancel: CancellationToken::new(),
            map: HashMap::new(),
            tasks: JoinSet::new(),
            input_queue_bytes: config.input_queue_bytes,
            output_chunk: config.output_chunk,
            fs_chunk: config.fs_chunk,
            max_sessions: config.max_sessions,
        }
    }

    /// Handles one frame; `Some` when it ends the agent.
    pub(crate) async fn dispatch(
        &mut self,
        frame: Frame,
        writer_failed: &CancellationToken,
    ) -> Option<ServeEnd> {
        let id = frame.id();
        let flags = frame.flags();
        let message = match Message::from_frame(&frame) {
            Ok(message) => message,
            Err(err) => {
                self.malformed(id, flags, &frame, &err).await;
                self.credit(id, frame.wire_len());
                return None;
            }
        };
        match message {
            Message::FlowAccept(accept) if id == CONNECTION_ID => {
                self.accept_flow(accept.window);
                return None;
            }
            Message::FlowCredit(credit) if id == CONNECTION_ID => {
                match self
                    .map
                    .get(&credit.id)
                    .and_then(|entry| entry.state.flow())
                {
                    Some(flow) => flow.grant(credit.bytes),
                    None => debug!(id = credit.id, "credit for no credited session; ignored"),
                }
                return None;
            }
            _ => {}
        }
        let len = frame.wire_len();
        match message {
            Message::Shutdown => {
                info!(id, "shutdown requested");
                return Some(ServeEnd::Shutdown);
            }
            Message::ExecRequest(req) => self.start_exec(id, req).await,
            Message::FsRequest(req) => self.start_fs(id, req).await,
            Message::ExecStdin(data) => {
                return self.input(id, data.data, len, true, writer_failed).await;
            }
            Message::FsData(data) => {
                return self.input(id, data.data, len, false, writer_failed).await;
            }
            Message::ExecResize(size) => match self.map.get(&id).map(|entry| &entry.input) {
                Some(Input::Exec { pty: Some(pty), .. }) => pty.resize(size.rows, size.cols),
                _ => debug!(id, "resize for no tty session; ignored"),
            },
            Message::ExecSignal(signal) => self.signal(id, signal.signal),
            other => {
                let t = other.message_type();
                if flags.contains(Flags::SESSION_START) {
                    self.malformed_reply(id, false, &format!("{t} is not a request"));
                } else {
                    debug!(id, %t, "message meant for the host; ignored");
                }
            }
        }
        self.credit(id, len);
        None
    }

    /// The relay took up the offer: sessions opened from now on carry
    /// credit. Ignored without an offer, or when already accepted (a relay
    /// that repeats itself does not reset sessions' credit).
    fn accept_flow(&mut self, window: u32) {
        if self.offered.is_none() || self.flow.is_some() {
            debug!(window, "flow-control acceptance not asked for; ignored");
            return;
        }
        info!(window, "relay accepted flow control");
        let flow = FlowControl::new(window);
        // A session's queue must hold what the relay may have in flight (a
        // window plus one maximal frame) so the reader never waits.
        self.input_queue_bytes = self
            .input_queue_floor
            .max(flow.window() as usize + relay_codec::MAX_FRAME_SIZE + INPUT_SLACK);
        let stop = CancellationToken::new();
        let task = tokio::spawn(return_credit(
            Arc::clone(&flow),
            self.outbound.clone(),
            stop.clone(),
        ));
        self.credit_task = Some((stop, task));
        self.flow = Some(flow);
    }

    /// A frame of `len` bytes on session `id` was dealt with: its credit
    /// goes back to the relay.
    fn credit(&self, id: u32, len: usize) {
        if let Some(flow) = self.open_flow(id) {
            drop(flow.ticket(len));
        }
    }

    /// The credit state of an open session, when flow control is on.
    fn open_flow(&self, id: u32) -> Option<&Arc<crate::flow::SessionFlow>> {
        self.map
            .get(&id)
            .filter(|entry| !entry.state.is_closed())
            .and_then(|entry| entry.state.flow())
    }

    /// A frame whose body does not decode: answered if it opens a session.
    async fn malformed(&mut self, id: u32, flags: Flags, frame: &Frame, err: &MessageError) {
        if !flags.contains(Flags::SESSION_START) {
            warn!(id, %err, "malformed message ignored");
            return;
        }
        let is_fs = Envelope::parse(frame.body())
            .is_ok_and(|envelope| envelope.message_type == MessageType::FsRequest.wire_name());
        self.malformed_reply(id, is_fs, &err.to_string());
    }

    fn malformed_reply(&mut self, id: u32, is_fs: bool, reason: &str) {
        warn!(id, reason, "malformed request answered with an error");
        let Some((out, state)) = self.open(id) else {
            return;
        };
        let reason = reason.to_owned();
        if is_fs {
            self.spawn(id, "fs", state, Input::Reply, async move {
                fs::malformed(&out, &reason).await;
            });
        } else {
            self.spawn(id, "exec", state, Input::Reply, async move {
                exec::malformed(&out, &reason).await;
            });
        }
    }

    /// A new session's outbox, unless a session with this id is still open.
    fn open(&mut self, id: u32) -> Option<(SessionOut, Arc<SessionState>)> {
        if self
            .map
            .get(&id)
            .is_some_and(|entry| !entry.state.is_closed())
        {
            warn!(id, "a session with this id is still open; request ignored");
            return None;
        }
        let flow = self.flow.as_ref().map(|flow| flow.session(id));
        let state = Arc::new(SessionState::new(flow));
        let out = SessionOut::new(
            id,
            self.outbound.clone(),
            self.cancel.child_token(),
            Arc::clone(&state),
        );
        Some((out, state))
    }

    /// Whether the open sessions (those whose terminal frame is not sent
    /// yet) reach the limit.
    fn is_full(&self) -> bool {
        let open = self
            .map
            .values()
            .filter(|entry| !entry.state.is_closed())
            .count();
        open >= self.max_sessions
    }

    fn spawn(
        &mut self,
        id: u32,
        kind: &'static str,
        state: Arc<SessionState>,
        input: Input,
        session: impl Future<Output = ()> + Send + 'static,
    ) {
        let span = info_span!("session", id, kind);
        let handle = self.tasks.spawn(
            async move {
                session.await;
                id
            }
            .instrument(span),
        );
        self.map.insert(
            id,
            Entry {
                state,
                task: handle.id(),
                input,
            },
        );
    }

    async fn start_exec(&mut self, id: u32, req: ExecRequest) {
        let Some((out, state)) = self.open(id) else {
            return;
        };
        if self.is_full() {
            warn!(
                id,
                limit = self.max_sessions,
                "too many sessions; exec refused"
            );
            let err = StartError::TooManySessions {
                limit: self.max_sessions,
            };
            return exec::start_failed(&out, &req.cmd, &err).await;
        }
        let (stdin_tx, stdin_rx) = input_queue(self.input_queue_bytes);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let pty = Arc::new(PtyControl::default());
        let input = Input::Exec {
            stdin: stdin_tx,
            control: control_tx,
            pty: req.tty.then(|| Arc::clone(&pty)),
        };
        let io = ExecIo {
            out,
            stdin: stdin_rx,
            control: control_rx,
            pty,
            chunk: self.output_chunk,
        };
        debug!(id, cmd = %req.cmd, tty = req.tty, "exec request");
        self.spawn(id, "exec", state, input, exec::run(req, io));
    }

    async fn start_fs(&mut self, id: u32, req: FsRequest) {
        let Some((out, state)) = self.open(id) else {
            return;
        };
        if self.is_full() {
            warn!(
                id,
                limit = self.max_sessions,
                "too many sessions; fs request refused"
            );
            let response = FsResponse::failed(format!(
                "too many sessions (at most {} at once)",
                self.max_sessions
            ));
            if let Err(err) = out.terminal(&Message::FsResponse(response)).await {
                exec::log_send_error(&err);
            }
            return;
        }
        let (upload_tx, upload_rx) = input_queue(self.input_queue_bytes);
        debug!(id, op = ?req.op, "fs request");
        let chunk = self.fs_chunk;
        let cancel = CancellationToken::new();
        let input = Input::Fs {
            upload: upload_tx,
            cancel: cancel.clone(),
        };
        self.spawn(
            id,
            "fs",
            state,
            input,
            fs::run(req, out, upload_rx, chunk, cancel),
        );
    }

    /// Queues stdin (`stdin`) or upload data for a session. Without flow
    /// control it waits while the session's queue is full (generation 1);
    /// with it, the relay's credit keeps the queue from filling, so it never
    /// waits. Returns `None` (the agent goes on).
    async fn input(
        &self,
        id: u32,
        data: Vec<u8>,
        len: usize,
        stdin: bool,
        writer_failed: &CancellationToken,
    ) -> Option<ServeEnd> {
        let Some(entry) = self.map.get(&id) else {
            debug!(id, stdin, "input for no session; discarded");
            return None;
        };
        if entry.state.is_closed() {
            // Its process or file is done with: nothing will take the bytes.
            debug!(id, stdin, "input after the session ended; discarded");
            return None;
        }
        let queue = match (&entry.input, stdin) {
            (Input::Exec { stdin, .. }, true) => stdin,
            (Input::Fs { upload, .. }, false) => upload,
            _ => {
                debug!(id, stdin, "input for no matching session; discarded");
                return None;
            }
        };
        let mut data = Bytes::from(data);
        let mut credit = entry.state.flow().map(|flow| flow.ticket(len));
        if credit.is_some() {
            match queue.try_push(data, credit) {
                Ok(()) => return None,
                Err((Rejected::Closed, _)) => {
                    debug!(id, "input after the session stopped reading; discarded");
                    return None;
                }
                // Only a relay that does not keep to its credit gets here:
                // wait rather than lose the bytes.
                Err((Rejected::Full(rejected), returned)) => {
                    error!(id, "input beyond the relay's credit; waiting for room");
                    (data, credit) = (rejected, returned);
                }
            }
        }
        tokio::select! {
            pushed = queue.push(data, credit) => {
                if pushed.is_err() {
                    debug!(id, "input after the session stopped reading; discarded");
                }
            }
            () = writer_failed.cancelled() => {}
        }
        None
    }

    /// Delivers a signal: to an exec session's process, or, for an fs
    /// session, as a cancellation. Never waits: the console reader must not
    /// stall behind one session.
    fn signal(&self, id: u32, signal: i32) {
        match self.map.get(&id).map(|entry| &entry.input) {
            Some(Input::Exec { control, .. }) => match control.try_send(Control::Signal(signal)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    warn!(id, signal, "signals for this session pile up; dropped");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    debug!(id, signal, "signal after the session ended; ignored");
                }
            },
            Some(Input::Fs { cancel, .. }) => {
                debug!(id, signal, "fs request cancelled by a signal");
                cancel.cancel();
            }
            _ => debug!(id, signal, "signal for no session; ignored"),
        }
    }

    /// Forgets a finished session, unless its id already belongs to a newer one.
    pub(crate) fn finished(&mut self, joined: Result<(tokio::task::Id, u32), JoinError>) {
        match joined {
            Ok((task, id)) => {
                if self.map.get(&id).is_some_and(|entry| entry.task == task) {
                    self.map.remove(&id);
                }
            }
            Err(err) => {
                let task = err.id();
                error!(%err, "a session task failed");
                self.map.retain(|_, entry| entry.task != task);
            }
        }
    }

    /// Ends every session (their processes are killed and reaped) and waits
    /// for all of them.
    pub(crate) async fn end_all(&mut self) {
        self.cancel.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(err) = joined {
                error!(%err, "a session task failed");
            }
        }
        self.map.clear();
        if let Some((stop, task)) = self.credit_task.take() {
            stop.cancel();
            let _ = task.await;
        }
    }
}
