;; echo.wat: answers with the request body, byte for byte.
;;
;; Prints an octet-stream header, then copies stdin (the request body) to
;; stdout in 64 KiB chunks until end of input, so bodies of any size pass
;; with a fixed amount of guest memory.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)

  ;; 0..8: one iovec {ptr, len}; 8..12: bytes read or written;
  ;; 64..: the header; 65536..131072: the copy buffer.
  (data (i32.const 64) "Content-Type: application/octet-stream\n\n")

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
    (local $read i32)
    (call $write_all (i32.const 64) (i32.const 40))
    (block $end_of_input
      (loop $copy
        (i32.store (i32.const 0) (i32.const 65536))
        (i32.store (i32.const 4) (i32.const 65536))
        (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 2))))
        (local.set $read (i32.load (i32.const 8)))
        (br_if $end_of_input (i32.eqz (local.get $read)))
        (call $write_all (i32.const 65536) (local.get $read))
        (br $copy)))))
