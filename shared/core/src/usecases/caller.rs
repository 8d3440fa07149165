//! Who is calling: the mandator and the scopes of a verified token. The HTTP edge reads it from
//! the request; the use cases only check it.

use std::collections::BTreeSet;

use super::AppError;
use crate::domain::{MandatorId, SegmentType};

/// The verified caller: the mandator and the scopes of its token. API Gateway's JWT authorizer
/// verified the token; this reads what it passed on (HTTP API, payload v2). The mandator comes from
/// the configured claim only, never from the body or the path (docs/security.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub mandator: MandatorId,
    pub scopes: BTreeSet<String>,
}

impl Caller {
    /// The functions check the route's scope again, whatever the gateway did.
    pub fn require_scope(&self, scope: &str) -> Result<(), AppError> {
        if self.scopes.contains(scope) { Ok(()) } else { Err(AppError::MissingScope(scope.to_owned())) }
    }
}

/// Parses a path's segment type and checks the caller may use it.
pub fn authorize_segment_type(caller: &Caller, segment_type: &str) -> Result<SegmentType, AppError> {
    let t: SegmentType = segment_type.parse().map_err(|_| AppError::UnknownSegmentType(segment_type.to_owned()))?;
    caller.require_scope(&t.scope())?;
    Ok(t)
}
