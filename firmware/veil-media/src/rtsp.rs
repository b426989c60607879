//! IP cameras over RTSP (the `retina` client), H.264 over RTP, decoded with openh264.
//!
//! The source runs on the camera's capture thread with a small single-threaded async runtime
//! of its own: a stalled or misbehaving camera cannot hold up anything else.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions,
    Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat};
use veil_core::{Clock, Error, ErrorKind};

use crate::frame::{FrameMeta, PooledFrame};
use crate::h264::Openh264Decoder;
use crate::source::Source;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtspTransport {
    /// RTP interleaved on the RTSP connection: passes NAT and firewalls, the default.
    Tcp,
    /// RTP over UDP: lower overhead on a clean LAN.
    Udp,
}

#[derive(Clone)]
pub struct RtspOptions {
    /// `rtsp://host[:port]/path`; credentials in the URL are taken out and used for auth.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub transport: RtspTransport,
    /// No picture for this long means the camera is gone.
    pub stall_timeout: Duration,
    /// Frame rate to assume when the camera's SDP does not say.
    pub fps_hint: u32,
}

impl std::fmt::Debug for RtspOptions {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspOptions")
            .field("url", &redact(&self.url))
            .field("username", &self.username)
            .field("transport", &self.transport)
            .finish()
    }
}

/// The URL without its password or query, for logs and errors.
pub fn redact(url: &str) -> String {
    veil_core::redact::redact_url(url)
}

pub struct RtspSource {
    /// `None` only while dropping.
    stream: Option<Pin<Box<Demuxed>>>,
    runtime: tokio::runtime::Runtime,
    decoder: Openh264Decoder,
    clock: Arc<dyn Clock>,
    seq: u64,
    fps: u32,
    shown_url: String,
    stall_timeout: Duration,
}

fn unavailable(url: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unavailable, format!("{url}: {what}: {e}"))
}

impl RtspSource {
    /// Connects, picks the H.264 video stream, and starts playing.
    pub fn open(options: &RtspOptions, clock: Arc<dyn Clock>) -> Result<RtspSource, Error> {
        let shown_url = redact(&options.url);
        let mut url = url::Url::parse(&options.url)
            .map_err(|e| Error::invalid_input(format!("{shown_url}: not a URL: {e}")))?;
        if url.scheme() != "rtsp" {
            return Err(Error::invalid_input(format!(
                "{shown_url}: the URL must start with rtsp://"
            )));
        }
        let mut username = options.username.clone();
        let mut password = options.password.clone();
        if !url.username().is_empty() {
            username.get_or_insert_with(|| percent_decode(url.username()));
            password.get_or_insert_with(|| url.password().map(percent_decode).unwrap_or_default());
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        let creds = username.map(|username| Credentials {
            username,
            password: password.unwrap_or_default(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::wrap(ErrorKind::Internal, "RTSP runtime", e))?;
        let transport = match options.transport {
            RtspTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
            RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
        };
        let timeout = options.stall_timeout;
        // The RTSP and SDP parsers below assert on some malformed answers: a camera's bad
        // answer must be an error for this camera, not a panic of its thread.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(async {
            let session_options = SessionOptions::default().creds(creds).user_agent(format!("veil/{}", env!("CARGO_PKG_VERSION")));
            let mut session = tokio::time::timeout(timeout, Session::describe(url, session_options))
                .await
                .map_err(|_| unavailable(&shown_url, "no answer to DESCRIBE", format!("timed out after {timeout:?}")))?
                .map_err(|e| describe_error(&shown_url, e))?;
            let (index, fps) = session
                .streams()
                .iter()
                .enumerate()
                .find(|(_, s)| s.media() == "video" && s.encoding_name().eq_ignore_ascii_case("h264"))
                .map(|(i, s)| (i, s.framerate()))
                .ok_or_else(|| {
                    Error::invalid_input(format!("{shown_url}: the camera offers no H.264 video stream (H.265 and MJPEG are not supported yet)"))
                })?;
            let setup = SetupOptions::default().transport(transport).frame_format(FrameFormat::SIMPLE);
            session.setup(index, setup).await.map_err(|e| unavailable(&shown_url, "SETUP failed", e))?;
            let playing = session.play(PlayOptions::default()).await.map_err(|e| unavailable(&shown_url, "PLAY failed", e))?;
            let demuxed = playing.demuxed().map_err(|e| unavailable(&shown_url, "demuxing", e))?;
            Ok::<_, Error>((Box::pin(demuxed), fps))
        })
        }));
        let (stream, fps) = opened.map_err(|_| {
            Error::invalid_input(format!(
                "{shown_url}: the camera's answer (its session description) is malformed and \
                 cannot be read"
            ))
        })??;
        Ok(RtspSource {
            runtime,
            stream: Some(stream),
            decoder: Openh264Decoder::new()?,
            clock,
            seq: 0,
            fps: fps
                .map(|f| f.round() as u32)
                .filter(|f| (1..=120).contains(f))
                .unwrap_or(options.fps_hint.max(1)),
            shown_url,
            stall_timeout: timeout,
        })
    }
}

