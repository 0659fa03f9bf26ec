//! The log: tracing to stderr, as text (for people) or JSON (for collectors).
//!
//! Callers choose many logged values (a user, server or namespace from a request body, an
//! `X-Request-Id`), so the text format must not let a value end its line or fake a field:
//! [`TextFields`] escapes control characters (`\n`, ESC, ...) in every field and message, and
//! quotes any field value that holds blanks, `=` or `"`. Doing it in the formatter covers every
//! call site, those still to be written included. The JSON format escapes by itself and is
//! left as tracing-subscriber writes it.

use std::borrow::Cow;
use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

use crate::args::LogFormat;

mod writer;

pub use writer::Guard;

/// Starts the log. Lines are written by a thread of their own, in batches, so a request never
/// waits on stderr; keep the guard until the end: dropping it writes what is still queued.
pub fn init(format: LogFormat) -> Guard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = writer::batched(std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.fmt_fields(TextFields).init(),
        // One request span, so the list of spans would repeat `span`.
        LogFormat::Json => builder.json().flatten_event(true).with_span_list(false).init(),
    }
    guard
}

/// The text format's fields: `name=value` separated by blanks, the message bare, with caller
/// values made harmless (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFields;

impl<'a> MakeVisitor<Writer<'a>> for TextFields {
    type Visitor = TextVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> TextVisitor<'a> {
        TextVisitor { writer, result: Ok(()), first: true }
    }
}

pub struct TextVisitor<'a> {
    writer: Writer<'a>,
    result: fmt::Result,
    first: bool,
}

impl TextVisitor<'_> {
    fn write(&mut self, field: &Field, value: &str, already_quoted: bool) {
        if self.result.is_err() {
            return;
        }
        let separator = if std::mem::take(&mut self.first) { "" } else { " " };
        self.result = if field.name() == "message" {
            write!(self.writer, "{separator}{}", escape_controls(value))
        } else if already_quoted || is_bare(value) {
            write!(self.writer, "{separator}{}={value}", field.name())
        } else {
            write!(self.writer, "{separator}{}={value:?}", field.name())
        };
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value, false);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        // `?value` of a string is quoted and escaped already; `%value` is raw.
        let quoted = is_quoted_debug(&text);
        self.write(field, &text, quoted);
    }
}

impl VisitOutput<fmt::Result> for TextVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for TextVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// A value that reads unambiguously without quotes.
fn is_bare(value: &str) -> bool {
    !value.is_empty() && !value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '=' || c == '"')
}

/// Whether `text` is one string as `{:?}` writes it: quoted, no control characters, every
/// inner quote escaped.
fn is_quoted_debug(text: &str) -> bool {
    let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
        return false;
    };
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => return false,
            '\\' => {}
            '"' => return false,
            c if c.is_control() => return false,
            _ => {}
        }
    }
    true
}

/// Control characters as Rust escapes (`\n`, `\u{1b}`); everything else as it is.
fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Everything a text-format subscriber writes while `emit` runs.
    fn text_log(emit: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(TextFields)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    /// Finding 4 of issue 14: a `\n` in a user name wrote a forged line, ESC went through raw,
    /// and `X-Request-Id` was unquoted, so it could fake fields.
    #[test]
    fn caller_values_cannot_forge_lines_or_fields_in_the_text_log() {
        let user = "eve\n2026-01-01T00:00:00Z  INFO spawned user=admin \u{1b}[2J";
        let request_id = "abc status=200 user=admin";
        let log = text_log(|| {
            let span = tracing::info_span!("request", request_id = %request_id, path = %"/p");
            let _entered = span.enter();
            tracing::info!(user = %user, server = ?"x\ny", namespace = user, "spawned {user}");
        });
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(!log.contains('\u{1b}'), "{log:?}");
        assert!(log.contains(r#"request_id="abc status=200 user=admin""#), "{log}");
        assert!(log.contains(r#"user="eve\n2026"#), "{log}");
        assert!(log.contains(r#"server="x\ny""#), "{log}");
        assert!(log.contains(r#"spawned eve\n2026"#), "{log}");
        assert!(log.contains("path=/p"), "ordinary values stay bare: {log}");
    }

    #[test]
    fn only_well_formed_debug_strings_count_as_quoted() {
        assert!(is_quoted_debug(r#""a \"b\" c""#));
        assert!(!is_quoted_debug(r#""a" x="b""#));
        assert!(!is_quoted_debug("\"a\nb\""));
        assert!(!is_quoted_debug(r#""a\""#));
        assert!(!is_quoted_debug("plain"));
    }
}
