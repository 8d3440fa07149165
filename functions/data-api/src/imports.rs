//! Bulk imports (docs/api.md, docs/data.md):
//!
//! - `POST /data/imports {"mode"}`: 201 with the import and one upload link per file;
//! - `POST /data/imports/{importId}/start`: 202 once the uploaded files are handed to the import
//!   worker (409 while the import cannot start, 400 naming a file not uploaded yet);
//! - `GET /data/imports/{importId}`: the import's status, counts and first bad lines.
//!
//! POST needs the write scope, GET the read scope. Another mandator's import is not found.

use chrono::Utc;
use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use segments_core::config::ServiceConfig;
use segments_core::http::{json_body, json_response, path_param, problem_response};
use segments_core::usecases::imports_api::{ImportsApi, parse_create};
use segments_core::usecases::{AppError, Caller};

use crate::{READ_SCOPE, WRITE_SCOPE};

/// An import endpoint, from the request path (which may carry a stage prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Create,
    Start { import_id: String },
    Status { import_id: String },
}

fn endpoint(req: &Request) -> Option<Endpoint> {
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let import_id = |given: &str| path_param(req, "importId").unwrap_or_else(|| given.to_owned());
    match parts.as_slice() {
        [.., "data", "imports"] => Some(Endpoint::Create),
        [.., "data", "imports", id, "start"] => Some(Endpoint::Start { import_id: import_id(id) }),
        [.., "data", "imports", id] => Some(Endpoint::Status { import_id: import_id(id) }),
        _ => None,
    }
}

/// Whether the request is for an import endpoint.
pub fn addresses(req: &Request) -> bool {
    endpoint(req).is_some()
}

pub async fn handle(
    imports: &ImportsApi,
    config: &ServiceConfig,
    req: Request,
) -> Result<Response<Body>, lambda_http::Error> {
    Ok(match route(imports, config, &req).await {
        Ok(response) => response,
        Err(e) => problem_response(&e),
    })
}

async fn route(imports: &ImportsApi, config: &ServiceConfig, req: &Request) -> Result<Response<Body>, AppError> {
    let endpoint = endpoint(req).ok_or(AppError::NoRoute)?;
    let method = req.method();
    let scope = match (&endpoint, method) {
        (Endpoint::Create | Endpoint::Start { .. }, &Method::POST) => WRITE_SCOPE,
        (Endpoint::Status { .. }, &Method::GET) => READ_SCOPE,
        _ => return Err(AppError::MethodNotAllowed),
    };
    let caller = Caller::from_request(req, config)?;
    caller.require_scope(scope)?;
    let now = Utc::now();
    match endpoint {
        Endpoint::Create => {
            let mode = parse_create(json_body(req)?)?;
            let created = imports.create(&caller.mandator, mode, now).await?;
            let mut response = json_response(StatusCode::CREATED, &created);
            let location = format!("/data/imports/{}", created.import_id);
            if let Ok(location) = header::HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            // The upload links are credentials for an hour: no cache may keep them.
            response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Endpoint::Start { import_id } => {
            let started = imports.start(&caller.mandator, &import_id, now).await?;
            Ok(json_response(StatusCode::ACCEPTED, &started))
        }
        Endpoint::Status { import_id } => {
            let import = imports.status(&caller.mandator, &import_id, now).await?;
            Ok(json_response(StatusCode::OK, &import))
        }
    }
}
