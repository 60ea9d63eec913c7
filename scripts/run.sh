#!/usr/bin/env bash
# Runs corefn with its demo routes (init.sql) on http://127.0.0.1:8080.
#
# Everything but the Rust toolchain is optional: php-cgi is installed when
# missing and this is a Debian machine with root (php functions need it),
# the example native library is built with the system C compiler, then
# `cargo run --release` starts corefn with any arguments given here.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v php-cgi >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "corefn: installing php-cgi for the php runtime" >&2
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends php-cgi >/dev/null
    else
        echo "corefn: php-cgi not found; php routes answer 501 until it is installed (apt-get install php-cgi)" >&2
    fi
fi
if command -v cc >/dev/null 2>&1; then
    make -s -C examples/native
else
    echo "corefn: no C compiler; the native demo route needs examples/native/hello.so (make -C examples/native)" >&2
fi
exec cargo run --release -- "$@"
