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

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

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
    let cpus = select_cpus(args.cores)?;

    // Executors bind one at a time: the first one resolves the address (a
    // port of 0 becomes a real port), the others bind the same address.
    let mut addr = args.listen;
    let mut handles = Vec::with_capacity(cpus.len());
    for (index, &cpu) in cpus.iter().enumerate() {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr, String>>();
        let bind_addr = addr;
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("ceiling-{index}"))
            .spawn(move || serve(bind_addr, cpu, ready_tx))
            .map_err(|e| format!("cannot start executor on cpu {cpu}: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(bound)) => addr = bound,
            Ok(Err(msg)) => return Err(msg),
            Err(_) => {
                return Err(match handle.join() {
                    Ok(Err(msg)) => msg,
                    Ok(Ok(())) => format!("executor on cpu {cpu} stopped before binding"),
                    Err(e) => format!("executor on cpu {cpu} failed: {e}"),
                })
            }
        }
        handles.push((cpu, handle));
    }

    println!("corefn-ceiling listening on http://{addr}");

    for (cpu, handle) in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(msg),
            Err(e) => return Err(format!("executor on cpu {cpu} failed: {e}")),
        }
    }
    Ok(())
}

/// The CPUs to pin executors to: the first `cores` of those this process may
/// run on.
fn select_cpus(cores: Option<usize>) -> Result<Vec<usize>, String> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .ok_or("cannot list the CPUs this process may run on")?
        .into_iter()
        .map(|c| c.id)
        .collect();
    if ids.is_empty() {
        return Err("no CPU available".to_string());
    }
    match cores {
        None => Ok(ids),
        Some(0) => Err("--cores must be at least 1".to_string()),
        Some(n) if n > ids.len() => Err(format!(
            "--cores {n} asked, but only {} CPUs are available",
            ids.len()
        )),
        Some(n) => {
            ids.truncate(n);
            Ok(ids)
        }
    }
}

/// One executor: bind, report the bound address, accept forever.
async fn serve(
    addr: SocketAddr,
    cpu: usize,
    ready: mpsc::Sender<Result<SocketAddr, String>>,
) -> Result<(), String> {
    let bound = TcpListener::bind(addr)
        .map_err(|e| format!("cannot bind {addr} on cpu {cpu}: {e}"))
        .and_then(|listener| {
            let local = listener
                .local_addr()
                .map_err(|e| format!("cannot read the bound address on cpu {cpu}: {e}"))?;
            Ok((listener, local))
        });
    let listener = match bound {
        Ok((listener, local)) => {
            // The receiver only goes away if main is already failing.
            let _ = ready.send(Ok(local));
            listener
        }
        Err(msg) => {
            let _ = ready.send(Err(msg.clone()));
            return Err(msg);
        }
    };
    drop(ready);

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
