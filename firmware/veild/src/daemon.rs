//! `veild run`: composes the parts, serves until SIGTERM/SIGINT, then stops in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use veil_core::{Clock, Error, ErrorKind, SystemClock};
use veil_web::DeviceView;

use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::systemd;

mod data_dir;
mod device;
mod fleet_port;
mod jobs;
mod live_port;
mod media;
mod web_port;

#[cfg(test)]
use data_dir::DATA_SUBDIRS;
pub use data_dir::DataDir;
use device::*;
use jobs::*;
pub use media::export_engine;
use media::*;

/// How long open HTTP connections get to finish after a stop signal.
const HTTP_DRAIN: Duration = Duration::from_secs(5);
/// Live sessions' time-outs and billing checkpoints each second; the usage records not yet
/// acknowledged go out again whenever the fleet session (re)connects.
async fn keep_live(device: Arc<Device>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut n, mut connections) = (0u64, 0u64);
    loop {
        tick.tick().await;
        n += 1;
        let now_connections = match &*device.uplink.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(Ok(status)) if status.connected() => status.connections(),
            _ => connections,
        };
        let reconnected = now_connections != connections;
        connections = now_connections;
        let d = device.clone();
        let _ = tokio::task::spawn_blocking(move || {
            d.live.tick(n % crate::live::CHECKPOINT_SECS == 0);
            if reconnected {
                d.live.republish_pending();
            }
        })
        .await;
    }
}

/// Deletes incident projects past their retention, at start and every ten minutes; each
/// goes to the audit log as deleted by the device.
async fn expire_incidents(device: Arc<Device>) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let d = device.clone();
        let _ = tokio::task::spawn_blocking(move || {
            match d.incidents.expire(d.clock.wall_millis() as i64) {
                Ok(ids) => {
                    for id in ids {
                        if let Err(e) = d.audit.append(
                            "device",
                            "incident.expire",
                            &format!("incident-{id}"),
                            serde_json::Value::Null,
                            serde_json::Value::Null,
                        ) {
                            tracing::error!(error = %e, "cannot write the audit log");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot delete expired incident projects"),
            }
        })
        .await;
    }
}

/// Samples device health for the dashboard's graphs.
async fn keep_history(device: Arc<Device>) {
    let mut tick = tokio::time::interval(HISTORY_INTERVAL);
    loop {
        tick.tick().await;
        let d = device.clone();
        let Ok(sample) = tokio::task::spawn_blocking(move || {
            let system = d
                .system
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sample(&d.settings.data_dir);
            crate::fleet::history_sample(&DeviceView::status(&*d), &system, d.clock.wall_millis())
        })
        .await
        else {
            return;
        };
        {
            let mut h = device.history.lock().unwrap_or_else(|e| e.into_inner());
            if h.len() == HISTORY_LEN {
                h.pop_front();
            }
            h.push_back(sample);
        }
        let d = device.clone();
        let _ = tokio::task::spawn_blocking(move || d.refresh_thumbnails()).await;
    }
}

/// Runs the daemon until a stop signal. Returns an error for failures after configuration
/// (data directory, port in use).
pub fn run(settings: Settings) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("veild-io")
        .enable_all()
        .build()
        .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot start the async runtime", e))?;
    runtime.block_on(serve(settings))
}

