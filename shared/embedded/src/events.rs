//! The local runner's event file: every segment event published, one JSON object per line
//! ([`SegmentEvent::envelope`], the fields of an EventBridge event), appended to
//! `{data_dir}/events.ndjson`. `segments events` prints it; anything that reads NDJSON can follow it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use segments_core::domain::events::SegmentEvent;
use segments_core::ports::{EventPublisher, StoreError};

/// The event file inside the data directory.
pub const EVENTS_FILE: &str = "events.ndjson";

/// An [`EventPublisher`] appending to one file. Clones share the open file; one publish call at a
/// time writes, so the lines of two calls never interleave, and each call's lines are on disk
/// (flushed and synced) before it returns.
#[derive(Debug, Clone)]
pub struct EventFile {
    file: Arc<Mutex<File>>,
    path: Arc<PathBuf>,
}

impl EventFile {
    /// Opens `path` for appending, creating it (and its directory) when missing.
    pub fn open(path: &Path) -> Result<EventFile, StoreError> {
        let unavailable = |e| StoreError::unavailable(format!("cannot open the event file {}", path.display()), e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(unavailable)?;
        end_last_line(&mut file).map_err(unavailable)?;
        Ok(EventFile { file: Arc::new(Mutex::new(file)), path: Arc::new(path.to_owned()) })
    }

    /// The event file of a data directory ([`EVENTS_FILE`]).
    pub fn in_data_dir(dir: &Path) -> Result<EventFile, StoreError> {
        EventFile::open(&dir.join(EVENTS_FILE))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Ends a line a process stopped in the middle of writing, so the next event starts a line of its
/// own instead of being glued to the torn one (a reader then skips one bad line, not two).
fn end_last_line(file: &mut File) -> std::io::Result<()> {
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(length - 1))?;
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
        file.sync_data()?;
    }
    Ok(())
}

#[async_trait]
impl EventPublisher for EventFile {
    async fn publish(&self, events: &[SegmentEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut lines = String::new();
        for event in events {
            let line = serde_json::to_string(&event.envelope())
                .map_err(|e| StoreError::unavailable("encoding a segment event", e))?;
            lines.push_str(&line);
            lines.push('\n');
        }
        let file = Arc::clone(&self.file);
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || {
            let unavailable =
                |e| StoreError::unavailable(format!("cannot append to the event file {}", path.display()), e);
            // A panic of another writer leaves the file as it was at some write's end or middle;
            // appending on is still right, the reader skips a torn line.
            let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            file.write_all(lines.as_bytes()).map_err(unavailable)?;
            file.flush().map_err(unavailable)?;
            file.sync_data().map_err(unavailable)
        })
        .await
        .map_err(|e| StoreError::unavailable("appending to the event file", e))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use segments_core::domain::MandatorId;
    use segments_core::domain::events::EventKind;
    use segments_core::domain::segment::{Metadata, Segment, SegmentId, Status};

    fn segment() -> Segment {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 6, 0, 0).unwrap();
        Segment {
            id: SegmentId::new(),
            mandator: MandatorId::parse("bank").unwrap(),
            ledger_id: None,
            name: "gold".into(),
            status: Status::default(),
            metadata: Metadata::new(),
            rule: None,
            last_refresh: None,
            schedule: None,
            next_refresh_at: None,
            callback_url: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            version: 1,
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    #[tokio::test]
    async fn every_event_is_one_envelope_line_in_order_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment();
        let now = seg.created_at;
        let created = SegmentEvent::segment(EventKind::Created, &seg, now);
        let updated = SegmentEvent::segment(EventKind::Updated, &Segment { version: 2, ..seg.clone() }, now);
        let deleted = SegmentEvent::segment(EventKind::Deleted, &Segment { version: 3, ..seg.clone() }, now);

        let file = EventFile::in_data_dir(dir.path()).unwrap();
        file.publish(&[created.clone(), updated.clone()]).await.unwrap();
        file.publish(&[]).await.unwrap();
        drop(file);
        // A second run of the local runner appends after what the first wrote.
        EventFile::in_data_dir(dir.path()).unwrap().publish(std::slice::from_ref(&deleted)).await.unwrap();

        let written = lines(&dir.path().join(EVENTS_FILE));
        let expected: Vec<_> = [created, updated, deleted].iter().map(SegmentEvent::envelope).collect();
        assert_eq!(written, expected);
        assert_eq!(written[0]["detail-type"], "Segment Created");
        assert_eq!(written[0]["source"], "financial-segments");
    }

    #[tokio::test]
    async fn a_line_torn_by_a_crash_does_not_swallow_the_next_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENTS_FILE);
        std::fs::write(&path, "{\"id\":\"torn").unwrap();
        let event = SegmentEvent::segment(EventKind::Created, &segment(), Utc::now());
        EventFile::open(&path).unwrap().publish(std::slice::from_ref(&event)).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let last = text.lines().last().unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(last).unwrap(), event.envelope());
        assert_eq!(text.lines().count(), 2);
    }

    #[tokio::test]
    async fn concurrent_publishers_never_interleave_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = EventFile::in_data_dir(dir.path()).unwrap();
        let seg = segment();
        let batches: Vec<Vec<SegmentEvent>> = (0..8)
            .map(|i| {
                (0..25)
                    .map(|j| {
                        let s = Segment { version: i * 100 + j, ..seg.clone() };
                        SegmentEvent::segment(EventKind::Updated, &s, seg.created_at)
                    })
                    .collect()
            })
            .collect();
        futures::future::try_join_all(batches.iter().map(|b| file.publish(b))).await.unwrap();
        let written = lines(file.path());
        assert_eq!(written.len(), 200);
        // Each call's events stay together and in order.
        for chunk in written.chunks(25) {
            let first = chunk[0]["detail"]["version"].as_u64().unwrap();
            let versions: Vec<u64> = chunk.iter().map(|l| l["detail"]["version"].as_u64().unwrap()).collect();
            assert_eq!(versions, (first..first + 25).collect::<Vec<_>>());
        }
    }
}
