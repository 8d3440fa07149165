use std::collections::BTreeSet;

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use crate::domain::MandatorId;
use crate::usecases::{AppError, Caller};

/// Reads the caller from what API Gateway's JWT authorizer verified and passed on (HTTP API,
/// payload v2).
impl Caller {
    pub fn from_request(req: &Request, mandator_claim: &str) -> Result<Caller, AppError> {
        let jwt = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref()),
            _ => None,
        }
        .ok_or(AppError::Unauthenticated)?;
        let mandator =
            jwt.claims.get(mandator_claim).and_then(|m| MandatorId::parse(m).ok()).ok_or(AppError::Unauthenticated)?;
        // The authorizer lists scopes when the route requires some; the `scope` claim (space
        // separated, as Cognito issues it) covers routes that do not.
        let mut scopes: BTreeSet<String> = jwt.scopes.iter().flatten().cloned().collect();
        if let Some(claim) = jwt.claims.get("scope") {
            scopes.extend(claim.split_whitespace().map(str::to_owned));
        }
        Ok(Caller { mandator, scopes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorizer: serde_json::Value) -> Request {
        let event = serde_json::json!({
            "version": "2.0",
            "routeKey": "POST /segments/{segmentType}",
            "rawPath": "/segments/highBalance",
            "rawQueryString": "",
            "headers": {"content-type": "application/json"},
            "requestContext": {
                "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com",
                "domainPrefix": "api", "requestId": "r1", "routeKey": "POST /segments/{segmentType}",
                "stage": "$default", "time": "12/Mar/2024:19:03:58 +0000", "timeEpoch": 1710270238000i64,
                "http": {"method": "POST", "path": "/segments/highBalance", "protocol": "HTTP/1.1",
                         "sourceIp": "192.0.2.1", "userAgent": "test"},
                "authorizer": authorizer
            },
            "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).unwrap()
    }

    #[test]
    fn reads_mandator_and_scopes_from_the_jwt_authorizer() {
        let req = request(serde_json::json!({"jwt": {
            "claims": {"client_id": "bank-1", "scope": "segments/lowBalance"},
            "scopes": ["segments/highBalance"]
        }}));
        let c = Caller::from_request(&req, "client_id").unwrap();
        assert_eq!(c.mandator.as_str(), "bank-1");
        assert!(c.require_scope("segments/highBalance").is_ok());
        assert!(c.require_scope("segments/lowBalance").is_ok());
        assert!(matches!(c.require_scope("segments/usage.read"), Err(AppError::MissingScope(_))));
    }

    #[test]
    fn the_mandator_claim_is_configurable() {
        let req = request(serde_json::json!({"jwt": {"claims": {"custom:mandator": "bank-2"}, "scopes": null}}));
        assert_eq!(Caller::from_request(&req, "custom:mandator").unwrap().mandator.as_str(), "bank-2");
        assert!(matches!(Caller::from_request(&req, "client_id"), Err(AppError::Unauthenticated)));
    }

    #[test]
    fn without_authorizer_or_with_an_unusable_mandator_the_caller_is_unauthenticated() {
        assert!(matches!(
            Caller::from_request(&request(serde_json::Value::Null), "client_id"),
            Err(AppError::Unauthenticated)
        ));
        let bad = request(serde_json::json!({"jwt": {"claims": {"client_id": "a#b"}, "scopes": []}}));
        assert!(matches!(Caller::from_request(&bad, "client_id"), Err(AppError::Unauthenticated)));
    }
}