fn describe_error(url: &str, e: retina::Error) -> Error {
    let text = e.to_string();
    // The status of the camera's answer, not a "401" anywhere in its text (a length, an id).
    if e.status_code() == Some(401) {
        Error::new(
            ErrorKind::Unauthenticated,
            format!("{url}: the camera refused the credentials (401 Unauthorized)"),
        )
    } else {
        unavailable(url, "DESCRIBE failed", text)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Drop for RtspSource {
    /// The session's teardown needs the runtime it was made on.
    fn drop(&mut self) {
        let _in_runtime = self.runtime.enter();
        self.stream.take();
    }
}

impl Source for RtspSource {
    fn next_frame(&mut self) -> Result<Option<PooledFrame>, Error> {
        loop {
            let stream = self.stream.as_mut().expect("present until drop");
            let stall = self.stall_timeout;
            let item = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.runtime
                    .block_on(async { tokio::time::timeout(stall, stream.next()).await })
            }))
            .map_err(|_| {
                unavailable(
                    &self.shown_url,
                    "stream failed",
                    "the camera sent data that cannot be read",
                )
            })?
            .map_err(|_| {
                unavailable(
                    &self.shown_url,
                    "no video",
                    format!("nothing received for {:?}", self.stall_timeout),
                )
            })?;
            let item = match item {
                Some(Ok(item)) => item,
                Some(Err(e)) => return Err(unavailable(&self.shown_url, "stream failed", e)),
                None => {
                    return Err(unavailable(
                        &self.shown_url,
                        "stream ended",
                        "the camera closed the session",
                    ));
                }
            };
            let CodecItem::VideoFrame(frame) = item else {
                continue;
            };
            let Some(mut picture) = self
                .decoder
                .decode(frame.data())
                .map_err(|e| e.context(self.shown_url.clone()))?
            else {
                continue;
            };
            picture.meta = FrameMeta::captured_now(self.seq, &*self.clock);
            self.seq += 1;
            return Ok(Some(picture));
        }
    }

    fn fps(&self) -> u32 {
        self.fps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("rtsp://admin:s3cret@10.0.0.5:554/h264"),
            "rtsp://admin:***@10.0.0.5:554/h264"
        );
        assert_eq!(redact("rtsp://10.0.0.5/h264"), "rtsp://10.0.0.5/h264");
        let o = RtspOptions {
            url: "rtsp://a:b@h/x".into(),
            username: None,
            password: Some("hunter2".into()),
            transport: RtspTransport::Tcp,
            stall_timeout: Duration::from_secs(1),
            fps_hint: 25,
        };
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains(":b@"),
            "{shown}"
        );
    }

    #[test]
    fn percent_encoded_credentials_decode() {
        assert_eq!(percent_decode("p%40ss%3Aword"), "p@ss:word");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
    }

    #[test]
    fn bad_urls_are_refused_before_connecting() {
        let clock: Arc<dyn Clock> = Arc::new(veil_core::SystemClock::new());
        let opts = |url: &str| RtspOptions {
            url: url.into(),
            username: None,
            password: None,
            transport: RtspTransport::Tcp,
            stall_timeout: Duration::from_secs(1),
            fps_hint: 25,
        };
        let e = RtspSource::open(&opts("http://cam/x"), clock.clone())
            .err()
            .unwrap();
        assert!(e.to_string().contains("must start with rtsp://"), "{e}");
        let e = RtspSource::open(&opts("not a url"), clock.clone())
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        // Nothing listens on port 1.
        let e = RtspSource::open(&opts("rtsp://127.0.0.1:1/cam"), clock)
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }
}
