//! What the business stores (PK, notices) share: their error type.

/// Errors every data-store backend converts into.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DataError {
    /// The backend did not answer within its bound (down, unreachable, slow).
    #[error("data store unavailable: {0}")]
    Unavailable(String),
    /// The backend holds something this crate did not write.
    #[error("data store holds a corrupt document: {0}")]
    Corrupt(String),
    /// A bounded in-memory store is at its configured capacity.
    #[error("data store full: {0}")]
    Full(String),
}
