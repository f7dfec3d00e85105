//! OpenAI `/v1/chat/completions`, `/v1/completions` and Anthropic `/v1/messages` bodies,
//! parsed into what the prompt depends on. Unknown fields are ignored.
//!
//! SKELETON: the owner fills it in.

/// Which API a body was sent to (detected from the body when not known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    AnthropicMessages,
}

/// A parsed request: the parts that decide the prompt tokens and extra keys.
#[derive(Debug, Clone)]
pub struct Request {
    pub endpoint: Endpoint,
    pub model: Option<String>,
    pub cache_salt: Option<String>,
    // The owner adds the parsed messages / prompt here.
}

impl Request {
    /// Parse a body; `endpoint` = None detects it from the body's fields.
    pub fn parse(body: &[u8], endpoint: Option<Endpoint>) -> crate::Result<Self> {
        let _ = (body, endpoint);
        todo!()
    }
}
