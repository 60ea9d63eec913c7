//! The demo routes of the embedded init.sql run in every runtime, from the
//! repository's `functions/` directory (its native library built here, as
//! `make -C examples/native` would).

use crate::common::functions::compile_native;
use crate::common::*;
use std::path::Path;

#[test]
fn demo_routes_of_every_runtime_answer() {
    let functions = crate::common::tempdir().expect("functions tempdir");
    let repo_functions = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions");
    for entry in std::fs::read_dir(&repo_functions)
        .expect("functions/")
        .flatten()
    {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".so") {
            continue;
        }
        // Copies of what the links point to, with their modes.
        std::fs::copy(entry.path(), functions.path().join(&name)).expect("copy demo function");
    }
    compile_native(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/native/hello.c"),
        &functions.path().join("hello.so"),
        &[],
    );
    let dir = functions.path().to_str().expect("UTF-8 path").to_string();
    let s = Server::start_with_demo(&["--workers", "2", "--functions-dir", &dir]);
    for (path, body) in [
        ("/wasm/hello", "Hello from wasm!\n"),
        ("/native/hello", "Hello from C!\n"),
        ("/exec/hello", "Hello from exec!\n"),
        ("/python/hello", "Hello from Python!\n"),
        ("/node/hello", "Hello from Node!\n"),
        ("/php/hello", "Hello from PHP!\n"),
    ] {
        let r = get(s.addr(), path);
        assert_eq!((r.status, r.text().as_str()), (200, body), "GET {path}");
    }
    for path in ["/python/echo", "/node/echo", "/php/echo"] {
        let r = send(s.addr(), &post_req(path, br#"{"demo":true}"#));
        assert_eq!(r.status, 200, "POST {path}: {:?}", r.text());
        assert_eq!(
            r.json()["echo"]["demo"],
            true,
            "POST {path}: {:?}",
            r.text()
        );
    }
}
