//! The live relay: WHIP (RFC 9725) signalling over HTTPS and one WebRTC send-only video
//! stream per session, built on str0m (sans-IO WebRTC, RustCrypto DTLS and SRTP).
//!
//! A session POSTs an SDP offer with the consumer's bearer token, takes the 201's answer and
//! its `Location` (the session resource, DELETEd to end), then pushes H.264 access units as
//! they leave the encoder. The relay only ever reads an anonymized encode: it takes frames
//! from a [`FrameFeed`], which the daemon builds from a privacy-stage output and nothing else.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::turn::{Allocation, Received};
use tokio::sync::{mpsc, watch};
use veil_core::{Error, ErrorKind};

/// An encoded picture ready to send.
#[derive(Debug, Clone)]
pub struct LiveFrame {
    /// One H.264 access unit, Annex B.
    pub data: Arc<[u8]>,
    pub keyframe: bool,
    /// Capture time on the monotonic clock (sets the RTP timestamp).
    pub capture_mono: Duration,
}

/// Why a feed has no more frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEnd {
    /// The relay fell behind; frames were skipped (the next keyframe resynchronizes).
    Lagged,
    /// The camera's encode stopped.
    Closed,
}

/// Where a relay takes its frames: an anonymized encode of one camera and filter.
pub trait FrameFeed: Send + 'static {
    fn next(&mut self) -> impl Future<Output = Result<LiveFrame, FeedEnd>> + Send;
    /// The viewer lost a picture or just joined: ask the encoder for a keyframe.
    fn request_keyframe(&self);
}

/// The feed of an anonymized encode: a subscription to a pipeline's (or a branch's) output
/// and its keyframe trigger.
pub struct EncodeFeed {
    rx: tokio::sync::broadcast::Receiver<veil_media::h264::EncodedFrame>,
    keyframe: veil_media::pipeline::KeyframeTrigger,
}

impl EncodeFeed {
    pub fn new(
        rx: tokio::sync::broadcast::Receiver<veil_media::h264::EncodedFrame>,
        keyframe: veil_media::pipeline::KeyframeTrigger,
    ) -> EncodeFeed {
        EncodeFeed { rx, keyframe }
    }
}

impl FrameFeed for EncodeFeed {
    async fn next(&mut self) -> Result<LiveFrame, FeedEnd> {
        use tokio::sync::broadcast::error::RecvError;
        match self.rx.recv().await {
            Ok(f) => Ok(LiveFrame {
                data: f.data,
                keyframe: f.keyframe,
                capture_mono: f.meta.capture_mono,
            }),
            Err(RecvError::Lagged(_)) => Err(FeedEnd::Lagged),
            Err(RecvError::Closed) => Err(FeedEnd::Closed),
        }
    }

    fn request_keyframe(&self) {
        self.keyframe.fire();
    }
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The WHIP endpoint (http or https).
    pub endpoint: String,
    pub token: String,
    /// Longest wait for the WebRTC connection (ICE and DTLS) after the answer.
    pub connect_timeout: Duration,
    /// Longest gap between frames before the session fails.
    pub frame_gap: Duration,
    /// Trusts this PEM bundle for the endpoint instead of the web PKI (a private ingest).
    pub ca_pem: Option<Vec<u8>>,
    /// ICE servers to gather through before the offer (from `live.start`): `turn:` URLs get
    /// an allocation whose relayed address is offered; others are not used.
    pub ice_servers: Vec<IceServer>,
    /// Offer only relayed candidates: the viewer never learns the device's own address.
    pub relay_only: bool,
}

impl RelaySettings {
    pub fn new(endpoint: impl Into<String>, token: impl Into<String>) -> RelaySettings {
        RelaySettings {
            endpoint: endpoint.into(),
            token: token.into(),
            connect_timeout: Duration::from_secs(10),
            frame_gap: Duration::from_secs(10),
            ca_pem: None,
            ice_servers: Vec::new(),
            relay_only: false,
        }
    }
}

