;; The hello of the `wasmtime serve` peer in scripts/bench-hop.py: the same
;; answer as corefn's examples/wasm/hello.wat (200, text/plain, "Hello from wasm!\n"),
;; as a wasi:http 0.2 incoming handler. A core module: the script makes the
;; component with `wasm-tools component embed` (the WIT of wasmtime's own
;; wasi-http crate) and `wasm-tools component new`. Results of calls are
;; written at offset 0 (a result's tag, then its value at 4).
(module
  (import "wasi:http/types@0.2.12" "[constructor]fields" (func $fields (result i32)))
  (import "wasi:http/types@0.2.12" "[method]fields.append"
    (func $append (param i32 i32 i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[constructor]outgoing-response"
    (func $response (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-response.body"
    (func $body (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-body.write"
    (func $write (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]outgoing-body.finish"
    (func $finish (param i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]response-outparam.set"
    (func $set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush"
    (func $write_and_flush (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[resource-drop]output-stream"
    (func $drop_stream (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "Hello from wasm!\n")
  (data (i32.const 96) "content-type")
  (data (i32.const 112) "text/plain")
  (data (i32.const 128) "content-length")
  (data (i32.const 144) "17")
  ;; Nothing this module is given needs memory of its own.
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    unreachable)
  (func (export "wasi:http/incoming-handler@0.2.12#handle") (param $request i32) (param $out i32)
    (local $headers i32) (local $response i32) (local $body i32) (local $stream i32)
    (local.set $headers (call $fields))
    (call $append (local.get $headers) (i32.const 96) (i32.const 12) (i32.const 112) (i32.const 10)
      (i32.const 0))
    (call $append (local.get $headers) (i32.const 128) (i32.const 14) (i32.const 144) (i32.const 2)
      (i32.const 0))
    (local.set $response (call $response (local.get $headers)))
    (call $body (local.get $response) (i32.const 0))
    (local.set $body (i32.load (i32.const 4)))
    (call $write (local.get $body) (i32.const 0))
    (local.set $stream (i32.load (i32.const 4)))
    ;; ok(response)
    (call $set (local.get $out) (i32.const 0) (local.get $response) (i32.const 0) (i64.const 0)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $write_and_flush (local.get $stream) (i32.const 64) (i32.const 17) (i32.const 0))
    (call $drop_stream (local.get $stream))
    ;; no trailers
    (call $finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 0))))
