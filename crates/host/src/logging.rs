//! Log output of the host and the `kiloclaw` CLI: one JSON object per line for log pipelines, or
//! one readable line per event on a terminal.
//!
//! Guest stdout/stderr lines that are JSON objects (the components log that way, one object per
//! decision or lifecycle step) arrive as a [`GUEST_FIELDS`] field and are merged into the event's
//! own object: a pipeline queries `tag`, `action` and ids directly instead of parsing an escaped
//! string. The host's `component` (which component wrote the line) wins over a guest's; a guest's
//! `tag` wins over the host's generic `guest`; a guest's `level` chose the event's level already
//! (`wasi.rs`) and its `timestamp` gives way to the host's.
//!
//! Filtering is `RUST_LOG`-style ([`tracing_subscriber::EnvFilter`]), default `info`.

use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// The event field carrying a guest's JSON log line, merged into the output object.
pub const GUEST_FIELDS: &str = "guest_fields";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// `HH:MM:SS.mmm LEVEL [component] tag key=value … message`, the level coloured on a terminal.
    Pretty,
}

impl LogFormat {
    /// Pretty when stderr is a terminal, JSON otherwise (a file, a pipe, a log collector).
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Pretty
        } else {
            Self::Json
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!(
                "unknown log format `{other}` (expected `pretty` or `json`)"
            )),
        }
    }
}

/// Installs the process-wide subscriber writing to stderr; the filter comes from `RUST_LOG`, else
/// `default_filter`. A second call keeps the first subscriber.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let color = format == LogFormat::Pretty && std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .event_format(EventFormat { format, color })
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A subscriber writing `format` lines to `writer`, for tests that look at the output.
pub fn subscriber<W>(format: LogFormat, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .event_format(EventFormat {
            format,
            color: false,
        })
        .with_max_level(Level::TRACE)
        .with_writer(writer)
        .finish()
}

/// The `FormatEvent` behind both formats.
#[derive(Debug, Clone, Copy)]
struct EventFormat {
    format: LogFormat,
    color: bool,
}

impl<S, N> FormatEvent<S, N> for EventFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = FieldCollector::default();
        event.record(&mut fields);
        let record = LogRecord {
            timestamp: chrono::Utc::now(),
            level: *event.metadata().level(),
            target: event.metadata().target(),
            fields: fields.into_merged(),
        };
        let line = match self.format {
            LogFormat::Json => record.json(),
            LogFormat::Pretty => record.pretty(self.color),
        };
        writeln!(writer, "{line}")
    }
}

/// An event's fields as JSON values, the guest's merged in.
#[derive(Default)]
struct FieldCollector {
    fields: Map<String, Value>,
    guest: Option<Map<String, Value>>,
}

impl FieldCollector {
    fn into_merged(self) -> Map<String, Value> {
        let Some(guest) = self.guest else {
            return self.fields;
        };
        let mut merged = self.fields;
        for (key, value) in guest {
            match key.as_str() {
                "level" | "timestamp" => {}
                "component" | "stream" if merged.contains_key(&key) => {}
                _ => {
                    merged.insert(key, value);
                }
            }
        }
        merged
    }

    fn insert(&mut self, field: &Field, value: Value) {
        self.fields.insert(field.name().to_owned(), value);
    }
}

impl Visit for FieldCollector {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == GUEST_FIELDS
            && let Ok(Value::Object(object)) = serde_json::from_str(value)
        {
            self.guest = Some(object);
            return;
        }
        self.insert(field, Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.insert(field, Value::from(format!("{value:?}")));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::from(value));
    }
}

/// One event, ready to render; rendering is pure so that the formats can be snapshot-tested.
struct LogRecord<'a> {
    timestamp: chrono::DateTime<chrono::Utc>,
    level: Level,
    target: &'a str,
    fields: Map<String, Value>,
}

/// Fields the pretty format puts first, in this order, without their names.
const LEADING: [&str; 2] = ["component", "tag"];