/// What a relay reports, in order: `Answered`, `FirstFrame`, any number of `Sent`, then one
/// `Ended` (ok) or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayEvent {
    /// The endpoint accepted the offer.
    Answered {
        ice_servers: Vec<IceServer>,
    },
    /// The first frame left for the viewer.
    FirstFrame,
    /// Bytes on the wire so far (RTP, RTCP, ICE, DTLS).
    Sent {
        bytes: u64,
    },
    /// Stopped on request; the resource was deleted.
    Ended {
        bytes: u64,
    },
    Failed {
        reason: String,
        bytes: u64,
    },
}

/// An ICE server: offered by the endpoint in a `Link: <...>; rel="ice-server"` header, or
/// named in `live.start`.
#[derive(Clone, PartialEq, Eq)]
pub struct IceServer {
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

/// Without the credential: events and logs show servers.
impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("credential", &self.credential.as_ref().map(|_| "***"))
            .finish()
    }
}

/// How long a TURN server has to grant an allocation before the offer goes without it.
const TURN_WAIT: Duration = Duration::from_secs(5);
/// How long after allocating the offer waits for the endpoint's own address to be permitted
/// (best effort: other peers are permitted from the answer).
const EARLY_PERMIT_WAIT: Duration = Duration::from_millis(500);

/// The first usable `turn:` server, resolved, with its credentials.
async fn turn_server(
    settings: &RelaySettings,
) -> Result<Option<(SocketAddr, String, String)>, String> {
    let mut why = Vec::new();
    for server in &settings.ice_servers {
        let url = match crate::turn::parse_turn_url(&server.url) {
            Ok(url) => url,
            Err(e) => {
                why.push(e);
                continue;
            }
        };
        let (Some(user), Some(pass)) = (&server.username, &server.credential) else {
            why.push(format!(
                "{}: a TURN server needs a username and a credential",
                server.url
            ));
            continue;
        };
        match tokio::net::lookup_host((url.host.as_str(), url.port)).await {
            Ok(mut addrs) => match addrs.find(|a| a.is_ipv4()) {
                Some(addr) => return Ok(Some((addr, user.clone(), pass.clone()))),
                None => why.push(format!("{}: no IPv4 address", server.url)),
            },
            Err(e) => why.push(format!("{}: cannot resolve {}: {e}", server.url, url.host)),
        }
    }
    if settings.relay_only {
        return Err(if why.is_empty() {
            "relay-only was asked for, but no turn: server was given".to_string()
        } else {
            format!(
                "relay-only was asked for, but no TURN server is usable: {}",
                why.join("; ")
            )
        });
    }
    if !why.is_empty() {
        tracing::warn!(servers = %why.join("; "), "live relay: ICE servers not used");
    }
    Ok(None)
}

/// Runs the allocation until the server grants it, refuses it, or [`TURN_WAIT`] passes; then,
/// briefly, until `early_peer` is permitted.
async fn allocate(
    socket: &UdpSocket,
    turn: &mut Allocation,
    local: SocketAddr,
    early_peer: std::net::IpAddr,
) -> Result<SocketAddr, String> {
    let started = Instant::now();
    let deadline = started + TURN_WAIT;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2000];
    let mut answered = false;
    loop {
        let next = turn.poll(&mut out);
        for (data, to) in out.drain(..) {
            let _ = socket.send_to(&data, to).await;
        }
        if let Some(relayed) = turn.relayed() {
            // Ingests often send media from their HTTP address: with its permission in place
            // before the offer, the viewer's first checks get through instead of waiting for
            // a retransmission (half a second with aiortc).
            turn.permit(early_peer);
            if turn.permitted(early_peer) || started.elapsed() >= EARLY_PERMIT_WAIT {
                return Ok(relayed);
            }
        }
        if let Some(why) = turn.failure() {
            return Err(why.to_string());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(if answered {
                format!(
                    "the TURN server {} answered but granted no allocation within {} s \
                     (check its username and credential)",
                    turn.server(),
                    TURN_WAIT.as_secs()
                )
            } else {
                format!(
                    "the TURN server {} did not answer within {} s",
                    turn.server(),
                    TURN_WAIT.as_secs()
                )
            });
        }
        let wait = next
            .unwrap_or(deadline)
            .min(deadline)
            .saturating_duration_since(now);
        if let Ok(Ok((n, from))) = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
            answered |= turn.recv(&buf[..n], from, local) == Received::Handled;
        }
    }
}

