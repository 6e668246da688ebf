//! Custom access log templates: literal text with `$context.NAME` variables, split into segments
//! once at configuration time.

use super::text::{json_escape_into, text_escape_into};
use super::{template_value_into, Field, Record};
use crate::error::FieldError;

const PREFIX: &str = "$context.";

/// A piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Text copied as is.
    Literal(String),
    /// A `$context` variable.
    Var(Field),
}

/// A parsed template: literal text and variables, adjacent literals merged.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Template {
    segments: Vec<Segment>,
    /// A template shaped like JSON (its first non-blank character is `{`): values are written
    /// JSON-escaped, so a client's quote or backslash cannot end a string and add a field.
    json: bool,
}

impl Template {
    /// Splits `s` into literal text and `$context.NAME` variables.
    ///
    /// After `$context.`, NAME is the longest known variable name that the text starts with and
    /// that ends at the end of the text's run of `[A-Za-z0-9.]` or before a `.` in it: so
    /// `$context.status.` is `status` and a literal `.`, `$context.requestTimeEpoch` is
    /// `requestTimeEpoch`, and `$context.statusCode` or `$context.error.messages` is an error
    /// (`unknown variable $context.statusCode`), as is a bare `$context.`. A `$` not followed by
    /// `context.` is literal text. Variable names are case-sensitive. Control characters other
    /// than tab (line breaks included) are refused, since a record must stay one line.
    ///
    /// Errors carry the path `format`. A template without any variable parses (to one literal);
    /// [`super::LogFormat::parse`] is the one that refuses it.
    pub fn parse(s: &str) -> Result<Template, FieldError> {
        if s.chars()
            .any(|c| (c != '\t' && c.is_control()) || c == '\u{2028}' || c == '\u{2029}')
        {
            return Err(FieldError::new(
                "format",
                "must not contain line breaks or control characters",
            ));
        }
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = s;
        while let Some(pos) = crate::token::find_str(rest, PREFIX) {
            literal.push_str(rest.get(..pos).unwrap_or(""));
            let after = rest.get(pos + PREFIX.len()..).unwrap_or("");
            let run_len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'.')
                .count();
            let run = after.get(..run_len).unwrap_or("");
            let Some((field, used)) = longest_variable(run) else {
                let name = run.trim_end_matches('.');
                let message = if name.is_empty() {
                    "\"$context.\" must be followed by a variable name".to_string()
                } else {
                    format!("unknown variable $context.{name}")
                };
                return Err(FieldError::new("format", message));
            };
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Var(field));
            rest = after.get(used..).unwrap_or("");
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template {
            segments,
            json: s.trim_start().starts_with('{'),
        })
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The variables the template uses, in order of appearance (repeats included).
    pub fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(f) => Some(*f),
            Segment::Literal(_) => None,
        })
    }

    /// Appends the record as this template (no trailing newline). Unknown or empty values are
    /// `-`; values are inserted raw, except that control characters are written as `\xHH`, or,
    /// in a template shaped like JSON, escaped as in a JSON string (its quotes are the
    /// template's).
    pub fn format_into(&self, rec: &Record, out: &mut String) {
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Var(field) => {
                    let escape = if self.json {
                        json_escape_into
                    } else {
                        text_escape_into
                    };
                    template_value_into(*field, rec, out, escape)
                }
            }
        }
    }
}

/// The longest variable name that `run` (a run of `[A-Za-z0-9.]`) starts with and that is followed
/// by the run's end or a `.`; with the number of bytes it takes.
fn longest_variable(run: &str) -> Option<(Field, usize)> {
    Field::ALL
        .iter()
        .filter_map(|&field| {
            let name = field.name();
            let ends_at_boundary = match run.as_bytes().get(name.len()) {
                None => true,
                Some(&b) => b == b'.',
            };
            (run.starts_with(name) && ends_at_boundary).then_some((field, name.len()))
        })
        .max_by_key(|&(_, len)| len)
}
