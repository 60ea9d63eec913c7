;; env.wat: shows the function's environment, one KEY=VALUE per line.
;;
;; environ_sizes_get says how many variables there are and how many bytes
;; their "KEY=VALUE\0" strings take; memory is grown to fit, environ_get
;; fills the buffer, every NUL becomes a newline and the buffer is written
;; after a text/plain header. The CGI variables (REQUEST_METHOD, PATH_INFO,
;; HTTP_*, ...) and the descriptor's env all show up here.
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)

  ;; 0..8: one iovec; 8..12: bytes written; 12..16: variable count;
  ;; 16..20: string bytes; 64..: the header; 1024..: the pointer array,
  ;; then the strings.
  (data (i32.const 64) "Content-Type: text/plain\n\n")

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
    (local $strings i32)
    (local $len i32)
    (local $end i32)
    (local $at i32)
    (if (call $environ_sizes_get (i32.const 12) (i32.const 16))
      (then (call $proc_exit (i32.const 2))))
    (local.set $strings
      (i32.add (i32.const 1024) (i32.mul (i32.load (i32.const 12)) (i32.const 4))))
    (local.set $len (i32.load (i32.const 16)))
    (local.set $end (i32.add (local.get $strings) (local.get $len)))
    ;; Grow memory to hold the pointer array and the strings.
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.sub
                  (i32.div_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 65536))
                  (memory.size)))
              (i32.const -1))
          (then (call $proc_exit (i32.const 3))))))
    (if (call $environ_get (i32.const 1024) (local.get $strings))
      (then (call $proc_exit (i32.const 2))))
    ;; "KEY=VALUE\0KEY=VALUE\0" -> "KEY=VALUE\nKEY=VALUE\n"
    (local.set $at (local.get $strings))
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (if (i32.eqz (i32.load8_u (local.get $at)))
          (then (i32.store8 (local.get $at) (i32.const 10))))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (br $scan)))
    (call $write_all (i32.const 64) (i32.const 26))
    (call $write_all (local.get $strings) (local.get $len))))
