//! Links to result objects for the local runner, which serves them itself: `{base}/_export/{key}
//! ?expires={unix seconds}&signature={hex}`, where the signature is HMAC-SHA256 over
//! `{key}\n{expires}` with a key drawn at start-up. Like a presigned S3 URL, the link is the
//! credential: it names one object, expires, and any change to it is refused. Links do not outlive
//! the runner process.
//!
//! Upload links of imports work the same way for a `PUT` of the object's body to
//! `{base}/_upload/{key}?expires=…&signature=…`, signed over `PUT\n{key}\n{expires}`, so a download
//! link never passes for an upload link.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use redb::ReadableDatabase;
use sha2::Sha256;

use super::{EmbeddedStore, OrUnavailable, RESULTS};
use segments_core::ports::{ByteStream, ResultLinks, ResultStore, StoreError, UploadLinks};

/// The path under which the local runner serves linked objects.
pub const LINK_PATH: &str = "/_export/";
/// The longest validity a link may claim, whatever its signature: as for presigned S3 URLs of the
/// export, a quarter of an hour.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(15 * 60);
/// The path under which the local runner takes uploads.
pub const UPLOAD_PATH: &str = "/_upload/";
/// The longest validity an upload link may claim: the validity of an import's upload links.
pub const MAX_UPLOAD_LINK_TTL: Duration = Duration::from_secs(60 * 60);

type HmacSha256 = Hmac<Sha256>;

/// Why a link is refused.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the link is not valid")]
    Invalid,
    #[error("the link has expired")]
    Expired,
    #[error("the object no longer exists")]
    Missing,
    /// The body of an upload could not be read to its end; nothing was stored.
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Signed, expiring links to the embedded store's result objects.
#[derive(Clone)]
pub struct LocalLinks {
    store: EmbeddedStore,
    base_url: String,
    key: [u8; 32],
}

impl std::fmt::Debug for LocalLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLinks").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
fn encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl LocalLinks {
    /// Links served by a runner listening at `base_url` (`http://127.0.0.1:8080`).
    pub fn new(store: EmbeddedStore, base_url: impl Into<String>) -> Self {
        let key = segments_core::domain::random_key();
        LocalLinks { store, base_url: base_url.into().trim_end_matches('/').to_owned(), key }
    }

    fn mac(&self, object_key: &str, expires: i64) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        self.sign_into(&mut mac, object_key, expires);
        mac
    }

    fn upload_mac(&self, object_key: &str, expires: i64) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(b"PUT\n");
        self.sign_into(&mut mac, object_key, expires);
        mac
    }

    fn sign_into(&self, mac: &mut HmacSha256, object_key: &str, expires: i64) {
        mac.update(object_key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
    }

    /// The link to `object_key`, valid until `expires` (Unix seconds).
    pub fn sign(&self, object_key: &str, expires: i64) -> String {
        let signature = hex::encode(self.mac(object_key, expires).finalize().into_bytes());
        format!("{}{LINK_PATH}{}?expires={expires}&signature={signature}", self.base_url, encode_path(object_key))
    }

    /// Checks a link's parts (the object key decoded from the path, the `expires` and `signature`
    /// query values) at `now`.
    pub fn verify(
        &self,
        object_key: &str,
        expires: &str,
        signature: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LinkError> {
        let expires: i64 = expires.parse().map_err(|_| LinkError::Invalid)?;
        let given = hex::decode(signature).map_err(|_| LinkError::Invalid)?;
        self.mac(object_key, expires).verify_slice(&given).map_err(|_| LinkError::Invalid)?;
        check_expiry(expires, now, MAX_LINK_TTL)
    }

    /// The upload link to `object_key`, valid until `expires` (Unix seconds).
    pub fn sign_upload(&self, object_key: &str, expires: i64) -> String {
        let signature = hex::encode(self.upload_mac(object_key, expires).finalize().into_bytes());
        format!("{}{UPLOAD_PATH}{}?expires={expires}&signature={signature}", self.base_url, encode_path(object_key))
    }

    /// Checks an upload link's parts, as [`LocalLinks::verify`] does a download link's.
    pub fn verify_upload(
        &self,
        object_key: &str,
        expires: &str,
        signature: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LinkError> {
        let expires: i64 = expires.parse().map_err(|_| LinkError::Invalid)?;
        let given = hex::decode(signature).map_err(|_| LinkError::Invalid)?;
        self.upload_mac(object_key, expires).verify_slice(&given).map_err(|_| LinkError::Invalid)?;
        check_expiry(expires, now, MAX_UPLOAD_LINK_TTL)
    }

    /// Stores the body of a verified upload under its key, piece by piece; returns its size. The
    /// object appears whole once the body has ended, or not at all.
    pub async fn receive<E: std::fmt::Display>(
        &self,
        object_key: &str,
        expires: &str,
        signature: &str,
        now: DateTime<Utc>,
        body: impl futures::Stream<Item = Result<bytes::Bytes, E>>,
    ) -> Result<u64, LinkError> {
        use futures::StreamExt;
        self.verify_upload(object_key, expires, signature, now)?;
        let mut writer = self.store.writer(object_key).await?;
        let mut body = std::pin::pin!(body);
        let mut size = 0u64;
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| LinkError::Interrupted(e.to_string()))?;
            size += piece.len() as u64;
            writer.write(piece).await?;
        }
        writer.finish().await?;
        Ok(size)
    }

    /// The object of a verified link, streamed.
    pub async fn open(
        &self,
        object_key: &str,
        expires: &str,
        signature: &str,
        now: DateTime<Utc>,
    ) -> Result<ByteStream, LinkError> {
        self.verify(object_key, expires, signature, now)?;
        self.store.get_stream(object_key).await?.ok_or(LinkError::Missing)
    }

    async fn exists(&self, object_key: &str) -> Result<bool, StoreError> {
        let key = object_key.to_owned();
        self.store
            .blocking("looking up a result object", move |db| {
                const WHAT: &str = "looking up a result object";
                let read = db.begin_read().or_unavailable(WHAT)?;
                let table = read.open_table(RESULTS).or_unavailable(WHAT)?;
                Ok(table.get(key.as_str()).or_unavailable(WHAT)?.is_some())
            })
            .await
    }
}

