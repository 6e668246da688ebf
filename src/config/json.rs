//! The configuration's JSON: a small strict parser and the value it builds.
//!
//! It accepts exactly what `serde_json::from_slice::<serde_json::Value>` accepts, builds the same
//! values (objects with sorted keys where the last of duplicate keys wins; integers as `u64` or
//! negative `i64`, everything else as `f64` computed as serde_json computes it) and fails with
//! the same messages, serde_json's wording and line/column included. The fuzz target `json`
//! checks all of this against serde_json itself. (serde_json's parser and `Value` cost ~20 KB of
//! the wasm module; this a few.)

use std::fmt;

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Map),
}

impl Value {
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

impl Number {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Number::PosInt(n) => Some(n),
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
pub struct Map {
    entries: Vec<(String, Value)>,
}

impl Map {
    pub fn new() -> Self {
        Map::default()
    }

    /// Builds a map from entries in document order; of duplicate keys the last one wins.
    pub fn from_entries(entries: Vec<(String, Value)>) -> Self {
        // Sort positions by (key, position) so that equal keys stay in document order, then keep
        // the last of each run. A heapsort: O(n log n) and a few hundred bytes of wasm.
        let mut order: Vec<usize> = (0..entries.len()).collect();
        let key = |i: usize| entries.get(i).map_or("", |(k, _)| k.as_str());
        let less = |a: usize, b: usize| (key(a), a) < (key(b), b);
        crate::sort::heapsort(&mut order, |&a, &b| less(a, b));
        let mut slots: Vec<Option<(String, Value)>> = entries.into_iter().map(Some).collect();
        let mut sorted: Vec<(String, Value)> = Vec::with_capacity(slots.len());
        for i in order {
            let Some(entry) = slots.get_mut(i).and_then(Option::take) else {
                continue;
            };
            match sorted.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => sorted.push(entry),
            }
        }
        Map { entries: sorted }
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        let i = self.find(key).ok()?;
        self.entries.get(i).map(|(_, v)| v)
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A syntax error, shown as serde_json shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    msg: &'static str,
    line: usize,
    column: usize,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.msg, self.line, self.column
        )
    }
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

/// Parses one JSON value (with optional surrounding whitespace).
pub fn parse(input: &[u8]) -> Result<Value, Error> {
    let mut p = Parser {
        s: input,
        i: 0,
        remaining_depth: 128,
    };
    let value = p.value()?;
    match p.whitespace() {
        Some(_) => Err(p.peek_error(TRAILING_CHARACTERS)),
        None => Ok(value),
    }
}

/// The parser follows serde_json's `Deserializer<SliceRead>` step by step (the same checks in
/// the same order, errors at the same index), which is what makes the messages identical.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    remaining_depth: u8,
}

