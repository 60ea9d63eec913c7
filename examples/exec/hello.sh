#!/bin/sh
# The smallest exec (CGI) function: header lines, a blank line, the body.
printf 'Content-Type: text/plain; charset=utf-8\n\nHello from exec!\n'
