//! Local bearer tokens: HS256 JWTs signed with a secret kept in the data directory.
//!
//! In AWS, API Gateway's JWT authorizer verifies Cognito tokens. Locally the runner plays the
//! gateway: it verifies these tokens (or, configured for a user pool, Cognito's own access tokens:
//! `crate::cognito`) and passes their claims and scopes on in the same authorizer context, so the
//! handlers run unchanged.

use std::fmt::Display;
use std::fs;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use segments_core::domain::SegmentType;

/// Issuer of local tokens; tokens of any other issuer are refused.
pub const ISSUER: &str = "segments-local";
const SECRET_FILE: &str = "token-secret";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or create the signing secret {path}: {source}")]
    Secret { path: PathBuf, source: std::io::Error },
    #[error("the signing secret {0} is malformed")]
    MalformedSecret(PathBuf),
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// Every scope of docs/security.md.
pub fn all_scopes() -> Vec<String> {
    let mut scopes: Vec<String> = SegmentType::ALL.iter().map(|t| t.scope()).collect();
    scopes.extend(["segments/definitions.read", "segments/definitions.write", "segments/usage.read"].map(String::from));
    scopes.extend([data_api::READ_SCOPE, data_api::WRITE_SCOPE].map(String::from));
    scopes
}

/// The signing secret of a data directory, created (32 random bytes, owner-only) on first use.
pub struct Signer {
    secret: Vec<u8>,
}

impl Signer {
    pub fn load_or_create(data_dir: &Path) -> Result<Signer, TokenError> {
        let path = data_dir.join(SECRET_FILE);
        let err = |source| TokenError::Secret { path: path.clone(), source };
        match fs::read_to_string(&path) {
            Ok(text) => {
                let secret =
                    URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| TokenError::MalformedSecret(path.clone()))?;
                if secret.len() < 32 {
                    return Err(TokenError::MalformedSecret(path));
                }
                Ok(Signer { secret })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(data_dir).map_err(err)?;
                let mut secret = vec![0u8; 32];
                rand::rng().fill_bytes(&mut secret);
                let mut options = fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(&path) {
                    Ok(mut file) => {
                        file.write_all(URL_SAFE_NO_PAD.encode(&secret).as_bytes()).map_err(err)?;
                        Ok(Signer { secret })
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Signer::load_or_create(data_dir),
                    Err(e) => Err(err(e)),
                }
            }
            Err(e) => Err(err(e)),
        }
    }

    /// A token naming `mandator` in `mandator_claim`, with `scopes`, valid for `ttl_seconds`.
    pub fn mint(
        &self,
        mandator_claim: &str,
        mandator: &str,
        scopes: &[String],
        ttl_seconds: i64,
    ) -> Result<String, TokenError> {
        let now = chrono::Utc::now().timestamp();
        let mut claims = Map::new();
        claims.insert(mandator_claim.to_owned(), Value::String(mandator.to_owned()));
        claims.insert("scope".into(), Value::String(scopes.join(" ")));
        claims.insert("iss".into(), Value::String(ISSUER.into()));
        claims.insert("token_use".into(), Value::String("access".into()));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now + ttl_seconds));
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&self.secret))?)
    }

    /// Verifies signature, issuer and expiry; returns the claims as API Gateway passes them on
    /// (every value a string) and the scopes.
    pub fn verify(&self, token: &str) -> Result<VerifiedClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &DecodingKey::from_secret(&self.secret), &validation)?;
        Ok(VerifiedClaims::as_authorizer_passes_on(data.claims))
    }
}

/// What the runner checks a request's bearer token with before a handler sees the request.
pub trait BearerVerifier: Send + Sync + 'static {
    /// Why a token was refused: logged by the runner, never sent to the client (which gets a
    /// plain 401). It never contains the token.
    type Refusal: Display + Send;

    fn verify_bearer(&self, token: &str) -> impl Future<Output = Result<VerifiedClaims, Self::Refusal>> + Send;
}

impl BearerVerifier for Signer {
    type Refusal = TokenError;

    async fn verify_bearer(&self, token: &str) -> Result<VerifiedClaims, TokenError> {
        self.verify(token)
    }
}

/// A verified token's claims and scopes, in the authorizer context of an API Gateway (HTTP API,
/// payload v2) request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifiedClaims {
    pub claims: Map<String, Value>,
    pub scopes: Vec<String>,
}

impl VerifiedClaims {
    /// The claims as API Gateway's JWT authorizer hands them to a function: every value a string
    /// (numbers as their digits, arrays as `[a b]`, objects as `map[k:v]`), and the scopes of the
    /// `scope` claim (space separated, as Cognito issues it).
    pub fn as_authorizer_passes_on(claims: Map<String, Value>) -> VerifiedClaims {
        let claims: Map<String, Value> =
            claims.into_iter().map(|(name, value)| (name, Value::String(authorizer_text(&value)))).collect();
        let scopes = claims
            .get("scope")
            .and_then(Value::as_str)
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        VerifiedClaims { claims, scopes }
    }
}

/// The text the authorizer makes of a claim's value. Its form for arrays (elements between
/// brackets, separated by spaces) is what `Caller::from_request` reads `cognito:groups` from.
fn authorizer_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        Value::Array(items) => format!("[{}]", items.iter().map(authorizer_text).collect::<Vec<_>>().join(" ")),
        Value::Object(fields) => {
            let mut pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{k}:{}", authorizer_text(v))).collect();
            pairs.sort();
            format!("map[{}]", pairs.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_with_the_same_data_dir_only() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_create(a.path()).unwrap();
        let token = signer.mint("client_id", "bank-1", &all_scopes(), 60).unwrap();
        let again = Signer::load_or_create(a.path()).unwrap();
        let verified = again.verify(&token).unwrap();
        assert_eq!(verified.claims["client_id"], "bank-1");
        assert!(verified.scopes.contains(&"segments/highBalance".to_owned()));
        assert!(verified.scopes.contains(&data_api::WRITE_SCOPE.to_owned()));
        let other = Signer::load_or_create(b.path()).unwrap();
        assert!(other.verify(&token).is_err());
    }

    #[test]
    fn expired_and_tampered_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_create(dir.path()).unwrap();
        let expired = signer.mint("client_id", "bank-1", &[], -3600).unwrap();
        assert!(signer.verify(&expired).is_err());
        let token = signer.mint("client_id", "bank-1", &[], 60).unwrap();
        let mut tampered = token.clone();
        tampered.insert(token.len() - 3, 'A');
        assert!(signer.verify(&tampered).is_err());
        assert!(signer.verify("not.a.token").is_err());
    }

    #[test]
    fn claims_reach_the_handlers_as_the_authorizer_passes_them_on() {
        let claims = serde_json::json!({
            "client_id": "console", "exp": 1893456000, "cognito:groups": ["bank-1"],
            "several": ["a", 2, true], "flag": false, "nested": {"b": 1, "a": "x"},
            "scope": "segments/highBalance  segments/usage.read",
        });
        let Value::Object(claims) = claims else { unreachable!("an object literal") };
        let verified = VerifiedClaims::as_authorizer_passes_on(claims);
        assert_eq!(verified.claims["client_id"], "console");
        assert_eq!(verified.claims["exp"], "1893456000");
        assert_eq!(verified.claims["cognito:groups"], "[bank-1]");
        assert_eq!(verified.claims["several"], "[a 2 true]");
        assert_eq!(verified.claims["flag"], "false");
        assert_eq!(verified.claims["nested"], "map[a:x b:1]");
        assert_eq!(verified.scopes, ["segments/highBalance", "segments/usage.read"]);
    }
}
