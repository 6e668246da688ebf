//! HTTP tokens (RFC 9110 section 5.6.2): header names and methods are tokens.

/// A `tchar`: a letter, a digit or one of ``!#$%&'*+-.^_`|~``.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// One or more tchar.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_token(b"x-api-key"));
        assert!(is_token(b"!#$%&'*+-.^_`|~09AZaz"));
        for bad in [
            &b""[..],
            b"a b",
            b"a:b",
            b"a\"",
            b"(a)",
            b"a\xff",
            b"a,b",
            b"a/b",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }
}
