//! The configuration's JSON: a small strict parser and the value it builds.
//!
//! It accepts exactly what `serde_json::from_slice::<serde_json::Value>` accepts, builds the same
//! values (objects with sorted keys where the last of duplicate keys wins; integers as `u64` or
//! negative `i64`, everything else as `f64` computed as serde_json computes it) and fails with
//! the same messages, serde_json's wording and line/column included. The fuzz target `json`
//! checks all of this against serde_json itself. (serde_json's parser and `Value` cost ~20 KB of
//! the wasm module; this a few.)

use std::borrow::Cow;
use std::fmt;

/// A JSON value. Its strings and keys borrow the input where it spells them without escapes
/// (20,000 API keys' objects then allocate no string to build or free).
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    Object(Map<'a>),
}

impl Value<'_> {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Value::Object(_))
    }
}

/// A JSON number, kept as serde_json keeps it (without `arbitrary_precision`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// A non-negative integer.
    PosInt(u64),
    /// A negative integer.
    NegInt(i64),
    /// Any other number (always finite).
    Float(f64),
}

/// The largest whole number taken from a number written with a fraction or an exponent: every
/// field but `quota.limit` is at most this, and up to it such text parses exactly.
pub const MAX_WHOLE_FLOAT: f64 = 4_294_967_295.0;

impl Number {
    /// The number as a whole number of 0 or more: `600.0`, `6e2` and `-0` are whole numbers
    /// too, as a `Struct`'s (always a double) are read, up to [`MAX_WHOLE_FLOAT`].
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Number::PosInt(n) => Some(n),
            // `-0.0` is in the range: it compares equal to 0.
            Number::Float(f) if f.fract() == 0.0 && (0.0..=MAX_WHOLE_FLOAT).contains(&f) => {
                Some(f as u64)
            }
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Number::PosInt(n) => n as f64,
            Number::NegInt(n) => n as f64,
            Number::Float(f) => f,
        })
    }
}

impl From<i64> for Number {
    fn from(n: i64) -> Self {
        match u64::try_from(n) {
            Ok(u) => Number::PosInt(u),
            Err(_) => Number::NegInt(n),
        }
    }
}

/// A JSON object: entries sorted by key, keys unique.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Map<'a> {
    entries: Vec<(Cow<'a, str>, Value<'a>)>,
}

impl<'a> Map<'a> {
    pub fn new() -> Self {
        Map::default()
    }

    /// Builds a map from entries in document order; of duplicate keys the last one wins.
    pub fn from_entries(entries: Vec<(Cow<'a, str>, Value<'a>)>) -> Self {
        // Keys already in order and unique (as in most configurations' small objects): kept
        // as they are, without the sort's four allocations.
        if Self::in_order(&entries) {
            return Map { entries };
        }
        // In (key, position) order, so that equal keys stay in document order and the last of
        // each run is the one kept. (The indexes are sorted, not the entries: one sort function
        // serves this and `sort::first_duplicate`.)
        let order = {
            let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_bytes()).collect();
            crate::sort::sorted_order(&keys)
        };
        let mut slots: Vec<Option<(Cow<'a, str>, Value<'a>)>> =
            entries.into_iter().map(Some).collect();
        let mut sorted: Vec<(Cow<'a, str>, Value<'a>)> = Vec::with_capacity(slots.len());
        for i in order {
            let Some((k, v)) = slots.get_mut(i).and_then(Option::take) else {
                continue;
            };
            match sorted.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => sorted.push((k, v)),
            }
        }
        Map { entries: sorted }
    }

    /// Whether the keys of `entries` are in order, each greater than the one before (so none
    /// is repeated).
    fn in_order(entries: &[(Cow<'a, str>, Value<'a>)]) -> bool {
        entries.windows(2).all(|w| matches!(w, [a, b] if a.0 < b.0))
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        let i = self.find(key).ok()?;
        self.entries.get(i).map(|(_, v)| v)
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| &**k)
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value<'a>)> {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A syntax error, shown as serde_json shows it; a duplicate key (strict parsing) also names
/// the key by its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    fault: Fault,
    /// For a duplicate key or a number out of range: the value's path (`routes[0].match`).
    field: Option<String>,
}

/// Where and what went wrong (plain data, so the parser's results need no drop glue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fault {
    msg: &'static str,
    line: usize,
    column: usize,
}

