#!/bin/sh
# A handler error: a message on stderr (the function log) and a non-zero exit give 502.
echo "fail.sh: something went wrong" >&2
exit 3
