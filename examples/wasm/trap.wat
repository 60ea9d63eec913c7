;; trap.wat: fails at once with a wasm trap (`unreachable`).
;;
;; The runtime reports a trap and the gateway answers 502; the worker and
;; every other function carry on.
(module
  (func (export "_start")
    unreachable))
