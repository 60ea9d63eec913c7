<?php
// Loops forever: the worker kills the host when the route's timeout passes.
while (true) {
}
