//! Escaping, integer and time formatting for the access log formats. Everything appends to a
//! caller's `String`, allocates nothing else and never panics.

use crate::calendar::{civil_from_days, split_unix_seconds};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Whether `c` could break a log record across lines or hide in it: C0 and C1 control
/// characters, DEL, and the Unicode line and paragraph separators.
#[inline]
fn is_line_unsafe(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// The lead bytes of the only non-ASCII characters an escape here ever needs to see: C1 controls
/// and U+00A0 (0xC2), the Arabic letter mark U+061C (0xD8), U+1680 (0xE1), the line and paragraph separators, the other spaces and the
/// bidirectional controls of U+2000..U+206F (0xE2), U+3000 (0xE3) and U+FEFF, U+FFFE, U+FFFF
/// (0xEF). Every predicate below flags ASCII characters or these only (a unit test checks every
/// character), so other bytes are copied without decoding.
const DECODE_LEADS: [u8; 6] = [0xC2, 0xD8, 0xE1, 0xE2, 0xE3, 0xEF];

/// The ASCII characters a predicate flags, as two 64-bit masks (a `u128` shift is a library
/// call at `opt-level = "z"`): the line-unsafe ones (C0 controls and DEL) and `extra`. A unit
/// test checks each set against its predicate.
#[derive(Clone, Copy)]
pub(super) struct AsciiSet {
    low: u64,
    high: u64,
}

impl AsciiSet {
    const fn line_unsafe_and(mut extra: &[u8]) -> AsciiSet {
        let mut set = AsciiSet {
            low: 0xFFFF_FFFF,       // 0x00..=0x1F
            high: 1 << (0x7F - 64), // DEL
        };
        while let [first, rest @ ..] = extra {
            if *first < 64 {
                set.low |= 1 << *first;
            } else if *first < 128 {
                set.high |= 1 << (*first - 64);
            }
            extra = rest;
        }
        set
    }

    /// Whether the ASCII byte `b` (< 0x80) is in the set.
    #[inline]
    pub(super) fn contains(self, b: u8) -> bool {
        let (mask, bit) = if b < 64 {
            (self.low, b)
        } else {
            (self.high, b.wrapping_sub(64) & 63)
        };
        (mask >> bit) & 1 == 1
    }
}

pub(super) const QUOTED_SET: AsciiSet = AsciiSet::line_unsafe_and(b"\"\\");
pub(super) const TOKEN_SET: AsciiSet = AsciiSet::line_unsafe_and(b" \"\\");
pub(super) const CSV_SET: AsciiSet = AsciiSet::line_unsafe_and(b"\"\\");
pub(super) const XML_SET: AsciiSet = AsciiSet::line_unsafe_and(b"&<>\"'");
pub(super) const LINE_SET: AsciiSet = AsciiSet::line_unsafe_and(b"");

/// Copies `s` to `out`, letting `escape` write each character for which `needs(c)` holds; runs of
/// other characters are copied with one `push_str`. ASCII bytes are looked up in `ascii` (the
/// ASCII characters `needs` flags); of the others only characters
/// starting with a [`DECODE_LEADS`] byte are decoded and asked of `needs`. Decoding every
/// character, then calling the predicate on every ASCII one, was most of the JSON record's cost.
#[inline]
fn escape_with(
    s: &str,
    out: &mut String,
    ascii: AsciiSet,
    needs: impl Fn(char) -> bool,
    mut escape: impl FnMut(char, &mut String),
) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let c = if b < 0x80 {
            if !ascii.contains(b) {
                i += 1;
                continue;
            }
            char::from(b)
        } else if DECODE_LEADS.contains(&b) {
            // A lead byte starts a character: `i` is a boundary.
            match s.get(i..).and_then(|rest| rest.chars().next()) {
                Some(c) if needs(c) => c,
                Some(c) => {
                    i += c.len_utf8();
                    continue;
                }
                None => break,
            }
        } else {
            i += 1;
            continue;
        };
        if let Some(run) = s.get(start..i) {
            out.push_str(run);
        }
        escape(c, out);
        i += c.len_utf8();
        start = i;
    }
    if let Some(run) = s.get(start..) {
        out.push_str(run);
    }
}

/// What each escape below flags (named for the test that checks them against
/// [`DECODE_LEADS`]). JSON strings and CLF's quoted request line: quotes, backslashes and
/// line-unsafe characters.
fn quoted_needs(c: char) -> bool {
    c == '"' || c == '\\' || is_line_unsafe(c)
}

