#!/usr/bin/env bash
# Baseline for the PHP runtime: the classic nginx + php-fpm stack from the
# distribution's packages, serving the same scripts as corefn
# (examples/php/*.php), on loopback only.
#
#   scripts/php-fpm-baseline.sh run [PORT] [SECONDS]
#       start both, run `wrk -t2 -c64 -d${SECONDS}s --latency` against
#       http://127.0.0.1:PORT/php/bench, print wrk's output, stop both.
#       Defaults: PORT 8090, SECONDS 10.
#   scripts/php-fpm-baseline.sh start [PORT]
#       start both and leave them running; prints the URL, the pids and the
#       state directory (config files, logs, pid files, sockets).
#   scripts/php-fpm-baseline.sh stop DIR
#       stop what `start` started in DIR and remove DIR.
#
# URLs: /php/NAME runs examples/php/NAME.php (/php/bench, /php/hello, ...).
#
# Setup: nginx (1 worker, loopback listener, no access log) passes every
# request over FastCGI to php-fpm (pm = static, FPM_CHILDREN children,
# default 2, on a Unix socket in the state directory). PHP gets the same -d
# settings as corefn's php-cgi host (runtimes/php/prelude.php): opcache with
# validate_timestamps=1 and revalidate_freq=0, errors logged not displayed,
# output_buffering=On. WITH_PRELUDE=1 also loads the prelude, as corefn does.
#
# Environment: FPM_CHILDREN (default 2), NGINX_WORKERS (default 1),
# WITH_PRELUDE (default 0), WRK_THREADS (2), WRK_CONNECTIONS (64).
set -euo pipefail

die() {
    echo "php-fpm-baseline: $*" >&2
    exit 1
}

SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

usage() {
    sed -n '2,16p' "$SCRIPT" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

cd "$(dirname "$SCRIPT")/.."
REPO=$(pwd)
EXAMPLES="$REPO/examples/php"
PRELUDE="$REPO/runtimes/php/prelude.php"
# shellcheck source=scripts/common.sh
source "$REPO/scripts/common.sh"

FPM_CHILDREN=${FPM_CHILDREN:-2}
NGINX_WORKERS=${NGINX_WORKERS:-1}
WITH_PRELUDE=${WITH_PRELUDE:-0}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}
START_TIMEOUT_S=10
STOP_TIMEOUT_S=10

[[ $FPM_CHILDREN =~ ^[1-9][0-9]{0,2}$ ]] || die "FPM_CHILDREN must be 1..999, got '$FPM_CHILDREN'"
[[ $NGINX_WORKERS =~ ^[1-9][0-9]{0,1}$ ]] || die "NGINX_WORKERS must be 1..99, got '$NGINX_WORKERS'"
[[ $WRK_THREADS =~ ^[1-9][0-9]{0,2}$ ]] || die "WRK_THREADS must be 1..999, got '$WRK_THREADS'"
[[ $WRK_CONNECTIONS =~ ^[1-9][0-9]{0,4}$ ]] || die "WRK_CONNECTIONS must be 1..99999, got '$WRK_CONNECTIONS'"

# --- prerequisites -----------------------------------------------------------

find_nginx() {
    command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true
}

find_php_fpm() {
    local candidate
    candidate=$(command -v php-fpm 2>/dev/null || true)
    if [[ -z $candidate ]]; then
        # Debian names it after the PHP version: /usr/sbin/php-fpm8.2.
        for candidate in /usr/sbin/php-fpm[0-9]*; do
            [[ -x $candidate ]] && break
            candidate=
        done
    fi
    echo "$candidate"
}

