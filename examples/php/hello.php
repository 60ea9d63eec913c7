<?php
// The smallest PHP function: a plain-text greeting with a header of its own.
header('Content-Type: text/plain; charset=utf-8');
echo "Hello from PHP!\n";
