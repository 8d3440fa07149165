//! The data API (docs/api.md): a user's account data as a unit under `/data/users/{userId}`,
//! replaced (PUT), patched with a day's changes (PATCH), read (GET) and erased (DELETE). It reads
//! the resource from the path parameters, checks the method's scope (docs/security.md), parses the
//! body and calls the use case; every refusal is a problem, naming the field as a JSON pointer.
//!
//! The bulk imports under `/data/imports` are the [`imports`] module's; [`handle_all`] serves both.

pub mod imports;

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use segments_core::config::ServiceConfig;
use segments_core::domain::UserId;
use segments_core::http::{RequestTrace, json_body_up_to, json_response, path_param, problem_response};
use segments_core::rules::body::FieldError;
use segments_core::usecases::account_data::body::{self, MAX_BODY_BYTES, UserDocument};
use segments_core::usecases::account_data::{AccountData, WriteSummary};
use segments_core::usecases::imports_api::ImportsApi;
use segments_core::usecases::{AppError, Caller};
use serde::Serialize;

/// Reading a user's account data.
pub const READ_SCOPE: &str = "segments/data.read";
/// Replacing, patching and erasing it.
pub const WRITE_SCOPE: &str = "segments/data.write";

/// Every route of the function: the bulk imports, and a user's data.
pub async fn handle_all(
    data: &AccountData,
    imports: &ImportsApi,
    config: &ServiceConfig,
    req: Request,
) -> Result<Response<Body>, lambda_http::Error> {
    let trace = RequestTrace::of(&req);
    trace
        .run(async move {
            if imports::addresses(&req) {
                imports::handle(imports, config, req).await
            } else {
                handle(data, config, req).await
            }
        })
        .await
}

pub async fn handle(
    data: &AccountData,
    config: &ServiceConfig,
    req: Request,
) -> Result<Response<Body>, lambda_http::Error> {
    Ok(match route(data, config, &req).await {
        Ok(response) => response,
        Err(e) => problem_response(&e),
    })
}

/// What a request addresses, from the route's path parameters: one variant per resource, so a
/// new route of the function adds its own.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    /// `/data/users/{userId}`: the userId as the path gave it, checked once the scope is.
    User(String),
}

fn resource(req: &Request) -> Result<Resource, AppError> {
    match path_param(req, "userId") {
        Some(user) => Ok(Resource::User(user)),
        None => Err(AppError::NoRoute),
    }
}

async fn route(data: &AccountData, config: &ServiceConfig, req: &Request) -> Result<Response<Body>, AppError> {
    let caller = Caller::from_request(req, config)?;
    match resource(req)? {
        Resource::User(user) => user_data(data, &caller, &user, req).await,
    }
}

/// What a write answers: the user and what is stored now.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Written<'a> {
    user_id: &'a UserId,
    #[serde(flatten)]
    stored: WriteSummary,
}

async fn user_data(data: &AccountData, caller: &Caller, user: &str, req: &Request) -> Result<Response<Body>, AppError> {
    let method = req.method().clone();
    let scope = match method {
        Method::GET => READ_SCOPE,
        Method::PUT | Method::PATCH | Method::DELETE => WRITE_SCOPE,
        _ => return Err(AppError::MethodNotAllowed),
    };
    caller.require_scope(scope)?;
    let user = UserId::parse(user).map_err(|e| AppError::InvalidParameter(FieldError::new("userId", e.to_string())))?;
    let mandator = &caller.mandator;
    Ok(match method {
        Method::PUT => {
            let replacement = body::user_data(user, json_body_up_to(req, MAX_BODY_BYTES)?)?;
            let stored = data.replace(mandator, &replacement).await?;
            json_response(StatusCode::OK, &Written { user_id: &replacement.user_id, stored })
        }
        Method::PATCH => {
            let patch = body::user_patch(json_body_up_to(req, MAX_BODY_BYTES)?)?;
            let stored = data.patch(mandator, &user, &patch).await?;
            json_response(StatusCode::OK, &Written { user_id: &user, stored })
        }
        Method::DELETE => {
            data.erase(mandator, &user).await?;
            Response::builder().status(StatusCode::NO_CONTENT).body(Body::Empty).unwrap_or_default()
        }
        _ => match data.get(mandator, &user).await? {
            Some(stored) => json_response(StatusCode::OK, &UserDocument(&stored.data)),
            None => return Err(AppError::NotFound("user")),
        },
    })
}

#[cfg(test)]
mod tests;
