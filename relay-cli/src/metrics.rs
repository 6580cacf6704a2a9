//! The relay's statistics as metrics: which JSON field is a counter and
//! which a gauge, and the Prometheus text exposition of a snapshot.
//!
//! The text is Prometheus' text format (0.0.4): `# HELP` and `# TYPE` name
//! each sample as written, counters end in `_total`, and the block ends with
//! OpenMetrics' `# EOF`, which 0.0.4 parsers (node exporter's textfile
//! collector among them) read as a comment. Fields this table does not know
//! (a newer relay's) are still exported, as `untyped`.

use std::fmt::Write as _;

use serde_json::Value;

/// Every metric name starts with this.
pub(crate) const PREFIX: &str = "agent_relay_";

/// Whether a value only grows (while the relay runs) or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Monotonic: exported as `..._total`; `stats --watch` shows its rate.
    Counter,
    /// A level now.
    Gauge,
    /// A field this table does not describe.
    Untyped,
}

impl Kind {
    fn type_name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Untyped => "untyped",
        }
    }
}

/// One known field of the stats JSON.
struct Known {
    /// Dotted path in the JSON (`flow.window`).
    path: &'static str,
    kind: Kind,
    help: &'static str,
}

const fn known(path: &'static str, kind: Kind, help: &'static str) -> Known {
    Known { path, kind, help }
}

/// The fields of relay-server's `StatsSnapshot`, in its order.
const KNOWN: &[Known] = &[
    known("clients_connected", Kind::Gauge, "Clients connected now."),
    known(
        "clients_admitted",
        Kind::Counter,
        "Clients admitted since start.",
    ),
    known(
        "clients_refused",
        Kind::Counter,
        "Connections refused because every slot was taken.",
    ),
    known(
        "peers_refused",
        Kind::Counter,
        "Connections refused by the peer-uid check.",
    ),
    known(
        "clients_rejected",
        Kind::Counter,
        "Clients disconnected for a routing violation.",
    ),
    known(
        "clients_malformed",
        Kind::Counter,
        "Clients disconnected for a malformed frame.",
    ),
    known(
        "slow_over_budget",
        Kind::Counter,
        "Slow consumers cut off for exceeding their queue budget.",
    ),
    known(
        "slow_total_budget",
        Kind::Counter,
        "Slow consumers cut off because the total budget was reached.",
    ),
    known(
        "slow_stalled",
        Kind::Counter,
        "Slow consumers cut off because their queue stalled.",
    ),
    known(
        "slots_quarantined",
        Kind::Gauge,
        "Slots resting after their client left.",
    ),
    known(
        "sessions_open",
        Kind::Gauge,
        "Sessions open now, including killed ones the agent has not ended.",
    ),
    known(
        "agent_restart_disconnects",
        Kind::Counter,
        "Clients disconnected because the agent restarted under their open sessions.",
    ),
    known(
        "sessions_tombstoned",
        Kind::Gauge,
        "Open sessions of departed clients, killed, that the agent has not ended yet.",
    ),
    known(
        "sessions_refused",
        Kind::Counter,
        "Session requests refused because their client had its limit of sessions open.",
    ),
    known(
        "sessions_opened",
        Kind::Counter,
        "Sessions opened since start.",
    ),
    known(
        "kills_sent",
        Kind::Counter,
        "Kill signals sent for sessions of departed clients.",
    ),
    known(
        "client_to_agent_frames",
        Kind::Counter,
        "Frames forwarded from clients to the agent.",
    ),
    known(
        "client_to_agent_bytes",
        Kind::Counter,
        "Bytes forwarded from clients to the agent.",
    ),
    known("agent_frames", Kind::Counter, "Frames read from the agent."),
    known("agent_bytes", Kind::Counter, "Bytes read from the agent."),
    known(
        "agent_to_client_frames",
        Kind::Counter,
        "Frames written to clients.",
    ),
    known(
        "agent_to_client_bytes",
        Kind::Counter,
        "Bytes written to clients.",
    ),
    known(
        "queued_bytes",
        Kind::Gauge,
        "Bytes charged for frames queued toward clients now.",
    ),
    known(
        "dropped.before_ready",
        Kind::Counter,
        "Agent frames dropped: they arrived before core.ready.",
    ),
    known(
        "dropped.agent_control",
        Kind::Counter,
        "Agent frames dropped: on the connection id, not core.ready.",
    ),
    known(
        "dropped.slot_free",
        Kind::Counter,
        "Agent frames dropped: for a slot without a client.",
    ),
    known(
        "dropped.slot_quarantined",
        Kind::Counter,
        "Agent frames dropped: for a resting slot.",
    ),
    known(
        "dropped.no_slot",
        Kind::Counter,
        "Agent frames dropped: their id belongs to no slot.",
    ),
    known(
        "dropped.slow_consumer",
        Kind::Counter,
        "Frames dropped: queued for a client cut off as a slow consumer.",
    ),
    known(
        "dropped.client_gone",
        Kind::Counter,
        "Frames dropped: queued for a client that disconnected.",
    ),
    known(
        "dropped.reserved_id",
        Kind::Counter,
        "Agent frames dropped: on the runtime's reserved id.",
    ),
    known(
        "dropped.tombstoned",
        Kind::Counter,
        "Agent frames dropped: for a session killed when its client left.",
    ),
    known(
        "ready_replaced",
        Kind::Counter,
        "Times the agent sent core.ready again.",
    ),
    known(
        "ring.guest_to_host",
        Kind::Gauge,
        "Bytes waiting in the guest-to-host ring.",
    ),
    known(
        "ring.host_to_guest",
        Kind::Gauge,
        "Bytes waiting in the host-to-guest ring.",
    ),
    known("ring.capacity", Kind::Gauge, "Bytes of each ring."),
    known(
        "flow.window",
        Kind::Gauge,
        "Bytes of credit per session and direction.",
    ),
    known(
        "flow.sessions",
        Kind::Gauge,
        "Sessions with credit state now.",
    ),
    known(
        "flow.credits_sent",
        Kind::Counter,
        "core.flow.credit frames sent to the agent.",
    ),
    known(
        "flow.credits_received",
        Kind::Counter,
        "core.flow.credit frames received from the agent.",
    ),
    known(
        "flow.client_waits",
        Kind::Counter,
        "Times a client's frame waited for its session's credit.",
    ),
];

