/work/main/bench/probe/target/wasm32-wasip1/release/deps/tollgate_probe.d: src/lib.rs

/work/main/bench/probe/target/wasm32-wasip1/release/deps/tollgate_probe.wasm: src/lib.rs

src/lib.rs:
