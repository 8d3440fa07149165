//! The segments management API (docs/architecture.md): one function behind every route under
//! `/v1/organizations/{organizationId}/…/segments` and
//! `/v1/organizations/{organizationId}/accounts/{accountId}/segments`. It reads the route from the
//! method, the path parameters and the path's last literal, checks the scope (docs/security.md) and
//! calls the use case.

use chrono::Utc;
use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use segments_core::domain::refresh::ChangeKind;
use segments_core::http::{RequestTrace, json_body, json_response, path_param, problem_response};
use segments_core::rules::body::FieldError;
use segments_core::usecases::segments::body::{ListQuery, paging};
use segments_core::usecases::segments::refresh::{self, DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT};
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
    /// `…/segments/{segmentId}/refreshes`
    Refreshes,
    /// `…/refreshes/{refreshId}`
    RefreshItem,
    /// `…/refreshes/{refreshId}/changes`
    Changes,
    AccountSegments,
}

/// The path's parts after `…/segments/{segmentId}`, read from the front: an organization, ledger
/// or segment id may itself be `refreshes` or `changes`, so the parts are counted, not matched
/// from the end. A prefix before `v1` (a stage name) is skipped.
fn segment_tail(path: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let start = parts.windows(2).position(|w| w == ["v1", "organizations"])?;
    // `v1`, `organizations`, the organization id.
    let mut at = start + 3;
    if parts.get(at) == Some(&"ledgers") {
        at += 2;
    }
    if parts.get(at) != Some(&"segments") {
        return None;
    }
    // `segments`, the segment id.
    parts.get(at + 2..).map(<[&str]>::to_vec)
}

fn resource(req: &Request, segment: bool, account: bool) -> Result<Resource, AppError> {
    let path = req.uri().path().trim_end_matches('/');
    if account {
        return Ok(Resource::AccountSegments);
    }
    if !segment {
        return Ok(if path.ends_with("/metrics/count") { Resource::Count } else { Resource::Collection });
    }
    Ok(match segment_tail(path).as_deref() {
        Some([]) => Resource::Item,
        Some(["accounts"]) => Resource::Members,
        Some(["refresh"]) => Resource::Refresh,
        Some(["refreshes"]) => Resource::Refreshes,
        Some(["refreshes", _]) => Resource::RefreshItem,
        Some(["refreshes", _, "changes"]) => Resource::Changes,
        _ => return Err(AppError::NoRoute),
    })
}

/// Page sizes of `GET …/refreshes`: a segment is refreshed at most a few times a day, so a page
/// of refreshes is short.
pub const DEFAULT_REFRESH_LIMIT: u32 = 10;
pub const MAX_REFRESH_LIMIT: u32 = 100;

/// The query of a feed: `limit`, `cursor` and, for the change feed, `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FeedQuery {
    limit: u32,
    cursor: Option<String>,
    kind: Option<ChangeKind>,
}

/// Reads a feed's query: each parameter at most once, unknown ones refused; `kind` is taken only
/// when `takes_kind`. The cursor's content is checked by the use case, which knows what it
/// continues.
fn feed_query(
    q: &[(String, String)],
    default_limit: u32,
    max_limit: u32,
    takes_kind: bool,
) -> Result<FeedQuery, FieldError> {
    let mut feed = FeedQuery { limit: default_limit, cursor: None, kind: None };
    let mut seen = std::collections::BTreeSet::new();
    for (key, value) in q {
        if !seen.insert(key.as_str()) {
            return Err(FieldError::new(key.as_str(), "must be given at most once"));
        }
        match key.as_str() {
            "limit" => {
                feed.limit = value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=max_limit).contains(n))
                    .ok_or_else(|| FieldError::new("limit", format!("must be an integer from 1 to {max_limit}")))?;
            }
            "cursor" if value.is_empty() => {
                return Err(FieldError::new("cursor", "must be a nextCursor of an earlier page"));
            }
            "cursor" => feed.cursor = Some(value.clone()),
            "kind" if takes_kind => {
                feed.kind =
                    Some(ChangeKind::parse(value).ok_or_else(|| FieldError::new("kind", "must be entered or left"))?);
            }
            _ => return Err(FieldError::new(key.as_str(), "is not a known parameter")),
        }
    }
    Ok(feed)
}

/// The change feed's query: `kind` is required.
fn changes_query(q: &[(String, String)]) -> Result<(ChangeKind, FeedQuery), FieldError> {
    let feed = feed_query(q, DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT, true)?;
    let kind = feed.kind.ok_or_else(|| FieldError::new("kind", "is required: entered or left"))?;
    Ok((kind, feed))
}

/// A read of one resource takes no query parameters.
fn no_parameters(q: &[(String, String)]) -> Result<(), FieldError> {
    match q.first() {
        Some((key, _)) => Err(FieldError::new(key.as_str(), "is not a known parameter")),
        None => Ok(()),
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
    let refresh_id = path_param(req, "refreshId").unwrap_or_default();
    let kind = resource(req, segment.is_some(), account.is_some())?;
    let method = req.method().clone();
    let write = !matches!(method, Method::GET | Method::HEAD);
    let allowed = match kind {
        Resource::Collection => method == Method::GET || method == Method::POST,
        Resource::Count => method == Method::HEAD,
        Resource::Item => method == Method::GET || method == Method::PATCH || method == Method::DELETE,
        Resource::Members => method == Method::GET || method == Method::PUT,
        Resource::Refresh => method == Method::POST,
        Resource::Refreshes | Resource::RefreshItem | Resource::Changes => method == Method::GET,
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
        (Resource::Item, _) => json_response(StatusCode::OK, &segments::get(s, &target, &id).await?),
        (Resource::Members, Method::PUT) => {
            json_response(StatusCode::OK, &segments::change_members(s, &target, &id, json_body(req)?).await?)
        }
        (Resource::Members, _) => {
            let (limit, page) = paging(pairs(&q)).map_err(invalid)?;
            json_response(StatusCode::OK, &segments::list_members(s, &target, &id, limit, page).await?)
        }
        (Resource::Refresh, _) => {
            // 202: a refresh started; 200: one is unfinished, and the segment shows it.
            let (seg, started) = refresh::refresh(s, &caller, &target, &id, now).await?;
            json_response(if started { StatusCode::ACCEPTED } else { StatusCode::OK }, &segments::view(s, &seg).await?)
        }
        (Resource::Refreshes, _) => {
            let feed = feed_query(&q, DEFAULT_REFRESH_LIMIT, MAX_REFRESH_LIMIT, false).map_err(invalid)?;
            let page = refresh::list_refreshes(s, &target, &id, feed.limit, feed.cursor.as_deref()).await?;
            json_response(StatusCode::OK, &page)
        }
        (Resource::RefreshItem, _) => {
            no_parameters(&q).map_err(invalid)?;
            json_response(StatusCode::OK, &refresh::get_refresh(s, &target, &id, &refresh_id).await?)
        }
        (Resource::Changes, _) => {
            let (change_kind, feed) = changes_query(&q).map_err(invalid)?;
            let page =
                refresh::list_changes(s, &target, &id, &refresh_id, change_kind, feed.limit, feed.cursor.as_deref())
                    .await?;
            json_response(StatusCode::OK, &page)
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
