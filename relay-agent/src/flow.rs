//! Per-session credit with the relay (an extension offered in `core.ready`
//! as `flow: {window}`, in force once the relay answers `core.flow.accept`).
//!
//! - Output: a session may have `window` bytes of frames in flight toward
//!   the relay plus the credit the relay has returned; out of credit, its
//!   pumps stop reading the process's pipe (or the file), so only that
//!   process waits. One frame may overshoot; terminal frames are free.
//! - Input: the relay charges every frame it forwards on a session. Each
//!   frame's bytes are credited back once delivered: stdin and upload data
//!   when written to the process or file, anything else at once. Credit
//!   goes back in `core.flow.credit` frames (on the connection id, naming
//!   the session) once half a window is owed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use relay_codec::flow;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::outbound::Outbound;

/// Flow control of the whole agent: the window, and the sessions that owe
/// the relay credit.
#[derive(Debug)]
pub(crate) struct FlowControl {
    window: u32,
    due: Mutex<Vec<Arc<SessionFlow>>>,
    wake: Notify,
}

impl FlowControl {
    pub(crate) fn new(window: u32) -> Arc<FlowControl> {
        Arc::new(FlowControl {
            window: window.max(1),
            due: Mutex::new(Vec::new()),
            wake: Notify::new(),
        })
    }

    /// Bytes of credit per session and direction.
    pub(crate) fn window(&self) -> u32 {
        self.window
    }

    /// Credit state for a new session.
    pub(crate) fn session(self: &Arc<Self>, id: u32) -> Arc<SessionFlow> {
        Arc::new(SessionFlow {
            id,
            control: Arc::clone(self),
            avail: Mutex::new(i64::from(self.window)),
            granted: Notify::new(),
            owed: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    fn due(&self) -> MutexGuard<'_, Vec<Arc<SessionFlow>>> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One session's credit, both ways.
#[derive(Debug)]
pub(crate) struct SessionFlow {
    id: u32,
    control: Arc<FlowControl>,
    /// Output bytes the session may still send (may go negative by one frame).
    avail: Mutex<i64>,
    granted: Notify,
    /// Input bytes delivered and not yet credited back.
    owed: AtomicU64,
    closed: AtomicBool,
}

impl SessionFlow {
    fn avail(&self) -> MutexGuard<'_, i64> {
        self.avail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the session has output credit, then spends `cost`.
    pub(crate) async fn acquire(&self, cost: usize) {
        loop {
            let granted = self.granted.notified();
            tokio::pin!(granted);
            // Registered before the check, so a grant in between wakes us.
            granted.as_mut().enable();
            {
                let mut avail = self.avail();
                if *avail > 0 {
                    *avail -= i64::try_from(cost).unwrap_or(i64::MAX);
                    return;
                }
            }
            granted.await;
        }
    }

    /// The relay returned `bytes` of output credit.
    pub(crate) fn grant(&self, bytes: u32) {
        *self.avail() += i64::from(bytes);
        self.granted.notify_waiters();
    }

    /// A credit for `len` bytes of input, returned when the ticket is dropped
    /// (once the input is delivered, or discarded).
    pub(crate) fn ticket(self: &Arc<Self>, len: usize) -> CreditTicket {
        CreditTicket {
            session: Arc::clone(self),
            len: len as u64,
        }
    }

    fn returned(self: &Arc<Self>, len: u64) {
        let before = self.owed.fetch_add(len, Ordering::AcqRel);
        let half = flow::return_threshold(self.control.window);
        if before < half && before + len >= half {
            self.control.due().push(Arc::clone(self));
            self.control.wake.notify_one();
        }
    }

    /// The session ended: nothing more is credited back.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// Input bytes to credit back to the relay once delivered.
#[derive(Debug)]
pub(crate) struct CreditTicket {
    session: Arc<SessionFlow>,
    len: u64,
}

impl Drop for CreditTicket {
    fn drop(&mut self) {
        self.session.returned(self.len);
    }
}

/// Sends `core.flow.credit` frames as sessions come due, until `cancel`.
pub(crate) async fn return_credit(
    control: Arc<FlowControl>,
    outbound: Outbound,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = control.wake.notified() => {}
        }
        let due = std::mem::take(&mut *control.due());
        for session in due {
            let bytes = session.owed.swap(0, Ordering::AcqRel);
            if bytes == 0 || session.closed.load(Ordering::Acquire) {
                continue;
            }
            for frame in flow::credit_frames(session.id, bytes) {
                if outbound.send(frame).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn output_waits_when_credit_runs_out_until_the_relay_grants_more() {
        let control = FlowControl::new(100);
        let session = control.session(7);
        session.acquire(60).await;
        session.acquire(60).await;
        let mut third = Box::pin(session.acquire(10));
        assert!(third.as_mut().now_or_never().is_none());
        session.grant(30);
        third.await;
    }

    #[tokio::test]
    async fn delivered_input_is_credited_back_once_half_a_window_is_owed() {
        let control = FlowControl::new(100);
        let session = control.session(7);
        drop(session.ticket(30));
        assert!(control.due().is_empty());
        drop(session.ticket(30));
        assert_eq!(control.due().len(), 1);
        assert_eq!(session.owed.load(Ordering::Acquire), 60);
    }
}
