//! A TURN allocation (RFC 8656, over UDP) for the live relay. The relay's one UDP socket also
//! talks to the TURN server; the allocation's relayed address is offered as an ICE candidate,
//! so a viewer behind a firewall that lets no direct UDP through, or a device that must not
//! reveal its own address (`ice_transport_policy = relay`), still connects.
//!
//! A thin wrapper over `turn-client-proto` (sans-IO, like str0m): this module only moves
//! datagrams and time in and out.

use std::net::{IpAddr, SocketAddr};

use turn_client_proto::api::{TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet};
use turn_client_proto::prelude::*;
use turn_client_proto::stun::Instant;
use turn_client_proto::stun::agent::Transmit;
use turn_client_proto::types::{TransportType, TurnCredentials};
use turn_client_proto::udp::TurnClientUdp;

/// Where a `turn:` URL (RFC 7065) points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnUrl {
    pub host: String,
    pub port: u16,
}

/// Parses `turn:host[:port][?transport=udp]`. Other schemes and transports are refused with
/// the reason (this relay allocates over UDP only).
pub fn parse_turn_url(url: &str) -> Result<TurnUrl, String> {
    let lower = url.to_ascii_lowercase();
    let rest = if let Some(rest) = lower.strip_prefix("turn:") {
        &url[url.len() - rest.len()..]
    } else if lower.starts_with("turns:") {
        return Err(format!(
            "{url}: TURN over TLS (turns:) is not supported; use turn:"
        ));
    } else {
        return Err(format!("{url}: not a turn: URL"));
    };
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("transport", "udp")) => {}
            Some(("transport", other)) => {
                return Err(format!(
                    "{url}: transport '{other}' is not supported; only udp"
                ));
            }
            _ => return Err(format!("{url}: unknown parameter '{pair}'")),
        }
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url}: unclosed '['"))?;
        (host, tail.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{url}: bad port '{p}'"))?,
        None => 3478,
    };
    Ok(TurnUrl {
        host: host.to_string(),
        port,
    })
}

/// What a datagram that arrived on the relay's socket was.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Not from the TURN server: the caller handles it (direct ICE traffic).
    NotTurn,
    /// The TURN server's own business (allocation, permissions, refreshes).
    Handled,
    /// A peer's datagram relayed by the server, as if it arrived on the relayed address.
    Peer { from: SocketAddr, data: Vec<u8> },
}

pub struct Allocation {
    client: TurnClientUdp,
    base: std::time::Instant,
    server: SocketAddr,
    relayed: Option<SocketAddr>,
    failure: Option<String>,
    /// Datagrams for peers whose permission is still being created: sent once it is (ICE's
    /// first checks would otherwise wait for a retransmission).
    waiting: Vec<(SocketAddr, Vec<u8>)>,
}

/// Datagrams held for permissions in the making, at most.
const WAITING_MAX: usize = 64;

