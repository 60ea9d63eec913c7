;; loop.wat: never returns.
;;
;; Epoch interruption stops it when the route's timeout_ms has passed and the
;; gateway answers 504; the worker thread is free again at once.
(module
  (func (export "_start")
    (loop $forever
      (br $forever))))
