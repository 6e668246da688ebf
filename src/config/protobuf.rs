//! Decoding of `google.protobuf.Struct` into JSON. Envoy hands a plugin configuration given as a
//! `Struct` to the plugin in protobuf binary form (a `StringValue` arrives as its string), so the
//! plugin reads both. Only the well-known types Struct, Value and ListValue are understood.

use super::json::{Map, Number, Value};
use crate::error::FieldError;
use std::borrow::Cow;

/// A fault in the framing has no path; one inside a value gets the path of the keys and list
/// indexes it is under (`cors.max_age`, `routes[2].match`), as the JSON reader gives.
impl From<String> for FieldError {
    fn from(message: String) -> Self {
        FieldError::new("", message)
    }
}

impl From<&str> for FieldError {
    fn from(message: &str) -> Self {
        FieldError::new("", message)
    }
}

/// Nesting limit (a config is shallow; this bounds recursion on hostile input).
const MAX_DEPTH: u32 = 64;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    // The framing's faults are fixed texts: no allocation at each of their sites.
    fn byte(&mut self) -> Result<u8, &'static str> {
        let b = *self.buf.get(self.pos).ok_or(TRUNCATED)?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long")
    }

    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let len = usize::try_from(self.varint()?).map_err(|_| TOO_LARGE)?;
        let end = self.pos.checked_add(len).ok_or(TOO_LARGE)?;
        let s = self.buf.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(s)
    }

    fn fixed64(&mut self) -> Result<u64, &'static str> {
        let end = self.pos.checked_add(8).ok_or(TRUNCATED)?;
        let s: [u8; 8] = self
            .buf
            .get(self.pos..end)
            .and_then(|s| s.try_into().ok())
            .ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(u64::from_le_bytes(s))
    }

    fn skip(&mut self, wire: u64) -> Result<(), &'static str> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.fixed64().map(|_| ()),
            2 => self.bytes().map(|_| ()),
            5 => {
                for _ in 0..4 {
                    self.byte()?;
                }
                Ok(())
            }
            // `wire` is a tag's low three bits.
            3 => Err("unsupported protobuf wire type 3"),
            4 => Err("unsupported protobuf wire type 4"),
            6 => Err("unsupported protobuf wire type 6"),
            _ => Err("unsupported protobuf wire type 7"),
        }
    }
}

const TRUNCATED: &str = "truncated protobuf";
const TOO_LARGE: &str = "length too large";

/// Decodes a binary `google.protobuf.Struct` into a JSON object.
pub fn struct_to_json(buf: &[u8]) -> Result<Value<'_>, FieldError> {
    decode_struct(buf, 0)
}

fn decode_struct(buf: &[u8], depth: u32) -> Result<Value<'_>, FieldError> {
    if depth > MAX_DEPTH {
        return Err("nesting too deep".into());
    }
    let mut r = Reader::new(buf);
    let mut entries: Vec<(Cow<'_, str>, Value<'_>)> = Vec::new();
    while !r.done() {
        let tag = r.varint()?;
        if tag >> 3 == 1 && tag & 7 == 2 {
            let entry = r.bytes()?;
            entries.push(decode_entry(entry, depth)?);
        } else {
            // A Struct has no other field: these bytes are something else (a `Value`
            // wrapping the Struct, or not protobuf at all), never the empty configuration.
            return Err(format!("field {} is not a Struct's", tag >> 3).into());
        }
    }
    // Protobuf lets the last of repeated map keys win; a strict configuration does not (one
    // would silently override or cancel the other). Hashed, not compared pairwise: a Struct of
    // thousands of usage plans loads at once.
    let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_bytes()).collect();
    if let Some((key, _)) = crate::sort::first_duplicate(&keys).and_then(|(_, i)| entries.get(i)) {
        return Err(format!("duplicate key {}", crate::config::Quoted(key)).into());
    }
    Ok(Value::Object(Map::from_entries(entries)))
}

fn decode_entry(buf: &[u8], depth: u32) -> Result<(Cow<'_, str>, Value<'_>), FieldError> {
    let mut r = Reader::new(buf);
    let mut key = "";
    let mut value = Value::Null;
    while !r.done() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => key = std::str::from_utf8(r.bytes()?).map_err(|_| "key is not UTF-8")?,
            (2, 2) => value = decode_value(r.bytes()?, depth + 1).map_err(|e| e.within(key))?,
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok((Cow::Borrowed(key), value))
}