/// Unicode's Bidi_Control characters (U+061C, U+200E, U+200F, U+202A..U+202E,
/// U+2066..U+2069): invisible, and they reorder the text around them as a viewer shows it.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A CLF token must not split or reorder as a reader sees it: every Unicode space (U+00A0,
/// U+3000, ...), every bidirectional control and the byte order mark are escaped too.
fn token_needs(c: char) -> bool {
    c.is_whitespace() || is_bidi_control(c) || c == '\u{feff}' || quoted_needs(c)
}

/// `\` too, so that the `\xHH` escapes cannot be confused with a value's own text, and readers
/// that take `\` as an escape character (Spark, Hive, MySQL's `LOAD DATA`) see the same fields.
fn csv_needs(c: char) -> bool {
    c == '"' || c == '\\' || is_line_unsafe(c)
}

fn xml_needs(c: char) -> bool {
    matches!(c, '&' | '<' | '>' | '"' | '\'' | '\u{fffe}' | '\u{ffff}') || is_line_unsafe(c)
}

/// A predicate of `escape_with` and its ASCII set.
#[cfg(test)]
pub(super) type Predicate = (fn(char) -> bool, AsciiSet);

/// Every predicate `escape_with` is called with, and its ASCII set.
#[cfg(test)]
pub(super) const PREDICATES: [Predicate; 5] = [
    (quoted_needs, QUOTED_SET),
    (is_line_unsafe, LINE_SET),
    (token_needs, TOKEN_SET),
    (csv_needs, CSV_SET),
    (xml_needs, XML_SET),
];

#[cfg(test)]
pub(super) fn decoded_lead(b: u8) -> bool {
    DECODE_LEADS.contains(&b)
}

/// Appends the hex digits of `v`, at least `width` of them, upper- or lowercase.
pub fn push_hex(v: u32, width: u32, upper: bool, out: &mut String) {
    let mut digits = 1;
    while digits < 8 && (v >> (4 * digits)) != 0 {
        digits += 1;
    }
    let digits = digits.max(width.min(8));
    for k in (0..digits).rev() {
        let d = (v >> (4 * k)) & 0xF;
        let c = char::from_digit(d, 16).unwrap_or('0');
        out.push(if upper { c.to_ascii_uppercase() } else { c });
    }
}

/// `\xHH` for characters up to U+00FF (every control character), `\uHHHH` above (U+2028, U+2029).
fn push_backslash_hex(c: char, out: &mut String) {
    let v = u32::from(c);
    if v <= 0xFF {
        out.push_str("\\x");
        push_hex(v, 2, true, out);
    } else {
        out.push_str("\\u");
        push_hex(v, 4, true, out);
    }
}

/// Appends `s` JSON-escaped, without the surrounding quotes: `"` and `\` get a backslash; control
/// characters (U+0000..U+001F as JSON requires, and also DEL and the C1 controls U+0080..U+009F,
/// NEL among them) and U+2028, U+2029 become `\u00XX` / `\u2028` (lowercase hex), so no line
/// breaks of any convention reach the log; all other characters, non-ASCII included, are copied
/// as UTF-8.
pub fn json_escape_into(s: &str, out: &mut String) {
    escape_with(s, out, QUOTED_SET, quoted_needs, |c, out| match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        _ => {
            out.push_str("\\u");
            push_hex(u32::from(c), 4, false, out);
        }
    });
}

/// Template values: raw, except control characters (and U+2028/U+2029) as `\xHH` / `\uHHHH`.
pub(super) fn text_escape_into(s: &str, out: &mut String) {
    escape_with(s, out, LINE_SET, is_line_unsafe, push_backslash_hex);
}

/// An unquoted CLF field (source IP, request id): also spaces, `"` and `\` as `\xHH` (`\uHHHH`),
/// so the value stays one space-separated token.
pub(super) fn token_escape_into(s: &str, out: &mut String) {
    escape_with(s, out, TOKEN_SET, token_needs, push_backslash_hex);
}

/// Inside CLF's quoted request line: `"`, `\` and control characters as `\xHH`.
pub(super) fn quoted_escape_into(s: &str, out: &mut String) {
    escape_with(s, out, QUOTED_SET, quoted_needs, push_backslash_hex);
}

