//! Resource-path matching in API Gateway's style: `METHOD PATH`, where PATH segments are literals,
//! `{name}` (exactly one segment) or a final `{name+}` (one or more segments, or its base path
//! when no other route matches that: see [`Pattern::more_specific_than`]). Methods match
//! ignoring case.
//!
//! Matching runs on a normalised request path (see [`normalize_path`]) so that the spelling of a
//! path cannot route around a protected resource. The most specific route wins: segment by segment
//! a literal beats `{name}` beats `{name+}`, and an explicit method beats `ANY`.

use std::borrow::Cow;

use crate::config::reader::{item, join};
use crate::error::{FieldError, Quoted};

/// HTTP methods accepted in `routes[].match` besides `ANY`.
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
    Greedy,
}

impl Segment {
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::Param => 1,
            Segment::Greedy => 2,
        }
    }
}

/// One compiled `METHOD PATH` pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    /// `None` for `ANY`.
    method: Option<String>,
    segments: Vec<Segment>,
    /// The resource path as written, e.g. `/pets/{id}` (for logs and metrics).
    resource_path: String,
}

impl Pattern {
    /// Parses `METHOD PATH`. Errors carry an empty path: the caller knows the field.
    pub fn parse(text: &str) -> Result<Pattern, FieldError> {
        let err = |m: String| FieldError::new("", m);
        // Exactly one space: the text is the route's name in counters, logs and the rate
        // limit service's descriptors, so one route has one spelling.
        let (method, path) = match text.split_once(' ') {
            Some((m, p)) if !m.is_empty() && !p.is_empty() && !p.contains(' ') => (m, p),
            _ => {
                return Err(err(format!(
                    "must be \"METHOD /path\" (for example \"GET /pets/{{id}}\"), got {text}",
                    text = Quoted(text)
                )))
            }
        };
        let method = if method == "ANY" {
            None
        } else if METHODS.contains(&method) {
            Some(method.to_string())
        } else {
            return Err(err(format!(
                "unknown method {method}: use ANY or one of {}",
                crate::error::comma_list(METHODS.iter().copied()),
                method = Quoted(method)
            )));
        };
        if !path.starts_with('/') {
            return Err(err(format!(
                "path {path} must start with '/'",
                path = Quoted(path)
            )));
        }
        if path.contains(['?', '#']) {
            return Err(err(format!(
                "path {path} must not contain a query string or fragment",
                path = Quoted(path)
            )));
        }
        let mut segments = Vec::new();
        let raw: Vec<&str> = path.split('/').skip(1).collect();
        let count = raw.len();
        for (i, seg) in raw.iter().enumerate() {
            let last = i + 1 == count;
            if seg.is_empty() {
                if last && count == 1 {
                    break; // the root path "/"
                }
                return Err(err(format!(
                    "path {path} has an empty segment (no \"//\" and no trailing '/')",
                    path = Quoted(path)
                )));
            }
            if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let (name, greedy) = match inner.strip_suffix('+') {
                    Some(n) => (n, true),
                    None => (inner, false),
                };
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(err(format!(
                        "path {path}: parameter {seg} needs a name of letters, digits, '_' or '-'",
                        path = Quoted(path),
                        seg = Quoted(seg)
                    )));
                }
                if greedy && !last {
                    return Err(err(format!(
                        "path {path}: greedy parameter {seg} must be the last segment",
                        path = Quoted(path),
                        seg = Quoted(seg)
                    )));
                }
                segments.push(if greedy {
                    Segment::Greedy
                } else {
                    Segment::Param
                });
            } else {
                if seg.contains(['{', '}']) {
                    return Err(err(format!(
                        "path {path}: segment {seg} mixes text and a parameter; a parameter is a whole segment", path = Quoted(path), seg = Quoted(seg))));
                }
                // Decoded as a request segment is, so that `%2e%2e` is refused like `..` and
                // `%3B` like `;` (no request could match them) and the literal compares with
                // normalised requests (`items%3Abatch` is `items:batch`).
                let mut name = Vec::with_capacity(seg.len());
                let params = decode_name_into(seg.as_bytes(), &mut name);
                let lit = into_string(name);
                if params || lit == "." || lit == ".." {
                    return Err(err(format!(
                        "path {path}: segment {seg} is not allowed (dot segments and ';' are normalised away from requests)", path = Quoted(path), seg = Quoted(seg))));
                }
                segments.push(Segment::Literal(lit));
            }
        }
        Ok(Pattern {
            method,
            segments,
            resource_path: path.to_string(),
        })
    }

    pub fn resource_path(&self) -> &str {
        &self.resource_path
    }

    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// The base path of a pattern of literals ending in a greedy `{name+}` (`/admin` for
    /// `/admin/{proxy+}`, `/` for `/{proxy+}`); None for any other pattern.
    pub fn greedy_base(&self) -> Option<String> {
        let (last, literals) = self.segments.split_last()?;
        if *last != Segment::Greedy {
            return None;
        }
        let mut base = String::new();
        for seg in literals {
            let Segment::Literal(l) = seg else {
                return None;
            };
            base.push('/');
            base.push_str(l);
        }
        if base.is_empty() {
            base.push('/');
        }
        Some(base)
    }

    /// The path and method shape as bytes: two patterns match the same requests equally (a
    /// duplicate route) exactly when their shapes are equal. Each segment is a tag (`l`, `p`,
    /// `g`), a literal's text and a 0 byte, the method last. Literal bytes 0 and 1 are escaped
    /// (`1 1`, `1 2`), so shapes sort as their segments do, one by one: the routes under one
    /// literal are together, their literals in order ([`RouteTable::tree`] builds in this order).
    fn shape(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.resource_path.len() + 16);
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => {
                    key.push(b'l');
                    for &b in l.as_bytes() {
                        match b {
                            0 | 1 => key.extend_from_slice(&[1, b + 1]),
                            _ => key.push(b),
                        }
                    }
                }
                Segment::Param => key.push(b'p'),
                Segment::Greedy => key.push(b'g'),
            }
            key.push(0);
        }
        key.push(b'm');
        key.extend_from_slice(self.method.as_deref().unwrap_or("ANY").as_bytes());
        key
    }

    /// How closely the route's method fits the request's, lower is closer; `None` when the
    /// route does not apply to it. The request's own method comes first and `ANY` last; for a
    /// `HEAD` request a `GET` route comes between them, as servers answer HEAD with their GET
    /// handler. Methods are compared ignoring ASCII case: HTTP says `get` is another method,
    /// but Flask, Django and ASP.NET Core route it to their GET handler, so it must meet the
    /// GET route's key and throttle (stricter for upstreams that refuse it anyway).
    fn method_rank(&self, method: &[u8]) -> Option<u8> {
        match &self.method {
            None => Some(2),
            Some(m) if m.as_bytes().eq_ignore_ascii_case(method) => Some(0),
            Some(m) if m == "GET" && method.eq_ignore_ascii_case(b"HEAD") => Some(1),
            Some(_) => None,
        }
    }

    fn matches_path(&self, segs: &[&str]) -> bool {
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                // One or more segments, or none: a greedy route covers its base path too
                // (`/admin/{proxy+}` covers `/admin` and `/admin/`, which upstreams serve as
                // the section's index) where no other route matches it
                // ([`Pattern::more_specific_than`]).
                Segment::Greedy => return true,
                Segment::Param => {
                    if segs.get(i).is_none() {
                        return false;
                    }
                }
                Segment::Literal(l) => {
                    if segs.get(i) != Some(&l.as_str()) {
                        return false;
                    }
                }
            }
            i += 1;
        }
        i == segs.len()
    }

    /// True when `self` is more specific than `other`, both having matched the same request of
    /// `path_len` segments, their methods with the given [`Pattern::method_rank`]s.
    fn more_specific_than(
        &self,
        method_rank: u8,
        other: &Pattern,
        other_method_rank: u8,
        path_len: usize,
    ) -> bool {
        // A greedy `{name+}` that matched its base path (no segment: `/admin/{proxy+}` for
        // `/admin`) is "bare", and comes after every route that matches the path otherwise:
        // a path some route held before greedy routes covered base paths stays that route's.
        let bare = |p: &Pattern| p.segments.len() > path_len;
        if bare(self) != bare(other) {
            return !bare(self);
        }
        for (a, b) in self.segments.iter().zip(&other.segments) {
            match a.rank().cmp(&b.rank()) {
                std::cmp::Ordering::Less => return true,
                std::cmp::Ordering::Greater => return false,
                std::cmp::Ordering::Equal => {}
            }
        }
        if self.segments.len() != other.segments.len() {
            // A longer pattern that matched consumed the path with more fixed parts.
            return self.segments.len() > other.segments.len();
        }
        method_rank < other_method_rank
    }
}

