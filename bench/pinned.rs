//! What `corefn-ceiling` and `corefn-hop` share: one pinned glommio
//! executor per CPU, each with a `SO_REUSEPORT` listener of its own on one
//! address, started one at a time so that the first resolves the address
//! (a port of 0 becomes a real port) and the others bind the same one.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::mpsc;

use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

/// The CPUs to pin executors to: the first `cores` of those this process may
/// run on.
pub fn select_cpus(cores: Option<usize>) -> Result<Vec<usize>, String> {
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

/// Runs `serve(index)`'s task on an executor pinned to each of `cpus`,
/// each with its listener bound; prints `NAME listening on http://ADDR`
/// once all are, then waits for them (an error of any ends the run).
pub fn run_pinned<S, F, Fut>(
    name: &str,
    cpus: &[usize],
    listen: SocketAddr,
    mut serve: S,
) -> Result<(), String>
where
    S: FnMut(usize) -> F,
    F: FnOnce(TcpListener, usize) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    let mut addr = listen;
    let mut handles = Vec::with_capacity(cpus.len());
    for (index, &cpu) in cpus.iter().enumerate() {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr, String>>();
        let bind_addr = addr;
        let task = serve(index);
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("{name}-{index}"))
            .spawn(move || async move {
                let listener = match bind(bind_addr, cpu) {
                    Ok((listener, local)) => {
                        // The receiver only goes away if main is already failing.
                        let _ = ready_tx.send(Ok(local));
                        listener
                    }
                    Err(msg) => {
                        let _ = ready_tx.send(Err(msg.clone()));
                        return Err(msg);
                    }
                };
                drop(ready_tx);
                task(listener, cpu).await
            })
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
    println!("{name} listening on http://{addr}");
    for (cpu, handle) in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(msg),
            Err(e) => return Err(format!("executor on cpu {cpu} failed: {e}")),
        }
    }
    Ok(())
}

fn bind(addr: SocketAddr, cpu: usize) -> Result<(TcpListener, SocketAddr), String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("cannot bind {addr} on cpu {cpu}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address on cpu {cpu}: {e}"))?;
    Ok((listener, local))
}