/// The IP addresses of the candidates in an SDP (the peers a TURN allocation must permit).
fn candidate_ips(sdp: &str) -> Vec<std::net::IpAddr> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|c| c.split_whitespace().nth(4)?.parse().ok())
        .collect()
}

/// The ICE servers in one or more `Link` header values (RFC 9725 section 4.4, RFC 8288).
pub fn ice_servers(link_values: &[&str]) -> Vec<IceServer> {
    let mut out = Vec::new();
    for value in link_values {
        for link in split_outside_quotes(value, ',') {
            let mut parts = split_outside_quotes(&link, ';').into_iter();
            let Some(target) = parts.next() else {
                continue;
            };
            let target = target.trim();
            let Some(url) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
                continue;
            };
            let mut rel_ice = false;
            let (mut username, mut credential) = (None, None);
            for param in parts {
                let Some((k, v)) = param.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"').to_string();
                match k.trim().to_ascii_lowercase().as_str() {
                    "rel" => rel_ice = v.split_whitespace().any(|r| r == "ice-server"),
                    "username" => username = Some(v),
                    "credential" => credential = Some(v),
                    _ => {}
                }
            }
            let scheme_ok = ["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|s| url.to_ascii_lowercase().starts_with(s));
            if rel_ice && scheme_ok {
                out.push(IceServer {
                    url: url.to_string(),
                    username,
                    credential,
                });
            }
        }
    }
    out
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let (mut parts, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c == sep && !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

/// The endpoint's answer to an offer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub sdp: String,
    /// The session resource to DELETE at the end.
    pub resource: Option<url::Url>,
    pub ice_servers: Vec<IceServer>,
}

fn agent(settings: &RelaySettings) -> Result<ureq::Agent, Error> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)));
    if let Some(pem) = &settings.ca_pem {
        let certs: Vec<_> = ureq::tls::parse_pem(pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(Error::invalid_input(
                "live: the endpoint's CA bundle holds no certificate",
            ));
        }
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::from(certs))
                .build(),
        );
    }
    Ok(config.build().into())
}

/// Checks an endpoint URL before anything is sent to it.
pub fn check_endpoint(endpoint: &str) -> Result<url::Url, Error> {
    let url = url::Url::parse(endpoint).map_err(|e| {
        Error::invalid_input(format!(
            "field 'endpoint': not a URL ({e}): '{}'",
            veil_core::redact::redact_url(endpoint)
        ))
    })?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(Error::invalid_input(format!(
            "field 'endpoint': must be an http(s) URL with a host, found '{}'",
            veil_core::redact::redact_url(endpoint)
        )));
    }
    Ok(url)
}

/// POSTs the offer (blocking): the answer, or why the endpoint would not take it.
pub fn post_offer(settings: &RelaySettings, offer: &str) -> Result<Answer, Error> {
    let url = check_endpoint(&settings.endpoint)?;
    let mut response = agent(settings)?
        .post(url.as_str())
        .header("Authorization", &format!("Bearer {}", settings.token))
        .content_type("application/sdp")
        .send(offer)
        .map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                veil_core::redact::redact_url_in(
                    &format!("cannot reach the live endpoint {url}: {e}"),
                    url.as_str(),
                ),
            )
        })?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(256 * 1024)
        .read_to_string()
        .unwrap_or_default();
    match status {
        201 | 200 => {}
        401 | 403 => {
            return Err(Error::new(
                ErrorKind::Unauthenticated,
                format!("the live endpoint refused the bearer token ({status})"),
            ));
        }
        s => {
            let detail: String = body.chars().take(200).collect();
            return Err(Error::new(
                if s >= 500 {
                    ErrorKind::Unavailable
                } else {
                    ErrorKind::InvalidInput
                },
                format!("the live endpoint answered {s} to the offer: {detail}"),
            ));
        }
    }
    if !body.starts_with("v=0") {
        return Err(Error::new(
            ErrorKind::Unavailable,
            "the live endpoint's answer is not an SDP document",
        ));
    }
    let resource = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .and_then(|l| url.join(l).ok());
    let links: Vec<&str> = response
        .headers()
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    Ok(Answer {
        sdp: body,
        resource,
        ice_servers: ice_servers(&links),
    })
}