/// Request path segments matched without allocating; deeper paths use a Vec.
const INLINE_SEGMENTS: usize = 16;

/// A compiled route table: patterns in configuration order, and a tree of their segments that
/// [`RouteTable::find`] walks, so that a request looks only at the routes its path can match
/// (a table of 1,000 routes costs about what one of 20 does).
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    patterns: Vec<Pattern>,
    /// The root is node 0 (present when `patterns` is not empty).
    nodes: Vec<Node>,
}

/// A node of the segment tree: the routes whose first segments lead to it, by what follows.
#[derive(Clone, Debug, Default)]
struct Node {
    /// Literal next segments, sorted by their bytes, with the node each leads to.
    literals: Vec<(Box<str>, u32)>,
    /// The node a `{name}` next segment leads to.
    param: Option<u32>,
    /// Routes that end here: they match a path of exactly this node's depth.
    ends: Vec<u32>,
    /// Routes whose next segment is the final `{name+}`: they match any path through here.
    greedy: Vec<u32>,
}

/// Requests whose walk leaves more branches than this for later fall back to a Vec.
const INLINE_BRANCHES: usize = 16;

impl RouteTable {
    /// The segment tree of `patterns`, inserted in `order` (of their shapes, so that each node's
    /// literals arrive in order and are appended: a node of 100,000 literals builds in
    /// O(n log n); any order gives the same tree).
    fn tree(patterns: &[Pattern], order: &[usize]) -> Vec<Node> {
        let mut nodes = vec![Node::default()];
        for &i in order {
            let Some(p) = patterns.get(i) else {
                continue;
            };
            let i = i as u32;
            let mut at = 0usize;
            let mut greedy = false;
            for seg in &p.segments {
                let next = nodes.len();
                let Some(node) = nodes.get_mut(at) else {
                    break;
                };
                let child = match seg {
                    Segment::Greedy => {
                        node.greedy.push(i);
                        greedy = true;
                        break;
                    }
                    Segment::Param => *node.param.get_or_insert(next as u32),
                    Segment::Literal(l) => {
                        match node
                            .literals
                            .binary_search_by(|(k, _)| k.as_bytes().cmp(l.as_bytes()))
                        {
                            Ok(k) => node.literals.get(k).map_or(0, |(_, c)| *c),
                            Err(k) => {
                                node.literals.insert(k, (l.as_str().into(), next as u32));
                                next as u32
                            }
                        }
                    }
                };
                if child as usize == next {
                    nodes.push(Node::default());
                }
                at = child as usize;
            }
            if !greedy {
                if let Some(node) = nodes.get_mut(at) {
                    node.ends.push(i);
                }
            }
        }
        nodes
    }

