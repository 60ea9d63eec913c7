#!/bin/sh
# JSON echo: the request body is stdin, the request is in CGI variables.
printf 'Content-Type: application/json\n\n{"method":"%s","query":"%s","echo":' "$REQUEST_METHOD" "$QUERY_STRING"
if [ "${CONTENT_LENGTH:-0}" -gt 0 ]; then cat; else printf 'null'; fi
printf '}'
