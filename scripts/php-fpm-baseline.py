#!/usr/bin/env python3
"""Baseline for the PHP runtime: the classic nginx + php-fpm stack from the
distribution's packages, serving the same scripts as corefn
(examples/php/*.php), on loopback only.

  scripts/php-fpm-baseline.py run [PORT] [SECONDS]
      start both, run `wrk -t2 -c64 -dSECONDSs --latency` against
      http://127.0.0.1:PORT/php/bench, print wrk's output, stop both.
      Defaults: PORT 8090, SECONDS 10.
  scripts/php-fpm-baseline.py start [PORT]
      start both and leave them running; prints the URL, the pids and the
      state directory (config files, logs, pid files, sockets).
  scripts/php-fpm-baseline.py stop DIR
      stop what `start` started in DIR and remove DIR.

URLs: /php/NAME runs examples/php/NAME.php (/php/bench, /php/hello, ...).

Setup: nginx (1 worker, loopback listener, no access log) passes every
request over FastCGI to php-fpm (pm = static, --fpm-children children,
default 2, on a Unix socket in the state directory). PHP gets the same -d
settings as corefn's php-cgi host (runtimes/php/prelude.php): opcache with
validate_timestamps=1 and revalidate_freq=0, errors logged not displayed,
output_buffering=On. --with-prelude also loads the prelude, as corefn does.
The options of `run` and `start` (see their --help) may also come from the
environment: FPM_CHILDREN, NGINX_WORKERS, WITH_PRELUDE=1, WRK_THREADS,
WRK_CONNECTIONS.
"""

import argparse
import os
import shutil
import sys
import tempfile

import bench_common as common
from bench_common import Failure, PhpFpmBaseline


def bounded_int(low, high):
    def check(text):
        if not (str(text).isdigit() and low <= int(text) <= high):
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got '{text}'")
        return int(text)
    return check


def start(args, detach):
    """nginx + php-fpm on args.port in a new state directory; on a failure
    nothing is left running and the directory is removed."""
    PhpFpmBaseline.require_tools(with_wrk=not detach)
    if common.port_open(args.port):
        raise Failure(f"something already listens on {common.HOST}:{args.port}")
    server = PhpFpmBaseline(tempfile.mkdtemp(prefix="corefn-php-fpm."), args.port,
                            children=args.fpm_children, nginx_workers=args.nginx_workers,
                            prelude=args.with_prelude)
    try:
        server.start(detach=detach)
    except BaseException:
        remove(server)
        raise
    return server


def remove(server):
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


def cmd_run(args):
    server = start(args, detach=False)
    try:
        print(f"nginx + php-fpm ({args.fpm_children} static children, prelude: "
              f"{int(args.with_prelude)}) at {server.url}")
        print(f"{server.pids_line()}; state: {server.dir} (removed on exit)")
        wrk = f"-t{args.wrk_threads} -c{args.wrk_connections}"
        print("warm-up: 1 s", flush=True)
        common.run_wrk(wrk, server.url, 1, latency=False)
        print(" ".join(common.wrk_command(wrk, server.url, args.seconds)), flush=True)
        print(common.run_wrk(wrk, server.url, args.seconds), end="")
    finally:
        remove(server)


def cmd_start(args):
    server = start(args, detach=True)
    print(f"url: {server.url}")
    print(server.pids_line())
    print(f"state: {server.dir}")
    print(f"stop with: {sys.argv[0]} stop {server.dir}")


def cmd_stop(args):
    directory = os.path.realpath(args.dir)
    if not os.path.isdir(directory):
        raise Failure(f"no such directory: {args.dir}")
    server = PhpFpmBaseline(directory, None)
    if not all(os.path.isfile(server.file(name)) for name in ("state", "nginx.conf", "php-fpm.conf")):
        raise Failure(f"{directory} is not a state directory of '{sys.argv[0]} start'")
    server.stop()
    shutil.rmtree(directory)
    print(f"stopped and removed {directory}")


def main():
    p = common.parser(__doc__)
    commands = p.add_subparsers(dest="command", required=True, metavar="{run,start,stop}")
    setup = argparse.ArgumentParser(add_help=False)
    common.add_option(setup, "--fpm-children", "FPM_CHILDREN", "2", type=bounded_int(1, 999),
                      help="php-fpm children (pm = static)")
    common.add_option(setup, "--nginx-workers", "NGINX_WORKERS", "1", type=bounded_int(1, 99),
                      help="nginx worker processes")
    setup.add_argument("--with-prelude", action="store_true", default=os.environ.get("WITH_PRELUDE") == "1",
                       help="also load corefn's php prelude (env WITH_PRELUDE=1)")
    port = {"type": bounded_int(1, 65535), "nargs": "?", "default": 8090, "help": "(default 8090)"}

    run = commands.add_parser("run", parents=[setup], help="start both, run wrk, stop both")
    run.add_argument("port", **port)
    run.add_argument("seconds", type=bounded_int(1, 99999), nargs="?", default=10,
                     help="wrk's duration (default 10)")
    common.add_option(run, "--wrk-threads", "WRK_THREADS", "2", type=bounded_int(1, 999), help="wrk -t")
    common.add_option(run, "--wrk-connections", "WRK_CONNECTIONS", "64", type=bounded_int(1, 99999),
                      help="wrk -c")
    run.set_defaults(handler=cmd_run)

    start = commands.add_parser("start", parents=[setup], help="start both and leave them running")
    start.add_argument("port", **port)
    start.set_defaults(handler=cmd_start)

    stop = commands.add_parser("stop", help="stop what `start` started in DIR and remove DIR")
    stop.add_argument("dir")
    stop.set_defaults(handler=cmd_stop)

    args = p.parse_args()
    args.handler(args)


if __name__ == "__main__":
    common.main(main)
