//! Exec functions: any executable under the CGI contract, one process per
//! request, killed with everything it started at its timeout.

use crate::common::functions::*;
use crate::common::*;

fn server() -> FunctionServer {
    FunctionServer::start(Lang::Exec)
}

contract_tests! {
    Lang::Exec => {
        hello,
        json_echo,
        status_and_headers,
        handler_error(
            "exec function exited with status 3",
            &["fail.sh: something went wrong"],
        ),
        timeout_replaces_host,
        concurrent_requests,
        file_change,
        large_body_echo,
        runs_unprivileged(
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho \"uid=$(id -u)\"\nif cat \"$DB\" >/dev/null 2>&1; then echo db=ok; else echo db=denied; fi\nif cat \"$KEY\" >/dev/null 2>&1; then echo key=ok; else echo key=denied; fi\nif kill -0 \"$PID\" 2>/dev/null; then echo kill=ok; else echo kill=denied; fi\nif (echo x > \"$DIR/planted\") 2>/dev/null; then echo write=ok; else echo write=denied; fi\n",
        ),
        bad_response_headers_are_502(
            "#!/bin/sh\ncase \"$QUERY_STRING\" in\n  *bad=crlf*) printf 'X-A: a\\rX-Injected: 1\\n\\nbody' ;;\n  *bad=name*) printf 'Bad Name: v\\n\\nbody' ;;\n  *bad=status*) printf 'Status: 600\\n\\nbody' ;;\n  *bad=length*) printf 'Content-Length: 999\\n\\nbody' ;;\n  *) printf 'Content-Type: text/plain\\n\\nfine' ;;\nesac\n",
        ),
        confined,
        fork_bomb_is_stopped,
        background_children_end_with_their_process,
        network_is_off_unless_asked_for(
            "#!/bin/bash\nprintf 'Content-Type: text/plain\\n\\n'\nport=\"${QUERY_STRING#port=}\"\nif (exec 3<>\"/dev/tcp/127.0.0.1/$port\") 2>/dev/null; then printf connected; else printf refused; fi\n",
        ),
        memory_mb_is_enforced(
            "#!/bin/sh\ncase \"$QUERY_STRING\" in\n  *big=1*) python3 -c 'x = bytearray(2 * 1024 ** 3); print(\"allocated\", len(x))' >/dev/null || exit 3\n           printf 'Content-Type: text/plain\\n\\nallocated' ;;\n  *) printf 'Content-Type: text/plain\\n\\nsmall' ;;\nesac\n",
        ),
    }
}

#[test]
fn every_process_is_reaped() {
    let s = server();
    for _ in 0..20 {
        assert_eq!(get(s.addr(), "/hello").status, 200);
    }
    for worker in worker_pids(s.pid()) {
        let zombies: Vec<(u32, char)> = child_processes(worker)
            .into_iter()
            .filter(|&(_, state)| state == 'Z')
            .collect();
        assert!(
            zombies.is_empty(),
            "worker {worker} left zombies: {zombies:?}"
        );
    }
}

#[test]
fn a_missing_program_is_502_naming_it() {
    let s = server();
    insert_route(
        s.db_path(),
        "GET:/missing",
        r#"{"runtime":"exec","module":"no-such-program.sh"}"#,
    );
    let mut r = get(s.addr(), "/missing");
    wait_until(std::time::Duration::from_secs(5), || {
        r = get(s.addr(), "/missing");
        r.status != 404
    });
    assert_eq!(r.status, 502, "body {:?}", r.text());
    assert!(r.text().contains("no-such-program.sh"), "{:?}", r.text());
}
