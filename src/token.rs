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

/// `s.find(pat)` by a plain byte search (the standard library's substring search, a two-way
/// searcher, costs ~2 KB of wasm; the patterns here are a few bytes, the texts short).
pub fn find_str(s: &str, pat: &str) -> Option<usize> {
    if pat.is_empty() {
        return Some(0);
    }
    s.as_bytes()
        .windows(pat.len())
        .position(|w| w == pat.as_bytes())
}

/// `s.split_once(pat)`, with [`find_str`].
pub fn split_once_str<'a>(s: &'a str, pat: &str) -> Option<(&'a str, &'a str)> {
    let i = find_str(s, pat)?;
    Some((s.get(..i)?, s.get(i + pat.len()..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_once_str_is_str_split_once() {
        for s in [
            "",
            ":",
            "::",
            "a::b",
            "::b",
            "a::",
            "a:b::c::d",
            "http://x",
            "a:/b://c",
            "1:::2",
        ] {
            for pat in ["::", "://", ":", ""] {
                assert_eq!(split_once_str(s, pat), s.split_once(pat), "{s:?} {pat:?}");
                assert_eq!(find_str(s, pat), s.find(pat), "{s:?} {pat:?}");
            }
        }
    }

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
