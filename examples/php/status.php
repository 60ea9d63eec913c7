<?php
// Sets its own status code and a header of its own: 201 with X-Corefn-Example.
http_response_code(201);
header('X-Corefn-Example: status');
header('Content-Type: text/plain');
echo "created\n";