fn decode_value(buf: &[u8], depth: u32) -> Result<Value<'_>, FieldError> {
    if depth > MAX_DEPTH {
        return Err("nesting too deep".into());
    }
    let mut r = Reader::new(buf);
    let mut value = Value::Null;
    while !r.done() {
        let tag = r.varint()?;
        value = match (tag >> 3, tag & 7) {
            (1, 0) => {
                r.varint()?;
                Value::Null
            }
            (2, 1) => {
                let f = f64::from_bits(r.fixed64()?);
                // Integral numbers read back as integers, as they were most likely written.
                if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
                    Value::Number(Number::from(f as i64))
                } else {
                    if f.is_finite() {
                        Value::Number(Number::Float(f))
                    } else {
                        return Err("a number is not finite (NaN or infinity)".into());
                    }
                }
            }
            (3, 2) => Value::String(Cow::Borrowed(
                std::str::from_utf8(r.bytes()?).map_err(|_| "string is not UTF-8")?,
            )),
            (4, 0) => Value::Bool(r.varint()? != 0),
            (5, 2) => decode_struct(r.bytes()?, depth + 1)?,
            (6, 2) => decode_list(r.bytes()?, depth + 1)?,
            (_, wire) => {
                r.skip(wire)?;
                continue;
            }
        };
    }
    Ok(value)
}

