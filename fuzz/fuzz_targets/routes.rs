//! Route patterns and the request-path normaliser. Invariants:
//! - the normal form starts with `/`, has no empty, `.` or `..` segment, no trailing `/` (but
//!   the root), no `;`, `?` or `#`, and only printable ASCII;
//! - normalising is idempotent, and matching a path equals matching its normal form;
//! - the route table's tree finds the route a scan of every route finds;
//! - a path that normalises under `/admin` is matched by an admin route, however it is spelled;
//! - a path that a servlet container, a server that decodes before it drops `;params`, or any
//!   other server would route under `/admin` is matched by an admin route or refused as
//!   ambiguous (this found the `/admin/..;/x` bypass).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tollgate::routes::{is_ambiguous_path, normalize_path, Pattern, RouteTable};

#[derive(Arbitrary, Debug)]
enum Seg {
    Admin,
    Pets,
    Dot,
    DotDot,
    Empty,
    Params(Vec<u8>),
    Escaped(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    patterns: Vec<String>,
    method: Vec<u8>,
    segs: Vec<Seg>,
    trailing_slash: bool,
    query: Option<Vec<u8>>,
    raw_path: Vec<u8>,
}

fn build_path(input: &Input) -> Vec<u8> {
    let mut p = Vec::new();
    for s in &input.segs {
        p.push(b'/');
        match s {
            Seg::Admin => p.extend_from_slice(b"admin"),
            Seg::Pets => p.extend_from_slice(b"pets"),
            Seg::Dot => p.push(b'.'),
            Seg::DotDot => p.extend_from_slice(b".."),
            Seg::Empty => {}
            Seg::Params(v) => {
                p.push(b';');
                p.extend_from_slice(v);
            }
            Seg::Escaped(b) => p.extend_from_slice(format!("%{b:02x}").as_bytes()),
            Seg::Raw(v) => p.extend_from_slice(v),
        }
    }
    if input.trailing_slash {
        p.push(b'/');
    }
    if let Some(q) = &input.query {
        p.push(b'?');
        p.extend_from_slice(q);
    }
    p
}

/// How a server reads `;params`: a servlet container drops each segment's raw `;params` before
/// decoding, some servers decode first (so `%3B` starts parameters too), any other server keeps
/// them as part of the name.
#[derive(Clone, Copy, Debug)]
enum Params {
    Kept,
    DroppedRaw,
    DroppedDecoded,
}

/// How a server resolves `path`: RFC 3986 dot segments, empty segments dropped, `%XX` of
/// printable ASCII decoded as Django, Flask or Spring do (but `%2F`, `%5C` and `%25`: Envoy
/// refuses escaped slashes in the example's setting, and `%25` is decoded once), `;params` as
/// `params` says.
fn server_view(path: &[u8], params: Params) -> Vec<Vec<u8>> {
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    let mut out: Vec<Vec<u8>> = Vec::new();
    for raw in path[..end].split(|&b| b == b'/') {
        let raw = match (params, raw.iter().position(|&b| b == b';')) {
            (Params::DroppedRaw, Some(p)) => &raw[..p],
            _ => raw,
        };
        let mut seg = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if raw[i] == b'%' && i + 2 < raw.len() {
                if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                    let v = (h * 16 + l) as u8;
                    if v.is_ascii_graphic() && !b"/\\%".contains(&v) {
                        seg.push(v);
                        i += 3;
                        continue;
                    }
                }
            }
            seg.push(raw[i]);
            i += 1;
        }
        if let (Params::DroppedDecoded, Some(p)) = (params, seg.iter().position(|&b| b == b';')) {
            seg.truncate(p);
        }
        match &seg[..] {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(seg),
        }
    }
    out
}

fn check_normal_form(n: &str) {
    assert!(n.starts_with('/'), "{n:?}");
    assert!(n == "/" || !n.ends_with('/'), "{n:?}");
    assert!(n.bytes().all(|b| b.is_ascii_graphic()), "{n:?}");
    assert!(!n.contains([';', '?', '#']), "{n:?}");
    if n != "/" {
        for s in n.split('/').skip(1) {
            assert!(!s.is_empty() && s != "." && s != "..", "{n:?}");
        }
    }
}

fuzz_target!(|input: Input| {
    for p in &input.patterns {
        let _ = Pattern::parse(p);
    }
    let user = RouteTable::compile(input.patterns.iter().map(String::as_str)).ok();
    let admin = RouteTable::compile([
        "ANY /admin/{proxy+}",
        "ANY /admin",
        "GET /pets/{id}",
        "ANY /{proxy+}",
    ])
    .ok();
    let built = build_path(&input);
    for path in [&built, &input.raw_path] {
        let n = normalize_path(path);
        check_normal_form(&n);
        let again = normalize_path(n.as_bytes());
        assert_eq!(n, again, "normalisation is not idempotent for {path:?}");
        let _ = is_ambiguous_path(path);
        for table in [&user, &admin].into_iter().flatten() {
            let a = table.find(&input.method, path);
            let b = table.find(&input.method, n.as_bytes());
            assert_eq!(a, b, "{path:?} and its normal form {n:?} match differently");
            assert!(a.is_none_or(|i| i < table.len()));
            assert_eq!(
                a,
                table.find_by_scan(&input.method, path),
                "the tree and a scan of every route disagree on {path:?}"
            );
        }
        if let Some(t) = &admin {
            let under_admin = n == "/admin" || n.starts_with("/admin/");
            let route = t.find(&input.method, path);
            // Whichever way the upstream reads the path, if it lands under /admin then tollgate
            // applies an admin route or refuses the path as ambiguous.
            for params in [Params::Kept, Params::DroppedRaw, Params::DroppedDecoded] {
                let view = server_view(path, params);
                if view.first().map(Vec::as_slice) == Some(&b"admin"[..]) {
                    assert!(
                        matches!(route, Some(0 | 1)) || is_ambiguous_path(path),
                        "{path:?}: an upstream with params {params:?} routes it under /admin, \
                         tollgate to {route:?}"
                    );
                }
            }
            if under_admin {
                assert!(
                    matches!(route, Some(0 | 1)),
                    "{path:?} ({n:?}) escaped the admin routes: {route:?}"
                );
            } else {
                assert!(
                    !matches!(route, Some(0 | 1)),
                    "{path:?} ({n:?}) wrongly matched admin"
                );
            }
        }
    }
});
