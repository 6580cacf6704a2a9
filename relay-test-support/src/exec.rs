//! What one exec session sent, gathered message by message, for tests that
//! read an agent's frames themselves.

use relay_codec::Message;
use relay_codec::payload::Data;

/// The pid, output and exit code of one exec session.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// From `core.exec.started`.
    pub pid: Option<u32>,
    /// Every `core.exec.stdout` chunk, in order.
    pub stdout: Vec<u8>,
    /// Every `core.exec.stderr` chunk, in order.
    pub stderr: Vec<u8>,
    /// From `core.exec.exited`, once it came.
    pub code: Option<i32>,
}

impl ExecOutcome {
    /// Takes in one message of the session: `Ok(true)` once the session
    /// has exited, `Err` with the message if an exec session never sends
    /// it. Panics on a second start or on anything after the exit.
    pub fn record(&mut self, message: Message) -> Result<bool, Box<Message>> {
        assert!(self.code.is_none(), "{message:?} after the exit");
        match message {
            Message::ExecStarted(started) => {
                assert!(self.pid.is_none(), "started twice");
                assert!(
                    self.stdout.is_empty() && self.stderr.is_empty(),
                    "started after output"
                );
                self.pid = Some(started.pid);
            }
            Message::ExecStdout(Data { data }) => self.stdout.extend_from_slice(&data),
            Message::ExecStderr(Data { data }) => self.stderr.extend_from_slice(&data),
            Message::ExecExited(exited) => self.code = Some(exited.code),
            other => return Err(Box::new(other)),
        }
        Ok(self.code.is_some())
    }

    /// The exit code; panics if the session has not exited.
    pub fn exit_code(&self) -> i32 {
        self.code.expect("the session has exited")
    }

    /// Stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (lossy).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use relay_codec::payload::{ExecExited, ExecStarted};

    use super::*;

    #[test]
    fn output_is_gathered_until_the_exit_and_other_messages_are_handed_back() {
        let mut outcome = ExecOutcome::default();
        let messages = [
            Message::ExecStarted(ExecStarted { pid: 42 }),
            Message::ExecStdout(Data::from(b"out".to_vec())),
            Message::ExecStderr(Data::from(b"err".to_vec())),
            Message::ExecStdout(Data::from(b"put".to_vec())),
        ];
        for message in messages {
            assert_eq!(outcome.record(message), Ok(false));
        }
        assert_eq!(
            outcome.record(Message::Shutdown),
            Err(Box::new(Message::Shutdown))
        );
        let exited = Message::ExecExited(ExecExited { code: 3 });
        assert_eq!(outcome.record(exited), Ok(true));
        assert_eq!(outcome.pid, Some(42));
        assert_eq!(
            (outcome.stdout_text(), outcome.stderr_text()),
            ("output".into(), "err".into())
        );
        assert_eq!(outcome.exit_code(), 3);
    }
}