impl Parser<'_> {
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
    fn error(&self, msg: &'static str) -> Error {
        self.error_at(self.i, msg)
    }

    /// An error about the byte peeked at (serde_json's `peek_error`).
    fn peek_error(&self, msg: &'static str) -> Error {
        self.error_at(self.s.len().min(self.i + 1), msg)
    }

    fn error_at(&self, i: usize, msg: &'static str) -> Error {
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
        Error {
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

    fn value(&mut self) -> Result<Value, Error> {
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

    fn ident(&mut self, rest: &[u8]) -> Result<(), Error> {
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
    fn array(&mut self) -> Result<Value, Error> {
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
            items.push(self.value()?);
        }
    }

    /// The members of an object after its `{`, up to (not past) its `}`.
    fn object(&mut self) -> Result<Value, Error> {
        let mut entries = Vec::new();
        loop {
            let Some(b) = self.whitespace() else {
                return Err(self.peek_error(EOF_OBJECT));
            };
            if b == b'}' {
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
            let key = self.string()?;
            match self.whitespace() {
                Some(b':') => self.i += 1,
                Some(_) => return Err(self.peek_error(EXPECTED_COLON)),
                None => return Err(self.peek_error(EOF_OBJECT)),
            }
            let value = self.value()?;
            entries.push((key, value));
        }
    }

    /// A string after its opening quote, through its closing quote.
    fn string(&mut self) -> Result<String, Error> {
        let mut out = Vec::new();
        let mut start = self.i;
        loop {
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            let Some(b) = self.peek() else {
                return Err(self.error(EOF_STRING));
            };
            out.extend_from_slice(self.s.get(start..self.i).unwrap_or_default());
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    self.escape(&mut out)?;
                    start = self.i;
                }
                _ => return Err(self.error(CONTROL_CHARACTER)),
            }
        }
        String::from_utf8(out).map_err(|e| {
            // As serde_json: the column of the closing quote's successor, minus the bytes from
            // the first invalid one to the end of the (unescaped) string.
            let mut err = self.error(INVALID_UNICODE_CODE_POINT);
            let invalid = e.as_bytes().len() - e.utf8_error().valid_up_to();
            err.column = err.column.saturating_sub(invalid);
            err
        })
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
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

    fn unicode_escape(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
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

    fn hex4(&mut self) -> Result<u16, Error> {
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
    fn integer(&mut self, positive: bool) -> Result<Number, Error> {
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
    ) -> Result<f64, Error> {
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
    fn exponent(&mut self, positive: bool, significand: u64, starting: i32) -> Result<f64, Error> {
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
                        return Err(self.error(NUMBER_OUT_OF_RANGE));
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
    fn float(&mut self, positive: bool, significand: u64, mut exponent: i32) -> Result<f64, Error> {
        let mut f = significand as f64;
        loop {
            match POW10.get(exponent.unsigned_abs() as usize) {
                Some(&pow) => {
                    if exponent >= 0 {
                        f *= pow;
                        if f.is_infinite() {
                            return Err(self.error(NUMBER_OUT_OF_RANGE));
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
                        return Err(self.error(NUMBER_OUT_OF_RANGE));
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

#[rustfmt::skip]
static POW10: [f64; 309] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23,
    1e24, 1e25, 1e26, 1e27, 1e28, 1e29, 1e30, 1e31, 1e32, 1e33, 1e34, 1e35,
    1e36, 1e37, 1e38, 1e39, 1e40, 1e41, 1e42, 1e43, 1e44, 1e45, 1e46, 1e47,
    1e48, 1e49, 1e50, 1e51, 1e52, 1e53, 1e54, 1e55, 1e56, 1e57, 1e58, 1e59,
    1e60, 1e61, 1e62, 1e63, 1e64, 1e65, 1e66, 1e67, 1e68, 1e69, 1e70, 1e71,
    1e72, 1e73, 1e74, 1e75, 1e76, 1e77, 1e78, 1e79, 1e80, 1e81, 1e82, 1e83,
    1e84, 1e85, 1e86, 1e87, 1e88, 1e89, 1e90, 1e91, 1e92, 1e93, 1e94, 1e95,
    1e96, 1e97, 1e98, 1e99, 1e100, 1e101, 1e102, 1e103, 1e104, 1e105, 1e106, 1e107,
    1e108, 1e109, 1e110, 1e111, 1e112, 1e113, 1e114, 1e115, 1e116, 1e117, 1e118, 1e119,
    1e120, 1e121, 1e122, 1e123, 1e124, 1e125, 1e126, 1e127, 1e128, 1e129, 1e130, 1e131,
    1e132, 1e133, 1e134, 1e135, 1e136, 1e137, 1e138, 1e139, 1e140, 1e141, 1e142, 1e143,
    1e144, 1e145, 1e146, 1e147, 1e148, 1e149, 1e150, 1e151, 1e152, 1e153, 1e154, 1e155,
    1e156, 1e157, 1e158, 1e159, 1e160, 1e161, 1e162, 1e163, 1e164, 1e165, 1e166, 1e167,
    1e168, 1e169, 1e170, 1e171, 1e172, 1e173, 1e174, 1e175, 1e176, 1e177, 1e178, 1e179,
    1e180, 1e181, 1e182, 1e183, 1e184, 1e185, 1e186, 1e187, 1e188, 1e189, 1e190, 1e191,
    1e192, 1e193, 1e194, 1e195, 1e196, 1e197, 1e198, 1e199, 1e200, 1e201, 1e202, 1e203,
    1e204, 1e205, 1e206, 1e207, 1e208, 1e209, 1e210, 1e211, 1e212, 1e213, 1e214, 1e215,
    1e216, 1e217, 1e218, 1e219, 1e220, 1e221, 1e222, 1e223, 1e224, 1e225, 1e226, 1e227,
    1e228, 1e229, 1e230, 1e231, 1e232, 1e233, 1e234, 1e235, 1e236, 1e237, 1e238, 1e239,
    1e240, 1e241, 1e242, 1e243, 1e244, 1e245, 1e246, 1e247, 1e248, 1e249, 1e250, 1e251,
    1e252, 1e253, 1e254, 1e255, 1e256, 1e257, 1e258, 1e259, 1e260, 1e261, 1e262, 1e263,
    1e264, 1e265, 1e266, 1e267, 1e268, 1e269, 1e270, 1e271, 1e272, 1e273, 1e274, 1e275,
    1e276, 1e277, 1e278, 1e279, 1e280, 1e281, 1e282, 1e283, 1e284, 1e285, 1e286, 1e287,
    1e288, 1e289, 1e290, 1e291, 1e292, 1e293, 1e294, 1e295, 1e296, 1e297, 1e298, 1e299,
    1e300, 1e301, 1e302, 1e303, 1e304, 1e305, 1e306, 1e307, 1e308,
];

#[cfg(test)]
impl From<serde_json::Value> for Value {
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
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(a) => Value::Array(a.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(m) => Value::Object(Map::from_entries(
                m.into_iter().map(|(k, v)| (k, Value::from(v))).collect(),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
