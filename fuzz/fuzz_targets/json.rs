//! The configuration's JSON parser (`tollgate::config::json`) against serde_json, which it
//! replaces in the module: for any input both accept or both refuse; accepted documents give
//! the same value (floats bit for bit, object keys in the same order, the last of duplicate keys
//! kept); refused ones the same message, line and column included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value as J;
use tollgate::config::json::{self, Number, Value};

fn same(a: &Value, b: &J) -> bool {
    match (a, b) {
        (Value::Null, J::Null) => true,
        (Value::Bool(x), J::Bool(y)) => x == y,
        (Value::Number(n), J::Number(m)) => match *n {
            Number::PosInt(u) => m.is_u64() && m.as_u64() == Some(u),
            Number::NegInt(i) => m.is_i64() && !m.is_u64() && m.as_i64() == Some(i),
            Number::Float(f) => m.is_f64() && m.as_f64().map(f64::to_bits) == Some(f.to_bits()),
        },
        (Value::String(x), J::String(y)) => x == y,
        (Value::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    match (json::parse(data), serde_json::from_slice::<J>(data)) {
        (Ok(a), Ok(b)) => assert!(same(&a, &b), "{a:?} != {b:?}"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("ours {a:?}, serde_json {b:?}"),
    }
});
