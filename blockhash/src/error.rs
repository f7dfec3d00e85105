//! Why a request could not be turned into block hashes. Callers route such requests
//! unrouted (fail open), so every variant says plainly what was wrong.

/// Every way the request-to-hashes chain can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("request body is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported request: {0}")]
    Unsupported(String),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