async fn serve(mut settings: Settings) -> Result<(), Error> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let data = DataDir::open(&settings.data_dir)?;
    let state_dir = data.root.join("state");
    // The page's camera list (if any) first, then the masks drawn on the page over it.
    let camera_book = Arc::new(crate::cameras::CameraBook::open(
        &state_dir,
        &mut settings.config,
    ));
    let masks = Arc::new(crate::masks::MaskBook::open(
        &state_dir,
        &mut settings.config.cameras,
    ));
    let fleet_book = Arc::new(crate::fleet_settings::FleetBook::open(
        &state_dir,
        &mut settings.config,
    ));
    let upload = Arc::new(Mutex::new(settings.config.upload.clone()));
    let http = settings.config.http.clone();
    let listener = bind(http.listen, "http.listen")?;
    let redirect = http
        .redirect_listen
        .map(|addr| bind(addr, "http.redirect_listen"))
        .transpose()?;
    let identity = if http.tls {
        let identity = veil_web::tls::load_or_create(
            &state_dir,
            &format!("Veil {}", settings.device_id),
            &certificate_names(&settings),
        )?;
        // On the console so a technician can compare it with the browser's warning.
        tracing::info!(fingerprint = %identity.fingerprint, "HTTPS certificate (SHA-256)");
        Some(identity)
    } else {
        None
    };
    let tls = identity
        .as_ref()
        .map(|i| axum_server::tls_rustls::RustlsConfig::from_config(i.config.clone()));
    let audit = Arc::new(veil_store::audit::AuditLog::open(
        &state_dir.join("audit.jsonl"),
    )?);
    let auth = Arc::new(veil_web::Auth::open(
        &state_dir.join("web.sqlite3"),
        clock.clone(),
        false,
    )?);
    let metrics = Arc::new(Metrics::new(
        &settings.firmware_version,
        &settings.board.name,
        settings.device_id.as_str(),
        settings.board.thermal.sensor.clone(),
    ));
    let cameras = start_cameras(&settings, &clock, &metrics, &masks)?;
    let recording = start_recording(&settings, &data, &cameras, &clock);
    tracing::info!(
        device = %settings.device_id,
        board = %settings.board.name,
        config = %settings.source,
        data_dir = %data.root.display(),
        cameras = cameras.len(),
        "veild starting"
    );
    let footage: Arc<dyn veil_incident::Footage> = match &recording {
        Some(r) => r.store.clone(),
        None => Arc::new(veil_incident::store::NoFootage),
    };
    let incidents = Arc::new(veil_incident::Incidents::open(
        &state_dir.join("incidents.sqlite3"),
        footage,
    )?);
    match incidents.sync_holds() {
        Ok((0, 0)) => {}
        Ok((placed, released)) => {
            tracing::info!(
                placed,
                released,
                "incident holds mended after an interrupted change"
            )
        }
        Err(e) => tracing::warn!(error = %e, "cannot check the incident projects' footage holds"),
    }
    let parts: Arc<IncidentParts> = {
        let incidents = incidents.clone();
        let auth = auth.clone();
        Arc::new(move |job: &veil_uplink::command::IncidentExport| {
            incident_parts(&incidents, &auth, job)
        })
    };
    let desk = recording.as_ref().and_then(|r| {
        open_desk(
            &settings,
            &data,
            r.store.clone(),
            audit.clone(),
            clock.clone(),
            JobInputs {
                masks: masks.clone(),
                cameras: camera_book.clone(),
                upload: upload.clone(),
                incident_parts: parts.clone(),
            },
        )
    });
    let live = crate::live::LiveService::open(
        &state_dir,
        settings.board.max_live_encodes,
        clock.clone(),
        audit.clone(),
    )?;
    let ota = {
        let data_dir = settings.data_dir.clone();
        crate::ota::OtaService::start(
            &data.root,
            &settings.firmware_version,
            clock.clone(),
            audit.clone(),
            upload.clone(),
            Box::new(move || crate::systemd::reboot_soon(&data_dir)),
        )?
    };
    let device = Arc::new(Device {
        ota,
        live: live.clone(),
        desk: desk.clone(),
        settings,
        clock: clock.clone(),
        metrics,
        cameras: Mutex::new(cameras),
        stopping: AtomicBool::new(false),
        uplink: Mutex::new(None),
        session: tokio::sync::Mutex::new(None),
        fleet_book,
        upload: upload.clone(),
        me: std::sync::OnceLock::new(),
        system: Mutex::new(crate::fleet::SystemProbe::new()),
        audit: audit.clone(),
        incidents: incidents.clone(),
        masks,
        camera_book,
        recording: recording.clone(),
        history: Mutex::new(std::collections::VecDeque::new()),
        auth: auth.clone(),
        thumbnails: Mutex::new(std::collections::HashMap::new()),
        thumbnail_times: Mutex::new(std::collections::HashMap::new()),
        registry_sink: Mutex::new(None),
        https_fingerprint: Mutex::new(identity.as_ref().map(|i| i.fingerprint.clone())),
        tls: tls.clone(),
    });
    let _ = device.me.set(Arc::downgrade(&device));
    let cameras_for_live: std::sync::Weak<dyn crate::live::LiveCameras> =
        Arc::downgrade(&device) as _;
    live.attach(cameras_for_live);
    live.set_cameras(live_cameras(&device.camera_book.list()));
    start_uplink(&device).await;

    let stop = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(wait_for_signal(device.clone(), stop.clone()));
    tokio::spawn(keep_history(device.clone()));
    tokio::spawn(keep_live(device.clone()));
    tokio::spawn(expire_incidents(device.clone()));
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(watchdog(device.clone(), interval));
    }

    let app = veil_web::router(Arc::new(veil_web::AppState {
        view: device.clone(),
        auth,
        audit,
        incidents,
    }))
    .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let handle = axum_server::Handle::new();
    let listen = http.listen;
    let scheme = if identity.is_some() { "https" } else { "http" };
    let server = async {
        match tls {
            Some(config) => {
                axum_server::from_tcp_rustls(listener, config)
                    .handle(handle.clone())
                    .serve(app)
                    .await
            }
            None => {
                axum_server::from_tcp(listener)
                    .handle(handle.clone())
                    .serve(app)
                    .await
            }
        }
    };
    if let Some(listener) = redirect {
        tokio::spawn(serve_redirects(listener, listen.port(), handle.clone()));
    }
    tokio::spawn({
        let (stop, handle) = (stop.clone(), handle.clone());
        async move {
            stop.notified().await;
            handle.graceful_shutdown(Some(HTTP_DRAIN));
        }
    });
    tracing::info!(%listen, scheme, "serving the web page and API");
    systemd::ready(&format!("serving on {scheme}://{listen}"));
    server
        .await
        .map_err(|e| Error::wrap(ErrorKind::Internal, "HTTP server failed", e))?;

    let live = device.live.clone();
    let _ = tokio::task::spawn_blocking(move || live.shutdown()).await;
    // Let the relays say goodbye to their endpoints (DELETE) while the runtime still runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(session) = device.session.lock().await.take() {
        // The retained state says offline before the cameras stop.
        session.stop().await;
    }
    let cameras = std::mem::take(&mut *device.cameras.lock().unwrap_or_else(|e| e.into_inner()));
    tokio::task::spawn_blocking(move || {
        for cam in &cameras {
            cam.request_stop();
        }
        drop(cameras); // joins every thread
    })
    .await
    .map_err(|e| Error::wrap(ErrorKind::Internal, "stopping cameras failed", e))?;
    // The cameras' streams are closed: each recorder closes its last segment and ends.
    tokio::task::spawn_blocking(move || {
        if let Some(recording) = recording {
            let recorders = std::mem::take(
                &mut *recording
                    .recorders
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            for r in recorders {
                let _ = r.join();
            }
        }
    })
    .await
    .map_err(|e| Error::wrap(ErrorKind::Internal, "stopping recorders failed", e))?;
    drop(data);
    tracing::info!("veild stopped");
    Ok(())
}

