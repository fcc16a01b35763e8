//! The access line, written straight into the log's writer instead of as a `tracing` event.
//!
//! Every request logs one line, and formatting it through `tracing-subscriber` (a field visitor
//! per field, `Debug` through `core::fmt` for every value, the date computed from scratch for
//! every timestamp) cost about a third of the instructions of a 32 KiB memory hit. The fields
//! of this line are always the same, so it is written here, byte for byte as the subscriber
//! installed by [`super::init`] writes it (the tests below hold the two side by side), into a
//! reused per-thread buffer, and handed to the same writer (the writer thread's buffer, with its
//! drop counting). The level filter still decides: when `access` at INFO is filtered out, nothing
//! is written. When that subscriber is not the one installed (a test's, or none), or the clock
//! is outside what this formatter covers, the line goes through `tracing` as before.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// The fields of one access line, in the order they are written.
#[derive(Debug, Clone)]
pub struct AccessLine<'a> {
    pub front: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub outcome: &'a str,
    pub operation: &'a str,
    pub tier: &'a str,
    pub namespace: &'a str,
    pub authority: &'a str,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub peer: SocketAddr,
}

/// The format of the subscriber [`super::init`] installed, set once it is the global one: only
/// then is writing the line directly the same as what that subscriber would have written.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

pub(super) fn installed(format: LogFormat) {
    let _ = FORMAT.set(format);
}

/// Per-thread scratch: the line's buffer (kept, so a line costs no allocation, only the copy
/// into the writer's buffer) and the timestamp's date and time to the second, which changes once a
/// second while lines are written many times a second.
struct Scratch {
    line: Vec<u8>,
    clock: Clock,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { line: Vec::new(), clock: Clock { second: u64::MAX, text: [0; 19] } })
    };
}

/// Writes one access line, if the level filter lets `access` at INFO through.
pub fn log(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    let Some(&format) = FORMAT.get() else {
        return via_tracing(line);
    };
    let Ok(since_epoch) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) else {
        return via_tracing(line);
    };
    let written = SCRATCH.with(|scratch| {
        // Nothing this module calls logs, but if it ever did, a nested line must not panic.
        let Ok(mut scratch) = scratch.try_borrow_mut() else {
            return false;
        };
        let Scratch { line: buf, clock } = &mut *scratch;
        buf.clear();
        if !format_line(buf, format, clock, since_epoch, line) {
            return false;
        }
        // The writer counts what it drops; a failed write is dropped, as the subscriber's are.
        let _ = super::LogWriter.make_writer().write_all(buf);
        true
    });
    if !written {
        via_tracing(line);
    }
}

/// The access line as a `tracing` event: the way it is written when the direct path does not
/// apply, and the reference the direct path is tested against.
fn via_tracing(line: &AccessLine<'_>) {
    tracing::info!(
        target: "access",
        front = line.front,
        method = line.method,
        path = %line.path,
        status = line.status,
        outcome = line.outcome,
        operation = line.operation,
        tier = line.tier,
        namespace = line.namespace,
        authority = line.authority,
        bytes_in = line.bytes_in,
        bytes_out = line.bytes_out,
        duration_ms = line.duration_ms,
        peer = %line.peer,
    );
}