/// One RFC 4180 CSV field: quoted when it contains a comma, a quote, CR or LF, with quotes doubled.
/// Control characters (CR and LF included) and `\` are written as `\xHH` so the record stays one
/// line and an escape is always one.
pub(super) fn csv_field_into(s: &str, out: &mut String) {
    let quote = s.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if quote {
        out.push('"');
    }
    escape_with(s, out, CSV_SET, csv_needs, |c, out| {
        if c == '"' {
            out.push_str("\"\"");
        } else {
            push_backslash_hex(c, out);
        }
    });
    if quote {
        out.push('"');
    }
}

/// XML 1.0 character data: `& < > " '` as entities; tab, LF, CR, DEL, C1 controls and
/// U+2028/U+2029 as character references (legal, and keep the record on one line); the characters
/// XML 1.0 forbids outright (other C0 controls, U+FFFE, U+FFFF) as U+FFFD.
pub(super) fn xml_escape_into(s: &str, out: &mut String) {
    escape_with(s, out, XML_SET, xml_needs, |c, out| match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&apos;"),
        '\t' | '\n' | '\r' | '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' => {
            out.push_str("&#x");
            push_hex(u32::from(c), 1, true, out);
            out.push(';');
        }
        _ => out.push('\u{fffd}'),
    });
}

/// Appends `n` in decimal, zero-padded to at least `width` digits.
pub(super) fn push_u64_padded(n: u64, width: usize, out: &mut String) {
    let mut buf = [0u8; 20]; // u64::MAX has 20 digits
    let digits = decimal(n, &mut buf);
    for _ in digits.len()..width {
        out.push('0');
    }
    // Decimal digits are ASCII: the conversion cannot fail.
    out.push_str(std::str::from_utf8(digits).unwrap_or_default());
}

/// Appends `n` in decimal (one `push_str`, no formatting machinery).
#[inline]
pub fn push_u64(n: u64, out: &mut String) {
    push_u64_padded(n, 1, out);
}

/// `n` in decimal, written to the end of `buf` (no formatting machinery, no allocation): what
/// the filter exports as `integrationLatency`.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.get(start..).unwrap_or_default()
}

/// Appends the time `epoch_ms` (milliseconds since the Unix epoch) in CLF form, UTC, to the
/// second: `14/Nov/2023:22:13:20 +0000`. Years past 9999 get more digits.
pub fn write_clf_time(epoch_ms: u64, out: &mut String) {
    // u64::MAX / 1000 is below i64::MAX, so the fallback never applies.
    let secs = i64::try_from(epoch_ms / 1000).unwrap_or(i64::MAX);
    let (days, secs_of_day) = split_unix_seconds(secs);
    let (year, month, day) = civil_from_days(days);
    let month_index = usize::try_from(month).unwrap_or(1).saturating_sub(1);
    let month = MONTHS.get(month_index).copied().unwrap_or("Jan");
    // The year is never negative here: the time is at or after 1970.
    let year = u64::try_from(year).unwrap_or(0);
    let (hour, minute, second) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    if year <= 9999 {
        // Filled in place and appended at once: the record's one time costs one `push_str`.
        let mut buf = *b"dd/Mon/yyyy:hh:mm:ss +0000";
        put_digits(&mut buf, 0, u64::from(day), 2);
        for (slot, b) in buf.iter_mut().skip(3).zip(month.bytes()) {
            *slot = b;
        }
        put_digits(&mut buf, 7, year, 4);
        put_digits(&mut buf, 12, u64::from(hour), 2);
        put_digits(&mut buf, 15, u64::from(minute), 2);
        put_digits(&mut buf, 18, u64::from(second), 2);
        out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
        return;
    }
    push_u64_padded(u64::from(day), 2, out);
    out.push('/');
    out.push_str(month);
    out.push('/');
    push_u64_padded(year, 4, out);
    out.push(':');
    push_u64_padded(u64::from(hour), 2, out);
    out.push(':');
    push_u64_padded(u64::from(minute), 2, out);
    out.push(':');
    push_u64_padded(u64::from(second), 2, out);
    out.push_str(" +0000");
}

/// Writes the last `width` decimal digits of `n` into `buf` from `at` (zero-padded).
fn put_digits(buf: &mut [u8], at: usize, mut n: u64, width: usize) {
    if let Some(digits) = buf.get_mut(at..at.saturating_add(width)) {
        for slot in digits.iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
}
