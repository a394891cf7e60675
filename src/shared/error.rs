//! Errors of the reconciler. `category()` is a fixed, low-cardinality string used as
//! a metric label and an Event reason; the error text itself never becomes a label.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("applying {kind} {name}: {source}")]
    Apply { kind: &'static str, name: String, source: kube::Error },
    #[error(
        "{kind} {name} already exists and was not created by the operator for this MCPServer; delete or rename it, or rename the MCPServer"
    )]
    NotOwned { kind: &'static str, name: String },
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("the reconcile panicked (a bug; please report it): {0}")]
    Panicked(String),
    #[error("the watch of {0} has not listed yet; retrying")]
    NotSynced(&'static str),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(e) | Error::Apply { source: e, .. } => kube_category(e),
            Error::NotOwned { .. } => "ChildNotOwned",
            Error::Finalizer(_) => "FinalizerFailed",
            Error::MissingField(_) => "MalformedObject",
            Error::Panicked(_) => "Panicked",
            Error::NotSynced(_) => "CacheNotSynced",
        }
    }

    /// Errors the MCPServer's owner can fix (reported as Warning events and phase Failed);
    /// everything else is retried quietly with backoff.
    pub fn user_fixable(&self) -> bool {
        match self {
            Error::NotOwned { .. } => true,
            Error::Apply { source: kube::Error::Api(e), .. } => matches!(e.code, 400 | 422),
            _ => false,
        }
    }
}

fn kube_category(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) => match s.code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Gone",
            422 => "Invalid",
            429 => "TooManyRequests",
            500..=599 => "ServerError",
            _ => "ApiError",
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => "Transport",
        _ => "ClientError",
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
