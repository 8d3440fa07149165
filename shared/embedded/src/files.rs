//! Objects kept as files in the data directory instead of in the database: the uploaded files of
//! imports (`imports/…`), which may be gigabytes. A redb value is written and read whole, so an
//! upload in the database would pass through memory; a file is streamed in pieces both ways.
//!
//! `{data dir}/objects/{key}`, each `/`-separated part of the key a directory level. Identifiers
//! may be `.` or `..`, so such a part is written with its dots escaped (`%2E`), as is any byte
//! outside the identifier alphabet: no key reaches outside the folder.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use segments_core::imports::IMPORTS_PREFIX;
use segments_core::ports::{ByteStream, ObjectWriter, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The folder of the data directory holding file objects.
pub const OBJECTS_DIR: &str = "objects";
/// Size of the pieces a file object is read in.
const READ_PIECE_BYTES: usize = 256 * 1024;

/// Whether an object of this key is a file rather than a database value.
pub(crate) fn is_file_object(key: &str) -> bool {
    key.starts_with(IMPORTS_PREFIX)
}

/// The file of `key` under `data_dir`.
pub(crate) fn path_of(data_dir: &Path, key: &str) -> Result<PathBuf, StoreError> {
    let mut path = data_dir.join(OBJECTS_DIR);
    for part in key.split('/') {
        if part.is_empty() {
            return Err(StoreError::Corrupt(format!("object key {key:?} has an empty part")));
        }
        let only_dots = part.bytes().all(|b| b == b'.');
        let mut name = String::with_capacity(part.len());
        for b in part.bytes() {
            let plain = b.is_ascii_alphanumeric() || b"_-:@+=".contains(&b) || (b == b'.' && !only_dots);
            if plain {
                name.push(b as char);
            } else {
                name.push_str(&format!("%{b:02X}"));
            }
        }
        path.push(name);
    }
    Ok(path)
}

fn unavailable(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::unavailable(format!("{what} {}", path.display()), e)
}

pub(crate) async fn size(path: &Path) -> Result<Option<u64>, StoreError> {
    match tokio::fs::metadata(path).await {
        Ok(meta) => Ok(Some(meta.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(unavailable("looking up", path, e)),
    }
}

pub(crate) async fn get_stream(path: PathBuf) -> Result<Option<ByteStream>, StoreError> {
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unavailable("opening", &path, e)),
    };
    let pieces = futures::stream::unfold(Some((file, path)), |state| async move {
        let (mut file, path) = state?;
        let mut piece = BytesMut::zeroed(READ_PIECE_BYTES);
        match file.read(&mut piece).await {
            Ok(0) => None,
            Ok(n) => {
                piece.truncate(n);
                Some((Ok(piece.freeze()), Some((file, path))))
            }
            Err(e) => Some((Err(unavailable("reading", &path, e)), None)),
        }
    });
    Ok(Some(Box::pin(pieces)))
}

pub(crate) async fn get(path: &Path) -> Result<Option<Bytes>, StoreError> {
    match tokio::fs::read(path).await {
        Ok(body) => Ok(Some(Bytes::from(body))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(unavailable("reading", path, e)),
    }
}

pub(crate) async fn put(path: PathBuf, body: Bytes) -> Result<(), StoreError> {
    let mut writer = FileWriter::create(path).await?;
    writer.write(body).await?;
    Box::new(writer).finish().await
}

/// Writes a file object under a temporary name and renames it at `finish`, so the key shows the
/// whole object or the one before; dropped unfinished, it removes its temporary file.
pub(crate) struct FileWriter {
    path: PathBuf,
    partial: PathBuf,
    file: Option<tokio::fs::File>,
}

impl FileWriter {
    pub(crate) async fn create(path: PathBuf) -> Result<FileWriter, StoreError> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        tokio::fs::create_dir_all(&dir).await.map_err(|e| unavailable("creating", &dir, e))?;
        let mut partial = path.clone().into_os_string();
        partial.push(format!(".partial-{:016x}", rand_suffix()));
        let partial = PathBuf::from(partial);
        let file = tokio::fs::File::create(&partial).await.map_err(|e| unavailable("creating", &partial, e))?;
        Ok(FileWriter { path, partial, file: Some(file) })
    }
}

/// Tells apart the temporary files of concurrent writers of one key.
fn rand_suffix() -> u64 {
    let bytes = segments_core::domain::random_key();
    u64::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]])
}

#[async_trait]
impl ObjectWriter for FileWriter {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        let Some(file) = self.file.as_mut() else {
            return Err(StoreError::unavailable("writing an object", "the writer has finished"));
        };
        file.write_all(&bytes).await.map_err(|e| unavailable("writing", &self.partial, e))
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        let Some(mut file) = self.file.take() else {
            return Err(StoreError::unavailable("writing an object", "the writer has finished"));
        };
        file.flush().await.map_err(|e| unavailable("writing", &self.partial, e))?;
        file.sync_all().await.map_err(|e| unavailable("writing", &self.partial, e))?;
        drop(file);
        tokio::fs::rename(&self.partial, &self.path).await.map_err(|e| unavailable("renaming", &self.partial, e))?;
        // Nothing left to remove on drop.
        self.partial = PathBuf::new();
        Ok(())
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if !self.partial.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_objects_folder() {
        let dir = Path::new("/data");
        assert_eq!(
            path_of(dir, "imports/bank-1/0193/accounts.ndjson").unwrap(),
            Path::new("/data/objects/imports/bank-1/0193/accounts.ndjson")
        );
        assert_eq!(
            path_of(dir, "imports/../0193/accounts.ndjson").unwrap(),
            Path::new("/data/objects/imports/%2E%2E/0193/accounts.ndjson")
        );
        assert_eq!(path_of(dir, "imports/./a b").unwrap(), Path::new("/data/objects/imports/%2E/a%20b"));
        assert!(path_of(dir, "imports//x").is_err());
        assert!(path_of(dir, "/imports/x").is_err());
    }

    #[tokio::test]
    async fn a_file_object_appears_whole_at_finish_and_an_unfinished_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_of(dir.path(), "imports/m/i/accounts.ndjson").unwrap();
        assert_eq!(size(&path).await.unwrap(), None);

        let mut writer = Box::new(FileWriter::create(path.clone()).await.unwrap());
        writer.write(Bytes::from_static(b"{\"a\":1}\n")).await.unwrap();
        assert_eq!(size(&path).await.unwrap(), None, "nothing before finish");
        drop(writer);
        assert_eq!(size(&path).await.unwrap(), None);
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 0, "no partial file left");

        let mut writer = Box::new(FileWriter::create(path.clone()).await.unwrap());
        let piece = Bytes::from(vec![b'x'; READ_PIECE_BYTES + 10]);
        writer.write(piece.clone()).await.unwrap();
        writer.write(Bytes::from_static(b"\n")).await.unwrap();
        writer.finish().await.unwrap();
        assert_eq!(size(&path).await.unwrap(), Some(READ_PIECE_BYTES as u64 + 11));

        let pieces: Vec<Bytes> =
            futures::TryStreamExt::try_collect(get_stream(path.clone()).await.unwrap().unwrap()).await.unwrap();
        assert!(pieces.len() >= 2, "read in pieces");
        assert_eq!(pieces.concat(), [piece.as_ref(), b"\n"].concat());
        assert_eq!(get(&path).await.unwrap().unwrap().len(), READ_PIECE_BYTES + 11);
    }
}
