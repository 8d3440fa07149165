//! `segments events`: the local runner's segment events, as its event file holds them
//! (`{data_dir}/events.ndjson`, one JSON object per line with the fields of an EventBridge
//! event). With `--follow` it keeps printing the lines appended later, until Ctrl-C.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How often `--follow` looks at the file for appended lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Reads the complete lines appended to a file since the last read. A line is complete once its
/// newline is written: the runner appends whole lines, so what follows the last newline is a
/// write in progress, read whole on a later call.
#[derive(Debug)]
pub struct EventLines {
    path: PathBuf,
    /// Bytes of the file read so far.
    offset: u64,
    /// Read bytes after the last newline.
    partial: Vec<u8>,
}

impl EventLines {
    pub fn new(path: &Path) -> Self {
        EventLines { path: path.to_owned(), offset: 0, partial: Vec::new() }
    }

    /// The lines completed since the last call, without their newlines. A missing file has
    /// none (yet); a file shorter than what was read was replaced, and is read from its start.
    pub async fn read_new(&mut self) -> io::Result<Vec<String>> {
        let mut file = match tokio::fs::File::open(&self.path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        if file.metadata().await?.len() < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        file.seek(io::SeekFrom::Start(self.offset)).await?;
        let mut appended = Vec::new();
        file.read_to_end(&mut appended).await?;
        self.offset += appended.len() as u64;
        self.partial.extend_from_slice(&appended);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else { return Ok(Vec::new()) };
        let rest = self.partial.split_off(end + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        Ok(complete
            .split(|b| *b == b'\n')
            .map(|line| String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned())
            .filter(|line| !line.trim().is_empty())
            .collect())
    }
}

/// Whether a line of the file is an event: a JSON object. The runner's writes are whole lines,
/// but a runner killed mid-write leaves a torn line (ended by the next run), which is skipped.
fn is_event(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object())
}

/// Writes the events among `lines` to `out`, exactly as stored, and flushes; a torn line is
/// reported on stderr. `Ok(false)`: the reader went away (a closed pipe), stop quietly.
fn print_lines(out: &mut impl Write, lines: &[String]) -> io::Result<bool> {
    let written = (|| {
        for line in lines {
            if is_event(line) {
                writeln!(out, "{line}")?;
            } else {
                eprintln!("skipped a line that is not a JSON object (a write torn when a runner stopped)");
            }
        }
        out.flush()
    })();
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// Prints the event file's lines; with `follow`, then the lines appended later, looking every
/// [`FOLLOW_POLL`] (a missing file is waited for), until Ctrl-C.
pub async fn print_events(path: &Path, follow: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut lines = EventLines::new(path);
    let stdout = io::stdout();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let new = lines.read_new().await.with_context(|| format!("reading {}", path.display()))?;
        if !print_lines(&mut stdout.lock(), &new)? || !follow {
            return Ok(());
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            () = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(path: &Path, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn lines_are_read_once_each_and_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let mut lines = EventLines::new(&path);
        assert!(lines.read_new().await.unwrap().is_empty(), "a missing file has no lines");

        append(&path, "{\"id\":\"1\"}\n{\"id\":");
        assert_eq!(lines.read_new().await.unwrap(), ["{\"id\":\"1\"}"]);
        // The second line is completed by a later write.
        append(&path, "\"2\"}\r\n\n");
        assert_eq!(lines.read_new().await.unwrap(), ["{\"id\":\"2\"}"]);
        assert!(lines.read_new().await.unwrap().is_empty());

        // A replaced (shorter) file is read from its start.
        std::fs::write(&path, "{\"id\":\"3\"}\n").unwrap();
        assert_eq!(lines.read_new().await.unwrap(), ["{\"id\":\"3\"}"]);
    }

    #[test]
    fn only_json_objects_are_printed_and_as_stored() {
        let mut out = Vec::new();
        let lines = ["{ \"id\" : \"1\" }".to_owned(), "{\"id\":\"to".to_owned(), "[1]".to_owned()];
        assert!(print_lines(&mut out, &lines).unwrap());
        assert_eq!(String::from_utf8(out).unwrap(), "{ \"id\" : \"1\" }\n");
    }
}
