//! Whether a process still runs, for tests that check a kill reached every
//! process it should have.

use crate::eventually;

/// Whether `pid` no longer runs: gone, or a zombie nobody has reaped yet.
pub fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            // The state follows the command name, which may hold spaces and parentheses.
            let state = stat
                .rfind(')')
                .and_then(|at| stat[at + 1..].split_whitespace().next());
            state == Some("Z")
        }
    }
}

/// Waits until `pid` no longer runs (a killed process dies a little after
/// `kill` returns); panics after the hang guard.
pub async fn wait_until_gone(pid: u32) {
    eventually(&format!("process {pid} gone"), || {
        process_is_gone(pid).then_some(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_process_is_not_gone_and_a_reaped_one_is() {
        assert!(!process_is_gone(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(process_is_gone(pid));
    }
}