impl LogRecord<'_> {
    /// `timestamp`, `level` and `target` first (a reader scans them), then the fields by name.
    fn json(&self) -> String {
        let quoted = |value: &str| Value::from(value).to_string();
        let mut line = format!(
            "{{\"timestamp\":{},\"level\":{},\"target\":{}",
            quoted(
                &self
                    .timestamp
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
            quoted(self.level.as_str()),
            quoted(self.target),
        );
        for (key, value) in &self.fields {
            if matches!(key.as_str(), "timestamp" | "level" | "target") {
                continue;
            }
            let _ = write!(line, ",{}:{value}", quoted(key));
        }
        line.push('}');
        line
    }

    fn pretty(&self, color: bool) -> String {
        let mut line = self.timestamp.format("%H:%M:%S%.3f ").to_string();
        let level = format!("{:<5}", self.level.as_str());
        if color {
            let code = match self.level {
                Level::ERROR => "31",
                Level::WARN => "33",
                Level::INFO => "32",
                Level::DEBUG => "34",
                Level::TRACE => "90",
            };
            let _ = write!(line, "\x1b[{code}m{level}\x1b[0m");
        } else {
            line.push_str(&level);
        }
        if let Some(component) = self.fields.get("component").and_then(Value::as_str)
            && !component.is_empty()
        {
            let _ = write!(line, " [{component}]");
        }
        if let Some(tag) = self.fields.get("tag") {
            let _ = write!(line, " {}", plain(tag));
        }
        for (key, value) in &self.fields {
            if LEADING.contains(&key.as_str()) || key == "message" {
                continue;
            }
            let _ = write!(line, " {key}={}", quoted_if_needed(value));
        }
        if let Some(message) = self.fields.get("message") {
            let _ = write!(line, " {}", plain(message));
        }
        line
    }
}

/// A value as text: strings without their quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A `key=value` value: bare when it is one word, JSON-quoted otherwise, so a line stays parseable.
fn quoted_if_needed(value: &Value) -> String {
    match value {
        Value::String(text)
            if !text.is_empty()
                && !text
                    .chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control()) =>
        {
            text.clone()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn at_noon() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-11-29T12:00:00.250Z")
            .expect("time")
            .with_timezone(&chrono::Utc)
    }

    fn guest_record() -> LogRecord<'static> {
        let mut collector = FieldCollector::default();
        collector.fields.insert("tag".into(), Value::from("guest"));
        collector
            .fields
            .insert("component".into(), Value::from("reconciler"));
        collector
            .fields
            .insert("stream".into(), Value::from("stdout"));
        collector.guest = serde_json::from_str(
            r#"{"timestamp":"2026-11-29T11:59:59Z","level":"INFO","tag":"reconcile","action":"start","reason":"machine stopped unexpectedly","userId":"u-1","component":"forged","checked":3}"#,
        )
        .ok();
        LogRecord {
            timestamp: at_noon(),
            level: Level::INFO,
            target: "kiloclaw_host::wasi",
            fields: collector.into_merged(),
        }
    }

    #[test]
    fn json_merges_the_guest_fields_into_one_object() {
        assert_eq!(
            guest_record().json(),
            r#"{"timestamp":"2026-11-29T12:00:00.250Z","level":"INFO","target":"kiloclaw_host::wasi","action":"start","checked":3,"component":"reconciler","reason":"machine stopped unexpectedly","stream":"stdout","tag":"reconcile","userId":"u-1"}"#
        );
    }

    #[test]
    fn pretty_is_one_readable_line() {
        assert_eq!(
            guest_record().pretty(false),
            r#"12:00:00.250 INFO  [reconciler] reconcile action=start checked=3 reason="machine stopped unexpectedly" stream=stdout userId=u-1"#
        );
        assert!(guest_record().pretty(true).contains("\x1b[32mINFO \x1b[0m"));
    }

    #[test]
    fn a_guest_line_that_is_not_a_json_object_stays_a_plain_field() {
        let mut collector = FieldCollector::default();
        let line = "panicked at src/lib.rs:1: oops";
        collector
            .fields
            .insert(GUEST_FIELDS.into(), Value::from(line));
        assert_eq!(collector.into_merged()[GUEST_FIELDS], Value::from(line));
    }

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("buffer")).into_owned()
        }
    }

    #[test]
    fn the_subscriber_writes_one_json_object_per_event_with_typed_fields() {
        let buffer = Buffer::default();
        tracing::subscriber::with_default(subscriber(LogFormat::Json, buffer.clone()), || {
            tracing::info!(tag = "access", status = 200_u64, ok = true, "served");
            tracing::debug!(
                tag = "guest",
                component = "router",
                guest_fields = r#"{"tag":"proxy","action":"recover","userId":"u-2"}"#
            );
        });
        let lines: Vec<Value> = buffer
            .text()
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["ok"], true);
        assert_eq!(lines[0]["message"], "served");
        assert_eq!(lines[1]["level"], "DEBUG");
        assert_eq!(lines[1]["tag"], "proxy");
        assert_eq!(lines[1]["component"], "router");
        assert_eq!(lines[1]["userId"], "u-2");
        assert!(lines[1].get(GUEST_FIELDS).is_none());
    }

    #[test]
    fn formats_parse_from_their_names() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("pretty".parse(), Ok(LogFormat::Pretty));
        assert!("yaml".parse::<LogFormat>().is_err());
    }
}