impl Error {
    /// The path of the value a syntax error is about, when it names one the message does not
    /// (a number out of range): the configuration's error then carries it as its field.
    pub fn value_path(&self) -> Option<&str> {
        self.field
            .as_deref()
            .filter(|_| self.fault.msg != DUPLICATE_KEY)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Fault { msg, line, column } = self.fault;
        let twice = self.field.as_deref().filter(|_| msg == DUPLICATE_KEY);
        if let Some(field) = twice {
            write!(f, "{field}: given twice (")?;
        }
        write!(f, "{msg} at line {line} column {column}")?;
        if twice.is_some() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// One step of the parser's way to the value it is reading.
#[derive(Clone, Copy)]
enum Step {
    /// An object member: its key, as the input spells it (bytes `start..end`).
    Key(usize, usize),
    Index(usize),
}

const EOF_LIST: &str = "EOF while parsing a list";
const EOF_OBJECT: &str = "EOF while parsing an object";
const EOF_STRING: &str = "EOF while parsing a string";
const EOF_VALUE: &str = "EOF while parsing a value";
const EXPECTED_COLON: &str = "expected `:`";
const EXPECTED_LIST_COMMA_OR_END: &str = "expected `,` or `]`";
const EXPECTED_OBJECT_COMMA_OR_END: &str = "expected `,` or `}`";
const EXPECTED_IDENT: &str = "expected ident";
const EXPECTED_VALUE: &str = "expected value";
const INVALID_ESCAPE: &str = "invalid escape";
const INVALID_NUMBER: &str = "invalid number";
const NUMBER_OUT_OF_RANGE: &str = "number out of range";
const INVALID_UNICODE_CODE_POINT: &str = "invalid unicode code point";
const CONTROL_CHARACTER: &str = "control character (\\u0000-\\u001F) found while parsing a string";
const KEY_MUST_BE_A_STRING: &str = "key must be a string";
const LONE_LEADING_SURROGATE: &str = "lone leading surrogate in hex escape";
const TRAILING_COMMA: &str = "trailing comma";
const TRAILING_CHARACTERS: &str = "trailing characters";
const UNEXPECTED_END_OF_HEX_ESCAPE: &str = "unexpected end of hex escape";
const RECURSION_LIMIT_EXCEEDED: &str = "recursion limit exceeded";
const DUPLICATE_KEY: &str = "duplicate key";

/// Parses one JSON value (with optional surrounding whitespace). Of an object's duplicate keys
/// the last one wins, as in serde_json.
pub fn parse(input: &[u8]) -> Result<Value<'_>, Error> {
    parse_with(input, false)
}

/// Parses a configuration: as [`parse`], but a key that appears twice in one object is an
/// error (it would silently override or cancel the first, a strict configuration's mistake).
pub fn parse_strict(input: &[u8]) -> Result<Value<'_>, Error> {
    parse_with(input, true)
}

fn parse_with(input: &[u8], reject_duplicates: bool) -> Result<Value<'_>, Error> {
    let mut p = Parser {
        s: input,
        i: 0,
        remaining_depth: 128,
        reject_duplicates,
        path: Vec::new(),
        duplicate: None,
    };
    let parsed = p.value().and_then(|value| match p.whitespace() {
        Some(_) => Err(p.peek_error(TRAILING_CHARACTERS)),
        None => Ok(value),
    });
    parsed.map_err(|fault| Error {
        fault,
        field: p.duplicate.take(),
    })
}

