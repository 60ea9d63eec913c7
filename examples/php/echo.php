<?php
// Reads the request: the JSON body (php://input), the method and the query string.
$decoded = json_decode(file_get_contents('php://input'));
header('Content-Type: application/json');
echo json_encode([
    'echo' => $decoded,
    'method' => $_SERVER['REQUEST_METHOD'],
    'query' => (object) $_GET,
]);
