<?php
// Throws from inside a function: the request gets a 502 naming the exception.
function explode_now(): void
{
    throw new RuntimeException("boom from php");
}

explode_now();
echo "never printed\n";