    /// Compiles the `match` strings. Errors are relative to the `routes` array (`[2].match`).
    pub fn compile<'a>(matches: impl IntoIterator<Item = &'a str>) -> Result<Self, FieldError> {
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut texts: Vec<&str> = Vec::new();
        let mut invalid = None;
        for (i, m) in matches.into_iter().enumerate() {
            match Pattern::parse(m) {
                Ok(p) => {
                    patterns.push(p);
                    texts.push(m);
                }
                Err(e) => {
                    invalid = Some(e.within("match").within(&item("", "", i)));
                    break;
                }
            }
        }
        // Hashed, not compared pairwise: tables of thousands of routes load at once. A
        // duplicate comes before an invalid route that follows it, as in a scan.
        let shapes: Vec<Vec<u8>> = patterns.iter().map(Pattern::shape).collect();
        let keys: Vec<&[u8]> = shapes.iter().map(Vec::as_slice).collect();
        if let Some((j, i)) = crate::sort::first_duplicate(&keys) {
            return Err(FieldError::new(
                join(&item("", "", i), "match"),
                format!(
                    "{m} duplicates routes[{j}] (the same method and path shape)",
                    m = Quoted(texts.get(i).copied().unwrap_or_default())
                ),
            ));
        }
        match invalid {
            Some(e) => Err(e),
            None => Ok(RouteTable {
                nodes: Self::tree(&patterns, &crate::sort::sorted_order(&keys)),
                patterns,
            }),
        }
    }

    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn pattern(&self, index: usize) -> Option<&Pattern> {
        self.patterns.get(index)
    }

    /// Index of the most specific route matching the request, if any. `path` is the raw
    /// `:path` value (query string included); it is normalised first.
    ///
    /// A `HEAD` request is matched against `HEAD`, `GET` and `ANY` routes together, by the same
    /// specificity: servers answer HEAD with their GET handler, so a GET route's key and
    /// throttle must cover it too, unless a HEAD route is at least as specific (a tie in path
    /// goes to HEAD, then GET, then ANY).
    pub fn find(&self, method: &[u8], path: &[u8]) -> Option<usize> {
        if self.patterns.is_empty() {
            return None;
        }
        let normalized = normalize_path(path);
        // The segments go into a buffer on the stack, so matching allocates nothing; only a
        // path deeper than the buffer falls back to a Vec.
        let mut inline = [""; INLINE_SEGMENTS];
        let mut count = 0;
        let mut parts = normalized.split('/').filter(|s| !s.is_empty());
        for (slot, seg) in inline.iter_mut().zip(&mut parts) {
            *slot = seg;
            count += 1;
        }
        let spilled: Vec<&str>;
        let segs: &[&str] = if count == INLINE_SEGMENTS && parts.next().is_some() {
            // Sized once: a path of n bytes has at most n / 2 segments.
            let mut all = Vec::with_capacity(normalized.len() / 2 + 1);
            all.extend(normalized.split('/').filter(|s| !s.is_empty()));
            spilled = all;
            &spilled
        } else {
            inline.get(..count).unwrap_or_default()
        };
        let mut best: Option<(usize, &Pattern, u8)> = None;
        // Every route whose path matches is met once, in no particular order; of two equally
        // specific routes the earlier in the configuration wins, as in a scan of the table
        // (distinct routes that match one request are never equally specific: duplicates are
        // refused, so they differ in a segment's kind, their length or their method's rank).
        let mut consider = |routes: &[u32]| {
            for &i in routes {
                let i = i as usize;
                let Some(p) = self.patterns.get(i) else {
                    continue;
                };
                let Some(rank) = p.method_rank(method) else {
                    continue;
                };
                let better = match best {
                    None => true,
                    Some((b_i, b, b_rank)) => {
                        p.more_specific_than(rank, b, b_rank, segs.len())
                            || (i < b_i && !b.more_specific_than(b_rank, p, rank, segs.len()))
                    }
                };
                if better {
                    best = Some((i, p, rank));
                }
            }
        };
        // Depth first through the tree: at each node the literal branch is taken at once and a
        // `{name}` branch kept for later, so the branches kept are at most the tree's depth.
        let mut kept = [(0u32, 0u32); INLINE_BRANCHES];
        let mut kept_len = 0usize;
        let mut spilled: Vec<(u32, u32)> = Vec::new();
        let mut next = Some((0u32, 0u32));
        loop {
            let (at, depth) = match next.take() {
                Some(n) => n,
                None => match spilled.pop() {
                    Some(n) => n,
                    None if kept_len > 0 => {
                        kept_len -= 1;
                        match kept.get(kept_len) {
                            Some(&n) => n,
                            None => break,
                        }
                    }
                    None => break,
                },
            };
            let Some(node) = self.nodes.get(at as usize) else {
                continue;
            };
            consider(&node.greedy);
            let Some(seg) = segs.get(depth as usize) else {
                consider(&node.ends);
                continue;
            };
            if let Some(param) = node.param {
                match kept.get_mut(kept_len) {
                    Some(slot) if spilled.is_empty() => {
                        *slot = (param, depth + 1);
                        kept_len += 1;
                    }
                    _ => spilled.push((param, depth + 1)),
                }
            }
            if let Ok(k) = node
                .literals
                .binary_search_by(|(l, _)| l.as_bytes().cmp(seg.as_bytes()))
            {
                next = node.literals.get(k).map(|&(_, child)| (child, depth + 1));
            }
        }
        best.map(|(i, _, _)| i)
    }

    /// [`RouteTable::find`] by a scan of every route, for tests to check the tree against.
    #[doc(hidden)]
    pub fn find_by_scan(&self, method: &[u8], path: &[u8]) -> Option<usize> {
        let normalized = normalize_path(path);
        let segs: Vec<&str> = normalized.split('/').filter(|s| !s.is_empty()).collect();
        let mut best: Option<(usize, &Pattern, u8)> = None;
        for (i, p) in self.patterns.iter().enumerate() {
            let Some(rank) = p.method_rank(method) else {
                continue;
            };
            if !p.matches_path(&segs) {
                continue;
            }
            match best {
                Some((_, b, b_rank)) if !p.more_specific_than(rank, b, b_rank, segs.len()) => {}
                _ => best = Some((i, p, rank)),
            }
        }
        best.map(|(i, _, _)| i)
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True for the characters whose `%XX` escape is decoded: printable ASCII but for those whose
/// decoding would change the path's structure: `/` and `\` (separators to some servers), `%`
/// (decoding it would let `%2541` be decoded twice), `?` and `#` (which start the query and
/// fragment). `;` is decoded, and then starts parameters as a raw `;` does.
fn decodes(v: u8) -> bool {
    v.is_ascii_graphic() && !matches!(v, b'/' | b'\\' | b'%' | b'?' | b'#')
}

/// What a byte or `%XX` escape of a raw segment stands for in the normal form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// A printable ASCII character, written as itself (sent as itself or escaped).
    Char(u8),
    /// A byte written as `%XX` with upper-case hex: a delimiter escape that stays data, a
    /// control, space, DEL or non-ASCII byte (sent raw or escaped), or a stray `%`.
    Escaped(u8),
}

/// The first unit of `raw` and the number of bytes it takes; `None` when `raw` is empty.
fn next_unit(raw: &[u8]) -> Option<(Unit, usize)> {
    let &b = raw.first()?;
    if b == b'%' {
        let hi = raw.get(1).copied().and_then(hex_val);
        let lo = raw.get(2).copied().and_then(hex_val);
        if let (Some(h), Some(l)) = (hi, lo) {
            let v = h * 16 + l;
            let unit = if decodes(v) {
                Unit::Char(v)
            } else {
                Unit::Escaped(v)
            };
            return Some((unit, 3));
        }
        // A stray '%' is kept escaped so it cannot combine with later bytes.
        return Some((Unit::Escaped(b), 1));
    }
    let unit = if b.is_ascii_graphic() {
        Unit::Char(b)
    } else {
        Unit::Escaped(b)
    };
    Some((unit, 1))
}

