//! `veild`: the Veil gateway daemon and its technician commands.
//!
//! Exit codes: 0 success, 1 failure while running (data directory, port in use),
//! 2 bad configuration or bad command line.

mod boards;
mod camera;
mod cameras;
mod daemon;
mod fleet;
mod fleet_settings;
mod live;
mod logging;
mod masks;
mod metrics;
mod ota;
mod recorder;
mod requests;
mod settings;
mod slot_check;
mod statefile;
mod systemd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use veil_bench::{bench, eval};
use veil_core::config::LogFormat;
use veil_evidence::{export, keystore};

use crate::settings::{StartOptions, load};

#[derive(Parser)]
#[command(
    name = "veild",
    about = "Veil: privacy-first edge video gateway daemon",
    args_conflicts_with_subcommands = true,
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default when no command is given).
    Run(RunArgs),
    /// Check a config file as `veild run` would read it (with VEIL_* overrides), then exit.
    CheckConfig {
        file: PathBuf,
        /// Board profile to check against (default: the file's device.board, or the CPU's).
        #[arg(long, env = "VEIL_BOARD")]
        board: Option<String>,
    },
    /// Print the firmware version.
    Version {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the built-in board profiles.
    Boards,
    /// Export recorded footage as signed evidence: MP4 files of at most 60 minutes and a
    /// manifest.json signed with the device key. Safe while the daemon runs.
    Export {
        /// Camera id; repeat for several cameras over the same range.
        #[arg(long = "camera", required = true)]
        cameras: Vec<String>,
        /// Start, RFC 3339 (e.g. 2026-11-23T10:00:00Z).
        #[arg(long)]
        from: String,
        /// End, RFC 3339; less than 24 hours after --from.
        #[arg(long)]
        to: String,
        /// Directory to create (must be new or empty).
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Encrypt every video file to this age public key (age1...); repeat for several.
        #[arg(long = "recipient")]
        recipients: Vec<String>,
        /// The filter the recipient is entitled to (default: each camera's own). Kept
        /// originals are anonymized with it; anonymized footage recorded with another filter
        /// is anonymized again with it.
        #[arg(long)]
        filter: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Check an export: the manifest's signature and every file's SHA-256; prints JSON.
    VerifyExport {
        dir: PathBuf,
        /// The device's public key (hex), to check who signed it.
        #[arg(long)]
        key: Option<String>,
    },
    /// Check the audit log's hash chain (state/audit.jsonl of the data directory, or
    /// --file); prints the entry count and head hash as JSON, or names the first bad line.
    VerifyAudit {
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// After a boot from an A/B root slot: confirm the slot (rauc status mark-good) once veild
    /// has run for 30 s without a restart and serves /healthz, or mark it bad and reboot so the
    /// bootloader starts the other slot. Run by veil-slot-check.service.
    SlotCheck {
        /// Seconds veild has to become healthy.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(30..=3600))]
        within: u64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Measure a part of the firmware; prints one JSON object.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Measure the privacy engine against hand annotations; prints one JSON object.
    #[command(subcommand)]
    Eval(EvalCommand),
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Face and plate recall (share of annotated objects hidden) and the area hidden.
    Privacy {
        /// Annotations file, e.g. firmware/veil-privacy/eval/carphone.json.
        #[arg(long)]
        annotations: PathBuf,
        /// Directory holding the clip [default: VEIL_MEDIA_DIR, else ~/.cache/veil/media].
        #[arg(long, env = "VEIL_MEDIA_DIR")]
        media: Option<PathBuf>,
        /// `masks-only`, `motion`, `faces`, `faces-plates`, `strict` or `silhouette`.
        #[arg(long, default_value = "faces-plates")]
        filter: String,
        /// Play the clip at its own rate with the detectors at their own pace, as a camera
        /// does (its figures then depend on the machine and its load); without it every frame
        /// waits for the detectors.
        #[arg(long)]
        realtime: bool,
        /// With --realtime: play the clip this many times faster than its own rate while its
        /// capture times stay as they were, which is how the detectors fall behind on a CPU
        /// this many times slower (docs/benchmarks.md: the Raspberry Pi 4 budget).
        #[arg(long, default_value_t = 1.0, requires = "realtime")]
        speed: f64,
        /// Only the first N frames of the clip.
        #[arg(long)]
        frames: Option<u64>,
        #[command(flatten)]
        detection: DetectionArgs,
    },
}

/// Where the models are and what runs them, for `eval` and `bench`.
#[derive(Args, Clone)]
struct DetectionArgs {
    /// Model directory [default: VEIL_MODEL_DIR, else ~/.cache/veil/models].
    #[arg(long, env = "VEIL_MODEL_DIR")]
    models: Option<PathBuf>,
    /// `tract` (portable) or `tflite` (the LiteRT runtime, on CPU).
    #[arg(long, default_value = "tract")]
    backend: String,
    /// LiteRT runtime library for `--backend tflite` [default: MODELS/litert/libLiteRt.so].
    #[arg(long)]
    runtime_library: Option<PathBuf>,
    /// Face tile side in pixels (0: whole frame only).
    #[arg(long, default_value_t = veil_privacy::face::FaceSettings::default().tile)]
    face_tile: u32,
    /// Face boxes are widened by this fraction of their size on each side (0 to 1).
    #[arg(long, default_value_t = veil_privacy::face::FaceSettings::default().margin)]
    face_margin: f32,
    /// Face detections scoring below this are ignored (0.05 to 0.95).
    #[arg(long, default_value_t = veil_privacy::face::FaceSettings::default().min_score)]
    face_min_score: f32,
    /// Narrowest licence plate searched, in pixels (24 to 1000).
    #[arg(long, default_value_t = 60)]
    plate_min_width: u32,
}

impl DetectionArgs {
    fn setup(&self) -> Result<veil_privacy::DetectionSetup, String> {
        let model_dir = self.models.clone().unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/veil/models")
        });
        let backend = match self.backend.as_str() {
            "tract" => veil_privacy::Backend::Tract,
            "tflite" => veil_privacy::Backend::LiteRt(veil_privacy::litert::LiteRtOptions {
                library: self
                    .runtime_library
                    .clone()
                    .unwrap_or_else(|| model_dir.join("litert/libLiteRt.so")),
                accelerator: veil_privacy::litert::Accelerator::Cpu,
            }),
            other => return Err(format!("--backend '{other}': expected tract or tflite")),
        };
        if self.face_tile != 0 && !(128..=2048).contains(&self.face_tile) {
            return Err(format!(
                "--face-tile {}: expected 0 or 128 to 2048",
                self.face_tile
            ));
        }
        if !(0.0..=1.0).contains(&self.face_margin) {
            return Err(format!(
                "--face-margin {}: expected 0 to 1",
                self.face_margin
            ));
        }
        if !(0.05..=0.95).contains(&self.face_min_score) {
            return Err(format!(
                "--face-min-score {}: expected 0.05 to 0.95",
                self.face_min_score
            ));
        }
        if !(24..=1000).contains(&self.plate_min_width) {
            return Err(format!(
                "--plate-min-width {}: expected 24 to 1000",
                self.plate_min_width
            ));
        }
        Ok(veil_privacy::DetectionSetup {
            model_dir,
            backend,
            face: veil_privacy::face::FaceSettings {
                tile: self.face_tile,
                margin: self.face_margin,
                min_score: self.face_min_score,
            },
            plate: veil_privacy::plate::PlateSettings {
                min_width: self.plate_min_width,
                ..Default::default()
            },
        })
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Source -> privacy stage -> openh264, next to the bare encoder and ffmpeg's libx264.
    Pipeline {
        /// `synthetic`, or `file PATH`.
        #[arg(long, num_args = 1..=2, value_names = ["KIND", "PATH"], default_values = ["synthetic"])]
        source: Vec<String>,
        #[arg(long, default_value_t = 1920)]
        width: u32,
        #[arg(long, default_value_t = 1080)]
        height: u32,
        #[arg(long, default_value_t = 600)]
        frames: u64,
        /// Frame rate of the real-time latency run (and the encoder's rate control).
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// Skip the ffmpeg libx264 reference.
        #[arg(long)]
        no_reference: bool,
    },
    /// The privacy engine in the pipeline (openh264), with the detectors alone.
    Privacy {
        /// `synthetic`, or `file PATH`.
        #[arg(long, num_args = 1..=2, value_names = ["KIND", "PATH"], default_values = ["synthetic"])]
        source: Vec<String>,
        #[arg(long, default_value_t = 1920)]
        width: u32,
        #[arg(long, default_value_t = 1080)]
        height: u32,
        #[arg(long, default_value_t = 300)]
        frames: u64,
        /// `masks-only`, `motion`, `faces`, `faces-plates`, `strict` or `silhouette`.
        #[arg(long, default_value = "faces-plates")]
        filter: String,
        #[command(flatten)]
        detection: DetectionArgs,
    },
    /// Redaction kernels (solid, pixelate, blur) on 1080p, in ns per pixel.
    Redact {
        #[arg(long, default_value_t = 50)]
        rounds: u32,
    },
    /// The footage store: cameras recording 1080p-sized streams (4 Mbit/s, 30 fps) as fast as
    /// the disk takes them.
    Store {
        #[arg(long, default_value_t = 4)]
        cameras: u32,
        /// Seconds of footage per camera.
        #[arg(long, default_value_t = 600)]
        seconds: u32,
        /// Directory to write in (a fresh one under it, removed afterwards) [default: the
        /// system temporary directory; use the data partition to measure it].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Incident projects: fill a database through the page's calls, then time every list
    /// query the page offers, one project and its PDF report.
    Incidents {
        #[arg(long, default_value_t = 10_000)]
        projects: u32,
        /// Directory to work in [default: the system temporary directory].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Exporting recorded 1080p footage to MP4, next to `cp` of the same bytes.
    Export {
        /// Seconds of footage to export.
        #[arg(long, default_value_t = 3600)]
        seconds: u32,
        /// Directory to work in [default: the system temporary directory].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A live session to a WHIP ingest (aiortc): glass-to-glass latency and session start.
    Live {
        #[arg(long, default_value_t = 1280)]
        width: u32,
        #[arg(long, default_value_t = 720)]
        height: u32,
        #[arg(long, default_value_t = 25)]
        fps: u32,
        /// Seconds the measured session runs.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Sessions started one after another (start-time figures; the last one is measured).
        #[arg(long, default_value_t = 5)]
        starts: u32,
        /// Relay-only through a TURN server (coturn, started in the benchmark's namespace).
        #[arg(long)]
        turn: bool,
        /// Each session on its own branch (privacy stage and encoder threads), as the daemon
        /// runs a consumer whose filter differs from the camera's.
        #[arg(long)]
        branches: bool,
    },
    /// Uploading an export to a local S3-compatible server (s3s-fs) with 1 and 5 parts in
    /// flight, next to `curl -T` (SigV4) of the same bytes.
    Upload {
        /// Size of the export in MB.
        #[arg(long, default_value_t = 2000)]
        mb: u64,
        /// Directory for the file and the server's data [default: the system temporary
        /// directory].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Args, Clone, Default)]
struct RunArgs {
    /// Config file [default: /etc/veil/veil.toml if it exists].
    #[arg(long, short, env = "VEIL_CONFIG")]
    config: Option<PathBuf>,
    /// Development mode: data under ./.veil-dev, HTTP on 127.0.0.1:8080, one synthetic camera.
    #[arg(long)]
    dev: bool,
    /// Board profile (see `veild boards`).
    #[arg(long, env = "VEIL_BOARD")]
    board: Option<String>,
    /// Log format; overrides log.format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

/// Frame buffers (3 MiB at 1080p) come and go with every live branch and export. glibc
/// raises its mmap threshold after the first such free and from then on serves them from
/// per-thread heaps that keep the memory: 100 MB stayed resident after ten 1080p branched
/// sessions (`veild bench live --branches`, docs/benchmarks.md). A fixed threshold maps
/// every large buffer and unmaps it when freed; two arenas stop each thread keeping its own.
#[allow(unsafe_code)]
fn return_freed_frames_to_the_system() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called first thing, before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    return_freed_frames_to_the_system();
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.run),
        Some(Command::Run(args)) => run(args),
        Some(Command::CheckConfig { file, board }) => check_config(file, board),
        Some(Command::Version { json }) => version(json),
        Some(Command::Bench(b)) => bench(b),
        Some(Command::Eval(EvalCommand::Privacy {
            annotations,
            media,
            filter,
            realtime,
            speed,
            frames,
            detection,
        })) => {
            if !(0.1..=20.0).contains(&speed) {
                eprintln!("error: --speed {speed}: expected 0.1 to 20");
                return ExitCode::from(2);
            }
            let Some(filter) = parse_filter(&filter) else {
                eprintln!("error: --filter '{filter}': {FILTERS}");
                return ExitCode::from(2);
            };
            let detection = match detection.setup() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let media = media.unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/veil/media")
            });
            let mode = if realtime {
                eval::Mode::Realtime { speed }
            } else {
                eval::Mode::Waiting
            };
            print_report(eval::privacy(
                &annotations,
                &media,
                filter,
                detection,
                mode,
                frames,
            ))
        }
        Some(Command::Export {
            cameras,
            from,
            to,
            out,
            name,
            description,
            recipients,
            filter,
            run,
        }) => export_command(
            export::ExportRequestArgs {
                cameras,
                from,
                to,
                name,
                description,
                recipients,
                filter,
            },
            &out,
            run,
        ),
        Some(Command::VerifyExport { dir, key }) => {
            print_report(export::verify(&dir, key.as_deref()))
        }
        Some(Command::VerifyAudit { file, run }) => {
            let path = match file {
                Some(f) => f,
                None => match settings_for(&run) {
                    Ok(s) => s.data_dir.join("state").join("audit.jsonl"),
                    Err(code) => return code,
                },
            };
            print_report(
                veil_store::audit::verify(&path)
                    .map(|head| serde_json::json!({"file": path, "entries": head.entries, "head": head.hash})),
            )
        }
        Some(Command::SlotCheck { within, run }) => {
            // A configuration veild refuses is itself a failed slot: the check must still act.
            let opts = StartOptions {
                config_path: run.config.clone(),
                dev: run.dev,
                board: run.board.clone(),
            };
            let settings = load(&opts, &process_env()).map_err(|e| e.lines.join("; "));
            slot_check::run(settings, std::time::Duration::from_secs(within))
        }
        Some(Command::Boards) => {
            for name in boards::names() {
                match boards::load(name) {
                    Ok(b) => println!(
                        "{name:<12} {:<8} {}",
                        format!("{:?}", b.arch).to_lowercase(),
                        b.description
                    ),
                    Err(e) => println!("{name:<12} INVALID: {e}"),
                }
            }
            ExitCode::SUCCESS
        }
    }
}

fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn config_failed(lines: &[String]) -> ExitCode {
    for line in lines {
        eprintln!("error: {line}");
    }
    ExitCode::from(2)
}

/// The settings `veild run` would use for these arguments, or the exit code of a bad config.
fn settings_for(args: &RunArgs) -> Result<settings::Settings, ExitCode> {
    let opts = StartOptions {
        config_path: args.config.clone(),
        dev: args.dev,
        board: args.board.clone(),
    };
    load(&opts, &process_env()).map_err(|e| config_failed(&e.lines))
}

fn run(args: RunArgs) -> ExitCode {
    let settings = match settings_for(&args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let format = match args.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Human) => LogFormat::Human,
        None => settings.config.log.format,
    };
    logging::init(format, &settings.config.log.level);
    match daemon::run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn export_command(
    args: export::ExportRequestArgs,
    out: &std::path::Path,
    run: RunArgs,
) -> ExitCode {
    let settings = match settings_for(&run) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = (|| {
        let request = args.parse()?;
        let store = veil_store::Store::open_for_reading(
            &settings.data_dir.join("footage"),
            settings.device_id.as_str(),
        )?;
        let state = settings.data_dir.join("state");
        let key = export::device_key(&state)?;
        if let Some(k) =
            keystore::existing(&state, keystore::ORIGINALS_KEY, keystore::ORIGINALS_LOSS)?
        {
            store.set_seal_key(veil_store::SealKey::from_bytes(k));
        }
        // The cameras and masks as the running device has them (the page's changes in
        // state/ over the config file): re-anonymized footage hides what the camera hid.
        let mut config = settings.config.clone();
        cameras::CameraBook::open(&state, &mut config);
        let masks = masks::MaskBook::open(&state, &mut config.cameras);
        let camera = |id: &str| config.cameras.iter().find(|c| c.id.as_str() == id);
        let filters = |id: &str| camera(id).map(|c| c.filter);
        let detection = settings.detection();
        let engines =
            |id: &str, filter| daemon::export_engine(id, &masks.for_export(id), filter, &detection);
        let identity = export::Identity {
            device_id: settings.device_id.as_str(),
            firmware: &settings.firmware_version,
            key: &key,
            filters: &filters,
            engines: &engines,
            watch: veil_evidence::export::Watch::none(),
        };
        export::export(&store, &request, out, &identity)
    })();
    print_report(result)
}

fn check_config(file: PathBuf, board: Option<String>) -> ExitCode {
    let opts = StartOptions {
        config_path: Some(file.clone()),
        dev: false,
        board,
    };
    match load(&opts, &process_env()) {
        Ok(s) => {
            let ids: Vec<&str> = s.config.cameras.iter().map(|c| c.id.as_str()).collect();
            println!(
                "config {}: ok (device {}, board {}, {} camera(s){})",
                file.display(),
                s.device_id,
                s.board.name,
                ids.len(),
                if ids.is_empty() {
                    String::new()
                } else {
                    format!(": {}", ids.join(", "))
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => config_failed(&e.lines),
    }
}

fn version(json: bool) -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    let target = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
    if json {
        println!(
            "{}",
            serde_json::json!({ "version": version, "target": target })
        );
    } else {
        println!("veild {version} ({target})");
    }
    ExitCode::SUCCESS
}

fn bench(command: BenchCommand) -> ExitCode {
    let (source, width, height, frames, fps, no_reference) = match command {
        BenchCommand::Redact { rounds } => {
            println!("{}", bench::redact(rounds));
            return ExitCode::SUCCESS;
        }
        BenchCommand::Store {
            cameras,
            seconds,
            dir,
        } => {
            if cameras == 0 || cameras > 64 || seconds == 0 {
                eprintln!("error: need --cameras 1 to 64 and --seconds > 0");
                return ExitCode::from(2);
            }
            let dir = dir.unwrap_or_else(std::env::temp_dir);
            return print_report(bench::store(cameras, seconds, &dir));
        }
        BenchCommand::Incidents { projects, dir } => {
            if !(1..=1_000_000).contains(&projects) {
                eprintln!("error: --projects must be 1 to 1000000");
                return ExitCode::from(2);
            }
            let dir = dir.unwrap_or_else(std::env::temp_dir);
            return print_report(bench::incidents(projects, &dir));
        }
        BenchCommand::Export { seconds, dir } => {
            if !(10..=86_399).contains(&seconds) {
                eprintln!("error: --seconds must be 10 to 86399");
                return ExitCode::from(2);
            }
            let dir = dir.unwrap_or_else(std::env::temp_dir);
            return print_report(bench::export(seconds, &dir));
        }
        BenchCommand::Live {
            width,
            height,
            fps,
            seconds,
            starts,
            turn,
            branches,
        } => {
            if !(1..=3600).contains(&seconds)
                || !(1..=100).contains(&starts)
                || !(1..=60).contains(&fps)
                || !frame_size_ok(width, height)
            {
                eprintln!(
                    "error: need --seconds 1 to 3600, --starts 1 to 100, --fps 1 to 60, even \
                     --width/--height of at least 64"
                );
                return ExitCode::from(2);
            }
            let b = bench::LiveBench {
                width,
                height,
                fps,
                seconds,
                starts,
                turn,
                branches,
            };
            return print_report(bench::live(&b));
        }
        BenchCommand::Upload { mb, dir } => {
            if !(10..=100_000).contains(&mb) {
                eprintln!("error: --mb must be 10 to 100000");
                return ExitCode::from(2);
            }
            let dir = dir.unwrap_or_else(std::env::temp_dir);
            return print_report(bench::upload(mb, &dir));
        }
        BenchCommand::Privacy {
            source,
            width,
            height,
            frames,
            filter,
            detection,
        } => {
            let Some(filter) = parse_filter(&filter) else {
                eprintln!("error: --filter '{filter}': {FILTERS}");
                return ExitCode::from(2);
            };
            if width < 64 || height < 64 || width % 2 != 0 || height % 2 != 0 || frames == 0 {
                eprintln!("error: need even --width/--height of at least 64 and --frames > 0");
                return ExitCode::from(2);
            }
            let (source, detection) =
                match (bench_source(&source, width, height), detection.setup()) {
                    (Ok(s), Ok(d)) => (s, d),
                    (Err(e), _) | (_, Err(e)) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                };
            let b = bench::PipelineBench {
                source,
                frames,
                fps: 30,
                reference: false,
            };
            return print_report(bench::privacy(&b, filter, detection));
        }
        BenchCommand::Pipeline {
            source,
            width,
            height,
            frames,
            fps,
            no_reference,
        } => (source, width, height, frames, fps, no_reference),
    };
    let source = match bench_source(&source, width, height) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if !frame_size_ok(width, height) || frames == 0 || !(1..=120).contains(&fps) {
        eprintln!("error: need even --width/--height of at least 64, --frames > 0, --fps 1 to 120");
        return ExitCode::from(2);
    }
    let b = bench::PipelineBench {
        source,
        frames,
        fps,
        reference: !no_reference,
    };
    print_report(bench::pipeline(&b))
}

fn bench_source(source: &[String], width: u32, height: u32) -> Result<bench::BenchSource, String> {
    match source {
        [kind] if kind == "synthetic" => Ok(bench::BenchSource::Synthetic { width, height }),
        [kind, path] if kind == "file" => Ok(bench::BenchSource::File(PathBuf::from(path))),
        _ => Err("--source takes `synthetic` or `file PATH`".into()),
    }
}

const FILTERS: &str = "expected masks-only, motion, faces, faces-plates, strict or silhouette";

fn parse_filter(name: &str) -> Option<veil_privacy::Filter> {
    veil_privacy::Filter::from_name(name)
}

/// A benchmark's JSON on stdout, or its error on stderr with exit code 1.
fn print_report(report: Result<serde_json::Value, veil_core::Error>) -> ExitCode {
    match report {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// A picture size the pipeline takes (I420: even sides).
fn frame_size_ok(width: u32, height: u32) -> bool {
    width >= 64 && height >= 64 && width.is_multiple_of(2) && height.is_multiple_of(2)
}
