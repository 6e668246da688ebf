//! A small, strict reader over a parsed JSON value that knows where it is: every type error and
//! unknown field is reported with its JSON path. (Hand-written rather than serde-derived: the
//! derived visitors plus path tracking cost ~100 KB of wasm; this costs a few.)

use super::json::{Map, Number, Value};

use crate::error::FieldError;

/// The JSON type name used in messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn invalid(path: &str, v: &Value, expected: &str) -> FieldError {
    FieldError::new(
        path,
        format!("invalid type: {}, expected {expected}", type_name(v)),
    )
}

/// Joins a field name onto a path.
pub fn join(path: &str, key: &str) -> String {
    let mut s = String::with_capacity(path.len() + 1 + key.len());
    if !path.is_empty() {
        s.push_str(path);
        s.push('.');
    }
    s.push_str(key);
    s
}

/// The path of item `i` of the list `key` under `path`: `path.key[i]` (`key[i]` at the top,
/// `[i]` for an empty key). One function for every list item's path: each `format!` site
/// costs its own code.
#[inline(never)]
pub fn item(path: &str, key: &str, i: usize) -> String {
    use std::fmt::Write;
    let mut s = if key.is_empty() {
        path.to_string()
    } else {
        join(path, key)
    };
    let _ = write!(s, "[{i}]");
    s
}

/// The path of an object opened at `name`, or named `name` in `parent`.
#[inline(never)]
fn path_of(parent: Option<&Obj<'_, '_>>, name: &str) -> String {
    match parent {
        None => name.to_string(),
        Some(p) => p.path(name),
    }
}

/// An object whose fields are read by name. Unknown fields are refused when it is opened.
///
/// Its path is not kept as a `String`: an object opened at a path borrows it, a nested object
/// points at its parent and names its key, and the text is built only for an error.
pub struct Obj<'a, 'p> {
    map: &'a Map<'a>,
    parent: Option<&'p Obj<'a, 'p>>,
    /// The path it was opened at, or (with a parent) its key in the parent.
    name: &'p str,
}

impl<'a, 'p> Obj<'a, 'p> {
    /// Opens `v` as an object with the given known fields.
    pub fn open(
        v: &'a Value<'a>,
        path: &'p str,
        known: &[&str],
    ) -> Result<Obj<'a, 'p>, FieldError> {
        Obj::open_in(v, None, path, known)
    }

    fn open_in(
        v: &'a Value<'a>,
        parent: Option<&'p Obj<'a, 'p>>,
        name: &'p str,
        known: &[&str],
    ) -> Result<Obj<'a, 'p>, FieldError> {
        let Value::Object(map) = v else {
            return Err(invalid(&path_of(parent, name), v, "an object"));
        };
        let o = Obj { map, parent, name };
        if let Some(k) = map.keys().find(|k| !known.contains(k)) {
            let mut message = format!("unknown field `{k}`, expected one of ");
            for (i, f) in known.iter().enumerate() {
                if i > 0 {
                    message.push_str(", ");
                }
                message.push('`');
                message.push_str(f);
                message.push('`');
            }
            return Err(FieldError::new(o.own_path(), message));
        }
        Ok(o)
    }

    /// This object's path.
    fn own_path(&self) -> String {
        path_of(self.parent, self.name)
    }

    /// The path of a field of this object.
    pub fn path(&self, key: &str) -> String {
        join(&self.own_path(), key)
    }

    /// The path of item `i` of a list field of this object.
    pub fn item(&self, key: &str, i: usize) -> String {
        item(&self.own_path(), key, i)
    }

    /// A field's value; `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value<'a>> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A string field, borrowed from the parsed value.
    pub fn string(&self, key: &str) -> Result<Option<&'a str>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(invalid(&self.path(key), v, "a string")),
        }
    }

    pub fn required_string(&self, key: &str) -> Result<&'a str, FieldError> {
        self.string(key)?
            .ok_or_else(|| FieldError::new(self.path(key), "is required"))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(invalid(&self.path(key), v, "a boolean")),
        }
    }

    pub fn number(&self, key: &str) -> Result<Option<Number>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(Some(*n)),
            // Envoy's YAML loader makes a `Struct` string of a fraction or of an integer beyond
            // 32 bits.
            Some(Value::String(t))
                if t.bytes().any(|b| b.is_ascii_digit())
                    && t.bytes().all(|b| b.is_ascii_digit() || b".eE+-".contains(&b))
                    && (t.len() > 10 || (t.len() == 10 && &**t > "2147483647")
                        || !t.bytes().all(|b| b.is_ascii_digit())) =>
            {
                Err(FieldError::new(
                    self.path(key),
                    "invalid type: string, expected a number (Envoy's YAML loader turns fractions and integers above 2147483647 into strings in a Struct: give the configuration as JSON text, a StringValue)",
                ))
            }
            Some(v) => Err(invalid(&self.path(key), v, "a number")),
        }
    }

    pub fn required_number(&self, key: &str) -> Result<Number, FieldError> {
        self.number(key)?
            .ok_or_else(|| FieldError::new(self.path(key), "is required"))
    }

    /// A nested object with its own known fields.
    pub fn object<'s>(
        &'s self,
        key: &'s str,
        known: &[&str],
    ) -> Result<Option<Obj<'a, 's>>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => Obj::open_in(v, Some(self), key, known).map(Some),
        }
    }

    /// A nested object read as a map of names to values.
    pub fn map(&self, key: &str) -> Result<Option<&'a Map<'a>>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(invalid(&self.path(key), v, "an object")),
        }
    }

    pub fn array(&self, key: &str) -> Result<Option<&'a Vec<Value<'a>>>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(invalid(&self.path(key), v, "an array")),
        }
    }

    /// An array of strings (absent: empty).
    pub fn strings(&self, key: &str) -> Result<Vec<String>, FieldError> {
        let Some(items) = self.array(key)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            match v {
                Value::String(s) => out.push(s.to_string()),
                _ => return Err(invalid(&self.item(key, i), v, "a string")),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
// `string` borrows now; the test's `as_deref` is kept as it was.
#[allow(clippy::needless_option_as_deref)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_with_paths() {
        let v: Value =
            json!({"a": "x", "b": true, "n": 1.5, "o": {"k": 1}, "l": ["p", 2], "z": null}).into();
        let o = Obj::open(&v, "root", &["a", "b", "n", "o", "l", "z"]).unwrap();
        assert_eq!(o.string("a").unwrap().as_deref(), Some("x"));
        assert_eq!(o.bool("b").unwrap(), Some(true));
        assert_eq!(o.number("n").unwrap().unwrap().as_f64(), Some(1.5));
        assert_eq!(o.string("z").unwrap(), None);
        assert_eq!(o.string("missing").unwrap(), None);
        let e = o.string("b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "root.b: invalid type: boolean, expected a string"
        );
        let e = o.object("o", &["j"]).err().unwrap();
        assert_eq!(
            e.to_string(),
            "root.o: unknown field `k`, expected one of `j`"
        );
        let e = o.object("o", &["i", "j", "l"]).err().unwrap();
        assert_eq!(
            e.to_string(),
            "root.o: unknown field `k`, expected one of `i`, `j`, `l`"
        );
        let e = o.object("o", &[]).err().unwrap();
        assert_eq!(e.to_string(), "root.o: unknown field `k`, expected one of ");
        let e = o.strings("l").unwrap_err();
        assert_eq!(e.path, "root.l[1]");
        assert_eq!(
            o.required_string("q").unwrap_err().to_string(),
            "root.q: is required"
        );
        assert!(Obj::open(&Value::Array(Vec::new()), "", &[]).is_err());
    }
}
