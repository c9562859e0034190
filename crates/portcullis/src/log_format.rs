//! The text log line, written without `core::fmt` on the common path.
//!
//! Why: the gateway writes one access line per request by default, and `tracing_subscriber`'s
//! `Format<Full>` builds it through `write!` at every step (timestamp, padded level, the target
//! painted by `nu_ansi_term` even when colour is off, each field through `{:?}`, which escapes a
//! string char by char). Under load that was about 4 % of the proxy's CPU (issue 17, perf of
//! `benches/compare-envoy`). [`FastText`] and [`FastFields`] write the same bytes directly:
//! - the timestamp from the civil date of the Unix seconds (the same `YYYY-MM-DDTHH:MM:SS.ffffffZ`
//!   as tracing's `SystemTime`), the level and the target as slices;
//! - a string field whose bytes are printable ASCII other than `"` and `\` as `name="value"`
//!   (what `{:?}` gives for such a string), integers and booleans by hand;
//! - a float from 1e-4 to 1e16 with at most 15 significant digits through `ryu` (then the same
//!   digits as `{:?}`, see [`fast_float`]);
//! - a `Debug` or `Display` value as `name=` and its `{:?}` (tracing paints the name, which
//!   writes nothing extra without colour);
//! - a message of printable ASCII as it is (tracing's escaping leaves it so).
//!
//! In the access line the last three were the method, `latency_ms` and the message: about 1 % of
//! the proxy's CPU through tracing's code.
//!
//! Everything else is handed to tracing's own code, so the output is byte for byte what
//! `tracing_subscriber::fmt().with_ansi(false)` writes: colour (a terminal), events inside spans,
//! events from the `log` crate (pingora's), `r#` and `log.` field names, errors, other floats,
//! long messages and messages with control or non-ASCII characters, strings that need escaping.
//! A test compares both formatters on the same events, another ryu with `{:?}` on 600,000 floats.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Format, Full, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter of the text log: [`Format<Full>`]'s output, fast on the common path.
#[derive(Default)]
pub struct FastText {
    full: Format<Full, SystemTime>,
}

impl<S, N> FormatEvent<S, N> for FastText
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
        let meta = event.metadata();
        let in_span = ctx
            .event_scope()
            .is_some_and(|mut scope| scope.next().is_some());
        // `log` records carry their real target in `log.target`: tracing's code normalises them.
        let from_log = meta.fields().field("log.target").is_some();
        if writer.has_ansi_escapes() || in_span || from_log {
            return self.full.format_event(ctx, writer, event);
        }
        write_timestamp(&mut writer, wall_clock())?;
        writer.write_str(match *meta.level() {
            Level::TRACE => "TRACE ",
            Level::DEBUG => "DEBUG ",
            Level::INFO => " INFO ",
            Level::WARN => " WARN ",
            Level::ERROR => "ERROR ",
        })?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// The access line ([`portcullis_proxy::access_log`]) written without tracing, as the bytes
/// [`FastText`] and [`FastFields`] write for its event, into `out` (cleared first). `false`, with
/// `out` to be ignored, for a line whose fields the fast path would not write itself (a string
/// that needs escaping, a latency whose float is not [`fast_float`]'s): the caller then emits the
/// event through tracing.
pub fn access_line(
    line: &portcullis_proxy::access_log::AccessLine<'_>,
    now: std::time::SystemTime,
    out: &mut String,
) -> bool {
    out.clear();
    // The method is written as it is on both paths (`{:?}` of its `Display`), and an HTTP method
    // is a token: no check needed.
    let strings = [line.route, line.path, line.reason, line.subscription];
    if !strings
        .into_iter()
        .chain(line.error)
        .chain([line.request_id])
        .all(needs_no_escape)
    {
        return false;
    }
    let mut float = ryu::Buffer::new();
    let Some(latency) = fast_float(&mut float, line.latency_ms()) else {
        return false;
    };
    if write_timestamp(&mut Writer::new(out), now).is_err() {
        return false;
    }
    out.push_str(" INFO ");
    out.push_str(portcullis_proxy::access_log::TARGET);
    out.push_str(": request");
    let quoted = |out: &mut String, name: &str, value: &str| {
        out.push(' ');
        out.push_str(name);
        out.push_str("=\"");
        out.push_str(value);
        out.push('"');
    };
    quoted(out, "route", line.route);
    out.push_str(" method=");
    out.push_str(line.method.as_str());
    quoted(out, "path", line.path);
    out.push_str(" status=");
    out.push_str(decimal(&mut [0; 20], u64::from(line.status)));
    quoted(out, "reason", line.reason);
    quoted(out, "subscription", line.subscription);
    out.push_str(" latency_ms=");
    out.push_str(latency);
    quoted(out, "request_id", line.request_id);
    if let Some(error) = line.error {
        quoted(out, "error", error);
    }
    out.push('\n');
    true
}

