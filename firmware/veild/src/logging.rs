use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use veil_core::config::LogFormat;

/// The newest log lines, for the page's "download logs" (the journal has them all on a
/// device; this works in development too).
static RECENT: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
const RECENT_LINES: usize = 5000;

/// The newest log lines, oldest first, colour codes removed.
pub fn recent() -> String {
    let lines = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines.iter() {
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ … final byte in @..~
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes each event to stderr and keeps it in [`RECENT`].
struct Tee;

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(buf)?;
        let text = String::from_utf8_lossy(buf);
        let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
        for line in text.lines().filter(|l| !l.is_empty()) {
            if recent.len() == RECENT_LINES {
                recent.pop_front();
            }
            recent.push_back(strip_ansi(line));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Logs go to stderr (journald picks them up under systemd). `RUST_LOG` overrides the level.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| Tee);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(e) = result {
        eprintln!("warning: logging already initialised: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_removed_from_kept_lines() {
        assert_eq!(
            strip_ansi("\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m hi"),
            "2026  INFO hi"
        );
        let mut tee = Tee;
        tee.write_all(b"first line\nsecond line\n").unwrap();
        let r = recent();
        assert!(r.contains("first line\nsecond line\n"), "{r}");
    }
}
