//! The parser against serde_json itself: same values (floats bit for bit), same errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::*;

/// Equal, with floats compared bit for bit (so `-0.0` differs from `0.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(Number::Float(x)), Value::Number(Number::Float(y))) => {
            x.to_bits() == y.to_bits()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        _ => a == b,
    }
}

/// Parses `input` with both parsers and checks they agree.
fn check(input: &[u8]) {
    let ours = parse(input);
    let theirs = serde_json::from_slice::<serde_json::Value>(input);
    match (&ours, theirs) {
        (Ok(a), Ok(b)) => {
            let b = Value::from(b);
            assert!(
                same(a, &b),
                "{:?}: {a:?} != {b:?}",
                String::from_utf8_lossy(input)
            );
        }
        (Err(a), Err(b)) => assert_eq!(
            a.to_string(),
            b.to_string(),
            "{:?}",
            String::from_utf8_lossy(input)
        ),
        (a, b) => panic!(
            "{:?}: ours {a:?}, serde_json {b:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

const CASES: &[&str] = &[
    "",
    " ",
    "{}",
    "[]",
    " { } ",
    "\n\n  {\"a\" : 1 }\n",
    "null",
    "nul",
    "nulx",
    "true",
    "tru",
    "trUe",
    "false",
    "fals",
    "f",
    "{\"a\": 1, \"b\": [true, false, null], \"c\": {\"d\": \"e\"}}",
    "{\"b\": 1, \"a\": 2, \"b\": 3}",
    "{\"a\": 1,}",
    "{\"a\": 1 \"b\": 2}",
    "{\"a\" 1}",
    "{\"a\":}",
    "{\"a\"",
    "{\"a\":",
    "{\"a\":1",
    "{\"a\":1,",
    "{\"a\":1, ",
    "{1: 2}",
    "{,}",
    "{\"a\":1,2}",
    "{\"a\":1}}",
    "{\"a\":1} x",
    "{\"a\":1}\n\n  x",
    "[1,]",
    "[1 2]",
    "[1,",
    "[1",
    "[",
    "[,1]",
    "[1]]",
    "[[[]]]",
    "]",
    "}",
    "x",
    "\u{c}{}",
    "{\"a\":\u{c}1}",
    // Numbers.
    "0",
    "-0",
    "-0.0",
    "0.0",
    "00",
    "01",
    "-01",
    "-",
    "-a",
    "1.",
    "1.x",
    "1.e5",
    ".5",
    "+1",
    "1e",
    "1e+",
    "1e-",
    "1ex",
    "1e5",
    "1E5",
    "1e+5",
    "1e-5",
    "0.5",
    "1.5e3",
    "123.456e-7",
    "18446744073709551615",
    "18446744073709551616",
    "184467440737095516150",
    "-9223372036854775808",
    "-9223372036854775809",
    "-18446744073709551615",
    "-18446744073709551616",
    "1e308",
    "1e309",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "-1e309",
    "1e-308",
    "1e-324",
    "1e-400",
    "2.2250738585072014e-308",
    "4.9e-324",
    "1e999999999999",
    "0e999999999999",
    "1e-999999999999",
    "-1e-999999999999",
    "1e2147483647",
    "1e2147483648",
    "1e-2147483648",
    "0.1",
    "0.30000000000000004",
    "3.141592653589793238462643383279",
    "1234567890123456789012345678901234567890",
    "1234567890123456789012345678901234567890.5e-10",
    "0.000000000000000000000000000000000000001234567890123456789012345",
    "12345678901234567890.12345678901234567890e5",
    "[1e5, -2, 3.25, -0, 18446744073709551615, 1e400]",
    "1 ",
    "1 2",
    "1x",
    "-1.5E-3",
    // Strings.
    "\"\"",
    "\"abc\"",
    "\"a",
    "\"",
    "\"\\",
    "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
    "\"\\x\"",
    "\"\\u0041\"",
    "\"\\u00e9\\u20AC\"",
    "\"\\u004\"",
    "\"\\u00\"",
    "\"\\u004g\"",
    "\"\\uD83D\\uDE00\"",
    "\"\\uD83D\"",
    "\"\\uD83D\\n\"",
    "\"\\uD83Dx\"",
    "\"\\uD83D\\\"",
    "\"\\uD83D\\",
    "\"\\uD83D",
    "\"\\uD83D\\u0041\"",
    "\"\\uD83D\\uD83D\"",
    "\"\\uDE00\"",
    "\"\\u0000\"",
    "\"a\tb\"",
    "\"a\nb\"",
    "\"\u{1f}\"",
    "\"\u{7f}\"",
    "\"é€😀\"",
    "{\"é\": \"€\"}",
    "[\"a\", \"b\\n\", \"c\"]",
];

#[test]
fn agrees_with_serde_json_on_known_cases() {
    for case in CASES {
        check(case.as_bytes());
    }
    // Invalid UTF-8, raw and next to escapes.
    for bytes in [
        &b"\"\xff\""[..],
        b"\"ab\xc3\"",
        b"\"ab\xc3\xa9\xff cd\"",
        b"{\"a\xff\": 1}",
        b"\"\\n\xe2\x82\"",
        b"\"\xed\xa0\x80\"",
        b"\n\n  \"x\xf0\x9f\x98\"",
        b"\xff",
        b"[\"\xc0\xaf\"]",
    ] {
        check(bytes);
    }
}

#[test]
fn powers_of_ten_are_the_literals() {
    for k in 0..=308u32 {
        let literal: f64 = format!("1e{k}").parse().unwrap();
        assert_eq!(pow10(k).map(f64::to_bits), Some(literal.to_bits()), "1e{k}");
    }
    assert_eq!(pow10(309), None);
}

#[test]
fn keys_are_sorted_and_the_last_duplicate_wins() {
    let Value::Object(m) = parse(br#"{"b": 1, "a": 2, "b": 3, "c": 4, "a": 5}"#).unwrap() else {
        panic!()
    };
    let pairs: Vec<(&str, &Value)> = m.iter().collect();
    assert_eq!(
        pairs,
        [
            ("a", &Value::Number(Number::PosInt(5))),
            ("b", &Value::Number(Number::PosInt(3))),
            ("c", &Value::Number(Number::PosInt(4)))
        ]
    );
    assert_eq!(m.get("b"), Some(&Value::Number(Number::PosInt(3))));
    assert_eq!(m.get("d"), None);
    // Many keys, in an order that exercises the sort.
    let mut doc = String::from("{");
    for i in 0..500u32 {
        let k = (i * 7919) % 211;
        doc.push_str(&format!("\"k{k}\": {i},"));
    }
    doc.push_str("\"end\": 0}");
    check(doc.as_bytes());
}

#[test]
fn nesting_is_limited_as_serde_json_limits_it() {
    for depth in [126, 127, 128, 129, 300] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        check(arrays.as_bytes());
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        check(objects.as_bytes());
        check("[".repeat(depth).as_bytes());
    }
}

#[test]
fn errors_give_line_and_column() {
    let e = parse(b"{\n  \"a\": 1,\n  \"b\": x\n}").unwrap_err();
    assert_eq!(e.to_string(), "expected value at line 3 column 8");
    let e = parse(br#"{"stage": "a""#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "EOF while parsing an object at line 1 column 13"
    );
}

/// A small xorshift generator, so that the random cases are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    " ",
    "\n",
    "\t",
    "\"",
    "\\",
    "\"a\"",
    "\"key\"",
    "null",
    "true",
    "false",
    "nul",
    "0",
    "1",
    "-",
    ".",
    "e",
    "E",
    "+",
    "5",
    "9",
    "12345678901234567890",
    "\\u",
    "\\uD83D",
    "\\uDE00",
    "00",
    "1.5",
    "1e400",
    "é",
    "\u{1}",
    "x",
    "\r",
    "0e5",
];

#[test]
fn agrees_with_serde_json_on_random_documents() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..100_000 {
        let mut doc = String::new();
        for _ in 0..rng.below(24) {
            doc.push_str(PIECES[rng.below(PIECES.len())]);
        }
        check(doc.as_bytes());
    }
}

