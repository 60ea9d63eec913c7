#!/bin/sh
# Custom status and headers through the CGI Status header.
printf 'Status: 201 Created\nX-Corefn-Example: status\nContent-Type: text/plain\n\ncreated\n'
