//! The relay's statistics for machines and for watching: Prometheus text
//! read by a real parser, the metrics file of `serve`, and `stats --watch`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::collections::BTreeMap;

use prometheus_parse::{Scrape, Value};
use relay_test_support::{eventually_blocking, temp_dir};
use support::{Serve, stdout};

/// Every numeric leaf of the stats JSON, by its path with `_` for `.`.
fn json_leaves(value: &serde_json::Value, prefix: &str, out: &mut BTreeMap<String, f64>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}_{key}")
                };
                json_leaves(value, &path, out);
            }
        }
        serde_json::Value::Number(n) => {
            out.insert(prefix.to_owned(), n.as_f64().unwrap());
        }
        _ => {}
    }
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap()
}

/// The value of counter `name` in `scrape`.
fn counter(scrape: &Scrape, name: &str) -> f64 {
    let sample = scrape.samples.iter().find(|s| s.metric == name).unwrap();
    match sample.value {
        Value::Counter(value) => value,
        ref other => panic!("{name} is not a counter: {other:?}"),
    }
}

/// Runs some traffic so the counters are not all zero.
fn traffic(serve: &Serve) {
    for _ in 0..3 {
        let output = serve.run(&["exec", "--", "echo", "counted"], b"");
        assert!(output.status.success());
    }
}

/// The samples of `text` by the stats JSON path they stand for (`_` for
/// `.`), checking the exposition on the way: it ends with `# EOF`, every
/// sample has HELP and a type, counters are named `..._total` and gauges
/// are not.
fn exported(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "{text}");
    let scrape = parse(text);
    let mut out = BTreeMap::new();
    for sample in &scrape.samples {
        assert!(
            scrape.docs.contains_key(&sample.metric),
            "no HELP for {}",
            sample.metric
        );
        let name = sample.metric.strip_prefix("agent_relay_").unwrap();
        let (path, value) = match sample.value {
            Value::Counter(value) => (name.strip_suffix("_total").unwrap(), value),
            Value::Gauge(value) => {
                assert!(!name.ends_with("_total"), "{name}");
                (name, value)
            }
            ref other => panic!("{name}: not a counter or a gauge: {other:?}"),
        };
        assert!(out.insert(path.to_owned(), value).is_none(), "{name} twice");
    }
    out
}

/// Every numeric leaf of `json`.
fn leaves(json: &serde_json::Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    json_leaves(json, "", &mut out);
    out
}

/// Asserts that `text` holds every leaf of `json` with its value, and
/// nothing else.
fn assert_matches(text: &str, json: &serde_json::Value) {
    let exported = exported(text);
    assert_eq!(exported, leaves(json));
    let counters = parse(text)
        .samples
        .iter()
        .filter(|s| matches!(s.value, Value::Counter(_)))
        .count();
    assert!(counters > 10, "{text}");
}

#[test]
fn openmetrics_output_parses_and_its_counters_match_the_json() {
    let serve = Serve::start(&[]);
    traffic(&serve);
    let json = serve.stats();
    let output = serve.run(&["stats", "--format", "openmetrics"], b"");
    assert!(output.status.success());
    let text = stdout(&output);
    assert_matches(&text, &json);
    let scrape = parse(&text);
    let admitted = scrape
        .samples
        .iter()
        .find(|s| s.metric == "agent_relay_clients_admitted_total")
        .unwrap();
    assert!(matches!(admitted.value, Value::Counter(n) if n >= 3.0));
    let connected = scrape
        .samples
        .iter()
        .find(|s| s.metric == "agent_relay_clients_connected")
        .unwrap();
    assert!(matches!(connected.value, Value::Gauge(_)));
}

#[test]
fn serve_keeps_a_metrics_file_for_the_textfile_collector_and_removes_it_at_exit() {
    let dir = temp_dir();
    let file = dir.path().join("agent_relay.prom");
    let file_arg = file.display().to_string();
    let mut serve = Serve::start(&["--metrics-file", &file_arg, "--metrics-interval", "0.1"]);
    traffic(&serve);
    // Rewritten until it shows the relay as it is now.
    let text = eventually_blocking("the metrics file up to date", || {
        let json = serve.stats();
        let text = std::fs::read_to_string(&file).ok()?;
        (exported(&text) == leaves(&json)).then(|| {
            assert_matches(&text, &json);
            text
        })
    });
    assert!(counter(&parse(&text), "agent_relay_clients_admitted_total") >= 3.0);
    // Only the file itself: its temporary twin is hidden and gone.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|name| name == "agent_relay.prom" || name.to_string_lossy().starts_with('.')),
        "{names:?}"
    );
    assert!(serve.stop().success());
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn a_metrics_file_that_cannot_be_written_stops_serve_at_startup_leaving_nothing_behind() {
    let dir = temp_dir();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let missing = dir.path().join("missing").join("agent_relay.prom");
    let directory = format!("{}/", dir.path().join("sub").display());
    let temporary = dir.path().join("missing").join(".agent_relay.prom.tmp");
    for (file, complaint) in [
        (
            missing.display().to_string(),
            format!("--metrics-file: cannot write {}: ", temporary.display()),
        ),
        (
            directory.clone(),
            format!("--metrics-file: {directory}: not a file name"),
        ),
    ] {
        let output = std::process::Command::new(support::BIN)
            .arg("serve")
            .arg("--socket")
            .arg(dir.path().join("agent.sock"))
            .arg("--metrics-file")
            .arg(&file)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{file}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&complaint), "{file}: {stderr}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(left, ["sub"], "{file}");
        assert!(
            std::fs::read_dir(dir.path().join("sub"))
                .unwrap()
                .next()
                .is_none()
        );
    }
}

#[test]
fn stats_watch_without_a_terminal_prints_successive_blocks_with_rates() {
    let serve = Serve::start(&[]);
    let output = serve.run(&["stats", "--watch", "0.2", "--count", "3"], b"");
    assert!(output.status.success());
    assert!(
        !output.stdout.contains(&0x1b),
        "a pipe gets no escape codes"
    );
    let text = stdout(&output);
    let blocks: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(blocks.len(), 3, "{text}");
    let row = |block: &str, field: &str| -> Vec<String> {
        block
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .find(|cols| cols.first().is_some_and(|c| c == field))
            .unwrap()
    };
    // The first snapshot has nothing to compare with; later ones do.
    assert_eq!(row(blocks[0], "agent_bytes")[2], "-");
    let rate: f64 = row(blocks[2], "agent_bytes")[2].parse().unwrap();
    assert!(rate >= 0.0);
    // Gauges have no rate column.
    assert_eq!(row(blocks[2], "clients_connected").len(), 2);
}

#[test]
fn stats_watch_can_repeat_the_openmetrics_form() {
    let serve = Serve::start(&[]);
    let watch = [
        "stats",
        "--watch",
        "0.1",
        "--count",
        "2",
        "--format",
        "openmetrics",
    ];
    let output = serve.run(&watch, b"");
    assert!(output.status.success());
    let text = stdout(&output);
    assert_eq!(text.matches("# EOF\n").count(), 2, "{text}");
    for block in text.split_inclusive("# EOF\n") {
        assert!(!parse(block.trim_start()).samples.is_empty());
    }
}

#[test]
fn stats_watch_in_json_is_one_line_per_snapshot() {
    let serve = Serve::start(&[]);
    let output = serve.run(
        &[
            "stats", "--watch", "0.1", "--count", "3", "--format", "json",
        ],
        b"",
    );
    assert!(output.status.success());
    let text = stdout(&output);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines.iter().all(|line| line["clients_admitted"].is_u64()));
}