/// Ends the session at the endpoint (blocking, best effort).
pub fn delete_resource(settings: &RelaySettings, resource: &url::Url) {
    let Ok(agent) = agent(settings) else {
        return;
    };
    let outcome = agent
        .delete(resource.as_str())
        .header("Authorization", &format!("Bearer {}", settings.token))
        .call();
    if let Err(e) = outcome {
        let resource = veil_core::redact::redact_url(resource.as_str());
        tracing::debug!(error = %e, %resource, "could not delete the live session resource");
    }
}

/// The local address that routes to the endpoint's host (the host candidate to offer), and
/// the endpoint's own address.
fn route_to(endpoint: &url::Url) -> Result<(std::net::IpAddr, std::net::IpAddr), Error> {
    let port = endpoint.port_or_known_default().unwrap_or(443);
    let host = endpoint.host_str().unwrap_or_default();
    let remote = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("cannot resolve the live endpoint's host '{host}'"),
            )
        })?;
    let any: SocketAddr = if remote.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let probe = StdUdpSocket::bind(any)
        .and_then(|s| s.connect(remote).map(|_| s))
        .and_then(|s| s.local_addr())
        .map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("no route to the live endpoint {remote}: {e}"),
            )
        })?;
    Ok((probe.ip(), remote.ip()))
}

/// One session's WebRTC side: offer, answer, run. Returns when `stop` turns true or the
/// session fails; the last event says which.
pub async fn relay<F: FrameFeed>(
    settings: RelaySettings,
    mut feed: F,
    events: mpsc::UnboundedSender<RelayEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut bytes = 0u64;
    let outcome = run(&settings, &mut feed, &events, &mut stop, &mut bytes).await;
    let (ended, resource) = match outcome {
        Ok(resource) => (RelayEvent::Ended { bytes }, resource),
        Err((reason, resource)) => {
            // The endpoint's query may carry a credential: it never reaches an event or a log.
            let reason = veil_core::redact::redact_url_in(&reason, &settings.endpoint);
            (RelayEvent::Failed { reason, bytes }, resource)
        }
    };
    // A failed session is reported (and its bill closed) at once: the endpoint is often the
    // part that failed, and deleting its resource may wait out a timeout. A session that was
    // stopped releases the resource first, so "ended" means nothing is left on either side.
    if matches!(ended, RelayEvent::Failed { .. }) {
        let _ = events.send(ended);
        release(&settings, resource).await;
    } else {
        release(&settings, resource).await;
        let _ = events.send(ended);
    }
}

/// Deletes the session's resource at the endpoint, if it made one.
async fn release(settings: &RelaySettings, resource: Option<url::Url>) {
    if let Some(resource) = resource {
        let settings = settings.clone();
        let _ = tokio::task::spawn_blocking(move || delete_resource(&settings, &resource)).await;
    }
}

type Outcome = Result<Option<url::Url>, (String, Option<url::Url>)>;

/// Longest wait between ICE consent checks (STUN binding requests) on the connected pair.
const CONSENT_CHECK_EVERY: Duration = Duration::from_secs(1);
/// A connected consumer heard from for this long is taken as gone. ICE alone notices only
/// after about 24 s (it trusts the peer's own checks for 15 s), billing it all along.
const CONSUMER_SILENCE: Duration = Duration::from_secs(5);
/// The loop comes round at least this often; a longer gap means this process was stalled.
const LOOP_AT_LEAST_EVERY: Duration = Duration::from_millis(500);

