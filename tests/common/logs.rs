//! A `log` sink that keeps every message of the test binary, to assert what the crate logged.

use std::sync::{Mutex, OnceLock};

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line = format!("{}: {}", record.level(), record.args());
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(capture).expect("the only logger of the test binary");
        log::set_max_level(log::LevelFilter::Debug);
        capture
    })
}

/// Starts capturing (idempotent).
pub fn start() {
    capture();
}

/// The messages logged so far that contain `needle`.
pub fn containing(needle: &str) -> Vec<String> {
    let lines = capture().0.lock().unwrap_or_else(|e| e.into_inner());
    lines
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}
