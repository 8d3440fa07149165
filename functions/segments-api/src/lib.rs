//! The segments management API (docs/architecture.md): one function behind every route under
//! `/v1/organizations/{organizationId}/…/segments` and
//! `/v1/organizations/{organizationId}/accounts/{accountId}/segments`. It reads the route from the
//! method, the path parameters and the path's last literal, checks the scope (docs/security.md) and
//! calls the use case.

use chrono::Utc;
use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use segments_core::http::{RequestTrace, json_body, json_response, path_param, problem_response};
use segments_core::usecases::segments::body::{ListQuery, paging};
use segments_core::usecases::segments::{self, SegmentsServices};
use segments_core::usecases::{AppError, Caller};

pub async fn handle(s: &SegmentsServices, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    let handling = async {
        Ok(match route(s, &req).await {
            Ok(response) => response,
            Err(e) => problem_response(&e),
        })
    };
    RequestTrace::of(&req).run(handling).await
}

/// The operation a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Collection,
    Count,
    Item,
    Members,
    Refresh,
    AccountSegments,
}

fn resource(req: &Request, segment: bool, account: bool) -> Resource {
    let path = req.uri().path().trim_end_matches('/');
    if account {
        Resource::AccountSegments
    } else if segment && path.ends_with("/accounts") {
        Resource::Members
    } else if segment && path.ends_with("/refresh") {
        Resource::Refresh
    } else if segment {
        Resource::Item
    } else if path.ends_with("/metrics/count") {
        Resource::Count
    } else {
        Resource::Collection
    }
}

fn query(req: &Request) -> Vec<(String, String)> {
    req.query_string_parameters_ref()
        .map(|q| q.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
        .unwrap_or_default()
}

fn pairs(q: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    q.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

fn empty(status: StatusCode) -> Response<Body> {
    Response::builder().status(status).body(Body::Empty).unwrap_or_default()
}

async fn route(s: &SegmentsServices, req: &Request) -> Result<Response<Body>, AppError> {
    let caller = Caller::from_request(req, &s.intake.config)?;
    let organization = path_param(req, "organizationId").unwrap_or_default();
    let ledger = path_param(req, "ledgerId");
    let segment = path_param(req, "segmentId");
    let account = path_param(req, "accountId");
    let kind = resource(req, segment.is_some(), account.is_some());
    let method = req.method().clone();
    let write = !matches!(method, Method::GET | Method::HEAD);
    let allowed = match kind {
        Resource::Collection => method == Method::GET || method == Method::POST,
        Resource::Count => method == Method::HEAD,
        Resource::Item => method == Method::GET || method == Method::PATCH || method == Method::DELETE,
        Resource::Members => method == Method::GET || method == Method::PUT,
        Resource::Refresh => method == Method::POST,
        Resource::AccountSegments => method == Method::GET && ledger.is_none(),
    };
    if !allowed {
        return Err(AppError::MethodNotAllowed);
    }
    let target = segments::authorize(&caller, &organization, ledger.as_deref(), write)?;
    let id = segment.unwrap_or_default();
    let q = query(req);
    let invalid = AppError::InvalidParameter;
    let now = Utc::now();
    Ok(match (kind, method) {
        (Resource::Collection, Method::POST) => {
            let view = segments::create(s, &target, json_body(req)?, now).await?;
            let mut response = json_response(StatusCode::CREATED, &view);
            if let Ok(location) = format!("{}/{}", req.uri().path().trim_end_matches('/'), view.id).parse() {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        (Resource::Collection, _) => {
            let list_query = ListQuery::parse(pairs(&q)).map_err(invalid)?;
            json_response(StatusCode::OK, &segments::list(s, &target, &list_query).await?)
        }
        (Resource::Count, _) => {
            let list_query =
                ListQuery::parse(pairs(&q).filter(|(k, _)| !matches!(*k, "limit" | "page" | "sort_order")))
                    .map_err(invalid)?;
            let n = segments::count(s, &target, &list_query).await?;
            let mut response = empty(StatusCode::NO_CONTENT);
            if let Ok(value) = n.to_string().parse() {
                response.headers_mut().insert("x-total-count", value);
            }
            response
        }
        (Resource::Item, Method::PATCH) => {
            json_response(StatusCode::OK, &segments::patch(s, &target, &id, json_body(req)?, now).await?)
        }
        (Resource::Item, Method::DELETE) => {
            segments::delete(s, &target, &id, now).await?;
            empty(StatusCode::NO_CONTENT)
        }
        (Resource::Item, _) => json_response(StatusCode::OK, &segments::get(s, &target, &id, now).await?),
        (Resource::Members, Method::PUT) => {
            json_response(StatusCode::OK, &segments::change_members(s, &target, &id, json_body(req)?).await?)
        }
        (Resource::Members, _) => {
            let (limit, page) = paging(pairs(&q)).map_err(invalid)?;
            json_response(StatusCode::OK, &segments::list_members(s, &target, &id, limit, page).await?)
        }
        (Resource::Refresh, _) => {
            let (view, _started) = segments::refresh(s, &caller, &target, &id, now).await?;
            let settled = view.last_refresh.as_ref().is_some_and(|r| {
                matches!(
                    r.status,
                    segments_core::domain::segment::RefreshState::Applied
                        | segments_core::domain::segment::RefreshState::Failed
                )
            });
            json_response(if settled { StatusCode::OK } else { StatusCode::ACCEPTED }, &view)
        }
        (Resource::AccountSegments, _) => {
            let (limit, page) = paging(pairs(&q)).map_err(invalid)?;
            let account = account.unwrap_or_default();
            json_response(StatusCode::OK, &segments::account_segments(s, &target, &account, limit, page).await?)
        }
    })
}

#[cfg(test)]
mod tests;
