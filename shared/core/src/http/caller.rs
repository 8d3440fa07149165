use std::collections::BTreeSet;

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use crate::config::ServiceConfig;
use crate::domain::MandatorId;
use crate::usecases::{AppError, Caller};

/// The claim of a Cognito access token that names the app client it was issued to.
const CLIENT_ID_CLAIM: &str = "client_id";
/// The claim of a Cognito access token that lists the user's groups.
const GROUPS_CLAIM: &str = "cognito:groups";

/// Reads the caller from what API Gateway's JWT authorizer verified and passed on (HTTP API,
/// payload v2).
impl Caller {
    /// The mandator is the `config.mandator_claim` claim (a bank's machine client: its client id),
    /// except for a token of the console's app client (`config.console_client_id`): a console user
    /// belongs to exactly one Cognito group, named after the mandator's id, and that group is the
    /// mandator. A console token with no group or several is refused (docs/security.md).
    pub fn from_request(req: &Request, config: &ServiceConfig) -> Result<Caller, AppError> {
        let jwt = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref()),
            _ => None,
        }
        .ok_or(AppError::Unauthenticated)?;
        let console_user = config
            .console_client_id
            .as_deref()
            .is_some_and(|console| jwt.claims.get(CLIENT_ID_CLAIM).is_some_and(|id| id == console));
        let mandator = if console_user {
            jwt.claims.get(GROUPS_CLAIM).and_then(|groups| single_group(groups))
        } else {
            jwt.claims.get(&config.mandator_claim).map(String::as_str)
        }
        .and_then(|m| MandatorId::parse(m).ok())
        .ok_or(AppError::Unauthenticated)?;
        // Every log line of the request from here on names whom it was for.
        super::record_mandator(&mandator);
        // The authorizer lists scopes when the route requires some; the `scope` claim (space
        // separated, as Cognito issues it) covers routes that do not.
        let mut scopes: BTreeSet<String> = jwt.scopes.iter().flatten().cloned().collect();
        if let Some(claim) = jwt.claims.get("scope") {
            scopes.extend(claim.split_whitespace().map(str::to_owned));
        }
        Ok(Caller { mandator, scopes })
    }
}