/// Formats `line` as the subscriber of `format` formats the event of [`via_tracing`], newline
/// included, at `since_epoch`. False (with `buf` partly written) for a time past year 9999,
/// which the subscriber writes differently.
fn format_line(
    buf: &mut Vec<u8>,
    format: LogFormat,
    clock: &mut Clock,
    since_epoch: Duration,
    line: &AccessLine<'_>,
) -> bool {
    match format {
        LogFormat::Human => {
            if !clock.write(buf, since_epoch) {
                return false;
            }
            // The subscriber's level is right-aligned in five columns, then the target.
            buf.extend_from_slice(b"  INFO access: front=");
            debug_str(buf, line.front);
            buf.extend_from_slice(b" method=");
            debug_str(buf, line.method);
            // Logged with `%`: its Display, unquoted.
            buf.extend_from_slice(b" path=");
            buf.extend_from_slice(line.path.as_bytes());
            buf.extend_from_slice(b" status=");
            decimal(buf, line.status.into());
            buf.extend_from_slice(b" outcome=");
            debug_str(buf, line.outcome);
            buf.extend_from_slice(b" operation=");
            debug_str(buf, line.operation);
            buf.extend_from_slice(b" tier=");
            debug_str(buf, line.tier);
            buf.extend_from_slice(b" namespace=");
            debug_str(buf, line.namespace);
            buf.extend_from_slice(b" authority=");
            debug_str(buf, line.authority);
            buf.extend_from_slice(b" bytes_in=");
            decimal(buf, line.bytes_in);
            buf.extend_from_slice(b" bytes_out=");
            decimal(buf, line.bytes_out);
            // A float's Debug is not its Display (`5.0`, `1e-7`): the same call keeps it so.
            let _ = write!(buf, " duration_ms={:?} peer=", line.duration_ms);
            socket_addr(buf, line.peer);
            buf.push(b'\n');
        }
        LogFormat::Json => {
            buf.extend_from_slice(b"{\"timestamp\":\"");
            if !clock.write(buf, since_epoch) {
                return false;
            }
            // Strings and the float go through serde_json, as the subscriber's do, so their
            // escapes and number forms are serde_json's.
            buf.extend_from_slice(b"\",\"level\":\"INFO\",\"front\":");
            json(buf, line.front);
            buf.extend_from_slice(b",\"method\":");
            json(buf, line.method);
            buf.extend_from_slice(b",\"path\":");
            json(buf, line.path);
            buf.extend_from_slice(b",\"status\":");
            decimal(buf, line.status.into());
            buf.extend_from_slice(b",\"outcome\":");
            json(buf, line.outcome);
            buf.extend_from_slice(b",\"operation\":");
            json(buf, line.operation);
            buf.extend_from_slice(b",\"tier\":");
            json(buf, line.tier);
            buf.extend_from_slice(b",\"namespace\":");
            json(buf, line.namespace);
            buf.extend_from_slice(b",\"authority\":");
            json(buf, line.authority);
            buf.extend_from_slice(b",\"bytes_in\":");
            decimal(buf, line.bytes_in);
            buf.extend_from_slice(b",\"bytes_out\":");
            decimal(buf, line.bytes_out);
            buf.extend_from_slice(b",\"duration_ms\":");
            json(buf, &line.duration_ms);
            // An address's Display has nothing JSON escapes.
            buf.extend_from_slice(b",\"peer\":\"");
            socket_addr(buf, line.peer);
            buf.extend_from_slice(b"\",\"target\":\"access\"}\n");
        }
    }
    true
}

/// A string as its `Debug` writes it: quoted, with quotes, backslashes, control and some
/// non-ASCII characters escaped. The fields are nearly always plain ASCII, which is copied.
fn debug_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        let _ = write!(buf, "{s:?}");
    }
}

fn json<T: serde::Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) {
    // Writing a string or a float into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, value);
}

/// `n` in decimal, without going through `core::fmt`.
fn decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[start..]);
}

/// The peer as its Display writes it; IPv4 (nearly every peer) without `core::fmt`.
fn socket_addr(buf: &mut Vec<u8>, peer: SocketAddr) {
    match peer {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            decimal(buf, a.into());
            for octet in [b, c, d] {
                buf.push(b'.');
                decimal(buf, octet.into());
            }
            buf.push(b':');
            decimal(buf, v4.port().into());
        }
        SocketAddr::V6(v6) => {
            let mut text = String::with_capacity(64);
            let _ = write!(text, "{v6}");
            buf.extend_from_slice(text.as_bytes());
        }
    }
}

/// The timestamp's `YYYY-MM-DDTHH:MM:SS` for the last second it was asked for.
struct Clock {
    second: u64,
    text: [u8; 19],
}

