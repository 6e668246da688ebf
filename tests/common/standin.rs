//! A stand-in Proxy-Wasm plugin for tests of what Envoy does once a plugin's VM has died
//! (tests/failure_policy.rs, tests/prometheus.rs). tollgate never traps, so no request can
//! make *it* fail on purpose; this module, assembled byte by byte (no toolchain needed), speaks
//! the same proxy-wasm ABI (0.2.1), lets the first request through and executes `unreachable`
//! on the second, exactly what a panic in a Rust plugin compiles to.

fn leb(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(id: u8, items: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    leb(items.len(), &mut body);
    for i in items {
        body.extend_from_slice(i);
    }
    let mut out = vec![id];
    leb(body.len(), &mut out);
    out.extend(body);
    out
}

fn name(s: &str) -> Vec<u8> {
    let mut v = Vec::new();
    leb(s.len(), &mut v);
    v.extend_from_slice(s.as_bytes());
    v
}

fn body(code: &[u8]) -> Vec<u8> {
    let mut inner = vec![0x00]; // no locals
    inner.extend_from_slice(code);
    inner.push(0x0b); // end
    let mut out = Vec::new();
    leb(inner.len(), &mut out);
    out.extend(inner);
    out
}

/// A proxy-wasm 0.2.1 plugin whose `proxy_on_request_headers` traps on its second call.
pub fn crashing_plugin() -> Vec<u8> {
    const I32: u8 = 0x7f;
    let types = vec![
        vec![0x60, 0, 0],                     // 0: () -> ()
        vec![0x60, 2, I32, I32, 0],           // 1: (i32, i32) -> ()
        vec![0x60, 2, I32, I32, 1, I32],      // 2: (i32, i32) -> i32
        vec![0x60, 3, I32, I32, I32, 1, I32], // 3: (i32, i32, i32) -> i32
        vec![0x60, 1, I32, 1, I32],           // 4: (i32) -> i32
    ];
    let funcs = vec![vec![0], vec![1], vec![2], vec![2], vec![3], vec![4]];
    let memory = vec![vec![0x00, 2]]; // min 2 pages, no max
    let globals = vec![
        vec![I32, 1, 0x41, 0, 0x0b],          // request counter
        vec![I32, 1, 0x41, 0x80, 0x08, 0x0b], // bump-allocator top (1024)
    ];
    let export = |n: &str, kind: u8, idx: u8| {
        let mut v = name(n);
        v.extend([kind, idx]);
        v
    };
    let exports = vec![
        export("memory", 2, 0),
        export("proxy_abi_version_0_2_1", 0, 0),
        export("proxy_on_context_create", 0, 1),
        export("proxy_on_vm_start", 0, 2),
        export("proxy_on_configure", 0, 3),
        export("proxy_on_request_headers", 0, 4),
        export("proxy_on_memory_allocate", 0, 5),
    ];
    let code = vec![
        body(&[]),
        body(&[]),
        body(&[0x41, 1]), // true
        body(&[0x41, 1]), // true
        body(&[
            0x23, 0, 0x41, 1, 0x6a, 0x24, 0, // counter += 1
            0x23, 0, 0x41, 2, 0x46, // counter == 2
            0x04, 0x40, 0x00, 0x0b, // if: unreachable
            0x41, 0, // Action::Continue
        ]),
        body(&[0x23, 1, 0x23, 1, 0x20, 0, 0x6a, 0x24, 1]), // old top; top += size
    ];
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend(section(1, &types));
    m.extend(section(3, &funcs));
    m.extend(section(5, &memory));
    m.extend(section(6, &globals));
    m.extend(section(7, &exports));
    m.extend(section(10, &code));
    m
}
