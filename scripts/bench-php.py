#!/usr/bin/env python3
"""corefn's php host against nginx + php-fpm on the same script, same wrk.

Starts nginx + php-fpm (as scripts/php-fpm-baseline.py does, Debian's
packages, pm = static) and a release corefn whose route GET /php/bench runs
the same examples/php/bench.php in its warm php-cgi hosts, with as many PHP
processes on each side (--php-processes, default 4: php-fpm children, and
corefn workers x worker threads). Then runs the same wrk command against
both, REPEATS rounds alternating which goes first, and reports median
req/s, p50, p99 and the ratio. Both servers and wrk share the machine's
cores: compare the ratio, not the absolute figures.

Needs wrk (installed with apt-get when missing and run as root), nginx,
php-fpm and php-cgi (apt-get install nginx php-fpm php-cgi) and a release
build (cargo build --release).
"""

import os

import bench_common as common

COREFN_PORT = 18380
FPM_PORT = 18381
BASELINE = "nginx + php-fpm"


def main():
    p = common.parser(__doc__)
    common.add_wrk_rounds(p)
    common.add_option(p, "--php-processes", default="4", type=common.positive_int,
                      help="PHP processes on each side (even)")
    args = p.parse_args()
    common.require_binary(args.binary)
    if args.php_processes % 2:
        raise common.Failure("--php-processes must be even (corefn runs 2 workers)")
    common.require_tool("wrk")
    common.PhpFpmBaseline.require_tools(with_wrk=False)

    raw = []
    with common.Run(prefix="corefn-bench-php.") as run:
        db = run.path("bench.db")
        common.make_route_db(db, [("GET:/php/bench", '{"runtime":"php","module":"bench.php"}')])
        os.makedirs(run.path("php-fpm"))
        fpm = common.PhpFpmBaseline(run.path("php-fpm"), FPM_PORT, children=args.php_processes,
                                    prelude=True)
        run.on_exit(fpm.stop)
        fpm.start(detach=False)
        corefn = run.start_corefn(
            args.binary, COREFN_PORT, run.path("server.log"), "--db", db,
            "--workers", "2", "--worker-threads", str(args.php_processes // 2),
            "--host-min-instances", str(args.php_processes // 2),
            "--functions-dir", common.PHP_EXAMPLES,
            "--cache-dir", run.path("cache"), "--logs-dir", run.path("logs"))
        servers = {"corefn php host": corefn.url("/php/bench"), BASELINE: fpm.url}
        for url in servers.values():  # warm-up: start hosts, fill opcache
            common.measured_wrk("-t1 -c8", url, 1)

        def measure(name, round_index):
            result = common.measured_wrk(args.wrk, servers[name], args.duration)
            raw.append(f"## round {round_index} {name}\n{result['raw']}")
            return result

        results = common.rounds(list(servers), args.repeats, measure, rotate=False)

    base = common.median(results[BASELINE], "rps")
    lines = [
        f"examples/php/bench.php, wrk `{args.wrk} -d {args.duration}s`, median of {args.repeats} rounds, "
        f"{args.php_processes} PHP processes on each side, {common.utc_now()}.",
        "",
        "| server | req/s | p50 ms | p99 ms | req/s vs php-fpm | non-2xx |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in results.items():
        rps = common.median(runs, "rps")
        lines.append(
            f"| {name} | {rps:.0f} | {common.ms(common.median(runs, 'p50_us'), 2)} "
            f"| {common.ms(common.median(runs, 'p99_us'), 2)} | {common.ratio(rps, base)} "
            f"| {sum(r['non_2xx'] for r in runs)} |")
    common.write_report(args.out, "\n".join(lines), raw)


if __name__ == "__main__":
    common.main(main)