impl Allocation {
    /// Starts allocating on `server` from the socket bound at `local`; [`poll`](Self::poll)
    /// makes the requests.
    pub fn start(local: SocketAddr, server: SocketAddr, username: &str, password: &str) -> Self {
        let config = TurnConfig::new(TurnCredentials::new(username, password));
        Allocation {
            client: TurnClientUdp::allocate(local, server, config),
            base: std::time::Instant::now(),
            server,
            relayed: None,
            failure: None,
            waiting: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        Instant::from_std(self.base)
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed address once the server granted the allocation.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }

    /// Why the server would not allocate, in words.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Puts what must go to the server now into `out`; returns when to call again (`None`:
    /// the allocation is closed).
    pub fn poll(&mut self, out: &mut Vec<(Vec<u8>, SocketAddr)>) -> Option<std::time::Instant> {
        let now = self.now();
        let wait = match self.client.poll(now) {
            TurnPollRet::WaitUntil(at) => Some(at.to_std(self.base)),
            TurnPollRet::Closed => None,
            // Only TCP allocations ask for these.
            _ => Some(std::time::Instant::now() + std::time::Duration::from_millis(50)),
        };
        while let Some(event) = self.client.poll_event() {
            match event {
                TurnEvent::AllocationCreated(_, relayed) => self.relayed = Some(relayed),
                TurnEvent::AllocationCreateFailed(_) => {
                    self.failure = Some(format!(
                        "the TURN server {} refused the allocation (check its username and \
                         credential)",
                        self.server
                    ))
                }
                TurnEvent::PermissionCreated(_, peer) => {
                    let (ready, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
                        .into_iter()
                        .partition(|(to, _)| to.ip() == peer);
                    self.waiting = rest;
                    for (to, data) in ready {
                        if let Some(datagram) = self.wrap(to, &data) {
                            out.push(datagram);
                        }
                    }
                }
                TurnEvent::PermissionCreateFailed(_, peer) => {
                    self.waiting.retain(|(to, _)| to.ip() != peer);
                    tracing::warn!(server = %self.server, %peer, "the TURN server refused a permission")
                }
                _ => {}
            }
        }
        while let Some(t) = self.client.poll_transmit(now) {
            out.push((t.data.to_vec(), t.to));
        }
        wait
    }

    /// A datagram that arrived on the socket at `to` from `from`.
    pub fn recv(&mut self, data: &[u8], from: SocketAddr, to: SocketAddr) -> Received {
        let now = self.now();
        match self
            .client
            .recv(Transmit::new(data, TransportType::Udp, from, to), now)
        {
            TurnRecvRet::Ignored(_) => Received::NotTurn,
            TurnRecvRet::Handled | TurnRecvRet::PeerIcmp { .. } => Received::Handled,
            TurnRecvRet::PeerData(peer) => Received::Peer {
                from: peer.peer,
                data: peer.data().to_vec(),
            },
        }
    }

    pub fn permitted(&self, peer: IpAddr) -> bool {
        self.client.have_permission(TransportType::Udp, peer)
    }

    /// Lets `peer` send to and receive from the relayed address (idempotent).
    pub fn permit(&mut self, peer: IpAddr) {
        let now = self.now();
        if !self.client.have_permission(TransportType::Udp, peer) {
            let _ = self.client.create_permission(TransportType::Udp, peer, now);
        }
    }

    /// What to put on the socket to send `data` to `to` through the relay. `None` while the
    /// peer's permission is being created: the datagram waits and leaves with a later
    /// [`poll`](Self::poll).
    pub fn send(&mut self, to: SocketAddr, data: &[u8]) -> Option<(Vec<u8>, SocketAddr)> {
        if !self.client.have_permission(TransportType::Udp, to.ip()) {
            // A peer first seen now (peer-reflexive) gets its permission too.
            self.permit(to.ip());
            if self.waiting.len() < WAITING_MAX {
                self.waiting.push((to, data.to_vec()));
            }
            return None;
        }
        self.wrap(to, data)
    }

    fn wrap(&mut self, to: SocketAddr, data: &[u8]) -> Option<(Vec<u8>, SocketAddr)> {
        let now = self.now();
        let built = self
            .client
            .send_to(TransportType::Udp, to, data, now)
            .ok()??
            .build();
        Some((built.data, built.to))
    }

    /// Releases the allocation; [`poll`](Self::poll) sends the request.
    pub fn close(&mut self) {
        let now = self.now();
        let _ = self.client.delete(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls_are_parsed_and_unsupported_ones_say_why() {
        let ok = |u: &str| parse_turn_url(u).unwrap();
        assert_eq!(
            ok("turn:turn.example.com"),
            TurnUrl {
                host: "turn.example.com".into(),
                port: 3478
            }
        );
        assert_eq!(ok("TURN:10.0.0.1:3479?transport=udp").port, 3479);
        assert_eq!(ok("turn:[2001:db8::1]:5000").host, "2001:db8::1");
        let err = |u: &str| parse_turn_url(u).unwrap_err();
        assert!(err("turns:t.example.com").contains("TLS"));
        assert!(err("turn:t.example.com?transport=tcp").contains("only udp"));
        assert!(err("turn:t.example.com:0").contains("bad port"));
        assert!(err("turn::3478").contains("no host"));
        assert!(err("stun:s.example.com").contains("not a turn: URL"));
        assert!(err("turn:t?x=1").contains("unknown parameter"));
    }
}