fn bind(addr: std::net::SocketAddr, key: &str) -> Result<std::net::TcpListener, Error> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        Error::wrap(
            ErrorKind::Unavailable,
            format!("cannot listen on {addr} ({key})"),
            e,
        )
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::wrap(ErrorKind::Internal, "listener", e))?;
    Ok(listener)
}

/// The names a browser may reach the page by, for the self-signed certificate.
fn certificate_names(settings: &Settings) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        format!("{}.local", settings.device_id),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
            names.push(format!("{host}.local"));
        }
    }
    let ip = settings.config.http.listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    names.dedup();
    names
}

/// Plain HTTP: every request is sent to the same path on the HTTPS page.
async fn serve_redirects(
    listener: std::net::TcpListener,
    https_port: u16,
    handle: axum_server::Handle,
) {
    use axum::http::{HeaderMap, StatusCode, Uri, header};
    let redirect = move |headers: HeaderMap, uri: Uri| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        // Strip a port (IPv6 literals keep their brackets).
        let host = match host.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.is_empty() => h,
            _ => host,
        };
        let port = if https_port == 443 {
            String::new()
        } else {
            format!(":{https_port}")
        };
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, format!("https://{host}{port}{path}"))],
        )
    };
    let app = axum::Router::new().fallback(redirect);
    if let Err(e) = axum_server::from_tcp(listener)
        .handle(handle)
        .serve(app.into_make_service())
        .await
    {
        tracing::error!(error = %e, "the HTTP redirect listener failed");
    }
}
async fn wait_for_signal(device: Arc<Device>, stop: Arc<tokio::sync::Notify>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    };
    tracing::info!("{name} received; stopping");
    device.stopping.store(true, Ordering::SeqCst);
    systemd::stopping();
    // notify_waiters wakes the server; notify_one stores a permit for the drain timer.
    stop.notify_waiters();
    stop.notify_one();
}

/// Pings the systemd watchdog while every camera thread shows signs of life; a hung thread
/// stops the pings so systemd restarts the daemon.
async fn watchdog(device: Arc<Device>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let since = device
            .clock
            .monotonic()
            .saturating_sub(STALL_LIMIT)
            .as_millis() as u64;
        let stalled: Vec<String> = device
            .cameras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|c| !c.alive_since(since))
            .map(|c| c.id().to_string())
            .collect();
        if stalled.is_empty() {
            systemd::watchdog();
        } else {
            tracing::error!(
                ?stalled,
                "camera threads stalled; withholding the watchdog ping"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_is_laid_out_and_locked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(root.join("tmp/partial.seg"), b"half").unwrap();
        let first = DataDir::open(&root).unwrap();
        for sub in DATA_SUBDIRS {
            assert!(root.join(sub).is_dir(), "{sub}");
        }
        assert!(!root.join("tmp/partial.seg").exists());
        let err = DataDir::open(&root).err().expect("second open must fail");
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(err.to_string().contains("in use by another veild"));
        drop(first);
        DataDir::open(&root).unwrap();
    }
}
