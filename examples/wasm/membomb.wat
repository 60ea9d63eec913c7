;; membomb.wat: grows its memory 1 MiB at a time until growth fails.
;;
;; Growth past the route's memory_mb is a trap in corefn, so this never
;; reaches the `unreachable` below: the runtime reports the memory limit and
;; the gateway answers 502. (Under a runtime where a failed memory.grow just
;; returns -1, the `unreachable` makes it trap all the same.)
(module
  (memory 1)
  (func (export "_start")
    (loop $grow
      (br_if $grow
        (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))
