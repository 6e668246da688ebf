//! The one error type of configuration compilation: a field path and what is wrong with it.

use std::fmt::{self, Write};

/// A configuration error, naming the field by its JSON path (`routes[1].throttle.rate`).
///
/// Boxed: a `Result` carrying it is a pointer wider than its value rather than two `String`s,
/// which every `?` and early return of configuration code would otherwise copy (the fields
/// read through `Deref`: `e.path`, `e.message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError(Box<Fault>);

/// What a [`FieldError`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub path: String,
    pub message: String,
}

impl std::ops::Deref for FieldError {
    type Target = Fault;

    fn deref(&self) -> &Fault {
        &self.0
    }
}

impl FieldError {
    #[inline(never)]
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError(Box::new(Fault {
            path: path.into(),
            message: message.into(),
        }))
    }

    /// Prefix the path with the section it was found in: `rate` under `throttle` becomes
    /// `throttle.rate`; an index segment (`[2]`) is joined without a dot.
    pub fn within(mut self, parent: &str) -> Self {
        if parent.is_empty() {
            return self;
        }
        let mut path = String::with_capacity(parent.len() + 1 + self.path.len());
        path.push_str(parent);
        if !self.path.is_empty() && !self.path.starts_with('[') {
            path.push('.');
        }
        path.push_str(&self.path);
        self.0.path = path;
        self
    }
}

/// Text in double quotes with escapes: as `{:?}` writes a `str` for ASCII; other characters as
/// they are, but for the [`hidden`] ones, as `\u{..}` (a combining mark first in the text then
/// joins the opening quote, where `{:?}` would escape it). (`<str as Debug>`, or `char`'s
/// `escape_debug`, would link Unicode's printable tables: ~2 KB of wasm.)
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '\0' => f.write_str("\\0")?,
                '\t' => f.write_str("\\t")?,
                '\r' => f.write_str("\\r")?,
                '\n' => f.write_str("\\n")?,
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                ' '..='~' => f.write_char(c)?,
                // Controls, line separators and invisible format characters as `\u{1f}`.
                _ if hidden(c) => fmt::Display::fmt(&c.escape_unicode(), f)?,
                _ => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// Characters a message shows escaped though they are not ASCII controls: C1 controls, the line
/// and paragraph separators (nothing splits a log line), the bidirectional controls (nothing
/// reorders it), zero-width characters, U+FEFF and the noncharacters U+FFFE, U+FFFF. Other
/// invisible characters (tag characters, a soft hyphen, variation selectors) pass as they are:
/// quoted names come from the operator's configuration, not from requests.
fn hidden(c: char) -> bool {
    c.is_control()
        || crate::access_log::is_bidi_control(c)
        || matches!(
            c,
            '\u{200b}'..='\u{200d}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{2060}'..='\u{2065}'
                | '\u{feff}'
                | '\u{fffe}'
                | '\u{ffff}'
        )
}

/// `items` separated by ", " (by hand: `[T]::join` costs ~1 KB of wasm per element type).
pub(crate) fn comma_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for item in items {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(item);
    }
    out
}

/// Writes `text` with control characters escaped (`\u{a}`), so that names taken from a
/// configuration (a `Struct` key may hold a newline) can never split or forge a log line.
fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            fmt::Display::fmt(&c.escape_unicode(), f)?;
        } else {
            fmt::Write::write_char(f, c)?;
        }
    }
    Ok(())
}

/// One line: `path: message`, control characters escaped.
impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write_escaped(f, &self.path)?;
            f.write_str(": ")?;
        }
        write_escaped(f, &self.message)
    }
}

impl std::error::Error for FieldError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_is_str_debug_for_ascii_and_breaks_or_reorders_no_line() {
        for u in 0..=0x10_FFFFu32 {
            let Some(c) = char::from_u32(u) else {
                continue;
            };
            let s = format!("a{c}");
            let q = Quoted(&s).to_string();
            if c.is_ascii() {
                assert_eq!(q, format!("{s:?}"), "U+{u:04X}");
            } else if hidden(c) {
                assert_eq!(q, format!("\"a{}\"", c.escape_unicode()), "U+{u:04X}");
            } else {
                assert_eq!(q, format!("\"a{c}\""), "U+{u:04X}");
            }
            // Nothing that breaks or reorders a log line gets through.
            assert!(
                !q.chars().any(|x| x.is_control()
                    || matches!(x, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{61c}')),
                "U+{u:04X}"
            );
        }
        assert_eq!(Quoted("").to_string(), "\"\"");
        assert_eq!(Quoted("GET /a\"b'\\").to_string(), "\"GET /a\\\"b'\\\\\"");
        assert_eq!(
            Quoted("caf\u{e9}\u{202e}").to_string(),
            "\"caf\u{e9}\\u{202e}\""
        );
    }

    #[test]
    fn within_builds_paths() {
        let e = FieldError::new("rate", "must be a positive number")
            .within("throttle")
            .within("[1]")
            .within("routes");
        assert_eq!(e.path, "routes[1].throttle.rate");
        assert_eq!(
            e.to_string(),
            "routes[1].throttle.rate: must be a positive number"
        );
    }

    #[test]
    fn display_is_one_line_whatever_the_names() {
        let e = FieldError::new("usage_plans.a\nb", "unknown field `\n\0x`\r");
        assert_eq!(
            e.to_string(),
            "usage_plans.a\\u{a}b: unknown field `\\u{a}\\u{0}x`\\u{d}"
        );
        assert_eq!(FieldError::new("", "é ok").to_string(), "é ok");
    }
}
