#!/usr/bin/env bash
# Runs corefn with its demo routes (init.sql) on http://127.0.0.1:8080.
#
# Everything but the Rust toolchain is optional: php-cgi and the C to
# WebAssembly compilers (clang, lld, wasi-libc; deploys of C code need
# them) are installed when missing and this is a Debian machine with root,
# the example native library is built with the system C compiler, then
# a release build runs `corefn serve` with any serve flags given here.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v php-cgi >/dev/null 2>&1 || missing+=(php-cgi)
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v wasm-ld >/dev/null 2>&1 || missing+=(lld)
[ -d /usr/include/wasm32-wasi ] || missing+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || missing+=(libclang-rt-14-dev-wasm32)
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "corefn: installing ${missing[*]}" >&2
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "corefn: missing ${missing[*]}: php routes answer 501 and C deploys fail until they are installed" >&2
    fi
fi
if command -v cc >/dev/null 2>&1; then
    make -s -C examples/native
else
    echo "corefn: no C compiler; the native demo route needs examples/native/hello.so (make -C examples/native)" >&2
fi
# Started by root, corefn runs functions as nobody; a checkout under a
# directory nobody may enter (root's home) would leave the demo's exec,
# python, node and php routes unreachable, so the demo keeps them as root
# there, and says so.
args=()
if [ "$(id -u)" = 0 ] && command -v runuser >/dev/null 2>&1 \
    && ! runuser -u nobody -- test -x "$PWD/functions" 2>/dev/null; then
    echo "corefn: nobody cannot reach $PWD (a directory above it is closed): the demo runs its functions as root (--run-as root); move the checkout to run them as nobody" >&2
    args+=(--run-as root)
fi
# Every binary: corefn, and corefn-relay that its language hosts' waiting
# processes run.
cargo build --release --bins
exec target/release/corefn serve "${args[@]}" "$@"
