//! A TCP relay that puts a bad link between the device and a real server, for tests: it can
//! hold the server's first answer back, throttle both directions, and cut a connection after
//! so many bytes. It counts the connections it accepted, so a test can tell a session that
//! waited for a slow handshake from one that gave up and started again.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What goes wrong on the link.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The server's first bytes on each connection reach the client this much later.
    pub answer_delay: Duration,
    /// Each direction carries at most this many bytes a second (none: as fast as it goes).
    pub bytes_per_sec: Option<u64>,
    /// The first `.0` connections are cut once the client has sent `.1` bytes on them.
    pub cut_after: Option<(usize, usize)>,
}

pub struct FaultRelay {
    pub port: u16,
    faults: Arc<Mutex<Faults>>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultRelay {
    /// A relay on a free loopback port to `target`.
    pub fn start(target: SocketAddr, faults: Faults) -> FaultRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let faults = Arc::new(Mutex::new(faults));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (faults, accepted, stop) = (faults.clone(), accepted.clone(), stop.clone());
            move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let index = accepted.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    let f = faults.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let cut = f.cut_after.filter(|(n, _)| index < *n).map(|(_, b)| b);
                    pump(&client, &server, f.bytes_per_sec, Duration::ZERO, cut);
                    pump(&server, &client, f.bytes_per_sec, f.answer_delay, None);
                }
            }
        });
        FaultRelay {
            port,
            faults,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Changes the faults for connections accepted from now on.
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` on its own thread: the first bytes held back by `delay`, at most
/// `rate` bytes a second, and both sockets shut after `cut` bytes.
fn pump(from: &TcpStream, to: &TcpStream, rate: Option<u64>, delay: Duration, cut: Option<usize>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let mut total = 0usize;
        let mut first = true;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if first && !delay.is_zero() {
                std::thread::sleep(delay);
            }
            first = false;
            let n = cut.map_or(n, |c| n.min(c - total));
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            total += n;
            if cut.is_some_and(|c| total >= c) {
                break;
            }
            if let Some(rate) = rate {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / rate.max(1) as f64));
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}