/// Normalises a request path for matching:
/// - the query string and fragment are dropped;
/// - `%XX` escapes of printable ASCII characters are decoded (`%3A` is `:`, `%61` is `a`), as
///   upstreams decode them, but for `%2F`, `%5C`, `%25`, `%3F` and `%23` (`/ \ % ? #`), which
///   stay data, with upper-case hex (so `%2F` never becomes a separator);
/// - a `;parameters` suffix of a segment is dropped (servlet containers ignore it), whether the
///   `;` was sent raw or as `%3B`;
/// - empty segments (`//`) and `.` segments are removed, `..` removes the segment before it;
/// - everything else that is not printable ASCII (controls, space, DEL, non-ASCII bytes, sent
///   raw or escaped) is percent-encoded with upper-case hex.
///
/// The result starts with `/` and has no trailing `/` (except the root). It borrows when the
/// path is already normal.
pub fn normalize_path(path: &[u8]) -> Cow<'_, str> {
    let path = path_part(path);
    if is_plain(path) {
        if let Ok(s) = std::str::from_utf8(path) {
            return Cow::Borrowed(s);
        }
    }
    // One buffer: each segment's name is decoded in place after its '/', and dropped again when
    // it turns out empty, `.` or `..` (which also drops the one before). Only ASCII goes in.
    // Sized once: an escaped byte takes three.
    let escaped = path
        .iter()
        .filter(|&&b| b == b'%' || !b.is_ascii_graphic())
        .count();
    let mut out: Vec<u8> = Vec::with_capacity(path.len() + 2 * escaped + 1);
    for raw in path.split(|&b| b == b'/') {
        let start = out.len();
        out.push(b'/');
        decode_name_into(raw, &mut out);
        match out.get(start + 1..).unwrap_or_default() {
            b"" | b"." => out.truncate(start),
            b".." => {
                out.truncate(start);
                let previous = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(previous);
            }
            _ => {}
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Cow::Owned(into_string(out))
}

/// True when a `;parameters` suffix changes the shape of the path: a segment that is empty,
/// `.` or `..` once its parameters are dropped (`/admin/..;/x`, `/a/.;/b`, `/;x/a`), so that
/// servlet containers (which drop `;...` first) and every other server (for which `..;` is an
/// ordinary name) would route it differently. Such paths are refused rather than guessed at.
/// A `;` sent as `%3B` counts as a raw one, as [`normalize_path`] reads it so.
pub fn is_ambiguous_path(path: &[u8]) -> bool {
    path_part(path)
        .split(|&b| b == b'/')
        .any(is_ambiguous_segment)
}

/// A request target's path, without its query or fragment.
fn path_part(path: &[u8]) -> &[u8] {
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// True when the path (before `?` or `#`) holds an escaped slash or backslash (`%2F`, `%5C`, any
/// case). tollgate reads one as part of its segment; an upstream that decodes it before routing
/// reads a separator, so the two can disagree on the route unless Envoy refuses or decodes such
/// paths (`path_with_escaped_slashes_action`, SECURITY.md). Seeing one means Envoy did neither.
pub fn has_escaped_slash(path: &[u8]) -> bool {
    path_part(path)
        .windows(3)
        .any(|w| matches!(w, [b'%', b'2', b'f' | b'F'] | [b'%', b'5', b'c' | b'C']))
}

/// True when the raw segment has `;parameters` and its name (decoded) is empty, `.` or `..`.
/// Reads no further than the name's first character that is not a dot; allocates nothing.
fn is_ambiguous_segment(raw: &[u8]) -> bool {
    let mut dots = 0u8;
    let mut rest = raw;
    while let Some((unit, len)) = next_unit(rest) {
        match unit {
            Unit::Char(b';') => return true,
            Unit::Char(b'.') if dots < 2 => dots += 1,
            _ => return false,
        }
        rest = rest.get(len..).unwrap_or_default();
    }
    false
}

/// True when the path needs no normalisation: starts with '/', no empty, `.`/`..` segments,
/// no '%', ';', trailing '/', and only printable ASCII.
fn is_plain(path: &[u8]) -> bool {
    if path == b"/" {
        return true;
    }
    if path.first() != Some(&b'/') || path.last() == Some(&b'/') {
        return false;
    }
    if !path
        .iter()
        .all(|&b| b.is_ascii_graphic() && b != b'%' && b != b';')
    {
        return false;
    }
    !path
        .split(|&b| b == b'/')
        .skip(1)
        .any(|s| s.is_empty() || s == b"." || s == b"..")
}

/// The decoded bytes as a string: [`decode_name_into`] appends only ASCII, so this never
/// copies (the lossy branch is there so that no input could make it fail).
fn into_string(decoded: Vec<u8>) -> String {
    String::from_utf8(decoded)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Appends the name of the raw segment `raw` to `out` in normal form (see [`normalize_path`]):
/// decoded up to its first `;`, sent raw or as `%3B`, which starts parameters. Returns whether
/// there were parameters. Only ASCII is appended.
fn decode_name_into(raw: &[u8], out: &mut Vec<u8>) -> bool {
    let mut rest = raw;
    while let Some((unit, len)) = next_unit(rest) {
        match unit {
            Unit::Char(b';') => return true,
            Unit::Char(c) => out.push(c),
            Unit::Escaped(b) => push_escaped(out, b),
        }
        rest = rest.get(len..).unwrap_or_default();
    }
    false
}

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'%');
    for nibble in [b >> 4, b & 0x0f] {
        out.push(HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(ms: &[&str]) -> RouteTable {
        RouteTable::compile(ms.iter().copied()).unwrap()
    }

    #[test]
    fn unknown_methods_list_the_known_ones() {
        let e = Pattern::parse("BREW /pot").unwrap_err();
        assert_eq!(
            e.message,
            "unknown method \"BREW\": use ANY or one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT, TRACE"
        );
    }

    #[test]
    fn parses_and_rejects_patterns() {
        assert!(Pattern::parse("GET /pets/{id}").is_ok());
        assert!(Pattern::parse("ANY /admin/{proxy+}").is_ok());
        assert!(Pattern::parse("GET /").is_ok());
        for bad in [
            "GET",
            "get /pets",
            "FETCH /pets",
            "GET pets",
            "GET /pets/",
            "GET //pets",
            "GET /pets/{}",
            "GET /pets/{a+}/x",
            "GET /pets/x{id}",
            "GET /pets?x=1",
            "GET /a/../b",
            "GET /a b",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn encoded_dot_segments_are_refused_like_raw_ones() {
        // A literal that decodes to `.` or `..` could never match (requests are normalised
        // first): a configuration error, as the raw spelling is.
        for (bad, seg) in [
            ("GET /a/%2e%2e/b", "%2e%2e"),
            ("GET /a/%2E%2E", "%2E%2E"),
            ("GET /a/.%2e/b", ".%2e"),
            ("GET /a/%2E./b", "%2E."),
            ("GET /%2e/b", "%2e"),
            ("ANY /a/%2e%2E/{proxy+}", "%2e%2E"),
        ] {
            let e = Pattern::parse(bad).unwrap_err();
            let path = bad.split(' ').nth(1).unwrap();
            assert_eq!(
                e.message,
                format!(
                    "path \"{path}\": segment \"{seg}\" is not allowed (dot segments and ';' \
                     are normalised away from requests)"
                ),
                "{bad}"
            );
            let e = RouteTable::compile(["GET /ok", bad]).unwrap_err();
            assert_eq!(e.path, "[1].match", "{bad}");
        }
        // Dots that are part of a name stay literals.
        let t = table(&["GET /a/%2e%2e%2e", "GET /a/.%2ex"]);
        assert_eq!(t.find(b"GET", b"/a/..."), Some(0));
        assert_eq!(t.find(b"GET", b"/a/..x"), Some(1));
    }

    #[test]
    fn duplicate_shapes_are_rejected() {
        let e = RouteTable::compile(["GET /pets/{id}", "GET /pets/{petId}"]).unwrap_err();
        assert_eq!(e.path, "[1].match");
        assert!(e.message.contains("duplicates routes[0]"));
        assert!(RouteTable::compile(["GET /pets/{id}", "ANY /pets/{id}"]).is_ok());
        let e = RouteTable::compile(["GET /a", "BAD /b"]).unwrap_err();
        assert_eq!(e.path, "[1].match");
        // One spelling per route: it names the route's counters and descriptors.
        for odd in ["GET  /a", "GET /a ", " GET /a", "GET /a /b", "GET"] {
            let e = RouteTable::compile([odd]).unwrap_err();
            assert!(
                e.message.contains("must be \"METHOD /path\""),
                "{odd:?}: {e}"
            );
        }
        // Literals that decode alike are one shape; a literal named like a parameter is not.
        let e = RouteTable::compile(["GET /caf%65/{id}", "GET /cafe/{x}"]).unwrap_err();
        assert!(e.message.contains("duplicates routes[0]"), "{e}");
        assert!(RouteTable::compile(["GET /a/p", "GET /a/{p}", "GET /a/{p+}", "GET /ap"]).is_ok());
        // A duplicate is found before an invalid route that follows it, not one before it.
        let e = RouteTable::compile(["GET /a", "GET /a", "BAD /b"]).unwrap_err();
        assert_eq!(e.path, "[1].match");
        let e = RouteTable::compile(["GET /a", "BAD /b", "GET /a"]).unwrap_err();
        assert_eq!(e.path, "[1].match");
        assert!(e.message.contains("method"), "{e}");
    }

    #[test]
    fn the_first_duplicate_of_a_long_table_is_the_one_a_scan_finds() {
        // Sorted, not scanned pairwise: the answer must still be the first repeated route
        // (lowest index) and the earliest route it repeats.
        let mut matches: Vec<String> = (0..20_000).map(|i| format!("GET /r{i}/{{id}}")).collect();
        assert_eq!(
            RouteTable::compile(matches.iter().map(String::as_str))
                .unwrap()
                .len(),
            20_000
        );
        matches.push("GET /r19000/{x}".into());
        matches.push("GET /r7/{y}".into());
        matches.push("GET /r7/{z}".into());
        let e = RouteTable::compile(matches.iter().map(String::as_str)).unwrap_err();
        assert_eq!(e.path, "[20000].match");
        assert!(e.message.contains("duplicates routes[19000]"), "{e}");
        matches.swap(20_000, 20_001);
        let e = RouteTable::compile(matches.iter().map(String::as_str)).unwrap_err();
        assert_eq!(e.path, "[20000].match");
        assert!(
            e.message.contains("\"GET /r7/{y}\" duplicates routes[7]"),
            "{e}"
        );
    }

    #[test]
    fn specificity() {
        let t = table(&[
            "ANY /{proxy+}",
            "GET /pets/{id}",
            "GET /pets/dog",
            "ANY /pets/dog",
            "GET /pets/{id}/toys/{proxy+}",
            "ANY /{a}/b",
            "ANY /a/{b}",
        ]);
        assert_eq!(t.find(b"GET", b"/pets/dog"), Some(2));
        assert_eq!(t.find(b"POST", b"/pets/dog"), Some(3));
        assert_eq!(t.find(b"GET", b"/pets/cat"), Some(1));
        assert_eq!(t.find(b"POST", b"/pets/cat"), Some(0));
        assert_eq!(t.find(b"GET", b"/pets/1/toys/a/b"), Some(4));
        assert_eq!(t.find(b"GET", b"/a/b"), Some(6));
        // The catch-all covers the root too.
        assert_eq!(t.find(b"GET", b"/"), Some(0));
        assert_eq!(t.find(b"GET", b"/x"), Some(0));
    }

    #[test]
    fn greedy_covers_its_base_path_where_nothing_else_does() {
        // `/admin/`, `/admin/.`, `//admin//` reach the upstream's admin index: the greedy
        // route covers them, so its key is needed there too.
        let t = table(&["ANY /admin/{proxy+}"]);
        for p in [
            &b"/admin"[..],
            b"/admin/",
            b"//admin//",
            b"/admin/.",
            b"/admin/x/..",
            b"/%61dmin/?q=1",
        ] {
            assert_eq!(t.find(b"GET", p), Some(0), "{}", String::from_utf8_lossy(p));
        }
        assert_eq!(t.find(b"GET", b"/admin/x"), Some(0));
        assert_eq!(t.find(b"DELETE", b"/admin/x/y/z"), Some(0));
        assert_eq!(t.find(b"GET", b"/adminx"), None);
        assert_eq!(t.find(b"GET", b"/"), None);
        // `/{proxy+}` covers the root.
        assert_eq!(table(&["ANY /{proxy+}"]).find(b"GET", b"/"), Some(0));
        // Any route that matches the base path otherwise comes first, whatever the order.
        for order in [
            ["ANY /admin", "ANY /admin/{proxy+}"],
            ["ANY /admin/{proxy+}", "ANY /admin"],
        ] {
            let t = table(&order);
            let literal = order.iter().position(|m| *m == "ANY /admin");
            assert_eq!(t.find(b"GET", b"/admin"), literal);
            assert_eq!(t.find(b"GET", b"/admin/"), literal);
            assert_eq!(
                t.find(b"GET", b"/admin/x"),
                order.iter().position(|m| m.ends_with("+}"))
            );
        }
        // Any route that matches the path otherwise keeps it, a catch-all too (as before
        // greedy routes covered base paths: config checks warn where that leaves a section's
        // index with less protection than the section).
        let t = table(&["GET /{a}", "ANY /admin/{proxy+}", "ANY /{proxy+}"]);
        assert_eq!(t.find(b"GET", b"/admin"), Some(0));
        assert_eq!(t.find(b"POST", b"/admin"), Some(2));
        assert_eq!(t.find(b"GET", b"/admin/x"), Some(1));
        assert_eq!(t.find(b"POST", b"/"), Some(2));
        let t = table(&["ANY /admin/{proxy+}", "GET /admin"]);
        assert_eq!(t.find(b"GET", b"/admin/"), Some(1));
        assert_eq!(t.find(b"DELETE", b"/admin/"), Some(0));
        // A route that spells the path keeps it, parameter or not: an upgrade never moves a
        // path a route held to a greedy route's base (`/users/public` stays `/users/{id}`'s,
        // as the upstream's `/users/<id>` handler serves it).
        for order in [
            ["GET /users/{id}", "ANY /users/public/{proxy+}"],
            ["ANY /users/public/{proxy+}", "GET /users/{id}"],
        ] {
            let t = table(&order);
            let id = order.iter().position(|m| m.ends_with("{id}"));
            let public = order.iter().position(|m| m.ends_with("+}"));
            for p in [&b"/users/public"[..], b"/users/public/", b"/users/7"] {
                assert_eq!(t.find(b"GET", p), id, "{}", String::from_utf8_lossy(p));
            }
            assert_eq!(t.find(b"HEAD", b"/users/public"), id);
            assert_eq!(t.find(b"POST", b"/users/public"), public);
            assert_eq!(t.find(b"GET", b"/users/public/x"), public);
        }
        let t = table(&["POST /orders/{id}", "ANY /orders/export/{proxy+}"]);
        assert_eq!(t.find(b"POST", b"/orders/export"), Some(0));
        let t = table(&["GET /reports/{proxy+}", "ANY /reports/public/{proxy+}"]);
        assert_eq!(t.find(b"GET", b"/reports/public"), Some(0));
        assert_eq!(t.find(b"POST", b"/reports/public"), Some(1));
        assert_eq!(t.find(b"GET", b"/reports/public/x"), Some(1));
        // A catch-all holds the section's index as before; between two base-path matches, the
        // more specific as usual.
        let t = table(&["ANY /{proxy+}", "GET /admin/{proxy+}"]);
        assert_eq!(t.find(b"GET", b"/admin"), Some(0));
        let t = table(&["ANY /{x}/{proxy+}", "GET /admin/{proxy+}"]);
        assert_eq!(t.find(b"GET", b"/admin"), Some(1));
        assert_eq!(t.find(b"POST", b"/admin"), Some(0));
    }

    /// A small deterministic generator (xorshift), so the random tables repeat.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn the_tree_finds_what_a_scan_of_every_route_finds() {
        // Random tables over a small alphabet, so that routes overlap in every way (literal
        // against `{x}` against `{p+}` at each depth, methods against ANY, GET against HEAD),
        // and random requests, tidy and not, against both lookups.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let methods = ["GET", "HEAD", "POST", "ANY"];
        let lits = ["a", "b", "c"];
        let mut compared = 0;
        for _ in 0..3000 {
            let mut ms: Vec<String> = Vec::new();
            for _ in 0..rng.below(40) {
                let mut m = format!("{} ", methods[rng.below(methods.len())]);
                let depth = rng.below(5);
                if depth == 0 {
                    m.push('/');
                }
                for d in 0..depth {
                    m.push('/');
                    match rng.below(6) {
                        0 => m.push_str("{x}"),
                        1 if d + 1 == depth => m.push_str("{p+}"),
                        _ => m.push_str(lits[rng.below(lits.len())]),
                    }
                }
                if !ms.contains(&m) {
                    ms.push(m);
                }
            }
            let t = match RouteTable::compile(ms.iter().map(String::as_str)) {
                Ok(t) => t,
                Err(e) => panic!("{ms:?}: {e}"),
            };
            for _ in 0..30 {
                let mut path = String::new();
                for _ in 0..rng.below(7) {
                    path.push('/');
                    path.push_str(["a", "b", "c", "d", ".", "", "%61"][rng.below(7)]);
                }
                if path.is_empty() || rng.below(4) == 0 {
                    path.push('/');
                }
                if rng.below(5) == 0 {
                    path.push_str("?a=/b");
                }
                let method = ["GET", "HEAD", "POST", "PUT", "get"][rng.below(5)];
                let (m, p) = (method.as_bytes(), path.as_bytes());
                assert_eq!(
                    t.find(m, p),
                    t.find_by_scan(m, p),
                    "{method} {path} in {ms:?}"
                );
                compared += usize::from(t.find(m, p).is_some());
            }
        }
        // Most requests matched something: the comparison is not one of two Nones.
        assert!(compared > 40_000, "{compared}");
    }

    #[test]
    fn many_sibling_literals_in_any_order_build_one_sorted_node() {
        // 20,000 literals under one parent, listed backwards (each inserted at the front of a
        // sorted list, were the tree built in configuration order), and literals whose bytes
        // sort below the shape's separators.
        let mut ms: Vec<String> = (0..20_000).rev().map(|i| format!("GET /v1/r{i}")).collect();
        ms.extend(
            [
                "GET /v1/r1-a",
                "GET /v1/r1/x",
                "GET /v1/r1%01",
                "GET /v1/r1%00/y",
            ]
            .map(String::from),
        );
        let started = std::time::Instant::now();
        let t = table(&ms.iter().map(String::as_str).collect::<Vec<_>>());
        let took = started.elapsed();
        let v1 = t.nodes.iter().map(|n| n.literals.len()).max().unwrap();
        assert_eq!(v1, 20_003, "one child per distinct literal");
        for n in &t.nodes {
            assert!(
                n.literals.windows(2).all(|w| w[0].0 < w[1].0),
                "sorted, no repeats"
            );
        }
        for path in [
            "/v1/r0",
            "/v1/r19999",
            "/v1/r1",
            "/v1/r1-a",
            "/v1/r1/x",
            "/v1/r1%01",
            "/v1/r1%00/y",
            "/v1/r20000",
        ] {
            assert_eq!(
                t.find(b"GET", path.as_bytes()),
                t.find_by_scan(b"GET", path.as_bytes()),
                "{path}"
            );
        }
        // Quadratic insertion took about 0.5 s here in a debug build; the sorted build well
        // under that (a generous bound, for slow machines).
        assert!(took.as_secs() < 5, "{took:?}");
    }

    #[test]
    fn a_walk_that_keeps_more_branches_than_the_buffer_finds_the_same() {
        // Every node of the chain `/s/s/...` has a `{x}` branch besides its literal one: a path
        // of `s` segments keeps one branch per depth, more than the inline buffer holds.
        let n = INLINE_BRANCHES + 6;
        let mut ms = Vec::new();
        for d in 0..n {
            let lits = "/s".repeat(d);
            ms.push(format!("GET {lits}/{{x}}"));
            ms.push(format!("GET {lits}/{{x}}/t"));
        }
        let t = table(&ms.iter().map(String::as_str).collect::<Vec<_>>());
        // `/s` x 20 then `/t`: `/s` x 20 then `{x}` (index 40) beats `/s` x 19, `{x}`, `t`
        // (39), whose `{x}` stands where the other has a literal; found after the walk kept
        // 20 branches.
        let path = format!("{}/t", "/s".repeat(20));
        assert_eq!(t.find(b"GET", path.as_bytes()), Some(40));
        assert_eq!(
            t.find(b"GET", format!("{}/u/t", "/s".repeat(20)).as_bytes()),
            Some(41)
        );
        for len in 0..n + 3 {
            for last in ["s", "t"] {
                let mut path = "/s".repeat(len);
                path.push('/');
                path.push_str(last);
                assert_eq!(
                    t.find(b"GET", path.as_bytes()),
                    t.find_by_scan(b"GET", path.as_bytes()),
                    "{path}"
                );
            }
        }
    }

    #[test]
    fn paths_deeper_than_the_inline_buffer_match_the_same() {
        let deep = |n: usize| (0..n).map(|i| format!("/s{i}")).collect::<String>();
        let exact = format!("GET {}", deep(INLINE_SEGMENTS + 4));
        let t = table(&[&exact, "ANY /s0/{proxy+}", "GET /s0/{a}"]);
        assert_eq!(t.find(b"GET", deep(1).as_bytes()), Some(1));
        assert_eq!(t.find(b"GET", deep(2).as_bytes()), Some(2));
        for n in [3, INLINE_SEGMENTS - 1, INLINE_SEGMENTS, INLINE_SEGMENTS + 1] {
            assert_eq!(t.find(b"GET", deep(n).as_bytes()), Some(1), "{n}");
        }
        assert_eq!(
            t.find(b"GET", deep(INLINE_SEGMENTS + 4).as_bytes()),
            Some(0)
        );
        assert_eq!(
            t.find(b"POST", deep(INLINE_SEGMENTS + 4).as_bytes()),
            Some(1)
        );
        assert_eq!(
            t.find(b"GET", deep(INLINE_SEGMENTS + 5).as_bytes()),
            Some(1)
        );
    }

    #[test]
    fn method_case_does_not_escape_a_route() {
        // Some upstreams upper-case the method before routing: `get` is their GET.
        let t = table(&["GET /pets", "DELETE /pets/{id}", "ANY /{proxy+}"]);
        assert_eq!(t.find(b"GET", b"/pets"), Some(0));
        for m in [&b"get"[..], b"Get", b"gEt", b"head", b"HeAd"] {
            assert_eq!(t.find(m, b"/pets"), Some(0), "{m:?}");
        }
        assert_eq!(t.find(b"delete", b"/pets/7"), Some(1));
        assert_eq!(t.find(b"post", b"/pets"), Some(2));
    }

    #[test]
    fn query_trailing_slash_and_empty_segments() {
        let t = table(&["GET /pets/{id}", "GET /"]);
        assert_eq!(t.find(b"GET", b"/pets/1?x=/y"), Some(0));
        assert_eq!(t.find(b"GET", b"/pets/1/"), Some(0));
        assert_eq!(t.find(b"GET", b"//pets//1"), Some(0));
        assert_eq!(t.find(b"GET", b"/pets/1#frag"), Some(0));
        assert_eq!(t.find(b"GET", b"/"), Some(1));
        assert_eq!(t.find(b"GET", b""), Some(1));
        assert_eq!(t.find(b"GET", b"?a"), Some(1));
    }

    #[test]
    fn bypass_spellings_normalise() {
        let t = table(&["ANY /admin/{proxy+}", "ANY /admin"]);
        for p in [
            "/admin",
            "//admin",
            "/%61dmin",
            "/%61%64%6D%69%6E",
            "/admin;x=1",
            "/admin/",
            "/x/../admin",
            "/./admin",
            "/admin/.",
        ] {
            assert_eq!(t.find(b"GET", p.as_bytes()), Some(1), "{p}");
        }
        assert_eq!(t.find(b"GET", b"/admin/a/../b"), Some(0));
        assert_eq!(t.find(b"GET", b"/ADMIN"), None);
        // An encoded slash is data, not a separator.
        assert_eq!(t.find(b"GET", b"/admin%2Fx"), None);
    }

    #[test]
    fn head_matches_get_routes_and_equally_specific_head_routes_first() {
        let t = table(&[
            "GET /pets/{id}",
            "ANY /pets/{id}",
            "HEAD /files/{name}",
            "GET /files/{name}",
        ]);
        assert_eq!(t.find(b"HEAD", b"/pets/1"), Some(0));
        assert_eq!(t.find(b"POST", b"/pets/1"), Some(1));
        assert_eq!(t.find(b"HEAD", b"/files/a"), Some(2));
        let t = table(&["GET /secret", "ANY /{proxy+}"]);
        assert_eq!(t.find(b"HEAD", b"/secret"), Some(0));
        assert_eq!(t.find(b"HEAD", b"/other"), Some(1));
        let t = table(&["POST /pets"]);
        assert_eq!(t.find(b"HEAD", b"/pets"), None);
    }

    #[test]
    fn head_takes_the_most_specific_of_head_get_and_any_routes() {
        // A less specific HEAD route does not shadow a more specific GET route.
        let t = table(&["GET /files/secret", "HEAD /files/{name}"]);
        assert_eq!(t.find(b"HEAD", b"/files/secret"), Some(0));
        assert_eq!(t.find(b"HEAD", b"/files/other"), Some(1));
        assert_eq!(t.find(b"GET", b"/files/other"), None);
        // ...nor a more specific ANY route.
        let t = table(&["HEAD /files/{name}", "ANY /files/secret"]);
        assert_eq!(t.find(b"HEAD", b"/files/secret"), Some(1));
        let t = table(&["HEAD /{proxy+}", "GET /a/{b}", "ANY /a/b/{c}"]);
        assert_eq!(t.find(b"HEAD", b"/a/x"), Some(1));
        assert_eq!(t.find(b"HEAD", b"/a/b/c"), Some(2));
        assert_eq!(t.find(b"HEAD", b"/z"), Some(0));
        // Equally specific: HEAD over GET over ANY, in any configuration order.
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            let ms = ["HEAD /x/{id}", "GET /x/{id}", "ANY /x/{id}"];
            let t = table(&order.map(|i| ms[i]));
            let at = |m: usize| order.iter().position(|&i| i == m);
            assert_eq!(t.find(b"HEAD", b"/x/1"), at(0), "{order:?}");
            assert_eq!(t.find(b"GET", b"/x/1"), at(1), "{order:?}");
            assert_eq!(t.find(b"POST", b"/x/1"), at(2), "{order:?}");
        }
        let t = table(&["ANY /x/{id}", "GET /x/{id}"]);
        assert_eq!(t.find(b"HEAD", b"/x/1"), Some(1));
        let t = table(&["ANY /x/{id}", "HEAD /x/{id}"]);
        assert_eq!(t.find(b"HEAD", b"/x/1"), Some(1));
        assert_eq!(t.find(b"GET", b"/x/1"), Some(0));
    }

    #[test]
    fn escaped_slashes_are_told() {
        for p in ["/admin%2Fx", "/a%2fb", "/a%5Cb", "/a%5c", "%2F"] {
            assert!(has_escaped_slash(p.as_bytes()), "{p}");
        }
        for p in [
            "/admin/x", "/a%252Fb", "/a?x=%2F", "/a#%2f", "/a%2", "/a%3F", "",
        ] {
            assert!(!has_escaped_slash(p.as_bytes()), "{p}");
        }
    }

    #[test]
    fn parameters_that_change_the_path_shape_are_ambiguous() {
        for p in [
            "/admin/..;/x",
            "/admin/..;x=1/x",
            "/admin/%2e%2e;/x",
            "/admin/.%2E;/x",
            "/a/.;/b",
            "/;x/admin",
            "/admin/;",
            "/admin//;/x",
            // A `;` sent as `%3B` is treated as a raw one: the same decision either way.
            "/a/%3b/..",
            "/%3Bx/admin",
            "/admin/%2e%2e%3b/x",
            "/admin/..%3Bx=1/x",
            "/a/.%3b/b",
        ] {
            assert!(is_ambiguous_path(p.as_bytes()), "{p}");
        }
        for p in [
            "/admin;x",
            "/admin/x;y/z",
            "/admin/..x;/y",
            "/admin/...;/y",
            "/admin/x?a=..;",
            "/admin%3Bx",
            "/admin/x%3By/z",
            "/admin/..x%3B/y",
            "/admin/..%3F;/y",
            "/admin/%3F;/y",
            "/admin/%253B/..",
            "/",
            "",
        ] {
            assert!(!is_ambiguous_path(p.as_bytes()), "{p}");
        }
    }

    #[test]
    fn normalize_examples() {
        assert_eq!(normalize_path(b"/a/b"), "/a/b");
        assert!(matches!(normalize_path(b"/a/b"), Cow::Borrowed(_)));
        assert_eq!(normalize_path(b"/a/%2f/b"), "/a/%2F/b");
        assert_eq!(normalize_path(b"/a/%zz"), "/a/%25zz");
        assert_eq!(normalize_path(b"/../../a"), "/a");
        assert_eq!(normalize_path(b"/a\xff\x00"), "/a%FF%00");
        assert_eq!(normalize_path(b"/%7e%2D"), "/~-");
        assert_eq!(normalize_path(b"/a/b/.."), "/a");
        assert_eq!(
            normalize_path(b"/v1/items%3abatchDelete"),
            "/v1/items:batchDelete"
        );
        assert_eq!(
            normalize_path(b"/%21%24%26%27%28%29%2A%2B%2C%3D%40"),
            "/!$&'()*+,=@"
        );
        assert_eq!(
            normalize_path(b"/%22%3C%3E%5B%5D%5E%60%7B%7C%7D"),
            "/\"<>[]^`{|}"
        );
        // Delimiters stay data, spelled one way: `/`, `\`, `%`, `?` and `#`.
        assert_eq!(
            normalize_path(b"/a%2fb%5cc%25d%3fe%23f"),
            "/a%2Fb%5Cc%25d%3Fe%23f"
        );
        assert_eq!(normalize_path(b"/a%2541"), "/a%2541");
        // `;` decoded is `;`: its parameters are dropped as a raw one's.
        assert_eq!(normalize_path(b"/admin%3Bx=1/y"), "/admin/y");
        assert_eq!(normalize_path(b"/admin%3b"), "/admin");
        // Controls, space, DEL and non-ASCII stay escaped (upper-case hex).
        assert_eq!(
            normalize_path(b"/a%00%1f%20%7f%80%ff"),
            "/a%00%1F%20%7F%80%FF"
        );
    }

    #[test]
    fn encoded_reserved_characters_do_not_skip_a_literal_route() {
        let t = table(&["POST /v1/items:batchDelete", "ANY /{proxy+}"]);
        for p in [
            "/v1/items:batchDelete",
            "/v1/items%3AbatchDelete",
            "/v1/items%3abatchDelete",
            "/v1/items%3A%62atchDelete",
            "/v1/items%3AbatchDelete?x=1",
            "/v1/items%3AbatchDelete;x",
            "/v1/items%3AbatchDelete%3Bx",
        ] {
            assert_eq!(t.find(b"POST", p.as_bytes()), Some(0), "{p}");
        }
        assert_eq!(t.find(b"POST", b"/v1/items%253AbatchDelete"), Some(1));
        // Every printable ASCII character but the delimiters, in the pattern as written or
        // encoded, and in the request as sent or encoded (either hex case): one resource.
        for c in (0x21u8..=0x7e).filter(|c| !b"/\\%?#;{}".contains(c)) {
            let raw = format!("a{}b", c as char);
            let upper = format!("a%{c:02X}b");
            let lower = format!("a%{c:02x}b");
            for pattern in [&raw, &upper] {
                let t = table(&[&format!("GET /x/{pattern}"), "ANY /{proxy+}"]);
                for request in [&raw, &upper, &lower] {
                    let path = format!("/x/{request}");
                    assert_eq!(t.find(b"GET", path.as_bytes()), Some(0), "{pattern} {path}");
                }
            }
        }
        // `{` and `}` only encoded in a pattern (raw, they make a parameter).
        let t = table(&["GET /x/%7Bid%7d", "GET /x/{id}"]);
        assert_eq!(t.find(b"GET", b"/x/{id}"), Some(0));
        assert_eq!(t.find(b"GET", b"/x/%7bid%7D"), Some(0));
        assert_eq!(t.find(b"GET", b"/x/id"), Some(1));
        // Delimiters are data, matched in their one escaped spelling.
        for (pattern, same, other) in [
            ("%2F", "%2f", "/"),
            ("%5C", "%5c", "\\"),
            ("%25", "%25", "%2525"),
            ("%3F", "%3f", "?"),
            ("%23", "%23", "#"),
        ] {
            let t = table(&[&format!("GET /x/a{pattern}b"), "ANY /{proxy+}"]);
            let path = format!("/x/a{same}b");
            assert_eq!(t.find(b"GET", path.as_bytes()), Some(0), "{path}");
            let path = format!("/x/a{other}b");
            assert_ne!(t.find(b"GET", path.as_bytes()), Some(0), "{path}");
        }
        // A stray `%` is data too: the same as `%25`.
        let t = table(&["GET /x/a%25b"]);
        assert_eq!(t.find(b"GET", b"/x/a%b"), Some(0));
        // Outside printable ASCII nothing is decoded: the escape is the name.
        let t = table(&["GET /x/a%20b", "GET /x/caf%C3%A9", "ANY /{proxy+}"]);
        assert_eq!(t.find(b"GET", b"/x/a%20b"), Some(0));
        assert_eq!(t.find(b"GET", b"/x/a b"), Some(0));
        assert_eq!(t.find(b"GET", b"/x/caf%c3%a9"), Some(1));
        assert_eq!(t.find(b"GET", "/x/café".as_bytes()), Some(1));
    }

    #[test]
    fn encoded_semicolons_are_refused_in_patterns_like_raw_ones() {
        for bad in ["GET /a%3Bb", "GET /a/%3b", "GET /%3Bx/{id}"] {
            let e = Pattern::parse(bad).unwrap_err();
            assert!(e.message.contains("is not allowed"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn literal_patterns_are_normalised_too() {
        let t = table(&["GET /caf%65"]);
        assert_eq!(t.find(b"GET", b"/cafe"), Some(0));
    }

    #[test]
    fn no_panic_on_random_bytes() {
        let t = table(&["ANY /admin/{proxy+}", "GET /pets/{id}", "GET /"]);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    let v = (x >> (i % 8 * 8)) as u8;
                    [b'/', b'%', b'.', b';', b'a', v][(v % 6) as usize]
                })
                .collect();
            let _ = t.find(b"GET", &bytes);
            let n = normalize_path(&bytes);
            assert!(n.starts_with('/'));
        }
    }

    /// The intended reading of one raw segment, written plainly and independently of the
    /// code under test: `%XX` of printable ASCII decoded except `/ \ % ? #`, everything that is
    /// not printable ASCII (raw or escaped) and a stray `%` written as `%XX`.
    fn decode_reference(raw: &[u8]) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < raw.len() {
            let hex = raw
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
            let (b, kept_escaped) = match (raw[i], hex) {
                (b'%', Some(h)) => {
                    i += 3;
                    let v = u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap();
                    (v, "/\\%?#".contains(v as char))
                }
                (b, _) => {
                    i += 1;
                    (b, b == b'%')
                }
            };
            if (0x21..=0x7e).contains(&b) && !kept_escaped {
                out.push(b as char);
            } else {
                let hex = |n: u8| char::from_digit(u32::from(n), 16).unwrap();
                out.extend(['%', hex(b >> 4), hex(b & 15)].map(|c| c.to_ascii_uppercase()));
            }
        }
        out
    }

    /// The normalisation written as a Vec of segments, each decoded on its own by
    /// [`decode_reference`] and cut at its first `;` (raw or decoded), kept as the reference for
    /// the one-buffer version. Also says whether the path is ambiguous: some segment has
    /// parameters and a name that is empty, `.` or `..`.
    fn normalize_reference(path: &[u8]) -> (String, bool) {
        let end = path
            .iter()
            .position(|&b| b == b'?' || b == b'#')
            .unwrap_or(path.len());
        let mut segments: Vec<String> = Vec::new();
        let mut ambiguous = false;
        for raw in path[..end].split(|&b| b == b'/') {
            let decoded = decode_reference(raw);
            let name = decoded.split(';').next().unwrap().to_string();
            let dots = matches!(name.as_str(), "" | "." | "..");
            ambiguous |= dots && decoded.contains(';');
            match name.as_str() {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                _ => segments.push(name),
            }
        }
        let mut out = String::new();
        for s in &segments {
            out.push('/');
            out.push_str(s);
        }
        if out.is_empty() {
            out.push('/');
        }
        (out, ambiguous)
    }

    /// Checks every path of up to `max` tokens over `tokens` against the reference.
    fn check_against_the_reference(tokens: &[&[u8]], max: u32) -> usize {
        let mut checked = 0;
        let mut path = Vec::new();
        for len in 0..=max {
            for mut code in 0..tokens.len().pow(len) {
                path.clear();
                for _ in 0..len {
                    path.extend_from_slice(tokens[code % tokens.len()]);
                    code /= tokens.len();
                }
                let (normal, ambiguous) = normalize_reference(&path);
                assert_eq!(normalize_path(&path), normal, "{path:?}");
                assert_eq!(is_ambiguous_path(&path), ambiguous, "{path:?}");
                checked += 1;
            }
        }
        checked
    }

    #[test]
    fn one_buffer_normalisation_matches_the_reference_on_every_short_path() {
        let bytes =
            |alphabet: &'static [u8]| -> Vec<&'static [u8]> { alphabet.chunks(1).collect() };
        // Every path of up to 6 bytes over an alphabet with each special case in it.
        let mut checked = check_against_the_reference(&bytes(b"/.%2Ea;?\x00\xff"), 6);
        // Up to 5 bytes over one that spells escapes of each kind: decoded (`%2E`, `%3a`,
        // `%3B`, `%5B`), kept (`%2F`, `%5C`, `%25`, `%3F`, `%23`, `%FF`) and broken (`%5`).
        checked += check_against_the_reference(&bytes(b"/.%235BCEFa;?"), 5);
        // Up to 4 whole escapes, raw delimiters and controls.
        let tokens: &[&[u8]] = &[
            b"/", b".", b";", b"a", b"%", b"?", b"#", b"%2e", b"%2E", b"%3b", b"%3B", b"%3a",
            b"%2F", b"%2f", b"%5C", b"%25", b"%3F", b"%23", b"%00", b"%20", b"%7f", b"%FF",
            b"\xff", b"\x00", b"\\",
        ];
        checked += check_against_the_reference(tokens, 4);
        assert!(checked > 1_500_000, "{checked}");
    }
}