/// A verified link's expiry at `now`: not passed, and not further away than `longest`.
fn check_expiry(expires: i64, now: DateTime<Utc>, longest: Duration) -> Result<(), LinkError> {
    let now = now.timestamp();
    if now >= expires {
        return Err(LinkError::Expired);
    }
    if expires - now > longest.as_secs() as i64 {
        return Err(LinkError::Invalid);
    }
    Ok(())
}

#[async_trait]
impl UploadLinks for LocalLinks {
    async fn upload_link(&self, key: &str, ttl: Duration) -> Result<String, StoreError> {
        let ttl = ttl.min(MAX_UPLOAD_LINK_TTL).as_secs() as i64;
        Ok(self.sign_upload(key, Utc::now().timestamp() + ttl))
    }
}

#[async_trait]
impl ResultLinks for LocalLinks {
    async fn link(&self, key: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        if !self.exists(key).await? {
            return Ok(None);
        }
        let ttl = ttl.min(MAX_LINK_TTL).as_secs() as i64;
        Ok(Some(self.sign(key, Utc::now().timestamp() + ttl)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> (tempfile::TempDir, LocalLinks) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        (dir, LocalLinks::new(store, "http://127.0.0.1:8080/"))
    }

    fn parts(url: &str) -> (String, String, String) {
        let rest = url.strip_prefix("http://127.0.0.1:8080/_export/").unwrap();
        let (path, query) = rest.split_once('?').unwrap();
        let mut expires = String::new();
        let mut signature = String::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap();
            match k {
                "expires" => expires = v.to_owned(),
                "signature" => signature = v.to_owned(),
                _ => panic!("unexpected {k}"),
            }
        }
        (path.replace("%2B", "+").replace("%3A", ":"), expires, signature)
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires_and_any_change_is_refused() {
        let (_dir, l) = links();
        let now = Utc::now();
        let key = "results/bank+1/highBalance/0193/export.ndjson";
        let url = l.sign(key, now.timestamp() + 300);
        assert!(url.starts_with("http://127.0.0.1:8080/_export/results/bank%2B1/"), "{url}");
        let (path, expires, signature) = parts(&url);
        assert_eq!(path, key);
        assert!(l.verify(&path, &expires, &signature, now).is_ok());
        let later = now + chrono::Duration::seconds(301);
        assert!(matches!(l.verify(&path, &expires, &signature, later), Err(LinkError::Expired)));
        let other = "results/bank+2/highBalance/0193/export.ndjson";
        assert!(matches!(l.verify(other, &expires, &signature, now), Err(LinkError::Invalid)));
        let longer = (now.timestamp() + 3000).to_string();
        assert!(matches!(l.verify(&path, &longer, &signature, now), Err(LinkError::Invalid)));
        let mut flipped = signature.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(matches!(l.verify(&path, &expires, &flipped, now), Err(LinkError::Invalid)));
        assert!(matches!(l.verify(&path, &expires, "zz", now), Err(LinkError::Invalid)));
        // Another runner's key does not verify this runner's links.
        let (_dir2, l2) = links();
        assert!(matches!(l2.verify(&path, &expires, &signature, now), Err(LinkError::Invalid)));
    }

    #[test]
    fn a_signature_beyond_the_longest_validity_is_refused() {
        let (_dir, l) = links();
        let now = Utc::now();
        let url = l.sign("k", now.timestamp() + 3600);
        let (path, expires, signature) = parts(&url);
        assert!(matches!(l.verify(&path, &expires, &signature, now), Err(LinkError::Invalid)));
    }

    #[test]
    fn upload_links_live_as_long_as_an_import_promises() {
        assert_eq!(Some(MAX_UPLOAD_LINK_TTL), segments_core::imports::UPLOAD_LINK_TTL.to_std().ok());
    }

    #[tokio::test]
    async fn an_upload_link_stores_its_body_and_only_its_own_key() {
        let (_dir, l) = links();
        let key = "imports/bank-1/0193/accounts.ndjson";
        let url = l.upload_link(key, Duration::from_secs(3600)).await.unwrap();
        let rest = url.strip_prefix("http://127.0.0.1:8080/_upload/").unwrap();
        let (path, query) = rest.split_once('?').unwrap();
        assert_eq!(path, key);
        let (expires, signature) = query.split_once('&').unwrap();
        let (expires, signature) = (&expires["expires=".len()..], &signature["signature=".len()..]);
        let now = Utc::now();
        let body = || {
            futures::stream::iter(vec![
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"a\":1}\n")),
                Ok(bytes::Bytes::from_static(b"{\"a\":2}\n")),
            ])
        };

        // Neither another key, nor a download signature, nor a stale link uploads anything.
        let other = "imports/bank-2/0193/accounts.ndjson";
        assert!(matches!(l.receive(other, expires, signature, now, body()).await, Err(LinkError::Invalid)));
        let download = l.sign(key, now.timestamp() + 60);
        let (_, _, download_signature) = parts(&download);
        let soon = (now.timestamp() + 60).to_string();
        assert!(matches!(l.receive(key, &soon, &download_signature, now, body()).await, Err(LinkError::Invalid)));
        let later = now + chrono::Duration::hours(2);
        assert!(matches!(l.receive(key, expires, signature, later, body()).await, Err(LinkError::Expired)));
        assert_eq!(l.store.size(key).await.unwrap(), None);

        // A body that breaks off leaves nothing behind.
        let broken = futures::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"{\"a\":1}\n")),
            Err(std::io::Error::other("connection reset")),
        ]);
        assert!(matches!(l.receive(key, expires, signature, now, broken).await, Err(LinkError::Interrupted(_))));
        assert_eq!(l.store.size(key).await.unwrap(), None);

        assert_eq!(l.receive(key, expires, signature, now, body()).await.unwrap(), 16);
        assert_eq!(l.store.size(key).await.unwrap(), Some(16));
        assert_eq!(l.store.get(key).await.unwrap().unwrap().as_ref(), b"{\"a\":1}\n{\"a\":2}\n");
    }

    #[tokio::test]
    async fn links_name_existing_objects_only() {
        let (_dir, l) = links();
        assert_eq!(l.link("results/m/highBalance/j/export.ndjson", Duration::from_secs(60)).await.unwrap(), None);
        l.store.put("results/m/highBalance/j/export.ndjson", bytes::Bytes::from_static(b"{}\n")).await.unwrap();
        let url = l.link("results/m/highBalance/j/export.ndjson", Duration::from_secs(60)).await.unwrap().unwrap();
        let (path, expires, signature) = parts(&url);
        let stream = l.open(&path, &expires, &signature, Utc::now()).await.unwrap();
        let body: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(stream).await.unwrap();
        assert_eq!(body.concat(), b"{}\n");
    }
}