/// The one group of a `cognito:groups` claim as the authorizer passes it on. Its claims map holds
/// strings only: an array claim arrives as its elements between brackets, separated by spaces
/// (`[bank-1 bank-2]`); a plain value is taken as one group too. Cognito group names contain no
/// white space, and brackets are not valid in a mandator id, so the form is unambiguous. `None`
/// unless there is exactly one group.
fn single_group(claim: &str) -> Option<&str> {
    let trimmed = claim.trim();
    let inner = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(trimmed);
    let mut groups = inner.split_whitespace();
    match (groups.next(), groups.next()) {
        (Some(group), None) => Some(group),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id of the console's app client in these tests.
    const CONSOLE: &str = "console-client";

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

    fn claims(claims: serde_json::Value) -> Request {
        request(serde_json::json!({"jwt": {"claims": claims, "scopes": null}}))
    }

    fn machine_config() -> ServiceConfig {
        ServiceConfig::default()
    }

    fn console_config() -> ServiceConfig {
        ServiceConfig { console_client_id: Some(CONSOLE.to_owned()), ..ServiceConfig::default() }
    }

    fn mandator(req: &Request, config: &ServiceConfig) -> Result<String, AppError> {
        Caller::from_request(req, config).map(|c| c.mandator.as_str().to_owned())
    }

    #[test]
    fn reads_mandator_and_scopes_from_the_jwt_authorizer() {
        let req = request(serde_json::json!({"jwt": {
            "claims": {"client_id": "bank-1", "scope": "segments/lowBalance"},
            "scopes": ["segments/highBalance"]
        }}));
        let c = Caller::from_request(&req, &machine_config()).unwrap();
        assert_eq!(c.mandator.as_str(), "bank-1");
        assert!(c.require_scope("segments/highBalance").is_ok());
        assert!(c.require_scope("segments/lowBalance").is_ok());
        assert!(matches!(c.require_scope("segments/usage.read"), Err(AppError::MissingScope(_))));
    }

    #[test]
    fn the_mandator_claim_is_configurable() {
        let req = claims(serde_json::json!({"custom:mandator": "bank-2"}));
        let custom = ServiceConfig { mandator_claim: "custom:mandator".to_owned(), ..ServiceConfig::default() };
        assert_eq!(mandator(&req, &custom).unwrap(), "bank-2");
        assert!(matches!(mandator(&req, &machine_config()), Err(AppError::Unauthenticated)));
    }

    #[test]
    fn without_authorizer_or_with_an_unusable_mandator_the_caller_is_unauthenticated() {
        assert!(matches!(
            Caller::from_request(&request(serde_json::Value::Null), &machine_config()),
            Err(AppError::Unauthenticated)
        ));
        let bad = request(serde_json::json!({"jwt": {"claims": {"client_id": "a#b"}, "scopes": []}}));
        assert!(matches!(Caller::from_request(&bad, &machine_config()), Err(AppError::Unauthenticated)));
    }

    #[test]
    fn a_console_user_of_one_group_acts_for_the_mandator_the_group_is_named_after() {
        // API Gateway passes the array claim as a bracketed, space-separated string.
        let req = request(serde_json::json!({"jwt": {
            "claims": {"client_id": CONSOLE, "cognito:groups": "[bank-1]", "username": "alice",
                       "scope": "openid segments/highBalance"},
            "scopes": ["segments/highBalance"]
        }}));
        let c = Caller::from_request(&req, &console_config()).unwrap();
        assert_eq!(c.mandator.as_str(), "bank-1");
        assert!(c.require_scope("segments/highBalance").is_ok());
        // A plain value is one group as well.
        let plain = claims(serde_json::json!({"client_id": CONSOLE, "cognito:groups": "bank-1"}));
        assert_eq!(mandator(&plain, &console_config()).unwrap(), "bank-1");
        // A group whose name is no valid mandator id is refused.
        let bad = claims(serde_json::json!({"client_id": CONSOLE, "cognito:groups": "[bank#1]"}));
        assert!(matches!(mandator(&bad, &console_config()), Err(AppError::Unauthenticated)));
    }

    #[test]
    fn a_console_user_without_a_group_is_unauthenticated() {
        for groups in [None, Some("[]"), Some(""), Some(" ")] {
            let mut c = serde_json::json!({"client_id": CONSOLE});
            if let Some(g) = groups {
                c["cognito:groups"] = serde_json::json!(g);
            }
            let req = claims(c);
            assert!(matches!(mandator(&req, &console_config()), Err(AppError::Unauthenticated)), "groups {groups:?}");
        }
    }

    #[test]
    fn a_console_user_of_several_groups_is_unauthenticated() {
        let req = claims(serde_json::json!({"client_id": CONSOLE, "cognito:groups": "[bank-1 bank-2]"}));
        assert!(matches!(mandator(&req, &console_config()), Err(AppError::Unauthenticated)));
    }

    #[test]
    fn a_machine_token_is_unaffected_by_the_console_client() {
        // Another client's token: its client id is the mandator, a groups claim changes nothing.
        let req = claims(serde_json::json!({"client_id": "bank-1", "cognito:groups": "[bank-2]"}));
        assert_eq!(mandator(&req, &console_config()).unwrap(), "bank-1");
        let plain = claims(serde_json::json!({"client_id": "bank-3"}));
        assert_eq!(mandator(&plain, &console_config()).unwrap(), "bank-3");
    }

    #[test]
    fn without_a_console_client_every_token_names_its_mandator_in_the_claim() {
        // The console's client id is not configured: its tokens are read like any other.
        let req = claims(serde_json::json!({"client_id": CONSOLE, "cognito:groups": "[bank-1]"}));
        assert_eq!(mandator(&req, &machine_config()).unwrap(), CONSOLE);
    }
}
