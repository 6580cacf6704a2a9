//! Logs on stderr: human text (coloured only on a terminal, never with
//! `NO_COLOR`) or one JSON object a line for machines.
//!
//! The relay's tasks run inside a `relay` span whose field is the socket
//! path. `serve` states that path once, in its startup line, so the span
//! fields here leave it out instead of repeating it on every line.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, JsonVisitor, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The name `--log-format` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The span field that `serve` reports once at startup instead.
const STATED_ONCE: &str = "socket";

/// The format [`init`] installed.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Whether log lines are JSON, so that a final error should be one too.
pub(crate) fn json() -> bool {
    FORMAT.get() == Some(&LogFormat::Json)
}

/// Installs the global subscriber: `RUST_LOG` or `default_level`, on stderr.
pub(crate) fn init(format: LogFormat, default_level: &str) {
    let _ = FORMAT.set(format);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(colour_wanted(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .fmt_fields(SpanFields)
            .event_format(TextFormat)
            .init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .json()
            .fmt_fields(JsonSpanFields)
            .init(),
    }
}

/// Colour only for a terminal, and never when `NO_COLOR` is set to anything
/// but the empty string (<https://no-color.org>).
pub(crate) fn colour_wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

/// `TIME LEVEL span{fields}:span: target: message fields`, the shape of
/// tracing-subscriber's default, with events' fields formatted in full
/// (only span fields leave out [`STATED_ONCE`]).
#[derive(Debug, Clone, Copy)]
struct TextFormat;

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ansi = writer.has_ansi_escapes();
        SystemTime.format_time(&mut writer)?;
        let level = *event.metadata().level();
        if ansi {
            write!(writer, " \x1b[{}m{level:>5}\x1b[0m ", level_colour(level))?;
        } else {
            write!(writer, " {level:>5} ")?;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{}", span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                write!(writer, ":")?;
            }
            write!(writer, " ")?;
        }
        write!(writer, "{}: ", event.metadata().target())?;
        DefaultFields::new().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The SGR colour of a level, as tracing-subscriber's default uses.
fn level_colour(level: Level) -> &'static str {
    match level {
        Level::ERROR => "31",
        Level::WARN => "33",
        Level::INFO => "32",
        Level::DEBUG => "34",
        Level::TRACE => "35",
    }
}

/// Span fields as `k=v` pairs, without [`STATED_ONCE`].
#[derive(Debug, Clone, Copy)]
struct SpanFields;

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = DefaultVisitor::new(writer, true);
        fields.record(&mut Without(&mut visitor));
        visitor.finish()
    }
}

/// Span fields as a JSON object, without [`STATED_ONCE`].
#[derive(Debug, Clone, Copy)]
struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor::new(&mut writer);
        fields.record(&mut Without(&mut visitor));
        visitor.finish()
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // Appending to a serialised object would not be JSON; collect the
        // new fields as an object of their own and merge the two.
        let mut added = String::new();
        let mut visitor = JsonVisitor::new(&mut added);
        fields.record(&mut Without(&mut visitor));
        visitor.finish()?;
        let parse = |text: &str| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
                .map_err(|_| fmt::Error)
        };
        let mut merged = if current.is_empty() {
            serde_json::Map::new()
        } else {
            parse(current)?
        };
        merged.extend(parse(&added)?);
        current.fields = serde_json::Value::Object(merged).to_string();
        Ok(())
    }
}

/// A visitor that passes every field on except [`STATED_ONCE`].
struct Without<'a, V>(&'a mut V);

impl<V: Visit> Visit for Without<'_, V> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() != STATED_ONCE {
            self.0.record_debug(field, value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() != STATED_ONCE {
            self.0.record_str(field, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() != STATED_ONCE {
            self.0.record_i64(field, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() != STATED_ONCE {
            self.0.record_u64(field, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() != STATED_ONCE {
            self.0.record_bool(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if field.name() != STATED_ONCE {
            self.0.record_error(field, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colour_wanted;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }
}
