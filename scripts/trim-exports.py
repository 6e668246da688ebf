#!/usr/bin/env python3
"""Removes the Proxy-Wasm callbacks tollgate does not implement from a module's exports.

    scripts/trim-exports.py MODULE [-o OUT]    trim MODULE (in place, or into OUT)
    scripts/trim-exports.py --check MODULE     exit 1 unless MODULE is trimmed and complete

The proxy-wasm Rust SDK exports every callback of the ABI, so Envoy calls into the VM for each
of them, even when the plugin leaves it at the SDK's default: `proxy_on_response_body` for each
chunk of every response body and `proxy_on_done` once per stream. The ABI makes callbacks
optional ("called only if exposed by the Wasm module"; Envoy's host then does the default
itself), so a module without them behaves the same with two fewer calls into the VM per
request, and `wasm-opt` drops the SDK code behind them (the shipped module is about 4 KB
smaller). What the two calls cost is below what `make bench` resolves on our 2-vCPU machine
(a few µs; README, "Performance").

Kept: everything tollgate implements or the SDK needs (`proxy_on_context_create`, the request
and response header callbacks, the request body and trailer callbacks (a request waits there
for the rate limit service), `proxy_on_log`, `proxy_on_delete` (which frees the context, and
records the request on HTTP/3, where Envoy 1.40 never calls `proxy_on_log`: docs/OBSERVABILITY.md,
"HTTP/3"), the gRPC callbacks, configuration and VM start, memory allocation). Python 3 standard library only.
"""

import argparse
import sys

# Callbacks tollgate leaves at the SDK's default, with what the host does without them.
DROPPED = {
    "proxy_on_response_body": "Continue (tollgate never reads a response body)",
    "proxy_on_response_trailers": "Continue",
    "proxy_on_done": "true: the stream's context is deleted right away, as the SDK's default does",
    "proxy_on_new_connection": "network filters only",
    "proxy_on_downstream_data": "network filters only",
    "proxy_on_upstream_data": "network filters only",
    "proxy_on_downstream_connection_close": "network filters only",
    "proxy_on_upstream_connection_close": "network filters only",
    "proxy_on_http_call_response": "tollgate makes no HTTP callouts",
    "proxy_on_queue_ready": "tollgate uses no shared queues",
    "proxy_on_foreign_function": "tollgate registers no foreign functions",
    "proxy_on_tick": "tollgate sets no tick period",
}

# What a trimmed module must still export (the host refuses the module, or tollgate cannot work,
# without them).
REQUIRED = [
    "memory", "_initialize", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate",
    "proxy_on_vm_start", "proxy_on_configure", "proxy_on_context_create",
    "proxy_on_request_headers", "proxy_on_request_body", "proxy_on_request_trailers",
    "proxy_on_response_headers", "proxy_on_log", "proxy_on_delete",
    "proxy_on_grpc_receive_initial_metadata", "proxy_on_grpc_receive",
    "proxy_on_grpc_receive_trailing_metadata", "proxy_on_grpc_close",
]

MAGIC = b"\0asm\x01\0\0\0"
EXPORT_SECTION = 7


class Malformed(Exception):
    pass


def read_leb(data, pos):
    """An unsigned LEB128 at `pos`: (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise Malformed("truncated or oversized LEB128")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def leb(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def sections(data):
    """(id, body) of each section, in order."""
    if not data.startswith(MAGIC):
        raise Malformed("not a WebAssembly 1.0 binary module")
    pos = len(MAGIC)
    while pos < len(data):
        sid = data[pos]
        size, start = read_leb(data, pos + 1)
        if start + size > len(data):
            raise Malformed(f"section {sid} runs past the end of the module")
        yield sid, data[start:start + size]
        pos = start + size


def exports(body):
    """(name, raw entry bytes) of each export in an export section's body."""
    count, pos = read_leb(body, 0)
    for _ in range(count):
        start = pos
        length, pos = read_leb(body, pos)
        name = body[pos:pos + length].decode("utf-8")
        pos += length + 1  # the name, then the export kind
        _, pos = read_leb(body, pos)  # the index
        if pos > len(body):
            raise Malformed("export section runs past its end")
        yield name, body[start:pos]


def export_names(data):
    return [name for sid, body in sections(data) if sid == EXPORT_SECTION
            for name, _ in exports(body)]


def trim(data):
    """The module without the DROPPED exports (unchanged if it has none of them)."""
    out = bytearray(MAGIC)
    for sid, body in sections(data):
        if sid == EXPORT_SECTION:
            kept = [raw for name, raw in exports(body) if name not in DROPPED]
            body = leb(len(kept)) + b"".join(kept)
        out += bytes([sid]) + leb(len(body)) + body
    return bytes(out)


def check(names):
    """What is wrong with a trimmed module's export list (empty when nothing)."""
    problems = [f"still exports {n}" for n in names if n in DROPPED]
    problems += [f"does not export {n}" for n in REQUIRED if n not in names]
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("module")
    ap.add_argument("-o", "--output", help="write the trimmed module here (default: in place)")
    ap.add_argument("--check", action="store_true",
                    help="only check that MODULE is trimmed and exports what tollgate needs")
    args = ap.parse_args()
    try:
        with open(args.module, "rb") as f:
            data = f.read()
        if args.check:
            problems = check(export_names(data))
            for p in problems:
                print(f"{args.module}: {p}", file=sys.stderr)
            sys.exit(1 if problems else 0)
        trimmed = trim(data)
        problems = check(export_names(trimmed))
        if problems:
            sys.exit(f"{args.module}: " + "; ".join(problems))
        out = args.output or args.module
        if trimmed != data or out != args.module:
            with open(out, "wb") as f:
                f.write(trimmed)
        print(f"trim-exports: {out}: {len(export_names(trimmed))} exports"
              f" ({len(export_names(data)) - len(export_names(trimmed))} callbacks removed)")
    except (OSError, Malformed, UnicodeDecodeError) as e:
        sys.exit(f"trim-exports: {args.module}: {e}")


if __name__ == "__main__":
    main()