async fn run<F: FrameFeed>(
    settings: &RelaySettings,
    feed: &mut F,
    events: &mpsc::UnboundedSender<RelayEvent>,
    stop: &mut watch::Receiver<bool>,
    bytes: &mut u64,
) -> Outcome {
    let endpoint = check_endpoint(&settings.endpoint).map_err(|e| (e.to_string(), None))?;
    let (ip, endpoint_ip) = route_to(&endpoint).map_err(|e| (e.to_string(), None))?;
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
        .await
        .map_err(|e| (format!("cannot open a UDP socket on {ip}: {e}"), None))?;
    let local = socket
        .local_addr()
        .map_err(|e| (format!("UDP socket has no address: {e}"), None))?;

    let mut config = Rtc::builder().clear_codecs().enable_h264(true);
    // A consent check every second: a consumer that is there answers at least that often.
    config.set_max_stun_rto(CONSENT_CHECK_EVERY);
    let mut rtc = config.build(Instant::now());
    // A relayed candidate first, if a TURN server is given: the offer carries every candidate.
    let mut turn = match turn_server(settings).await.map_err(|e| (e, None))? {
        Some((server, user, pass)) => {
            let mut allocation = Allocation::start(local, server, &user, &pass);
            match allocate(&socket, &mut allocation, local, endpoint_ip).await {
                Ok(relayed) => {
                    let candidate = Candidate::relayed(relayed, local, "udp")
                        .map_err(|e| (format!("bad relayed candidate: {e}"), None))?;
                    rtc.add_local_candidate(candidate);
                    Some((allocation, relayed))
                }
                Err(why) if settings.relay_only => return Err((why, None)),
                Err(why) => {
                    tracing::warn!(%why, "live relay: going without the TURN server");
                    None
                }
            }
        }
        None => None,
    };
    if !settings.relay_only {
        let candidate = Candidate::host(local, "udp")
            .map_err(|e| (format!("bad host candidate: {e}"), None))?;
        rtc.add_local_candidate(candidate);
    }
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = change
        .apply()
        .ok_or_else(|| ("no SDP offer was made".to_string(), None))?;
    let offer_sdp = offer.to_sdp_string();

    let answer = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || post_offer(&settings, &offer_sdp))
            .await
            .map_err(|_| ("the signalling task crashed".to_string(), None))?
            .map_err(|e| (e.to_string(), None))?
    };
    let resource = answer.resource.clone();
    let fail = |reason: String| (reason, resource.clone());
    let _ = events.send(RelayEvent::Answered {
        ice_servers: answer.ice_servers.clone(),
    });
    let sdp = str0m::change::SdpAnswer::from_sdp_string(&answer.sdp)
        .map_err(|e| fail(format!("the live endpoint's SDP answer is invalid: {e}")))?;
    rtc.sdp_api()
        .accept_answer(pending, sdp)
        .map_err(|e| fail(format!("the live endpoint's SDP answer does not fit: {e}")))?;
    if let Some((allocation, _)) = &mut turn {
        for ip in candidate_ips(&answer.sdp) {
            allocation.permit(ip);
        }
    }
    let mut turn_out = Vec::new();

    let started = Instant::now();
    let mut state = Flow::default();
    let mut buf = vec![0u8; 2000];
    let mut last_report = Instant::now();
    let mut last_frame = Instant::now();
    let mut last_heard = Instant::now();
    let mut last_turn = Instant::now();
    loop {
        // Time this process did not run (a loaded or stalled device) is not the consumer's
        // silence: what it sent meanwhile waits in the socket, unread.
        let now = Instant::now();
        last_heard += now
            .saturating_duration_since(last_turn)
            .saturating_sub(LOOP_AT_LEAST_EVERY);
        last_turn = now;
        // Drain until the engine wants time to pass.
        let deadline = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    *bytes += t.contents.len() as u64;
                    match &mut turn {
                        Some((allocation, relayed)) if t.source == *relayed => {
                            // ICE may try a peer before its permission is in place: it retries.
                            if let Some((data, to)) = allocation.send(t.destination, &t.contents) {
                                let _ = socket.send_to(&data, to).await;
                            }
                        }
                        _ => {
                            let _ = socket.send_to(&t.contents, t.destination).await;
                        }
                    }
                }
                Ok(Output::Event(e)) => state.on_event(e, feed).map_err(fail)?,
                Err(e) => return Err(fail(format!("WebRTC failed: {e}"))),
            }
        };
        let mut deadline = deadline;
        if let Some((allocation, _)) = &mut turn {
            // Refreshes of the allocation and its permissions.
            if let Some(next) = allocation.poll(&mut turn_out) {
                deadline = deadline.min(next);
            }
            for (data, to) in turn_out.drain(..) {
                let _ = socket.send_to(&data, to).await;
            }
        }
        if !rtc.is_alive() {
            return Err(fail("the WebRTC session closed".into()));
        }
        if !state.connected && started.elapsed() > settings.connect_timeout {
            return Err(fail(format!(
                "no WebRTC connection with the live endpoint within {} s (ICE or DTLS failed)",
                settings.connect_timeout.as_secs()
            )));
        }
        if state.connected && last_heard.elapsed() > CONSUMER_SILENCE {
            return Err(fail(format!(
                "the live endpoint stopped answering: nothing heard from it for {} s",
                CONSUMER_SILENCE.as_secs()
            )));
        }
        if last_frame.elapsed() > settings.frame_gap {
            return Err(fail(format!(
                "the camera delivered no frame for {} s",
                settings.frame_gap.as_secs()
            )));
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let _ = events.send(RelayEvent::Sent { bytes: *bytes });
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(LOOP_AT_LEAST_EVERY);
        tokio::select! {
            _ = stop.changed() => {
                rtc.disconnect();
                if let Some((allocation, _)) = &mut turn {
                    allocation.close();
                    allocation.poll(&mut turn_out);
                    for (data, to) in turn_out.drain(..) {
                        let _ = socket.send_to(&data, to).await;
                    }
                }
                return Ok(resource);
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                let relayed_in;
                let (source, destination, data) = match &mut turn {
                    Some((allocation, relayed)) => match allocation.recv(&buf[..n], source, local) {
                        Received::NotTurn => (source, local, &buf[..n]),
                        Received::Handled => continue,
                        Received::Peer { from, data } => {
                            relayed_in = data;
                            (from, *relayed, &relayed_in[..])
                        }
                    },
                    None => (source, local, &buf[..n]),
                };
                let Ok(contents) = data.try_into() else { continue };
                last_heard = Instant::now();
                let input = Input::Receive(
                    Instant::now(),
                    Receive { proto: Protocol::Udp, source, destination, contents },
                );
                if rtc.accepts(&input) {
                    rtc.handle_input(input).map_err(|e| fail(format!("WebRTC failed: {e}")))?;
                }
            }
            frame = feed.next() => match frame {
                Ok(frame) => {
                    last_frame = Instant::now();
                    if state.write(&mut rtc, mid, &frame).map_err(fail)? {
                        let _ = events.send(RelayEvent::FirstFrame);
                    }
                    if state.waiting_for_keyframe {
                        feed.request_keyframe();
                    }
                }
                Err(FeedEnd::Lagged) => {
                    state.waiting_for_keyframe = true;
                    feed.request_keyframe();
                }
                Err(FeedEnd::Closed) => return Err(fail("the camera stopped".into())),
            },
            _ = tokio::time::sleep(wait) => {
                rtc.handle_input(Input::Timeout(Instant::now()))
                    .map_err(|e| fail(format!("WebRTC failed: {e}")))?;
            }
        }
    }
}

