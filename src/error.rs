//! The one error type of configuration compilation: a field path and what is wrong with it.

use std::fmt;

/// A configuration error, naming the field by its JSON path (`routes[1].throttle.rate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Prefix the path with the section it was found in: `rate` under `throttle` becomes
    /// `throttle.rate`; an index segment (`[2]`) is joined without a dot.
    pub fn within(mut self, parent: &str) -> Self {
        if parent.is_empty() {
            return self;
        }
        if self.path.is_empty() {
            self.path = parent.to_string();
        } else if self.path.starts_with('[') {
            self.path = format!("{parent}{}", self.path);
        } else {
            self.path = format!("{parent}.{}", self.path);
        }
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

#[cfg(test)]
mod tests {
    use super::*;

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
}