/// One numeric leaf of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    /// Dotted path in the JSON.
    pub(crate) path: String,
    /// Counter, gauge or unknown.
    pub(crate) kind: Kind,
    /// The value (the JSON holds integers; f64 keeps unknown fields too).
    pub(crate) value: f64,
}

impl Field {
    /// The exported sample name: prefix, path with `_` for `.`, and
    /// `_total` for a counter.
    pub(crate) fn metric_name(&self) -> String {
        let mut name = format!("{PREFIX}{}", sanitise(&self.path));
        if self.kind == Kind::Counter {
            name.push_str("_total");
        }
        name
    }

    fn help(&self) -> String {
        KNOWN
            .iter()
            .find(|known| known.path == self.path)
            .map_or_else(
                || format!("The relay's `{}` statistic.", self.path),
                |known| known.help.to_owned(),
            )
    }
}

/// The numeric leaves of a stats snapshot, in the JSON map's order (by
/// name). Absent parts (`null`: no ring, no flow control) and non-numbers
/// are left out.
pub(crate) fn fields(snapshot: &Value) -> Vec<Field> {
    let mut out = Vec::new();
    collect("", snapshot, &mut out);
    out
}

fn collect(prefix: &str, value: &Value, out: &mut Vec<Field>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                collect(&path, value, out);
            }
        }
        Value::Number(number) => {
            if let Some(value) = number.as_f64() {
                let kind = KNOWN
                    .iter()
                    .find(|known| known.path == prefix)
                    .map_or(Kind::Untyped, |known| known.kind);
                out.push(Field {
                    path: prefix.to_owned(),
                    kind,
                    value,
                });
            }
        }
        _ => {}
    }
}

/// Only `[a-zA-Z0-9_]` survive in a metric name.
fn sanitise(path: &str) -> String {
    path.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The Prometheus text exposition of a snapshot, ending with `# EOF`.
pub(crate) fn render(snapshot: &Value) -> String {
    let mut text = String::new();
    for field in fields(snapshot) {
        let name = field.metric_name();
        // Writing to a String cannot fail.
        let _ = writeln!(text, "# HELP {name} {}", escape_help(&field.help()));
        let _ = writeln!(text, "# TYPE {name} {}", field.kind.type_name());
        let _ = writeln!(text, "{name} {}", format_value(field.value));
    }
    text.push_str("# EOF\n");
    text
}

/// HELP text escapes `\` and line breaks.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Integers without a fraction, as the JSON has them.
fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 9.007_199_254_740_992e15 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::{KNOWN, Kind, fields, render};

    #[test]
    fn counters_get_total_gauges_do_not_and_absent_parts_are_left_out() {
        let snapshot = serde_json::json!({
            "clients_connected": 2,
            "agent_bytes": 1234,
            "dropped": { "slot_free": 3 },
            "ring": null,
            "brand_new": 7,
        });
        let text = render(&snapshot);
        assert!(text.contains(
            "# TYPE agent_relay_clients_connected gauge\nagent_relay_clients_connected 2\n"
        ));
        assert!(text.contains(
            "# TYPE agent_relay_agent_bytes_total counter\nagent_relay_agent_bytes_total 1234\n"
        ));
        assert!(text.contains("agent_relay_dropped_slot_free_total 3\n"));
        assert!(text.contains("# TYPE agent_relay_brand_new untyped\n"));
        assert!(!text.contains("ring"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn nested_paths_are_found_with_their_kind_in_name_order() {
        let snapshot = serde_json::json!({ "flow": { "window": 1, "credits_sent": 2 } });
        let kinds: Vec<_> = fields(&snapshot)
            .into_iter()
            .map(|f| (f.path, f.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("flow.credits_sent".to_owned(), Kind::Counter),
                ("flow.window".to_owned(), Kind::Gauge),
            ]
        );
    }

    #[test]
    fn every_statistic_of_the_relay_is_described_and_every_description_is_used() {
        let snapshot = relay_server::StatsSnapshot {
            ring: Some(relay_server::RingOccupancy::default()),
            flow: Some(relay_server::FlowStats::default()),
            ..relay_server::StatsSnapshot::default()
        };
        let found = fields(&serde_json::to_value(snapshot).unwrap());
        let untyped: Vec<_> = found.iter().filter(|f| f.kind == Kind::Untyped).collect();
        assert!(untyped.is_empty(), "not in KNOWN: {untyped:?}");
        for known in KNOWN {
            assert!(
                found.iter().any(|f| f.path == known.path),
                "{} is not a statistic of the relay",
                known.path
            );
        }
    }
}
