#!/bin/sh
# Never finishes: killed (with anything it started) at timeout_ms, 504.
while :; do :; done
