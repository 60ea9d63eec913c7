<?php
// Sleeps ?ms= milliseconds (default 200) before answering.
usleep((int) ($_GET['ms'] ?? 200) * 1000);
echo "slept\n";