/// The parser follows serde_json's `Deserializer<SliceRead>` step by step (the same checks in
/// the same order, errors at the same index), which is what makes the messages identical.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    remaining_depth: u8,
    reject_duplicates: bool,
    /// The way to the value being read (strict parsing names a duplicate key by it).
    path: Vec<Step>,
    /// The path of a duplicate key or of a number out of range, once met.
    duplicate: Option<String>,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn peek_or_null(&self) -> u8 {
        self.peek().unwrap_or(0)
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    /// An error about the byte just read (serde_json's `error`).
    fn error(&self, msg: &'static str) -> Fault {
        self.error_at(self.i, msg)
    }

    /// An error about the byte peeked at (serde_json's `peek_error`).
    fn peek_error(&self, msg: &'static str) -> Fault {
        self.error_at(self.s.len().min(self.i + 1), msg)
    }

    fn error_at(&self, i: usize, msg: &'static str) -> Fault {
        let before = self.s.get(..i).unwrap_or(self.s);
        let start_of_line = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let line = 1 + before
            .iter()
            .take(start_of_line)
            .filter(|&&b| b == b'\n')
            .count();
        Fault {
            msg,
            line,
            column: i - start_of_line,
        }
    }

    /// Skips whitespace; the next byte, not consumed.
    fn whitespace(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
        self.peek()
    }

    fn value(&mut self) -> Result<Value<'a>, Fault> {
        let Some(b) = self.whitespace() else {
            return Err(self.peek_error(EOF_VALUE));
        };
        match b {
            b'n' => {
                self.i += 1;
                self.ident(b"ull")?;
                Ok(Value::Null)
            }
            b't' => {
                self.i += 1;
                self.ident(b"rue")?;
                Ok(Value::Bool(true))
            }
            b'f' => {
                self.i += 1;
                self.ident(b"alse")?;
                Ok(Value::Bool(false))
            }
            b'-' => {
                self.i += 1;
                self.integer(false).map(Value::Number)
            }
            b'0'..=b'9' => self.integer(true).map(Value::Number),
            b'"' => {
                self.i += 1;
                self.string().map(Value::String)
            }
            b'[' | b'{' => {
                self.remaining_depth -= 1;
                if self.remaining_depth == 0 {
                    return Err(self.peek_error(RECURSION_LIMIT_EXCEEDED));
                }
                self.i += 1;
                let v = if b == b'[' {
                    self.array()
                } else {
                    self.object()
                };
                self.remaining_depth += 1;
                // The closing bracket, seen by the loop that ended.
                self.i += 1;
                v
            }
            _ => Err(self.peek_error(EXPECTED_VALUE)),
        }
    }

    fn ident(&mut self, rest: &[u8]) -> Result<(), Fault> {
        for &expected in rest {
            match self.next() {
                None => return Err(self.error(EOF_VALUE)),
                Some(b) if b != expected => return Err(self.error(EXPECTED_IDENT)),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The elements of an array after its `[`, up to (not past) its `]`.
    fn array(&mut self) -> Result<Value<'a>, Fault> {
        let mut items = Vec::new();
        loop {
            let Some(b) = self.whitespace() else {
                return Err(self.peek_error(EOF_LIST));
            };
            if b == b']' {
                return Ok(Value::Array(items));
            }
            if !items.is_empty() {
                if b != b',' {
                    return Err(self.peek_error(EXPECTED_LIST_COMMA_OR_END));
                }
                self.i += 1;
                match self.whitespace() {
                    Some(b']') => return Err(self.peek_error(TRAILING_COMMA)),
                    Some(_) => {}
                    None => return Err(self.peek_error(EOF_VALUE)),
                }
            }
            self.path.push(Step::Index(items.len()));
            let item = self.value();
            self.path.pop();
            items.push(item?);
        }
    }

    /// The members of an object after its `{`, up to (not past) its `}`.
    fn object(&mut self) -> Result<Value<'a>, Fault> {
        let mut entries: Vec<(Cow<'a, str>, Value<'a>)> = Vec::new();
        // Where each key ends (its path step and the offset after it), for a duplicate's error.
        let mut key_ends: Vec<(Step, usize)> = Vec::new();
        loop {
            let Some(b) = self.whitespace() else {
                return Err(self.peek_error(EOF_OBJECT));
            };
            if b == b'}' {
                // (Keys in order repeat none: most objects need no search.)
                if self.reject_duplicates && !Map::in_order(&entries) {
                    // Hashed, not compared pairwise: an object of thousands of usage plans
                    // loads at once. The error is the one a scan would give at the first
                    // repeated key, but comes after the errors of the values that follow it.
                    let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_bytes()).collect();
                    if let Some((_, i)) = crate::sort::first_duplicate(&keys) {
                        if let Some(&(step, at)) = key_ends.get(i) {
                            self.path.push(step);
                            self.duplicate = Some(self.path_text());
                            return Err(self.error_at(at, DUPLICATE_KEY));
                        }
                    }
                }
                return Ok(Value::Object(Map::from_entries(entries)));
            }
            if entries.is_empty() {
                if b != b'"' {
                    return Err(self.peek_error(KEY_MUST_BE_A_STRING));
                }
            } else {
                if b != b',' {
                    return Err(self.peek_error(EXPECTED_OBJECT_COMMA_OR_END));
                }
                self.i += 1;
                match self.whitespace() {
                    Some(b'"') => {}
                    Some(b'}') => return Err(self.peek_error(TRAILING_COMMA)),
                    Some(_) => return Err(self.peek_error(KEY_MUST_BE_A_STRING)),
                    None => return Err(self.peek_error(EOF_VALUE)),
                }
            }
            self.i += 1;
            let key_start = self.i;
            let key = self.string()?;
            let key_step = Step::Key(key_start, self.i.saturating_sub(1));
            if self.reject_duplicates {
                key_ends.push((key_step, self.i));
            }
            match self.whitespace() {
                Some(b':') => self.i += 1,
                Some(_) => return Err(self.peek_error(EXPECTED_COLON)),
                None => return Err(self.peek_error(EOF_OBJECT)),
            }
            self.path.push(key_step);
            let value = self.value();
            self.path.pop();
            entries.push((key, value?));
        }
    }

    /// A number too large for a double, named by its path as a configuration error must be.
    #[cold]
    fn out_of_range(&mut self) -> Fault {
        if !self.path.is_empty() {
            self.duplicate = Some(self.path_text());
        }
        self.error(NUMBER_OUT_OF_RANGE)
    }

    /// The path to the value being read, as `routes[0].match` (keys as the input spells them).
    #[cold]
    fn path_text(&self) -> String {
        let mut out = String::new();
        for step in &self.path {
            match *step {
                Step::Key(start, end) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    let key = self.s.get(start..end).unwrap_or_default();
                    out.push_str(&String::from_utf8_lossy(key));
                }
                Step::Index(i) => {
                    out.push('[');
                    let mut digits = [0; 20];
                    let i = u64::try_from(i).unwrap_or(u64::MAX);
                    for d in crate::access_log::decimal(i, &mut digits) {
                        out.push(char::from(*d));
                    }
                    out.push(']');
                }
            }
        }
        out
    }

    /// A string after its opening quote, through its closing quote: borrowed from the input
    /// when it has no escape.
    fn string(&mut self) -> Result<Cow<'a, str>, Fault> {
        let s = self.s;
        let mut out = Vec::new();
        let mut start = self.i;
        let first = start;
        loop {
            let rest = s.get(self.i..).unwrap_or_default();
            self.i += rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(rest.len());
            let Some(b) = self.peek() else {
                return Err(self.error(EOF_STRING));
            };
            let plain = s.get(start..self.i).unwrap_or_default();
            self.i += 1;
            match b {
                b'"' if start == first => {
                    return match std::str::from_utf8(plain) {
                        Ok(text) => Ok(Cow::Borrowed(text)),
                        Err(e) => Err(self.invalid_utf8(plain.len() - e.valid_up_to())),
                    };
                }
                b'"' => {
                    out.extend_from_slice(plain);
                    break;
                }
                b'\\' => {
                    out.extend_from_slice(plain);
                    self.escape(&mut out)?;
                    start = self.i;
                }
                _ => return Err(self.error(CONTROL_CHARACTER)),
            }
        }
        match String::from_utf8(out) {
            Ok(text) => Ok(Cow::Owned(text)),
            Err(e) => Err(self.invalid_utf8(e.as_bytes().len() - e.utf8_error().valid_up_to())),
        }
    }

    /// As serde_json: the column of the closing quote's successor, minus the `invalid` bytes
    /// from the first invalid one to the end of the (unescaped) string.
    #[cold]
    fn invalid_utf8(&self, invalid: usize) -> Fault {
        let mut err = self.error(INVALID_UNICODE_CODE_POINT);
        err.column = err.column.saturating_sub(invalid);
        err
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), Fault> {
        let Some(b) = self.next() else {
            return Err(self.error(EOF_STRING));
        };
        let c = match b {
            b'"' | b'\\' | b'/' => b,
            b'b' => b'\x08',
            b'f' => b'\x0c',
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => return self.unicode_escape(out),
            _ => return Err(self.error(INVALID_ESCAPE)),
        };
        out.push(c);
        Ok(())
    }

    fn unicode_escape(&mut self, out: &mut Vec<u8>) -> Result<(), Fault> {
        let n = self.hex4()?;
        let code = match n {
            0xDC00..=0xDFFF => return Err(self.error(LONE_LEADING_SURROGATE)),
            0xD800..=0xDBFF => {
                for expected in [b'\\', b'u'] {
                    match self.peek() {
                        None => return Err(self.error(EOF_STRING)),
                        Some(b) => {
                            self.i += 1;
                            if b != expected {
                                return Err(self.error(UNEXPECTED_END_OF_HEX_ESCAPE));
                            }
                        }
                    }
                }
                let n2 = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&n2) {
                    return Err(self.error(LONE_LEADING_SURROGATE));
                }
                (((u32::from(n) - 0xD800) << 10) | (u32::from(n2) - 0xDC00)) + 0x1_0000
            }
            _ => u32::from(n),
        };
        if let Some(c) = char::from_u32(code) {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, Fault> {
        let Some(digits) = self.s.get(self.i..self.i + 4) else {
            self.i = self.s.len();
            return Err(self.error(EOF_STRING));
        };
        self.i += 4;
        let mut n: u16 = 0;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(self.error(INVALID_ESCAPE)),
            };
            n = n << 4 | u16::from(v);
        }
        Ok(n)
    }

    /// A number after its optional `-` (serde_json's `parse_integer`).
    fn integer(&mut self, positive: bool) -> Result<Number, Fault> {
        let Some(b) = self.next() else {
            return Err(self.error(EOF_VALUE));
        };
        let mut significand: u64 = match b {
            b'0' => {
                // There can be only one leading '0'.
                if self.peek_or_null().is_ascii_digit() {
                    return Err(self.peek_error(INVALID_NUMBER));
                }
                0
            }
            b'1'..=b'9' => u64::from(b - b'0'),
            _ => return Err(self.error(INVALID_NUMBER)),
        };
        if b != b'0' {
            while let Some(d) = digit(self.peek_or_null()) {
                let Some(next) = significand.checked_mul(10).and_then(|s| s.checked_add(d)) else {
                    // Too long for u64: a float, the further digits only scaling it.
                    let mut exponent: i32 = 0;
                    while digit(self.peek_or_null()).is_some() {
                        self.i += 1;
                        exponent = exponent.saturating_add(1);
                    }
                    return self
                        .fraction(positive, significand, exponent)
                        .map(Number::Float);
                };
                self.i += 1;
                significand = next;
            }
        }
        if matches!(self.peek_or_null(), b'.' | b'e' | b'E') {
            return self.fraction(positive, significand, 0).map(Number::Float);
        }
        if positive {
            return Ok(Number::PosInt(significand));
        }
        let neg = (significand as i64).wrapping_neg();
        // A float on underflow, and for `-0`.
        Ok(if neg >= 0 {
            Number::Float(-(significand as f64))
        } else {
            Number::NegInt(neg)
        })
    }

    /// What may follow the integer digits: a fraction, an exponent, or nothing.
    fn fraction(
        &mut self,
        positive: bool,
        mut significand: u64,
        exponent: i32,
    ) -> Result<f64, Fault> {
        if self.peek_or_null() != b'.' {
            return self.exponent(positive, significand, exponent);
        }
        self.i += 1;
        let mut after_point: i32 = 0;
        while let Some(d) = digit(self.peek_or_null()) {
            match significand.checked_mul(10).and_then(|s| s.checked_add(d)) {
                Some(next) => {
                    self.i += 1;
                    significand = next;
                    after_point -= 1;
                }
                None => {
                    // The next digit would overflow: ignore it and all that follow.
                    while digit(self.peek_or_null()).is_some() {
                        self.i += 1;
                    }
                    return self.exponent(positive, significand, exponent + after_point);
                }
            }
        }
        if after_point == 0 {
            return Err(match self.peek() {
                Some(_) => self.peek_error(INVALID_NUMBER),
                None => self.peek_error(EOF_VALUE),
            });
        }
        self.exponent(positive, significand, exponent + after_point)
    }

    /// An optional exponent, then the float.
    fn exponent(&mut self, positive: bool, significand: u64, starting: i32) -> Result<f64, Fault> {
        if !matches!(self.peek_or_null(), b'e' | b'E') {
            return self.float(positive, significand, starting);
        }
        self.i += 1;
        let positive_exp = match self.peek_or_null() {
            b'+' => {
                self.i += 1;
                true
            }
            b'-' => {
                self.i += 1;
                false
            }
            _ => true,
        };
        let Some(b) = self.next() else {
            return Err(self.error(EOF_VALUE));
        };
        let Some(mut exp) = digit(b).map(|d| d as i32) else {
            return Err(self.error(INVALID_NUMBER));
        };
        while let Some(d) = digit(self.peek_or_null()) {
            self.i += 1;
            match exp.checked_mul(10).and_then(|e| e.checked_add(d as i32)) {
                Some(next) => exp = next,
                None => {
                    // An error instead of infinity; zero otherwise.
                    if significand != 0 && positive_exp {
                        return Err(self.out_of_range());
                    }
                    while digit(self.peek_or_null()).is_some() {
                        self.i += 1;
                    }
                    return Ok(if positive { 0.0 } else { -0.0 });
                }
            }
        }
        let exponent = if positive_exp {
            starting.saturating_add(exp)
        } else {
            starting.saturating_sub(exp)
        };
        self.float(positive, significand, exponent)
    }

    /// `significand * 10^exponent` as serde_json computes it (`f64_from_parts`).
    fn float(&mut self, positive: bool, significand: u64, mut exponent: i32) -> Result<f64, Fault> {
        let mut f = significand as f64;
        loop {
            match pow10(exponent.unsigned_abs()) {
                Some(pow) => {
                    if exponent >= 0 {
                        f *= pow;
                        if f.is_infinite() {
                            return Err(self.out_of_range());
                        }
                    } else {
                        f /= pow;
                    }
                    break;
                }
                None => {
                    if f == 0.0 {
                        break;
                    }
                    if exponent >= 0 {
                        return Err(self.out_of_range());
                    }
                    f /= 1e308;
                    exponent += 308;
                }
            }
        }
        Ok(if positive { f } else { -f })
    }
}

