//! Links to result objects for the local runner, which serves them itself: `{base}/_export/{key}
//! ?expires={unix seconds}&signature={hex}`, where the signature is HMAC-SHA256 over
//! `{key}\n{expires}` with a key drawn at start-up. Like a presigned S3 URL, the link is the
//! credential: it names one object, expires, and any change to it is refused. Links do not outlive
//! the runner process.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use redb::ReadableDatabase;
use sha2::Sha256;

use super::{EmbeddedStore, OrUnavailable, RESULTS};
use segments_core::ports::{ByteStream, ResultLinks, ResultStore, StoreError};

/// The path under which the local runner serves linked objects.
pub const LINK_PATH: &str = "/_export/";
/// The longest validity a link may claim, whatever its signature: as for presigned S3 URLs of the
/// export, a quarter of an hour.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(15 * 60);

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
        mac.update(object_key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
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
        let now = now.timestamp();
        if now >= expires {
            return Err(LinkError::Expired);
        }
        if expires - now > MAX_LINK_TTL.as_secs() as i64 {
            return Err(LinkError::Invalid);
        }
        Ok(())
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
