//! `veilctl`: the fleet side from a terminal. Lists devices (retained state), shows a
//! registry, fetches snapshots, places video requests and follows their jobs, runs live view
//! sessions and collects their usage, sends any command and prints its reply.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use veil_core::Error;
use veil_core::config::MqttConfig;
use veil_uplink::fleet::{FleetClient, FleetSettings};
use veil_uplink::topics::Topics;

#[derive(Parser)]
#[command(
    name = "veilctl",
    version,
    about = "Talk to Veil devices through the fleet broker"
)]
struct Cli {
    /// mqtts://host[:port] (or mqtt:// to loopback).
    #[arg(long, env = "VEILCTL_BROKER")]
    broker: Option<String>,
    /// PEM of the CA that signed the broker's certificate.
    #[arg(long, env = "VEILCTL_CA_FILE")]
    ca_file: Option<PathBuf>,
    #[arg(long, env = "VEILCTL_USERNAME")]
    username: Option<String>,
    #[arg(long, env = "VEILCTL_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    #[arg(long, default_value = "veil")]
    prefix: String,
    /// Seconds to wait for answers.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every device that has announced itself, online or not.
    Devices,
    /// A device's cameras, as investigators see them.
    Registry { device: String },
    /// Save a camera's anonymized picture as JPEG.
    Snapshot {
        device: String,
        camera: String,
        #[arg(long, short)]
        out: PathBuf,
        #[arg(long, default_value_t = 640)]
        width: u32,
    },
    /// Ask a device for footage: a video request (held at once, then decided by its owner).
    Request {
        device: String,
        /// The request's id (the same id again is the same request).
        #[arg(long)]
        id: String,
        /// Camera id; repeat for several over the same range.
        #[arg(long = "camera", required = true)]
        cameras: Vec<String>,
        /// RFC 3339 start, e.g. 2026-11-23T10:00:00Z.
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        requester: String,
        #[arg(long)]
        organisation: Option<String>,
        /// `existing` (with --case-ref), `new` or `none`.
        #[arg(long, default_value = "none")]
        case: String,
        #[arg(long)]
        case_ref: Option<String>,
    },
    /// Video requests and export jobs a device knows.
    Requests { device: String },
    /// Approve or decline a pending request, as its owner.
    Decide {
        device: String,
        id: String,
        /// `approve` or `decline`.
        decision: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print a job's status events until it ends (exit 1 unless it SUCCEEDED): an export job
    /// or an update job.
    Follow { device: String, job: String },
    /// Order a firmware update (`ota.install`); with --follow, print its steps until it ends
    /// (through the device's restart).
    Ota {
        device: String,
        #[arg(long)]
        job: String,
        /// The bundle's version (its manifest's).
        #[arg(long)]
        version: String,
        /// Where the device fetches the bundle (e.g. from `veilctl presign`).
        #[arg(long, conflicts_with = "s3_key", required_unless_present = "s3_key")]
        url: Option<String>,
        /// Or an object of the device's own upload bucket.
        #[arg(long)]
        s3_key: Option<String>,
        /// The bundle file here: its SHA-256 goes with the order.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// `now`, `manual` or a UTC window like 02:00-04:00.
        #[arg(long, default_value = "now")]
        reboot: String,
        #[arg(long)]
        follow: bool,
    },
    /// A presigned GET URL for an S3 object (e.g. a bundle for `ota --url`), signed with
    /// VEILCTL_S3_ACCESS_KEY / VEILCTL_S3_SECRET_KEY; the endpoint as the devices reach it.
    Presign {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        bucket: String,
        #[arg(long)]
        key: String,
        #[arg(long, default_value = "us-east-1")]
        region: String,
        #[arg(long, default_value_t = 24)]
        valid_hours: u64,
    },
    /// Live view sessions: start, stop, list, follow, and their usage records.
    Live {
        #[command(subcommand)]
        command: LiveCmd,
    },
    /// Send any command (docs/mqtt-api.md) with JSON parameters; prints the reply.
    Send {
        device: String,
        name: String,
        #[arg(default_value = "{}")]
        params: String,
    },
}

#[derive(Subcommand)]
enum LiveCmd {
    /// Ask a device to relay a camera, anonymized through a filter, to a WHIP endpoint.
    Start {
        device: String,
        /// The session's id (the same id again is the same session).
        #[arg(long)]
        id: String,
        #[arg(long)]
        camera: String,
        /// The viewing organisation's id (on its usage records).
        #[arg(long)]
        consumer: String,
        /// One of the camera's `filters_offered` (see `registry`).
        #[arg(long)]
        filter: String,
        /// `shared` or `owner` (the owner's own use preempts shared views).
        #[arg(long, default_value = "shared")]
        priority: String,
        /// Seconds the session may last (1 to 86400).
        #[arg(long, default_value_t = 3600)]
        max_duration: u64,
        /// The WHIP endpoint's URL.
        #[arg(long)]
        endpoint: String,
        /// Its bearer token.
        #[arg(long, env = "VEILCTL_WHIP_TOKEN", hide_env_values = true)]
        token: String,
        /// An ICE server URL (`turn:host[:port]`, `stun:…`); repeat for several.
        #[arg(long = "ice-server")]
        ice_servers: Vec<String>,
        /// The TURN servers' username.
        #[arg(long)]
        ice_username: Option<String>,
        /// The TURN servers' credential.
        #[arg(long, env = "VEILCTL_ICE_CREDENTIAL", hide_env_values = true)]
        ice_credential: Option<String>,
        /// Offer only the TURN server's relayed address (the viewer never learns the device's).
        #[arg(long)]
        relay_only: bool,
        /// Then print the session's events until it ends (exit 1 unless it ended normally).
        #[arg(long)]
        follow: bool,
    },
    /// End a session, as the consumer (default) or as the owner.
    Stop {
        device: String,
        id: String,
        /// `consumer` or `owner`.
        #[arg(long, default_value = "consumer")]
        by: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Sessions open and recently ended, with the encodes in use.
    List { device: String },
    /// Print a session's events until it ends (exit 1 unless it ended normally).
    Follow { device: String, id: String },
    /// Usage records (the newest 1000, or with --pending those not yet acknowledged).
    Usage {
        device: String,
        #[arg(long)]
        pending: bool,
    },
    /// Acknowledge usage records: the billing side has stored them.
    Ack {
        device: String,
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// A session's last state, from `live.list` (open or recently ended).
fn session_state(list: &Value, id: &str) -> Option<Value> {
    let open = list["sessions"].as_array().into_iter().flatten();
    let ended = list["recent"].as_array().into_iter().flatten();
    open.chain(ended).find(|s| s["id"] == id).map(|s| {
        let state = s["outcome"]
            .as_str()
            .or(s["phase"].as_str())
            .unwrap_or("unknown");
        json!({ "session_id": id, "state": state, "by": s["by"], "reason": s["reason"] })
    })
}

/// Prints `live.session` events of `id` until it ends; Ok with the last one if it `ended`.
async fn follow_session(
    fleet: &mut FleetClient,
    device: &str,
    id: &str,
    wait: Duration,
    mut last: Value,
) -> Result<Value, Error> {
    loop {
        let state = last["state"].as_str().unwrap_or_default().to_string();
        let why = last["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        eprintln!("{id}: {state}{why}");
        match state.as_str() {
            "ended" => return Ok(last),
            "failed" | "refused" | "preempted" => {
                return Err(Error::new(
                    veil_core::ErrorKind::Unavailable,
                    format!(
                        "live session {id} {state}{}",
                        if why.is_empty() {
                            ": no reason given".into()
                        } else {
                            why
                        }
                    ),
                ));
            }
            "unknown" => {
                return Err(Error::not_found(format!(
                    "{device} knows no live session '{id}'"
                )));
            }
            _ => {}
        }
        // A session may run for a day; an event comes with each change.
        let m = fleet
            .next(Duration::from_secs(25 * 3600).max(wait))
            .await
            .ok_or_else(|| {
                Error::new(
                    veil_core::ErrorKind::DeadlineExceeded,
                    format!("no news of live session {id}"),
                )
            })?;
        if let Ok(e) = serde_json::from_slice::<Value>(&m.payload)
            && e["type"] == "live.session"
            && e["session_id"] == id
        {
            last = e;
        }
    }
}

async fn live(
    fleet: &mut FleetClient,
    prefix: &str,
    command: &LiveCmd,
    wait: Duration,
) -> Result<Value, Error> {
    match command {
        LiveCmd::Start {
            device,
            id,
            camera,
            consumer,
            filter,
            priority,
            max_duration,
            endpoint,
            token,
            ice_servers,
            ice_username,
            ice_credential,
            relay_only,
            follow,
        } => {
            if *follow {
                // Subscribed before the start, so no event is missed.
                fleet
                    .subscribe(&Topics::new(prefix, device).events())
                    .await?;
            }
            let mut params = json!({
                "session_id": id, "camera": camera, "consumer": consumer, "filter": filter,
                "priority": priority, "max_duration_s": max_duration, "endpoint": endpoint,
                "token": token,
                "ice_transport_policy": if *relay_only { "relay" } else { "all" },
            });
            if !ice_servers.is_empty() {
                params["ice_servers"] = json!([{
                    "urls": ice_servers, "username": ice_username, "credential": ice_credential,
                }]);
            }
            let started = result_of(fleet.call(device, "live.start", params, wait).await?)?;
            if !*follow {
                return Ok(started);
            }
            follow_session(fleet, device, id, wait, started).await
        }
        LiveCmd::Stop {
            device,
            id,
            by,
            reason,
        } => {
            let params = json!({ "session_id": id, "by": by, "reason": reason });
            result_of(fleet.call(device, "live.stop", params, wait).await?)
        }
        LiveCmd::List { device } => {
            result_of(fleet.call(device, "live.list", json!({}), wait).await?)
        }
        LiveCmd::Follow { device, id } => {
            fleet
                .subscribe(&Topics::new(prefix, device).events())
                .await?;
            let list = result_of(fleet.call(device, "live.list", json!({}), wait).await?)?;
            let last = session_state(&list, id)
                .unwrap_or_else(|| json!({ "session_id": id, "state": "unknown" }));
            follow_session(fleet, device, id, wait, last).await
        }
        LiveCmd::Usage { device, pending } => {
            let params = json!({ "pending": pending });
            result_of(fleet.call(device, "live.usage", params, wait).await?)
        }
        LiveCmd::Ack { device, ids } => {
            let params = json!({ "session_ids": ids });
            result_of(fleet.call(device, "live.usage.ack", params, wait).await?)
        }
    }
}

fn settings(cli: &Cli) -> Result<FleetSettings, Error> {
    let config = MqttConfig {
        broker: cli.broker.clone().ok_or_else(|| {
            Error::invalid_input("--broker (or VEILCTL_BROKER) is needed to reach the devices")
        })?,
        ca_file: cli.ca_file.clone(),
        client_cert: None,
        client_key: None,
        username: cli.username.clone(),
        password: cli.password.clone(),
        topic_prefix: cli.prefix.clone(),
        telemetry_seconds: 60,
        keep_alive_seconds: 30,
    };
    let address = config.address().map_err(Error::invalid_input)?;
    let tls = match (address.tls, &cli.ca_file) {
        (false, _) => None,
        (true, Some(ca)) => Some(veil_uplink::tls::client_config(ca, None)?),
        (true, None) => return Err(Error::invalid_input("--ca-file is needed for mqtts://")),
    };
    Ok(FleetSettings {
        host: address.host,
        port: address.port,
        tls,
        username: cli.username.clone(),
        password: cli.password.clone(),
        prefix: cli.prefix.clone(),
    })
}

/// A reply's result, or its error as ours.
fn result_of(reply: Value) -> Result<Value, Error> {
    if reply["ok"] == true {
        return Ok(reply["result"].clone());
    }
    let code = reply["error"]["code"]
        .as_str()
        .unwrap_or("internal")
        .to_string();
    let message = reply["error"]["message"]
        .as_str()
        .unwrap_or("no message")
        .to_string();
    Err(Error::invalid_input(format!(
        "device refused ({code}): {message}"
    )))
}

fn presign(
    endpoint: &str,
    bucket: &str,
    key: &str,
    region: &str,
    valid_hours: u64,
) -> Result<Value, Error> {
    use rusty_s3::S3Action as _;
    let var = |name: &str| {
        std::env::var(name).map_err(|_| Error::invalid_input(format!("{name} is not set")))
    };
    let bucket = rusty_s3::Bucket::new(
        endpoint
            .parse()
            .map_err(|e| Error::invalid_input(format!("--endpoint: {e}")))?,
        rusty_s3::UrlStyle::Path,
        bucket.to_string(),
        region.to_string(),
    )
    .map_err(|e| Error::invalid_input(format!("--bucket: {e}")))?;
    let credentials =
        rusty_s3::Credentials::new(var("VEILCTL_S3_ACCESS_KEY")?, var("VEILCTL_S3_SECRET_KEY")?);
    let url = rusty_s3::actions::GetObject::new(&bucket, Some(&credentials), key)
        .sign(Duration::from_secs(valid_hours * 3600));
    Ok(json!({ "url": url.as_str() }))
}

/// Prints a job's statuses (export or update) from `last` on until it ends.
async fn follow_job(fleet: &mut FleetClient, job: &str, mut last: Value) -> Result<Value, Error> {
    loop {
        let status = last["status"].as_str().unwrap_or_default().to_string();
        eprintln!(
            "{job}: {status}{} {:.0} %",
            last["step"]
                .as_str()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default(),
            last["progress"].as_f64().unwrap_or(0.0) * 100.0
        );
        match status.as_str() {
            "SUCCEEDED" => return Ok(last),
            "FAILED" | "CANCELED" | "REJECTED" => {
                return Err(Error::invalid_input(format!(
                    "job {job} {status}: {}",
                    last["reason"].as_str().unwrap_or("no reason given")
                )));
            }
            _ => {}
        }
        // No news for an hour ends the wait; a job reports at least every 10 %.
        let m = fleet.next(Duration::from_secs(3600)).await.ok_or_else(|| {
            Error::new(
                veil_core::ErrorKind::DeadlineExceeded,
                format!("no news of job {job}"),
            )
        })?;
        if let Ok(e) = serde_json::from_slice::<Value>(&m.payload)
            && e["type"] == "job.status"
            && e["job_id"] == job
        {
            last = e;
            last["id"] = json!(job);
        }
    }
}

async fn run(cli: Cli) -> Result<Value, Error> {
    let wait = Duration::from_secs(cli.timeout);
    // Signing needs no broker.
    if let Cmd::Presign {
        endpoint,
        bucket,
        key,
        region,
        valid_hours,
    } = &cli.command
    {
        return presign(endpoint, bucket, key, region, *valid_hours);
    }
    let mut fleet = FleetClient::connect(settings(&cli)?).await?;
    match &cli.command {
        Cmd::Devices => {
            let devices = fleet.devices(Duration::from_millis(1500).min(wait)).await?;
            Ok(json!(devices))
        }
        Cmd::Registry { device } => {
            let topic = Topics::new(&cli.prefix, device).registry();
            fleet.retained(&topic, wait).await
        }
        Cmd::Snapshot {
            device,
            camera,
            out,
            width,
        } => {
            use base64::Engine as _;
            let reply = fleet
                .call(
                    device,
                    "snapshot",
                    json!({ "camera": camera, "width": width }),
                    wait,
                )
                .await?;
            let result = result_of(reply)?;
            let jpeg = base64::engine::general_purpose::STANDARD
                .decode(result["jpeg_base64"].as_str().unwrap_or_default())
                .map_err(|e| Error::invalid_input(format!("snapshot is not base64: {e}")))?;
            std::fs::write(out, &jpeg).map_err(|e| {
                Error::wrap(
                    veil_core::ErrorKind::Internal,
                    format!("cannot write {}", out.display()),
                    e,
                )
            })?;
            Ok(json!({ "file": out, "bytes": jpeg.len(), "sha256": result["sha256"] }))
        }
        Cmd::Request {
            device,
            id,
            cameras,
            from,
            to,
            reason,
            requester,
            organisation,
            case,
            case_ref,
        } => {
            let params = json!({
                "id": id, "cameras": cameras, "from": from, "to": to, "reason": reason,
                "requester": { "name": requester, "organisation": organisation },
                "case": { "kind": case, "reference": case_ref },
            });
            result_of(fleet.call(device, "request.create", params, wait).await?)
        }
        Cmd::Requests { device } => {
            result_of(fleet.call(device, "request.list", json!({}), wait).await?)
        }
        Cmd::Decide {
            device,
            id,
            decision,
            reason,
        } => {
            let params =
                json!({ "id": id, "decision": decision, "reason": reason, "by": "veilctl" });
            result_of(fleet.call(device, "request.decide", params, wait).await?)
        }
        Cmd::Follow { device, job } => {
            // Events from now on, and the job's state as it stands (it may have ended).
            fleet
                .subscribe(&Topics::new(&cli.prefix, device).events())
                .await?;
            let list = result_of(fleet.call(device, "request.list", json!({}), wait).await?)?;
            let export = list["jobs"]
                .as_array()
                .and_then(|jobs| jobs.iter().find(|j| j["id"] == job.as_str()).cloned());
            let last = match export {
                Some(j) => j,
                None => {
                    let ota = result_of(fleet.call(device, "ota.status", json!({}), wait).await?)?;
                    (ota["job"]["job_id"] == job.as_str())
                        .then(|| ota["job"].clone())
                        .ok_or_else(|| Error::not_found(format!("{device} knows no job '{job}'")))?
                }
            };
            follow_job(&mut fleet, job, last).await
        }
        Cmd::Ota {
            device,
            job,
            version,
            url,
            s3_key,
            bundle,
            reboot,
            follow,
        } => {
            let mut params = json!({ "job_id": job, "version": version, "reboot": reboot });
            match (url, s3_key) {
                (Some(url), _) => params["url"] = json!(url),
                (_, Some(key)) => params["s3_key"] = json!(key),
                _ => {}
            }
            if let Some(file) = bundle {
                params["sha256"] = json!(veil_uplink::download::file_sha256(file)?);
            }
            if *follow {
                fleet
                    .subscribe(&Topics::new(&cli.prefix, device).events())
                    .await?;
            }
            let ordered = result_of(fleet.call(device, "ota.install", params, wait).await?)?;
            if *follow {
                follow_job(&mut fleet, job, ordered).await
            } else {
                Ok(ordered)
            }
        }
        Cmd::Live { command } => live(&mut fleet, &cli.prefix, command, wait).await,
        Cmd::Presign { .. } => unreachable!("answered before connecting"),
        Cmd::Send {
            device,
            name,
            params,
        } => {
            let params: Value = serde_json::from_str(params)
                .map_err(|e| Error::invalid_input(format!("parameters are not JSON: {e}")))?;
            let reply = fleet.call(device, name, params, wait).await?;
            result_of(reply)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(v) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("JSON values serialize")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