#[test]
fn agrees_with_serde_json_on_mutated_documents() {
    let base: &[&[u8]] = &[
        br#"{"stage": "prod", "throttle": {"rate": 0.5, "burst": 10}, "routes": [{"match": "GET /a", "cors": false}]}"#,
        br#"[1, -2, 3.5e-2, "x\u00e9\uD83D\uDE00", {"a": [true, null]}, 18446744073709551616]"#,
        b"{\n  \"a\": \"b\\n\",\n  \"c\": [0.1, 2E+3]\n}\n",
    ];
    let mut rng = Rng(42);
    for _ in 0..100_000 {
        let mut doc = base[rng.below(base.len())].to_vec();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(doc.len());
            match rng.below(4) {
                0 => doc[i] = rng.next() as u8,
                1 => {
                    doc.remove(i);
                }
                2 => doc.insert(i, b"{}[]\",:\\-.eE0 1u"[rng.below(16)]),
                _ => doc.truncate(i),
            }
            if doc.is_empty() {
                break;
            }
        }
        check(&doc);
    }
}

#[test]
fn strings_without_escapes_borrow_the_input() {
    let input = br#"{"id": "k1", "sha\u0032": "a\"b", "list": ["x", "y\n"]}"#;
    let Value::Object(m) = parse(input).unwrap() else {
        panic!("not an object")
    };
    let borrowed = |v: &Value| matches!(v, Value::String(Cow::Borrowed(_)));
    assert!(borrowed(m.get("id").unwrap()));
    assert_eq!(
        m.get("sha2"),
        Some(&Value::String(Cow::Owned("a\"b".into())))
    );
    assert!(!borrowed(m.get("sha2").unwrap()));
    let Some(Value::Array(list)) = m.get("list") else {
        panic!("no list")
    };
    assert!(borrowed(&list[0]));
    assert_eq!(list[1], Value::String("y\n".into()));
    assert!(!borrowed(&list[1]));
    // Keys too: only the escaped one was copied.
    assert_eq!(m.keys().collect::<Vec<_>>(), ["id", "list", "sha2"]);
    let keys_borrowed: Vec<bool> = m
        .entries
        .iter()
        .map(|(k, _)| matches!(k, Cow::Borrowed(_)))
        .collect();
    assert_eq!(keys_borrowed, [true, true, false]);
}
