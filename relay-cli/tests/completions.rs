//! `agent-relay completions` and `agent-relay man`: descriptions of the
//! command generated from its own definitions, for shells and for `man`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::process::Command;

use support::BIN;

fn describe(args: &[&str]) -> String {
    let output = Command::new(BIN).args(args).output().unwrap();
    assert!(output.status.success(), "{args:?}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "", "{args:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_bash_completion_script_is_valid_bash_and_completes_every_command() {
    let script = describe(&["completions", "bash"]);
    assert!(script.contains("complete -F"), "{script}");
    for command in [
        "serve",
        "exec",
        "fs",
        "stats",
        "shutdown",
        "completions",
        "man",
    ] {
        assert!(script.contains(command), "{command}: {script}");
    }
    let dir = relay_test_support::temp_dir();
    let path = dir.path().join("agent-relay.bash");
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn zsh_and_fish_get_completion_scripts_of_their_own() {
    assert!(describe(&["completions", "zsh"]).starts_with("#compdef agent-relay"));
    let fish = describe(&["completions", "fish"]);
    assert!(fish.contains("complete -c agent-relay"), "{fish}");
}

#[test]
fn the_man_page_is_roff_describing_every_command() {
    let page = describe(&["man"]);
    assert!(page.contains(".TH agent-relay 1"), "{page}");
    for command in ["serve", "exec", "fs", "stats", "shutdown", "completions"] {
        assert!(page.contains(command), "{command}: {page}");
    }
}

#[test]
fn man_with_a_directory_writes_a_page_per_command_and_none_for_hidden_ones() {
    let dir = relay_test_support::temp_dir();
    let out = describe(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(out, "");
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    for page in [
        "agent-relay.1",
        "agent-relay-serve.1",
        "agent-relay-exec.1",
        "agent-relay-fs-put.1",
        "agent-relay-stats.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page}: {pages:?}");
    }
    assert!(
        !pages.iter().any(|p| p.contains("agent-relay-agent")),
        "{pages:?}"
    );
    assert!(!pages.iter().any(|p| p.contains("help")), "{pages:?}");
    let stats = std::fs::read_to_string(dir.path().join("agent-relay-stats.1")).unwrap();
    assert!(stats.contains("openmetrics"), "{stats}");
}