fn digit(b: u8) -> Option<u64> {
    b.is_ascii_digit().then(|| u64::from(b - b'0'))
}

/// `10^k` for `k <= 308`, correctly rounded: the value of the literal `1e{k}` that serde_json
/// keeps a table of (2.5 KB of wasm; computing it costs a few hundred bytes). 5^k is built
/// exactly in 32-bit limbs, then rounded to 53 bits (to nearest, ties to even) and scaled by
/// 2^k.
fn pow10(k: u32) -> Option<f64> {
    if k > 308 {
        return None;
    }
    // 5^308 < 2^716: 23 limbs suffice.
    let mut five = [0u32; 23];
    if let Some(low) = five.first_mut() {
        *low = 1;
    }
    for _ in 0..k {
        let mut carry = 0u64;
        for limb in five.iter_mut() {
            let v = u64::from(*limb) * 5 + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
    }
    let bit = |i: u32| {
        five.get((i / 32) as usize)
            .is_some_and(|l| (l >> (i % 32)) & 1 == 1)
    };
    let top = five.iter().rposition(|&l| l != 0).unwrap_or(0) as u32;
    let len = top * 32 + 32 - five.get(top as usize).map_or(32, |l| l.leading_zeros());
    // The top 53 bits (or all of them), then the rounding.
    let shift = len.saturating_sub(53);
    let mut mantissa: u64 = 0;
    for i in (shift..len).rev() {
        mantissa = mantissa << 1 | u64::from(bit(i));
    }
    let mut exp = i64::from(shift + k);
    if shift > 0 && bit(shift - 1) && (mantissa & 1 == 1 || (0..shift - 1).any(bit)) {
        mantissa += 1;
        if mantissa == 1 << 53 {
            mantissa >>= 1;
            exp += 1;
        }
    }
    while mantissa < 1 << 52 {
        mantissa <<= 1;
        exp -= 1;
    }
    // value = mantissa * 2^exp with mantissa in [2^52, 2^53).
    let biased = (exp + 52 + 1023) as u64;
    Some(f64::from_bits(biased << 52 | (mantissa & ((1 << 52) - 1))))
}

#[cfg(test)]
impl From<serde_json::Value> for Value<'static> {
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(if let Some(u) = n.as_u64() {
                Number::PosInt(u)
            } else if let Some(i) = n.as_i64() {
                Number::NegInt(i)
            } else {
                Number::Float(n.as_f64().unwrap_or(f64::NAN))
            }),
            serde_json::Value::String(s) => Value::String(Cow::Owned(s)),
            serde_json::Value::Array(a) => Value::Array(a.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(m) => Value::Object(Map::from_entries(
                m.into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Value::from(v)))
                    .collect(),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