require_tools() {
    NGINX=$(find_nginx)
    PHP_FPM=$(find_php_fpm)
    local missing=()
    [[ -n $NGINX ]] || missing+=(nginx)
    [[ -n $PHP_FPM ]] || missing+=(php-fpm)
    if [[ $1 == with-wrk ]] && ! command -v wrk >/dev/null 2>&1; then
        missing+=(wrk)
    fi
    if [[ ${#missing[@]} -gt 0 ]]; then
        die "missing ${missing[*]}: install with  sudo apt-get install -y ${missing[*]}"
    fi
    [[ -f $EXAMPLES/bench.php ]] || die "$EXAMPLES/bench.php not found"
}

# --- configuration -----------------------------------------------------------

# PHP settings shared with corefn's php-cgi host (see runtimes/php/prelude.php).
php_settings() {
    local settings=(
        opcache.enable=1
        opcache.validate_timestamps=1
        opcache.revalidate_freq=0
        display_errors=0
        display_startup_errors=0
        log_errors=1
        html_errors=0
        expose_php=0
        cgi.fix_pathinfo=0
        output_buffering=On
        max_execution_time=0
    )
    if [[ $WITH_PRELUDE == 1 ]]; then
        settings+=("auto_prepend_file=$PRELUDE")
    fi
    local setting
    for setting in "${settings[@]}"; do
        printf '%s\0%s\0' -d "$setting"
    done
}

write_configs() {
    local dir=$1 port=$2
    local as_root=0
    [[ $(id -u) -eq 0 ]] && as_root=1

    mkdir -p "$dir/nginx-temp"
    {
        echo "[global]"
        echo "pid = $dir/php-fpm.pid"
        echo "error_log = $dir/php-fpm.log"
        echo "daemonize = no"
        echo
        echo "[bench]"
        if ((as_root)); then
            echo "user = root"
            echo "group = root"
        fi
        echo "listen = $dir/php-fpm.sock"
        echo "listen.mode = 0600"
        echo "pm = static"
        echo "pm.max_children = $FPM_CHILDREN"
        echo "pm.max_requests = 0"
        echo "catch_workers_output = yes"
        echo "decorate_workers_output = no"
    } >"$dir/php-fpm.conf"

    {
        ((as_root)) && echo "user root;"
        echo "worker_processes $NGINX_WORKERS;"
        echo "daemon off;"
        echo "pid $dir/nginx.pid;"
        echo "error_log $dir/nginx-error.log warn;"
        echo "events { worker_connections 4096; }"
        echo "http {"
        echo "    access_log off;"
        echo "    default_type application/octet-stream;"
        echo "    client_body_temp_path $dir/nginx-temp/body;"
        echo "    fastcgi_temp_path $dir/nginx-temp/fastcgi;"
        echo "    proxy_temp_path $dir/nginx-temp/proxy;"
        echo "    uwsgi_temp_path $dir/nginx-temp/uwsgi;"
        echo "    scgi_temp_path $dir/nginx-temp/scgi;"
        echo "    server {"
        echo "        listen 127.0.0.1:$port;"
        echo "        server_name localhost;"
        echo "        location ~ ^/php/([A-Za-z0-9_-]+)\$ {"
        echo "            fastcgi_pass unix:$dir/php-fpm.sock;"
        echo "            fastcgi_param SCRIPT_FILENAME $EXAMPLES/\$1.php;"
        echo "            fastcgi_param SCRIPT_NAME \$uri;"
        echo "            fastcgi_param REQUEST_URI \$request_uri;"
        echo "            fastcgi_param DOCUMENT_URI \$document_uri;"
        echo "            fastcgi_param QUERY_STRING \$query_string;"
        echo "            fastcgi_param REQUEST_METHOD \$request_method;"
        echo "            fastcgi_param CONTENT_TYPE \$content_type;"
        echo "            fastcgi_param CONTENT_LENGTH \$content_length;"
        echo "            fastcgi_param SERVER_PROTOCOL \$server_protocol;"
        echo "            fastcgi_param GATEWAY_INTERFACE CGI/1.1;"
        echo "            fastcgi_param SERVER_SOFTWARE nginx;"
        echo "            fastcgi_param REMOTE_ADDR \$remote_addr;"
        echo "            fastcgi_param REMOTE_PORT \$remote_port;"
        echo "            fastcgi_param SERVER_ADDR \$server_addr;"
        echo "            fastcgi_param SERVER_PORT \$server_port;"
        echo "            fastcgi_param SERVER_NAME \$server_name;"
        echo "            fastcgi_param REDIRECT_STATUS 200;"
        echo "        }"
        echo "        location / { return 404; }"
        echo "    }"
        echo "}"
    } >"$dir/nginx.conf"
}

# --- processes ---------------------------------------------------------------

# True when PID is alive and its command line names DIR: a pid file can
# outlive its process, and the pid be reused by an unrelated one.
pid_is_ours() {
    local pid=$1 dir=$2
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/"
}

# True when PID is alive and named like a worker of nginx or php-fpm.
is_worker() {
    local pid=$1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE '^(nginx|php-fpm): '
}

# Stops a master and its workers: SIGTERM, SIGKILL after STOP_TIMEOUT_S,
# then SIGKILL for any worker it left behind (a killed master's workers are
# orphaned, not stopped). Reaps it when it is this shell's child.
stop_master() {
    local pid=$1 dir=$2
    pid_is_ours "$pid" "$dir" || return 0
    local workers
    workers=$(pgrep -P "$pid" 2>/dev/null || true)
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while pid_is_ours "$pid" "$dir" && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if pid_is_ours "$pid" "$dir"; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    local worker
    for worker in $workers; do
        if is_worker "$worker"; then
            kill -KILL "$worker" 2>/dev/null || true
        fi
    done
}

stop_dir() {
    local dir=$1 name file pid
    # nginx first, so no request is in flight when php-fpm goes.
    for name in nginx php-fpm; do
        for file in "$dir/$name.pid" "$dir/$name.launched-pid"; do
            [[ -r $file ]] || continue
            pid=$(<"$file")
            stop_master "$pid" "$dir"
        done
    done
}

# An HTTP/1.0 GET over bash's /dev/tcp (in a subshell, so a refused
# connection cannot end the script); prints the status line.
http_status_line() (
    port=$1
    path=$2
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
    IFS= read -r -t 5 line <&3 || line=
    printf '%s\n' "${line%$'\r'}"
)

# start_in DIR PORT DETACH: writes the configs, starts php-fpm and nginx
# (detached into their own session when DETACH=1) and waits until
# /php/bench answers 200.
start_in() {
    local dir=$1 port=$2 detach=$3
    write_configs "$dir" "$port"
    local php_args=()
    local arg
    while IFS= read -r -d '' arg; do
        php_args+=("$arg")
    done < <(php_settings)
    local root_flag=()
    [[ $(id -u) -eq 0 ]] && root_flag=(-R)

    "$PHP_FPM" -t -y "$dir/php-fpm.conf" "${root_flag[@]}" "${php_args[@]}" >"$dir/php-fpm-test.log" 2>&1 ||
        { cat "$dir/php-fpm-test.log" >&2; return 1; }
    "$NGINX" -t -p "$dir" -c "$dir/nginx.conf" -e "$dir/nginx-error.log" >"$dir/nginx-test.log" 2>&1 ||
        { cat "$dir/nginx-test.log" >&2; return 1; }

    local launcher=()
    ((detach)) && launcher=(setsid)
    "${launcher[@]}" "$PHP_FPM" -F -y "$dir/php-fpm.conf" "${root_flag[@]}" "${php_args[@]}" \
        </dev/null >"$dir/php-fpm.out" 2>&1 &
    echo $! >"$dir/php-fpm.launched-pid"
    "${launcher[@]}" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/nginx-error.log" \
        </dev/null >"$dir/nginx.out" 2>&1 &
    echo $! >"$dir/nginx.launched-pid"

    local deadline=$((SECONDS + START_TIMEOUT_S)) status=
    while ((SECONDS < deadline)); do
        if [[ -S $dir/php-fpm.sock ]] && port_open "$port"; then
            status=$(http_status_line "$port" /php/bench || true)
            [[ $status == *" 200 "* || $status == *" 200" ]] && return 0
            # An answer that is not 200 will not become one.
            [[ $status == HTTP/* ]] && break
        fi
        sleep 0.1
    done
    echo "php-fpm-baseline: no 200 from /php/bench (waited up to ${START_TIMEOUT_S}s; last answer '${status}')" >&2
    local log
    for log in php-fpm.log php-fpm.out nginx-error.log nginx.out; do
        [[ -s $dir/$log ]] && { echo "--- $log:" >&2; tail -n 5 "$dir/$log" >&2; }
    done
    return 1
}

check_port() {
    local port=$1
    if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((port < 1 || port > 65535)); then
        die "PORT must be 1..65535, got '$port'"
    fi
    if port_open "$port"; then
        die "something already listens on 127.0.0.1:$port"
    fi
}

new_state_dir() {
    mktemp -d "${TMPDIR:-/tmp}/corefn-php-fpm.XXXXXX"
}

# The marker `stop` looks for before it touches a directory.
write_state() {
    local dir=$1 port=$2
    {
        echo "port=$port"
        echo "url=http://127.0.0.1:$port/php/bench"
        echo "nginx_pid=$(cat "$dir/nginx.pid" 2>/dev/null || true)"
        echo "php_fpm_pid=$(cat "$dir/php-fpm.pid" 2>/dev/null || true)"
    } >"$dir/state"
}

pids_line() {
    local dir=$1
    echo "nginx pid $(cat "$dir/nginx.pid" 2>/dev/null || echo '?'), php-fpm pid $(cat "$dir/php-fpm.pid" 2>/dev/null || echo '?')"
}

# --- commands ----------------------------------------------------------------

cmd_run() {
    local port=${1:-8090} duration=${2:-10}
    [[ $duration =~ ^[1-9][0-9]{0,4}$ ]] || die "SECONDS must be a positive integer, got '$duration'"
    require_tools with-wrk
    check_port "$port"
    STATE_DIR=$(new_state_dir)
    WRK_PID=
    trap 'stop_wrk; stop_dir "$STATE_DIR"; rm -rf "$STATE_DIR"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_in "$STATE_DIR" "$port" 0 || die "start failed"
    write_state "$STATE_DIR" "$port"
    local url="http://127.0.0.1:$port/php/bench"
    echo "nginx + php-fpm ($FPM_CHILDREN static children, prelude: $WITH_PRELUDE) at $url"
    echo "$(pids_line "$STATE_DIR"); state: $STATE_DIR (removed on exit)"
    echo "warm-up: 1 s"
    run_wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d1s "$url" >/dev/null
    echo "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${duration}s --latency $url"
    run_wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${duration}s" --latency "$url"
}

# wrk in the background and waited for, so that a signal to this script is
# handled at once (bash runs traps only between foreground commands).
run_wrk() {
    wrk "$@" &
    WRK_PID=$!
    local status=0
    wait "$WRK_PID" || status=$?
    WRK_PID=
    return "$status"
}

stop_wrk() {
    if [[ -n ${WRK_PID:-} ]]; then
        kill -TERM "$WRK_PID" 2>/dev/null || true
        wait "$WRK_PID" 2>/dev/null || true
    fi
}

cmd_start() {
    local port=${1:-8090}
    require_tools without-wrk
    check_port "$port"
    local dir
    dir=$(new_state_dir)
    if ! start_in "$dir" "$port" 1; then
        stop_dir "$dir"
        rm -rf "$dir"
        die "start failed"
    fi
    write_state "$dir" "$port"
    echo "url: http://127.0.0.1:$port/php/bench"
    pids_line "$dir"
    echo "state: $dir"
    echo "stop with: $SCRIPT stop $dir"
}

cmd_stop() {
    local dir=${1:-}
    [[ -n $dir ]] || usage
    dir=$(cd "$dir" 2>/dev/null && pwd) || die "no such directory: $1"
    [[ -f $dir/state && -f $dir/nginx.conf && -f $dir/php-fpm.conf ]] ||
        die "$dir is not a state directory of '$0 start'"
    stop_dir "$dir"
    rm -rf "$dir"
    echo "stopped and removed $dir"
}

case ${1:-} in
run) shift; cmd_run "$@" ;;
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
*) usage ;;
esac
