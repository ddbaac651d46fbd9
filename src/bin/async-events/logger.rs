//! A minimal `log` sink for the command line: one line per message on standard error, warnings
//! and errors always, the crate's debug messages with `-v`.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr {
    verbose: bool,
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Warn
            || (self.verbose && metadata.target().starts_with("datafusion_async_events"))
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let level = record.level().as_str().to_lowercase();
            eprintln!("{level}: {}", record.args());
        }
    }

    fn flush(&self) {}
}

/// Installs the sink (once, at start-up).
pub fn install(verbose: bool) {
    let sink = Box::new(Stderr { verbose });
    if log::set_boxed_logger(sink).is_ok() {
        log::set_max_level(if verbose {
            LevelFilter::Debug
        } else {
            LevelFilter::Warn
        });
    }
}
