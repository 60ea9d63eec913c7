<?php
// A small realistic page for benchmarks: 20 records built, encoded as JSON.
$items = [];
for ($i = 1; $i <= 20; $i++) {
    $items[] = [
        'id' => $i,
        'name' => "item-$i",
        'price' => round($i * 1.25, 2),
        'tags' => ['php', $i % 2 === 0 ? 'even' : 'odd'],
        'in_stock' => $i % 3 !== 0,
    ];
}
header('Content-Type: application/json');
echo json_encode(["count" => count($items), "items" => $items]);
