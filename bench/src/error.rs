//! The bench's own failures, typed so the library parts stay free of anyhow (it is used
//! only at the binary's edge).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("tokenizing or hashing the workload: {0}")]
    Blockhash(#[from] kvroute_blockhash::Error),
    #[error(transparent)]
    Tokenizer(#[from] kvroute_blockhash::TokenizerDirError),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("plotting {0}: {1}")]
    Plot(PathBuf, String),
    #[error("the request body lost its max_tokens mark")]
    NoMaxTokensMark,
    #[error("no TrueType font found for the plots (tried {0})")]
    NoFont(String),
}