impl Clock {
    /// Writes `since_epoch` as the subscriber's clock does (UTC, microseconds, `Z`). False past
    /// the year 9999, where the subscriber's year gets a sign and more digits.
    fn write(&mut self, buf: &mut Vec<u8>, since_epoch: Duration) -> bool {
        let second = since_epoch.as_secs();
        if second != self.second {
            let Some(text) = date_time(second) else {
                return false;
            };
            self.text = text;
            self.second = second;
        }
        buf.extend_from_slice(&self.text);
        buf.push(b'.');
        let micros = since_epoch.subsec_micros();
        let mut digits = [b'0'; 6];
        let mut rest = micros;
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        buf.extend_from_slice(&digits);
        buf.push(b'Z');
        true
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a second since the epoch, for the years 1970 to 9999.
fn date_time(second: u64) -> Option<[u8; 19]> {
    let days = second / 86_400;
    let of_day = second % 86_400;
    // Civil date from a day count, on the proleptic Gregorian calendar, with the year counted
    // from March so that the leap day is the last day of its year: 400-year eras of 146,097
    // days, then the year within the era, then month and day within a March-based year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    if year > 9999 {
        return None;
    }
    let mut text = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3_600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::net::{Ipv6Addr, SocketAddrV6};
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::FormatTime;
    use tracing_subscriber::EnvFilter;

    /// A writer that keeps what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    /// The subscriber's clock stopped at one instant.
    struct Stopped(&'static str);

    impl FormatTime for Stopped {
        fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
            w.write_str(self.0)
        }
    }

    /// 2026-12-06T12:01:12.345678Z, as tracing-subscriber writes it.
    const AT: Duration = Duration::new(1_796_558_472, 345_678_999);
    const AT_TEXT: &str = "2026-12-06T12:01:12.345678Z";

    fn hit() -> AccessLine<'static> {
        AccessLine {
            front: "gradle",
            method: "GET",
            path: "/cache/0123456789abcdef0123456789abcdef",
            status: 200,
            outcome: "hit",
            operation: "-",
            tier: "memory",
            namespace: "gradle",
            authority: "-",
            bytes_in: 0,
            bytes_out: 32_768,
            duration_ms: 0.123_456,
            peer: "127.0.0.1:40312".parse().unwrap(),
        }
    }

