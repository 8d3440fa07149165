//! Progress on long work: a bar on a terminal, plain lines otherwise (logs, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub enum Progress {
    Bar(ProgressBar),
    Lines { label: String, total: u64, last: Instant, every: Duration },
    Quiet,
}

impl Progress {
    /// `quiet` for `--json` output, where stderr should stay clean too.
    pub fn new(label: &str, total: u64, quiet: bool) -> Progress {
        if quiet {
            return Progress::Quiet;
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(label.to_owned());
            Progress::Bar(bar)
        } else {
            Progress::Lines { label: label.to_owned(), total, last: Instant::now(), every: Duration::from_secs(5) }
        }
    }

    pub fn set(&mut self, done: u64) {
        match self {
            Progress::Bar(bar) => bar.set_position(done),
            Progress::Lines { label, total, last, every } => {
                if last.elapsed() >= *every {
                    eprintln!("{label}: {done}/{total}");
                    *last = Instant::now();
                }
            }
            Progress::Quiet => {}
        }
    }

    pub fn finish(self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
