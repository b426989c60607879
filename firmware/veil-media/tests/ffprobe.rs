//! The H.264 we produce, checked by a decoder we did not write: ffprobe (FFmpeg).

use std::process::Command;
use std::sync::Arc;

use veil_core::{Clock, SystemClock};
use veil_media::pipeline::{Pipeline, PipelineConfig, openh264_factory};
use veil_media::source::{Source, SyntheticCamera};

/// ffprobe, or `None` on a machine without it. Under scripts/test (VEIL_MEDIA_DIR set) its
/// absence is a failure, not a skip.
fn ffprobe() -> Option<&'static str> {
    let present = Command::new("ffprobe")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var_os("VEIL_MEDIA_DIR").is_none(),
            "ffprobe missing: scripts/test installs ffmpeg"
        );
        eprintln!("ffprobe not installed: skipping");
        return None;
    }
    Some("ffprobe")
}

#[test]
fn pipeline_output_is_valid_h264_with_the_right_size_count_and_gop() {
    let Some(ffprobe) = ffprobe() else { return };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let (w, h, fps, frames) = (1280u32, 720u32, 30u32, 95u64);
    let config = PipelineConfig {
        lossless: true,
        keyframe_secs: 1,
        ..PipelineConfig::new("probe", fps)
    };
    let pipeline =
        Pipeline::start(config, Box::new(|_| {}), openh264_factory(), clock.clone()).unwrap();
    let mut rx = pipeline.subscribe();
    let mut cam = SyntheticCamera::new(w, h, fps, clock, false);
    let input = pipeline.input();
    let mut stream = Vec::new();
    for _ in 0..frames {
        input.send_blocking(cam.next_frame().unwrap().unwrap());
        while let Ok(f) = rx.try_recv() {
            stream.extend_from_slice(&f.data);
        }
    }
    drop(input);
    pipeline.finish();
    while let Ok(f) = rx.try_recv() {
        stream.extend_from_slice(&f.data);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.h264");
    std::fs::write(&path, &stream).unwrap();

    let out = Command::new(ffprobe)
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames,pix_fmt",
        ])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "ffprobe complained: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "codec_name=h264",
        "width=1280",
        "height=720",
        "pix_fmt=yuv420p",
        &format!("nb_read_frames={frames}"),
    ] {
        assert!(text.lines().any(|l| l == want), "want {want} in:\n{text}");
    }

    // Keyframes every `fps` frames (keyframe_secs = 1): at 0, 30, 60, 90.
    let out = Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=key_frame",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let keys: Vec<usize> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim().starts_with('1'))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(keys, [0, 30, 60, 90]);
}