/// The wall clock, which is what a log line's reader wants (not the request path's clock).
#[allow(clippy::disallowed_methods)]
pub fn wall_clock() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ ` for years 1970-9999 (tracing's `SystemTime` otherwise).
fn write_timestamp(writer: &mut Writer<'_>, now: std::time::SystemTime) -> fmt::Result {
    let Some(since) = now
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .filter(|d| d.as_secs() < 253_402_300_800)
    else {
        // Before 1970 or after 9999: tracing's own formatting (and its "<unknown time>").
        if SystemTime.format_time(writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        return writer.write_char(' ');
    };
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let mut buf = *b"0000-00-00T00:00:00.000000Z ";
    put_digits(&mut buf[0..4], u64::from(year));
    put_digits(&mut buf[5..7], u64::from(month));
    put_digits(&mut buf[8..10], u64::from(day));
    put_digits(&mut buf[11..13], of_day / 3600);
    put_digits(&mut buf[14..16], of_day % 3600 / 60);
    put_digits(&mut buf[17..19], of_day % 60);
    put_digits(&mut buf[20..26], u64::from(since.subsec_micros()));
    // Only ASCII digits and separators were written.
    writer.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
}

/// `value` as zero-padded decimal filling `out` (the caller's widths hold every value it passes).
fn put_digits(out: &mut [u8], mut value: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for non-negative counts).
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year as u32, month as u32, day as u32)
}

/// The field formatter of the text log: [`DefaultFields`]' output, fast for plain strings and
/// integers.
#[derive(Default)]
pub struct FastFields;

impl<'writer> FormatFields<'writer> for FastFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return DefaultFields::new().format_fields(writer, fields);
        }
        let mut visitor = FastVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.finish()
    }
}

struct FastVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl FastVisitor<'_> {
    /// Field names tracing treats specially: the message, raw identifiers, `log` metadata.
    fn plain_name(name: &str) -> bool {
        name != "message" && !name.starts_with("r#") && !name.starts_with("log.")
    }

    /// The space before every field but the first.
    fn separate(&mut self) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }

    /// `name=` after the separating space.
    fn name(&mut self, field: &Field) -> fmt::Result {
        self.separate()?;
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }

    /// Tracing's visitor for one field, continuing this one's separators.
    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        // Tracing's visitor writes nothing for `log.` fields; every other field takes the place.
        self.is_empty = false;
    }

    fn digits(&mut self, field: &Field, negative: bool, value: u64) {
        let mut buf = [0u8; 20];
        let text = decimal(&mut buf, value);
        self.result = self.name(field).and_then(|()| {
            if negative {
                self.writer.write_char('-')?;
            }
            self.writer.write_str(text)
        });
    }
}

/// `value` in decimal, written into the end of `buf` (20 digits hold every `u64`).
fn decimal(buf: &mut [u8; 20], value: u64) -> &str {
    let mut at = buf.len();
    let mut rest = value;
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

/// A string `{:?}` writes as itself between quotes: printable ASCII without `"` or `\`.
fn needs_no_escape(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl FastVisitor<'_> {
    /// One field: `fast` when it is a plain field tracing's visitor would write as `name=value`
    /// (and `fast_ok` holds for its value), else tracing's visitor (`slow`).
    fn field(
        &mut self,
        field: &Field,
        fast_ok: bool,
        fast: impl FnOnce(&mut Self),
        slow: impl FnOnce(&mut DefaultVisitor<'_>),
    ) {
        if self.result.is_err() {
            return;
        }
        if fast_ok && Self::plain_name(field.name()) {
            fast(self);
        } else {
            self.delegate(slow);
        }
    }
}

impl Visit for FastVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let fast = |s: &mut Self| {
            s.result = s.name(field).and_then(|()| {
                s.writer.write_char('"')?;
                s.writer.write_str(value)?;
                s.writer.write_char('"')
            });
        };
        self.field(field, needs_no_escape(value), fast, |v| {
            v.record_str(field, value)
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let fast = |s: &mut Self| s.digits(field, false, value);
        self.field(field, true, fast, |v| v.record_u64(field, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        let fast = |s: &mut Self| s.digits(field, value < 0, value.unsigned_abs());
        self.field(field, true, fast, |v| v.record_i64(field, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        let fast = |s: &mut Self| {
            let text = if value { "true" } else { "false" };
            s.result = s.name(field).and_then(|()| s.writer.write_str(text));
        };
        self.field(field, true, fast, |v| v.record_bool(field, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, false, |_| {}, |v| v.record_error(field, value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let mut buf = ryu::Buffer::new();
        let text = fast_float(&mut buf, value);
        let fast = |s: &mut Self| {
            s.result = s
                .name(field)
                .and_then(|()| s.writer.write_str(text.unwrap_or_default()));
        };
        self.field(field, text.is_some(), fast, |v| v.record_f64(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if Self::plain_name(name) {
            // Tracing writes `name=` (unpainted without colour) and then `{:?}` of the value.
            self.result = self
                .name(field)
                .and_then(|()| write!(self.writer, "{value:?}"));
        } else if name == "message" && self.message(value) {
            // Written.
        } else {
            self.delegate(|v| v.record_debug(field, value));
        }
    }
}

impl FastVisitor<'_> {
    /// The message as tracing writes it when it is short printable ASCII (which its escaping
    /// leaves as it is): `false`, having written nothing, otherwise.
    fn message(&mut self, value: &dyn fmt::Debug) -> bool {
        let mut text = Short::default();
        if fmt::write(&mut text, format_args!("{value:?}")).is_err()
            || !text.bytes().iter().all(|b| (0x20..0x7f).contains(b))
        {
            return false;
        }
        self.result = self.separate().and_then(|()| {
            self.writer
                .write_str(std::str::from_utf8(text.bytes()).map_err(|_| fmt::Error)?)
        });
        true
    }
}

/// `{:?}` of `value` through ryu, where the two are known to agree; `None` elsewhere.
///
/// `{:?}` of an f64 is its shortest round-trip digits, in decimal notation from 1e-4 up to 1e16
/// and exponential outside; ryu uses decimal notation from 1e-5 up to 1e16. Both find the shortest
/// digits, but where two candidates of 16 or 17 digits are equally short they may pick different
/// ones (2024353010229270.2 against .3). With 15 significant digits or fewer there is only one
/// candidate (15-digit decimals are further apart than two adjacent f64s), so ryu's answer is
/// `{:?}`'s. Zero, non-finite values and the rest go through tracing's code.
fn fast_float(buf: &mut ryu::Buffer, value: f64) -> Option<&str> {
    if !value.is_finite() || !(1e-4..1e16).contains(&value.abs()) {
        return None;
    }
    let text = buf.format_finite(value);
    let significant = text
        .trim_start_matches(['-', '0', '.'])
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    (significant <= 15).then_some(text)
}

/// A message of up to 120 bytes, on the stack; longer ones fail the write.
struct Short {
    buf: [u8; 120],
    len: usize,
}

impl Default for Short {
    fn default() -> Short {
        Short {
            buf: [0; 120],
            len: 0,
        }
    }
}

impl Short {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for Short {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl VisitOutput<fmt::Result> for FastVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    /// A `MakeWriter` collecting everything written.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Oops;
    impl fmt::Display for Oops {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("oops \"quoted\"")
        }
    }
    impl std::error::Error for Oops {}

    /// Every kind of event and field the gateway writes, and the awkward ones.
    fn emit() {
        let method = http::Method::GET;
        tracing::info!(
            route = "orders",
            method = %method,
            path = "/api/orders",
            status = 200u16,
            reason = "ok",
            subscription = "-",
            latency_ms = 4.2113949999999996,
            request_id = "70c385d3-156f-452c-9448-3de8a060657a",
            error = None::<&str>,
            "request"
        );
        tracing::info!(error = Some("ConnectRefused"), status = 502u16, "request");
        tracing::warn!(
            path = "/a\"b\\c",
            tab = "a\tb",
            uni = "é",
            esc = "\u{1b}[31m",
            "odd strings"
        );
        tracing::error!(
            n = -42i64,
            m = i64::MIN,
            u = u64::MAX,
            ok = true,
            no = false,
            "numbers"
        );
        tracing::debug!(value = ?vec![1, 2], shown = %"x y", "debug and display");
        tracing::info!(r#type = "raw", "a raw identifier");
        tracing::info!(
            err = &Oops as &(dyn std::error::Error + 'static),
            "an error value"
        );
        tracing::info!("only a message with \"quotes\" and \u{1b}[1m escape");
        tracing::trace!(x = 1.5f64, y = 0.1f32, z = 1e21f64, "floats");
        tracing::info!(
            a = 0.0f64,
            b = -0.0f64,
            c = 1e-4f64,
            d = 0.99999e-4f64,
            e = 1e-5f64,
            f = 9999999999999998.0f64,
            g = 1e16f64,
            h = f64::NAN,
            i = f64::NEG_INFINITY,
            j = -123.456f64,
            k = 8.329139000000001f64,
            l = 100.0f64,
            m = f64::MIN_POSITIVE,
            "float edges"
        );
        tracing::info!(
            "a message of exactly one hundred and twenty bytes, which is the longest written directly ..............................."
        );
        tracing::info!(
            "a message of one hundred and twenty-one bytes, one more than is written directly, goes through tracing's own code ......."
        );
        tracing::info!("bell \u{7} and tab \t and C1 \u{85} and é");
        tracing::info!(n = 1, "message {} formatted", "lazily");
        tracing::info!("quotes \" and a backslash \\ are written as they are");
        tracing::info!(empty = "", "empty string");
        let span = tracing::info_span!("outer", id = 7);
        span.in_scope(|| tracing::info!(inside = "span", "in a span"));
    }

    fn capture<N, E>(fields: N, event: E) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
        E: FormatEvent<tracing_subscriber::Registry, N> + Send + Sync + 'static,
    {
        capture_of(fields, event, emit)
    }

    fn capture_of<N, E>(fields: N, event: E, emit: impl FnOnce()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
        E: FormatEvent<tracing_subscriber::Registry, N> + Send + Sync + 'static,
    {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(buf.clone())
            .fmt_fields(fields)
            .event_format(event)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_are_tracings_own_byte_for_byte() {
        let ours = capture(FastFields, FastText::default());
        let theirs = capture(DefaultFields::new(), Format::<Full, SystemTime>::default());
        let (ours, theirs): (Vec<&str>, Vec<&str>) =
            (ours.lines().collect(), theirs.lines().collect());
        assert_eq!(ours.len(), 17, "{ours:#?}");
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            // The timestamps were taken at different instants: compare their shape, then the rest.
            let (ta, ra) = a.split_at(28);
            let (tb, rb) = b.split_at(28);
            assert_eq!(ra, rb);
            assert_eq!(ta.len(), tb.len());
            assert_eq!(&ta[..13], &tb[..13], "{ta} vs {tb}");
            assert!(ta.ends_with("Z ") && tb.ends_with("Z "), "{ta} / {tb}");
        }
    }

    /// The access line written directly is the line tracing's formatter and ours write for its
    /// event, byte for byte (timestamps aside), and the lines it leaves to tracing are those.
    #[test]
    fn access_lines_written_directly_are_the_events_lines() {
        use portcullis_proxy::access_log::{via_tracing, AccessLine};
        use std::time::Duration;
        let get = http::Method::GET;
        let custom = http::Method::from_bytes(b"PURGE").unwrap();
        let base = AccessLine {
            route: "orders",
            method: &get,
            path: "/api/orders",
            status: 200,
            reason: "ok",
            subscription: "-",
            latency: Duration::from_nanos(8_329_139),
            request_id: "70c385d3-156f-452c-9448-3de8a060657a",
            error: None,
        };
        let written = [
            base,
            AccessLine {
                status: 502,
                reason: "upstream",
                error: Some("ConnectRefused"),
                ..base
            },
            AccessLine {
                route: "-",
                status: 404,
                reason: "NoRoute",
                request_id: "-",
                ..base
            },
            AccessLine {
                method: &custom,
                path: "/%22a%20b?",
                subscription: "starter",
                ..base
            },
            AccessLine {
                latency: Duration::from_nanos(1_000),
                status: 99,
                ..base
            },
            AccessLine {
                latency: Duration::from_secs(3 * 3600),
                status: 65535,
                ..base
            },
            AccessLine {
                route: "",
                path: "/",
                reason: "",
                ..base
            },
        ];
        let left = [
            AccessLine {
                path: "/a\"b",
                ..base
            },
            AccessLine {
                path: "/a\\b",
                ..base
            },
            AccessLine {
                route: "caf\u{e9}",
                ..base
            },
            AccessLine {
                request_id: "a\tb",
                ..base
            },
            AccessLine {
                error: Some("a\u{1b}[31m"),
                ..base
            },
            AccessLine {
                latency: Duration::ZERO,
                ..base
            },
            AccessLine {
                latency: Duration::from_nanos(99),
                ..base
            },
        ];
        let tracing_lines = |lines: &[AccessLine<'_>]| {
            let ours = capture_of(FastFields, FastText::default(), || {
                lines.iter().for_each(via_tracing)
            });
            let theirs = capture_of(
                DefaultFields::new(),
                Format::<Full, SystemTime>::default(),
                || lines.iter().for_each(via_tracing),
            );
            assert_eq!(strip_times(&ours), strip_times(&theirs));
            strip_times(&ours)
        };
        let direct: Vec<String> = written
            .iter()
            .map(|line| {
                let mut out = String::new();
                assert!(access_line(line, wall_clock(), &mut out), "{line:?}");
                out
            })
            .collect();
        assert_eq!(strip_times(&direct.concat()), tracing_lines(&written));
        assert!(
            direct[1].ends_with(" error=\"ConnectRefused\"\n"),
            "{}",
            direct[1]
        );
        for line in &left {
            let mut out = String::new();
            assert!(
                !access_line(line, wall_clock(), &mut out),
                "{line:?} written directly"
            );
        }
        // What is left to tracing is still a line per request.
        assert_eq!(tracing_lines(&left).len(), left.len());
    }

    /// Each line without its timestamp (taken at different instants), which keeps its shape.
    fn strip_times(text: &str) -> Vec<String> {
        text.lines()
            .map(|line| {
                let (time, rest) = line.split_at(28);
                assert!(
                    time.ends_with("Z ") && time.as_bytes()[10] == b'T',
                    "{line}"
                );
                rest.to_string()
            })
            .collect()
    }

    /// Wherever the fast path takes ryu's digits they are `{:?}`'s: every power-of-ten edge,
    /// 300,000 floats spread over the range by their bit patterns (mostly 16-17 digits, so left
    /// to tracing) and 300,000 decimals of up to 15 digits (taken from 1e-4 up).
    #[test]
    fn fast_floats_are_what_debug_writes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let (lo, hi) = (1e-4f64.to_bits(), 1e16f64.to_bits());
        let edges: Vec<f64> = (-5..=16)
            .flat_map(|e| {
                let p = 10f64.powi(e);
                [
                    p,
                    f64::from_bits(p.to_bits() - 1),
                    f64::from_bits(p.to_bits() + 1),
                ]
            })
            .collect();
        let bits: Vec<f64> = (0..300_000)
            .map(|_| f64::from_bits(rng.gen_range(lo..hi)))
            .collect();
        let decimals: Vec<f64> = (0..300_000)
            .map(|_| {
                let digits = rng.gen_range(1..=15);
                let n: u64 = rng.gen_range(1..10u64.pow(digits));
                let point = rng.gen_range(0..=(digits + 3) as usize);
                let s = format!("{n:0>width$}", width = point + 1);
                let (int, frac) = s.split_at(s.len() - point);
                format!("{int}.{frac}").parse().unwrap()
            })
            .collect();
        let mut taken = [0usize; 3];
        for (set, values) in [edges, bits, decimals].iter().enumerate() {
            for &v in values {
                for v in [v, -v] {
                    let mut buf = ryu::Buffer::new();
                    if let Some(text) = fast_float(&mut buf, v) {
                        assert_eq!(text, format!("{v:?}"));
                        taken[set] += 1;
                    }
                }
            }
        }
        // The decimals below 1e-4 are left to tracing; every other one is taken.
        assert!(taken[0] > 30 && taken[2] > 540_000, "{taken:?}");
        assert_eq!(
            fast_float(&mut ryu::Buffer::new(), 8.329139),
            Some("8.329139")
        );
        assert_eq!(
            fast_float(&mut ryu::Buffer::new(), 2024353010229270.2),
            None
        );
        assert_eq!(fast_float(&mut ryu::Buffer::new(), 0.0), None);
        assert_eq!(fast_float(&mut ryu::Buffer::new(), 1e-5), None);
    }

    #[test]
    fn timestamps_are_tracings_own() {
        use std::time::{Duration, UNIX_EPOCH};
        for secs in [
            0u64,
            59,
            86_399,
            86_400,
            951_782_400,     // 2000-02-29
            1_709_164_800,   // 2024-02-29
            1_798_675_199,   // 2026-12-31T23:59:59
            4_102_444_800,   // 2100-01-01
            253_402_300_799, // 9999-12-31T23:59:59
        ] {
            for micros in [0u32, 1, 999_999] {
                let t = UNIX_EPOCH + Duration::new(secs, micros * 1000 + 999);
                let mut ours = String::new();
                write_timestamp(&mut Writer::new(&mut ours), t).unwrap();
                // An independent calendar: the `time` crate's.
                let d = time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap();
                let theirs = format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z ",
                    d.year(),
                    u8::from(d.month()),
                    d.day(),
                    d.hour(),
                    d.minute(),
                    d.second(),
                    micros
                );
                assert_eq!(ours, theirs, "{secs}.{micros}");
            }
        }
    }
}
