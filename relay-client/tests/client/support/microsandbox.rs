//! The agent's messages as microsandbox-protocol 0.4.3 encodes them.

use bytes::Bytes;
use microsandbox_protocol::codec::encode_to_buf;
use microsandbox_protocol::message::{Message as TheirMessage, MessageType as TheirType};
use microsandbox_protocol::{core, exec};
use relay_codec::{Frame, Message};

/// `message` on `id` as their encoder writes it, if it is one they know.
pub(super) fn encode(id: u32, message: &Message) -> Option<Frame> {
    let theirs = match message {
        Message::Ready(ready) => TheirMessage::with_payload(
            TheirType::Ready,
            id,
            &core::Ready {
                boot_time_ns: ready.boot_time_ns,
                init_time_ns: ready.init_time_ns,
                ready_time_ns: ready.ready_time_ns,
            },
        ),
        Message::ExecStarted(started) => TheirMessage::with_payload(
            TheirType::ExecStarted,
            id,
            &exec::ExecStarted { pid: started.pid },
        ),
        Message::ExecStdout(data) => TheirMessage::with_payload(
            TheirType::ExecStdout,
            id,
            &exec::ExecStdout {
                data: data.data.clone(),
            },
        ),
        Message::ExecStderr(data) => TheirMessage::with_payload(
            TheirType::ExecStderr,
            id,
            &exec::ExecStderr {
                data: data.data.clone(),
            },
        ),
        Message::ExecExited(exited) => TheirMessage::with_payload(
            TheirType::ExecExited,
            id,
            &exec::ExecExited { code: exited.code },
        ),
        _ => return None,
    }
    .unwrap();
    let mut wire = Vec::new();
    encode_to_buf(&theirs, &mut wire).unwrap();
    Some(Frame::from_wire(Bytes::from(wire)).unwrap())
}
