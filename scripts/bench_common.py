"""What the Python benchmark scripts share: reading wrk's output, stopping
the server they started, and writing the report (one copy for all)."""

import os
import re
import signal
import subprocess


def latency_ms(text, percentile):
    """The `--latency` distribution's value at `percentile` ("50", "99"), in ms."""
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def summary(text):
    """req/s, p50 and p99 (ms), requests and non-2xx responses of one wrk run."""
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "requests": int(re.search(r"(\d+) requests in", text).group(1)),
        "p50": latency_ms(text, "50"),
        "p99": latency_ms(text, "99"),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def stop_server(process, timeout_s=20):
    """SIGTERM (corefn drains and exits 0), SIGKILL if it is still there."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def write_report(out_dir, summary, raw):
    """Prints the summary; with out_dir also writes summary.md and raw.txt."""
    print(summary)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "summary.md"), "w") as f:
            f.write(summary + "\n")
        with open(os.path.join(out_dir, "raw.txt"), "w") as f:
            f.write("\n".join(raw))
