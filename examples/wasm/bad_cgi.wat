;; bad_cgi.wat: prints text without a CGI header section (the gateway answers 502).
;;
;; A WASI command: `_start` writes one CGI response to stdout (fd 1) with
;; fd_write. A write may be partial, so the loop writes until all is out.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)

  ;; 0..8: one iovec {ptr, len}; 8..12: bytes written; 64..: the response.
  (data (i32.const 64) "this is not a CGI response\nthere is no blank line after any header\n")

  (func $write_all (param $ptr i32) (param $len i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 1))))
        (if (i32.eqz (i32.load (i32.const 8)))
          (then (call $proc_exit (i32.const 1))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.load (i32.const 8))))
        (local.set $len (i32.sub (local.get $len) (i32.load (i32.const 8))))
        (br $more))))

  (func (export "_start")
    (call $write_all (i32.const 64) (i32.const 67))))