    /// Lines whose fields take every branch: escapes in both formats, floats whose Debug and
    /// JSON forms differ from their Display, the largest numbers, an IPv6 peer.
    fn odd_lines() -> Vec<AccessLine<'static>> {
        let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 65_535, 0, 3));
        let mut lines = vec![hit()];
        for (i, duration_ms) in [0.0, 5.0, 1e-7, 123_456_789.5, 3e17, f64::NAN]
            .into_iter()
            .enumerate()
        {
            lines.push(AccessLine {
                front: "s3",
                method: "PUT",
                path: "/bucket/a b\"c\\d/é\u{1b}[31m",
                status: 499,
                outcome: "client_gone",
                operation: "PutObject",
                tier: "-",
                namespace: "ns \"quoted\" \\ back\ttab\u{7f}\u{85}ü\u{301}",
                authority: "bucket.s3.example:9000",
                bytes_in: u64::MAX,
                bytes_out: i as u64,
                duration_ms,
                peer: if i % 2 == 0 { v6 } else { hit().peer },
            });
        }
        lines.push(AccessLine {
            peer: "10.255.0.9:1".parse().unwrap(),
            outcome: "aborted",
            ..hit()
        });
        lines
    }

    /// What the subscriber `init` installs writes for the event.
    fn through_subscriber(format: LogFormat, line: &AccessLine<'_>) -> String {
        let captured = Captured::default();
        let subscriber = super::super::subscriber(
            format,
            EnvFilter::new("info"),
            captured.clone(),
            Stopped(AT_TEXT),
        );
        tracing::subscriber::with_default(subscriber, || via_tracing(line));
        captured.take()
    }

    fn direct(format: LogFormat, line: &AccessLine<'_>) -> String {
        let mut buf = Vec::new();
        let mut clock = Clock {
            second: u64::MAX,
            text: [0; 19],
        };
        assert!(format_line(&mut buf, format, &mut clock, AT, line));
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn the_direct_line_is_the_subscribers_in_both_formats() {
        for format in [LogFormat::Human, LogFormat::Json] {
            for line in odd_lines() {
                let expected = through_subscriber(format, &line);
                assert!(!expected.is_empty(), "the subscriber wrote nothing");
                assert_eq!(direct(format, &line), expected, "{format:?} {line:?}");
            }
        }
    }

    #[test]
    fn the_lines_are_what_users_read() {
        // Golden lines, so that a change in tracing-subscriber's output shows up here too.
        assert_eq!(
            direct(LogFormat::Human, &hit()),
            "2026-12-06T12:01:12.345678Z  INFO access: front=\"gradle\" method=\"GET\" \
             path=/cache/0123456789abcdef0123456789abcdef status=200 outcome=\"hit\" \
             operation=\"-\" tier=\"memory\" namespace=\"gradle\" authority=\"-\" bytes_in=0 \
             bytes_out=32768 duration_ms=0.123456 peer=127.0.0.1:40312\n"
        );
        assert_eq!(
            direct(LogFormat::Json, &hit()),
            "{\"timestamp\":\"2026-12-06T12:01:12.345678Z\",\"level\":\"INFO\",\
             \"front\":\"gradle\",\"method\":\"GET\",\
             \"path\":\"/cache/0123456789abcdef0123456789abcdef\",\"status\":200,\
             \"outcome\":\"hit\",\"operation\":\"-\",\"tier\":\"memory\",\
             \"namespace\":\"gradle\",\"authority\":\"-\",\"bytes_in\":0,\"bytes_out\":32768,\
             \"duration_ms\":0.123456,\"peer\":\"127.0.0.1:40312\",\"target\":\"access\"}\n"
        );
    }

    #[test]
    fn timestamps_are_utc_dates_to_the_microsecond() {
        let mut clock = Clock {
            second: u64::MAX,
            text: [0; 19],
        };
        let mut text = |seconds, nanos| {
            let mut buf = Vec::new();
            let ok = clock.write(&mut buf, Duration::new(seconds, nanos));
            ok.then(|| String::from_utf8(buf).unwrap())
        };
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_868_799, 999_999_999, "2000-02-29T23:59:59.999999Z"),
            (951_868_799, 1_000, "2000-02-29T23:59:59.000001Z"),
            (1_709_164_800, 500, "2024-02-29T00:00:00.000000Z"),
            (4_107_542_400, 42_000, "2100-03-01T00:00:00.000042Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59.000000Z"),
        ];
        for (seconds, nanos, expected) in cases {
            assert_eq!(text(seconds, nanos).as_deref(), Some(expected));
        }
        assert_eq!(text(253_402_300_800, 0), None, "year 10000");
    }

    #[test]
    fn timestamps_match_the_subscribers_clock() {
        // The subscriber's own clock reads the time itself: its line's timestamp must fall
        // between two read by this module just before and after (fixed width, so the text
        // compares as the time does).
        let captured = Captured::default();
        let subscriber = super::super::subscriber(
            LogFormat::Human,
            EnvFilter::new("info"),
            captured.clone(),
            tracing_subscriber::fmt::time::SystemTime,
        );
        let now = || {
            let mut clock = Clock {
                second: u64::MAX,
                text: [0; 19],
            };
            let mut buf = Vec::new();
            let since = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap();
            assert!(clock.write(&mut buf, since));
            String::from_utf8(buf).unwrap()
        };
        let before = now();
        tracing::subscriber::with_default(subscriber, || via_tracing(&hit()));
        let after = now();
        let line = captured.take();
        let stamp = &line[..before.len()];
        assert!(
            before.as_str() <= stamp && stamp <= after.as_str(),
            "{before} {stamp} {after}"
        );
    }

    #[test]
    fn a_filtered_out_access_target_writes_nothing() {
        let captured = Captured::default();
        let subscriber = super::super::subscriber(
            LogFormat::Human,
            EnvFilter::new("info,access=warn"),
            captured.clone(),
            Stopped(AT_TEXT),
        );
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::enabled!(target: "access", tracing::Level::INFO));
            log(&hit());
        });
        assert_eq!(captured.take(), "");
    }
}
