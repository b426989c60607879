//! A TCP relay that puts a bad link between the device and a real server: it can hold the
//! server's first answer back, throttle both directions, cut a connection after so many
//! bytes, refuse new connections (the server seems gone), and black-hole or cut the
//! connections already open (a link that goes silent, a link that flaps). It counts the
//! connections it accepted, so a test can tell a client that waited for a slow handshake from
//! one that gave up and started again.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What goes wrong on connections accepted from now on.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The server's first bytes on each connection reach the client this much later.
    pub answer_delay: Duration,
    /// Each direction carries at most this many bytes a second (none: as fast as it goes).
    pub bytes_per_sec: Option<u64>,
    /// The first `.0` connections are cut once the client has sent `.1` bytes on them.
    pub cut_after: Option<(usize, usize)>,
    /// New connections are accepted and closed at once, before reaching the server.
    pub refuse: bool,
}

/// State shared with every pump of every connection.
#[derive(Default)]
struct Link {
    faults: Mutex<Faults>,
    accepted: AtomicUsize,
    /// Bytes carried towards the server, over all connections.
    to_server: AtomicU64,
    /// While set, nothing is carried either way: bytes are read and dropped.
    silent: AtomicBool,
    /// Both sockets of each open connection by its number, to cut them all at once. A
    /// connection's entry goes when its pumps end, so that no descriptor outlives it: a peer
    /// still sending to a cut connection gets a reset, not a window that never opens.
    open: Mutex<Vec<(usize, [TcpStream; 2])>>,
    stop: AtomicBool,
}

pub struct FaultRelay {
    pub port: u16,
    link: Arc<Link>,
    thread: Option<JoinHandle<()>>,
}

impl FaultRelay {
    /// A relay on a free loopback port to `target`.
    pub fn start(target: SocketAddr, faults: Faults) -> FaultRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let link = Arc::new(Link {
            faults: Mutex::new(faults),
            ..Link::default()
        });
        let thread = std::thread::spawn({
            let link = link.clone();
            move || {
                for client in listener.incoming() {
                    if link.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let index = link.accepted.fetch_add(1, Ordering::SeqCst);
                    let f = link
                        .faults
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    if f.refuse {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                        let mut open = link.open.lock().unwrap_or_else(|e| e.into_inner());
                        open.push((index, [c, s]));
                    }
                    let cut = f.cut_after.filter(|(n, _)| index < *n).map(|(_, b)| b);
                    let up = Pump {
                        rate: f.bytes_per_sec,
                        delay: Duration::ZERO,
                        cut,
                        counter: Some(link.clone()),
                        connection: index,
                    };
                    let down = Pump {
                        rate: f.bytes_per_sec,
                        delay: f.answer_delay,
                        cut: None,
                        counter: None,
                        connection: index,
                    };
                    up.run(&client, &server, link.clone());
                    down.run(&server, &client, link.clone());
                }
            }
        });
        FaultRelay {
            port,
            link,
            thread: Some(thread),
        }
    }

    /// The address a client should use instead of the server's.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.link.accepted.load(Ordering::SeqCst)
    }

    /// Bytes carried from clients to the server so far.
    pub fn bytes_to_server(&self) -> u64 {
        self.link.to_server.load(Ordering::SeqCst)
    }

    /// Changes the faults for connections accepted from now on.
    pub fn set(&self, faults: Faults) {
        *self.link.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// The link goes silent (`true`) or comes back: open connections stay open but carry
    /// nothing, as when a cable is pulled somewhere along the way.
    pub fn silence(&self, silent: bool) {
        self.link.silent.store(silent, Ordering::SeqCst);
    }

    /// Cuts every open connection at once (both ends see it closed).
    pub fn cut_all(&self) {
        let open = std::mem::take(&mut *self.link.open.lock().unwrap_or_else(|e| e.into_inner()));
        for s in open.iter().flat_map(|(_, pair)| pair) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.link.stop.store(true, Ordering::SeqCst);
        self.cut_all();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One direction of one connection.
struct Pump {
    /// At most this many bytes a second.
    rate: Option<u64>,
    /// The first bytes are held back this long.
    delay: Duration,
    /// Both sockets are shut after this many bytes.
    cut: Option<usize>,
    /// Counts the bytes it carries towards the server.
    counter: Option<Arc<Link>>,
    /// The connection's number (its entry in `Link::open`).
    connection: usize,
}

impl Pump {
    /// Copies `from` to `to` on its own thread.
    fn run(self, from: &TcpStream, to: &TcpStream, link: Arc<Link>) {
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
                if link.silent.load(Ordering::SeqCst) {
                    continue;
                }
                if first && !self.delay.is_zero() {
                    std::thread::sleep(self.delay);
                }
                first = false;
                let n = self.cut.map_or(n, |c| n.min(c - total));
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                total += n;
                if let Some(link) = &self.counter {
                    link.to_server.fetch_add(n as u64, Ordering::SeqCst);
                }
                if self.cut.is_some_and(|c| total >= c) {
                    break;
                }
                if let Some(rate) = self.rate {
                    std::thread::sleep(Duration::from_secs_f64(n as f64 / rate.max(1) as f64));
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            link.open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(n, _)| *n != self.connection);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let mut w = s;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        addr
    }

    fn roundtrip(relay: &FaultRelay, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(relay.addr())?;
        s.write_all(bytes)?;
        let mut back = vec![0u8; bytes.len()];
        s.read_exact(&mut back)?;
        Ok(back)
    }

    #[test]
    fn carries_cuts_and_refuses() {
        let relay = FaultRelay::start(echo(), Faults::default());
        assert_eq!(roundtrip(&relay, b"hello").unwrap(), b"hello");
        relay.set(Faults {
            cut_after: Some((2, 3)),
            ..Faults::default()
        });
        // The second connection is cut after 3 bytes, the third is not.
        assert!(roundtrip(&relay, b"hello").is_err());
        assert_eq!(roundtrip(&relay, b"hello").unwrap(), b"hello");
        relay.set(Faults {
            refuse: true,
            ..Faults::default()
        });
        assert!(roundtrip(&relay, b"hello").is_err());
        relay.set(Faults::default());
        let mut s = TcpStream::connect(relay.addr()).unwrap();
        s.write_all(b"a").unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
        relay.cut_all();
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0), 0);
        assert_eq!(relay.accepted(), 5);
        assert_eq!(relay.bytes_to_server(), 5 + 3 + 5 + 1);
    }
}
