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

/// Text in double quotes with escapes, exactly as `{:?}` writes a `str` (checked for every
/// `char` by a test), without linking `<str as Debug>` (with it, ~2.5 KB of wasm).
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
                // Other controls as `\u{1f}`; the rest as str's Debug shows them.
                _ => fmt::Display::fmt(&c.escape_debug(), f)?,
            }
        }
        f.write_char('"')
    }
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
    fn quoted_is_str_debug() {
        for u in 0..=0x10_FFFFu32 {
            let Some(c) = char::from_u32(u) else {
                continue;
            };
            let s = format!("a{c}");
            assert_eq!(Quoted(&s).to_string(), format!("{s:?}"), "U+{u:04X}");
            // First and last position too (a combining mark is escaped wherever it stands).
            if u % 16 == 0 || u < 0x800 {
                let s = format!("{c}b\u{301}");
                assert_eq!(Quoted(&s).to_string(), format!("{s:?}"), "U+{u:04X}");
            }
        }
        assert_eq!(Quoted("").to_string(), "\"\"");
        assert_eq!(Quoted("GET /a\"b'\\").to_string(), "\"GET /a\\\"b'\\\\\"");
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