fn decode_list(buf: &[u8], depth: u32) -> Result<Value<'_>, FieldError> {
    let mut r = Reader::new(buf);
    let mut items = Vec::new();
    while !r.done() {
        let tag = r.varint()?;
        if tag >> 3 == 1 && tag & 7 == 2 {
            let at = items.len();
            items.push(
                decode_value(r.bytes()?, depth + 1)
                    .map_err(|e| e.within(&super::reader::item("", "", at)))?,
            );
        } else {
            r.skip(tag & 7)?;
        }
    }
    Ok(Value::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // A tiny encoder for the tests only.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn field(n: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
    fn enc_value(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        match v {
            Value::Null => {
                varint(1 << 3, &mut out);
                varint(0, &mut out);
            }
            Value::Number(n) => {
                varint(2 << 3 | 1, &mut out);
                out.extend_from_slice(&n.as_f64().unwrap().to_le_bytes());
            }
            Value::String(s) => field(3, s.as_bytes(), &mut out),
            Value::Bool(b) => {
                varint(4 << 3, &mut out);
                varint(u64::from(*b), &mut out);
            }
            Value::Object(_) => field(5, &enc_struct(v), &mut out),
            Value::Array(items) => {
                let mut list = Vec::new();
                for i in items {
                    field(1, &enc_value(i), &mut list);
                }
                field(6, &list, &mut out);
            }
        }
        out
    }
    fn enc_struct(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        let Value::Object(m) = v else { panic!() };
        for (k, val) in m.iter() {
            let mut entry = Vec::new();
            field(1, k.as_bytes(), &mut entry);
            field(2, &enc_value(val), &mut entry);
            field(1, &entry, &mut out);
        }
        out
    }

    /// `{"cors": {name: value, ...}}` as a Struct, each value given encoded as a `Value`.
    fn cors_struct(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut cors = Vec::new();
        for (name, value) in entries {
            let mut entry = Vec::new();
            field(1, name, &mut entry);
            field(2, value, &mut entry);
            field(1, &entry, &mut cors);
        }
        under_cors(&cors)
    }

    /// `{"cors": <struct>}` as a Struct, given the inner Struct's encoded entries.
    fn under_cors(inner: &[u8]) -> Vec<u8> {
        let mut wrapped = Vec::new();
        field(5, inner, &mut wrapped);
        let mut top_entry = Vec::new();
        field(1, b"cors", &mut top_entry);
        field(2, &wrapped, &mut top_entry);
        let mut top = Vec::new();
        field(1, &top_entry, &mut top);
        top
    }

    #[test]
    fn round_trips_a_config() {
        let v: Value = json!({
            "stage": "prod",
            "enforce": false,
            "throttle": {"rate": 0.5, "burst": 10},
            "cors": {"allow_origins": ["https://a.com", "https://*.b.com"], "max_age": 600},
            "nothing": null
        })
        .into();
        assert_eq!(struct_to_json(&enc_struct(&v)).unwrap(), v);
        assert_eq!(struct_to_json(&[]).unwrap(), Value::Object(Map::new()));
    }

    #[test]
    fn a_struct_whose_second_byte_reads_as_a_bracket_is_still_a_struct() {
        // The first entry's length is the Struct's second byte: 123 is `{`, 91 is `[`.
        for (v, len) in [
            (json!({"stage": "a".repeat(112)}), 123),
            (
                json!({"cors": {"allow_origins": [format!("https://{}.example.com", "a".repeat(36))]}}),
                91,
            ),
        ] {
            let bytes = enc_struct(&v.into());
            assert_eq!((bytes[0], bytes[1]), (0x0a, len));
            if let Err(e) = crate::config::Config::from_json(&bytes) {
                panic!("a valid Struct was refused: {e}");
            }
        }
        // And a bad value in such a Struct is told with its path: `cors` holds a padding
        // origin, then `max_age`: NaN.
        let mut seen = Vec::new();
        for pad in 0..120 {
            let mut nan = Vec::new();
            varint(2 << 3 | 1, &mut nan);
            nan.extend_from_slice(&f64::NAN.to_le_bytes());
            let origins: Value = json!([format!("https://{}.example.com", "a".repeat(pad))]).into();
            let top = cors_struct(&[(b"allow_origins", &enc_value(&origins)), (b"max_age", &nan)]);
            if top[1] == b'{' || top[1] == b'[' {
                let e = crate::config::Config::from_json(&top).unwrap_err();
                assert_eq!(e.path, "cors.max_age", "{e}");
                seen.push(top[1]);
            }
        }
        seen.sort();
        assert_eq!(seen, [b'[', b'{']);
    }

    #[test]
    fn what_is_not_a_strict_struct_is_refused() {
        // A NaN or infinite number is not taken for an absent field.
        for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut value = Vec::new();
            varint(2 << 3 | 1, &mut value);
            value.extend_from_slice(&f.to_le_bytes());
            let top = cors_struct(&[(b"max_age", &value)]);
            let e = struct_to_json(&top).unwrap_err();
            assert!(e.message.contains("not finite"), "{e}");
            // The error names the field, as the JSON reader's do.
            assert_eq!(e.path, "cors.max_age");
            let e = crate::config::Config::from_json(&top).unwrap_err();
            assert_eq!(e.path, "cors.max_age", "{e}");
            // In a list, under its index.
            let mut list = Vec::new();
            field(1, &enc_value(&json!("https://a.com").into()), &mut list);
            field(1, &value, &mut list);
            let mut listed = Vec::new();
            field(6, &list, &mut listed);
            let top = cors_struct(&[(b"allow_origins", &listed)]);
            let e = crate::config::Config::from_json(&top).unwrap_err();
            assert_eq!(e.path, "cors.allow_origins[1]", "{e}");
            assert!(e.message.contains("not finite"), "{e}");
        }
        // A `Value` wrapping the Struct (field 5), or bytes that are no Struct at all, never
        // read as the empty configuration.
        let v: Value = json!({"throttle": {"rate": 1, "burst": 1}}).into();
        let mut as_value = Vec::new();
        field(5, &enc_struct(&v), &mut as_value);
        assert!(struct_to_json(&as_value).is_err());
        for bytes in [&b"hi"[..], b"`x"] {
            assert!(struct_to_json(bytes).is_err(), "{bytes:?}");
            assert!(
                crate::config::Config::from_json(bytes).is_err(),
                "{bytes:?}"
            );
        }
        // A key given twice.
        let mut dup = enc_struct(&json!({"stage": "a"}).into());
        dup.extend(enc_struct(&json!({"stage": "b"}).into()));
        let e = struct_to_json(&dup).unwrap_err();
        assert!(e.message.contains("duplicate key \"stage\""), "{e}");
        // Inside an object, under its key.
        let mut inner = enc_struct(&json!({"max_age": 1}).into());
        inner.extend(enc_struct(&json!({"max_age": 2}).into()));
        let e = crate::config::Config::from_json(&under_cors(&inner)).unwrap_err();
        assert_eq!(e.path, "cors", "{e}");
        assert!(e.message.contains("duplicate key \"max_age\""), "{e}");
    }

    #[test]
    fn hostile_bytes_do_not_panic() {
        assert!(struct_to_json(&[0x0a, 0xff]).is_err());
        assert!(struct_to_json(&[0x0a, 0x05, 0x0a]).is_err());
        assert!(struct_to_json(&[0xff; 11]).is_err());
        // Deep nesting is refused, not a stack overflow.
        let mut v = json!(1);
        for _ in 0..200 {
            v = json!({ "a": v });
        }
        assert!(struct_to_json(&enc_struct(&v.into())).is_err());
        let mut x: u64 = 7;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes: Vec<u8> = (0..(x % 40)).map(|i| (x >> (i % 8)) as u8).collect();
            let _ = struct_to_json(&bytes);
        }
    }
}
