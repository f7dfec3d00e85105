use thiserror::Error;

/// Represents an error when encoding/decoding raw byte buffers and frames
#[non_exhaustive]
#[derive(Error, Debug)]
pub enum CodecError {
    #[error("{0}")]
    Command(&'static str),
    #[error("{0}")]
    Greeting(&'static str),
    #[error("{0}")]
    Mechanism(&'static str),
    #[error("{0}")]
    Decode(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(&'static str),
    /// A peer declared a message (or command) larger than
    /// [`SocketOptions::max_message_size`](crate::SocketOptions::max_message_size):
    /// the connection is dropped before anything of that size is allocated.
    #[error("message of {declared} bytes exceeds the maximum of {limit} bytes")]
    MessageTooLarge { declared: u64, limit: usize },
}

pub(crate) type CodecResult<T> = Result<T, CodecError>;
