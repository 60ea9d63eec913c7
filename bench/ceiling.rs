//! `corefn-ceiling`: the "ceiling reference" for the gateway benchmark.
//!
//! A deliberately minimal HTTP/1.1 server built on the same runtime as corefn
//! (glommio, one pinned executor per core, one `SO_REUSEPORT` listener per
//! core). It does no routing, header parsing, date formatting or logging: for
//! every complete request head it receives (`\r\n\r\n`, GET without a body
//! assumed) it writes one fixed `200 OK` response with the body
//! `Hello, world!\n`. Pipelined requests are answered in one write.
//!
//! It exists so that corefn's static route can be measured against the best a
//! glommio server can do on the same machine, in the same benchmark run
//! (`scripts/bench-gateway.py`). The gap between the two is what corefn's
//! HTTP handling and routing cost; the ceiling itself tells how much of the
//! result is the machine, the kernel and the load generator.

#[path = "pinned.rs"]
mod pinned;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use pinned::run_pinned;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The one response this server knows.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 14\r\n\r\nHello, world!\n";

/// End of a request head.
const HEAD_END: &[u8] = b"\r\n\r\n";

/// Per-connection read buffer; a connection whose pending bytes fill it
/// without a complete head is dropped.
const BUF_SIZE: usize = 16 * 1024;

/// Minimal glommio HTTP server returning a fixed response (benchmark ceiling).
#[derive(Parser, Debug)]
#[command(name = "corefn-ceiling", version, about)]
struct Args {
    /// Address to listen on (one SO_REUSEPORT listener per core).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,

    /// Number of cores to use, one pinned executor each (default: all cores).
    #[arg(long)]
    cores: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("corefn-ceiling: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let cpus = pinned::select_cpus(args.cores)?;
    run_pinned("corefn-ceiling", &cpus, args.listen, |_| serve)
}

/// One executor: accept forever.
async fn serve(listener: TcpListener, cpu: usize) -> Result<(), String> {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(async move {
                    // A peer that resets or misbehaves only ends its own connection.
                    let _ = handle_connection(stream).await;
                })
                .detach();
            }
            Err(e) => {
                // E.g. EMFILE: report and back off briefly instead of spinning.
                eprintln!("corefn-ceiling: accept failed on cpu {cpu}: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Answer every complete request head on the connection with [`RESPONSE`],
/// all heads found in one read answered by one write.
async fn handle_connection(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; BUF_SIZE].into_boxed_slice();
    let mut out: Vec<u8> = Vec::with_capacity(RESPONSE.len() * 16);
    // `buf[..filled]` holds bytes not yet answered; `buf[..scanned]` is known
    // to hold no head end.
    let mut filled = 0usize;
    let mut scanned = 0usize;

    loop {
        if filled == buf.len() {
            // A head larger than the buffer: not something this server serves.
            return Ok(());
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;

        let mut consumed = 0usize;
        let mut heads = 0usize;
        // Re-check up to 3 bytes before the new data: a head end may straddle reads.
        let mut from = scanned.saturating_sub(HEAD_END.len() - 1);
        while let Some(pos) = find(&buf[from..filled], HEAD_END) {
            consumed = from + pos + HEAD_END.len();
            heads += 1;
            from = consumed;
        }

        if heads > 0 {
            out.clear();
            for _ in 0..heads {
                out.extend_from_slice(RESPONSE);
            }
            stream.write_all(&out).await?;
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
        }
        scanned = filled;
    }
}

/// Position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