/// What the relay knows of the stream it sends.
#[derive(Default)]
struct Flow {
    connected: bool,
    /// Until a keyframe is sent, P-frames would only show as garbage.
    waiting_for_keyframe: bool,
    frames_sent: u64,
}

impl Flow {
    fn on_event<F: FrameFeed>(&mut self, event: Event, feed: &F) -> Result<(), String> {
        match event {
            Event::Connected => {
                self.connected = true;
                self.waiting_for_keyframe = true;
                feed.request_keyframe();
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                return Err("the live endpoint stopped answering (ICE disconnected)".into());
            }
            Event::KeyframeRequest(_) => feed.request_keyframe(),
            _ => {}
        }
        Ok(())
    }

    /// Sends a frame once connected; true for the session's first frame.
    fn write(&mut self, rtc: &mut Rtc, mid: Mid, frame: &LiveFrame) -> Result<bool, String> {
        if !self.connected || (self.waiting_for_keyframe && !frame.keyframe) {
            return Ok(false);
        }
        self.waiting_for_keyframe = false;
        let writer = rtc
            .writer(mid)
            .ok_or_else(|| "the video stream was not negotiated".to_string())?;
        let pt = writer
            .payload_params()
            .next()
            .map(|p| p.pt())
            .ok_or_else(|| "the live endpoint accepts no H.264".to_string())?;
        let rtp_time = MediaTime::from_90khz(frame.capture_mono.as_micros() as u64 * 9 / 100);
        writer
            .write(pt, Instant::now(), rtp_time, frame.data.clone())
            .map_err(|e| format!("cannot send a frame: {e}"))?;
        self.frames_sent += 1;
        Ok(self.frames_sent == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_name_the_ice_servers() {
        let links = [
            r#"<stun:stun.example.net>; rel="ice-server""#,
            r#"<turn:turn.example.net?transport=udp>; rel="ice-server"; username="user"; credential="my,pass"; credential-type="password", <https://example.net/x>; rel="next""#,
        ];
        let servers = ice_servers(&links);
        assert_eq!(servers.len(), 2, "{servers:?}");
        assert_eq!(servers[0].url, "stun:stun.example.net");
        assert_eq!(servers[1].url, "turn:turn.example.net?transport=udp");
        assert_eq!(servers[1].username.as_deref(), Some("user"));
        assert_eq!(servers[1].credential.as_deref(), Some("my,pass"));
        assert!(ice_servers(&["<http://x>; rel=\"ice-server\"", "garbage", ""]).is_empty());
    }

    #[test]
    fn a_failure_never_shows_the_endpoints_query_or_password() {
        // A port nothing listens on: the connection is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("http://user:pw-s3cret@127.0.0.1:{port}/whip?token=q-s3cret");
        let e = post_offer(&RelaySettings::new(endpoint, "t"), "v=0").unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains(&format!("127.0.0.1:{port}/whip?***")),
            "{text}"
        );
        let e = check_endpoint("ftp://h/x?token=s3cret")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn endpoints_are_checked_before_anything_is_sent() {
        assert!(check_endpoint("https://ingest.example/whip").is_ok());
        for bad in [
            "ftp://x/whip",
            "not a url",
            "https://",
            "file:///etc/passwd",
        ] {
            let e = check_endpoint(bad).unwrap_err();
            assert!(e.to_string().contains("endpoint"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_offer_is_a_send_only_h264_video_offer() {
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_h264(true)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host("127.0.0.2:5000".parse().unwrap(), "udp").unwrap());
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, _) = change.apply().unwrap();
        let sdp = offer.to_sdp_string();
        assert!(sdp.contains("m=video"), "{sdp}");
        assert!(sdp.contains("a=sendonly"), "{sdp}");
        assert!(sdp.contains("H264/90000"), "{sdp}");
        assert!(!sdp.contains("VP8"), "{sdp}");
        assert!(sdp.contains("127.0.0.2 5000"), "{sdp}");
    }
}
