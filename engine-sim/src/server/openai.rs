//! The OpenAI API's shapes, as vLLM's server writes them: the sampling options the engine
//! honours (how many tokens, streaming, usage in the stream, token ids), the completion and
//! chunk bodies with `usage.prompt_tokens_details.cached_tokens` (how a client sees the
//! prefix cache work), and OpenAI-style error bodies. Kept apart from the HTTP plumbing so
//! the shapes are unit tested.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kvroute_blockhash::Endpoint;
use serde_json::{json, Value};

/// An error answered to the client, in OpenAI's `{"error": {...}}` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
        }
    }

    pub fn body(&self) -> Value {
        let kind = match self.status {
            StatusCode::BAD_REQUEST => "BadRequestError",
            StatusCode::NOT_FOUND => "NotFoundError",
            _ => "ServiceUnavailableError",
        };
        json!({"error": {"message": self.message, "type": kind, "param": null, "code": self.status.as_u16()}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// What the engine honours of a request beyond its prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub model: String,
    pub max_tokens: usize,
    pub stream: bool,
    pub include_usage: bool,
    /// vLLM's `return_token_ids`: prompt and output token ids in the answer.
    pub return_token_ids: bool,
    /// vLLM's `session_id`, carried into the KV events.
    pub session_id: Option<String>,
}

impl Options {
    /// Reads the options of a chat or completions body (`max_completion_tokens` wins over
    /// `max_tokens`, as in vLLM). `ignore_eos` is accepted: this engine never stops early.
    pub fn parse(body: &Value, default_max_tokens: usize) -> Result<Self, ApiError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
        let session_id = match obj.get("session_id") {
            Some(Value::String(s)) => Some(s.clone()),
            None | Some(Value::Null) => None,
            Some(_) => return Err(ApiError::bad_request("`session_id` must be a string")),
        };
        let model = match obj.get("model") {
            Some(Value::String(m)) => m.clone(),
            None | Some(Value::Null) => String::new(),
            Some(_) => return Err(ApiError::bad_request("`model` must be a string")),
        };
        let count = |key: &str| -> Result<Option<usize>, ApiError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .filter(|n| *n >= 1)
                    .and_then(|n| usize::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("`{key}` must be a positive integer"))
                    }),
            }
        };
        let flag = |v: Option<&Value>, key: &str| -> Result<bool, ApiError> {
            match v {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(ApiError::bad_request(format!("`{key}` must be a boolean"))),
            }
        };
        let max_tokens = count("max_completion_tokens")?
            .or(count("max_tokens")?)
            .unwrap_or(default_max_tokens.max(1));
        let stream = flag(obj.get("stream"), "stream")?;
        let include_usage = match obj.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => flag(o.get("include_usage"), "include_usage")?,
            Some(_) => return Err(ApiError::bad_request("`stream_options` must be an object")),
        };
        flag(obj.get("ignore_eos"), "ignore_eos")?;
        Ok(Self {
            model,
            max_tokens,
            stream,
            include_usage,
            return_token_ids: flag(obj.get("return_token_ids"), "return_token_ids")?,
            session_id,
        })
    }
}

pub fn usage(prompt_tokens: usize, cached_tokens: usize, output_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + output_tokens,
        "completion_tokens": output_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    })
}

/// Identity of one answer, shared by its chunks.
#[derive(Debug, Clone)]
pub struct AnswerMeta {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl AnswerMeta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Completions, _) => "text_completion",
            (_, false) => "chat.completion",
            (_, true) => "chat.completion.chunk",
        }
    }

    fn head(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The whole answer of a non-streaming request.
    pub fn complete(
        &self,
        text: &str,
        output_ids: &[u32],
        prompt_ids: Option<&[u32]>,
        usage: Value,
    ) -> Value {
        let mut choice = match self.endpoint {
            Endpoint::Completions => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": "length",
                "stop_reason": null,
            }),
            _ => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text, "tool_calls": []},
                "logprobs": null, "finish_reason": "length", "stop_reason": null,
            }),
        };
        if let (Some(prompt), Value::Object(c)) = (prompt_ids, &mut choice) {
            c.insert("token_ids".into(), json!(output_ids));
            if self.endpoint == Endpoint::Completions {
                c.insert("prompt_token_ids".into(), json!(prompt));
            }
        }
        let mut answer = self.head(false, json!([choice]));
        if let (Some(prompt), Value::Object(a)) = (prompt_ids, &mut answer) {
            if self.endpoint != Endpoint::Completions {
                a.insert("prompt_token_ids".into(), json!(prompt));
            }
        }
        if let Value::Object(a) = &mut answer {
            a.insert("usage".into(), usage);
        }
        answer
    }

    /// The first chunk of a chat stream announces the assistant role.
    pub fn role_chunk(&self) -> Option<Value> {
        (self.endpoint != Endpoint::Completions).then(|| {
            self.head(
                true,
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
            )
        })
    }

    /// One token's chunk; `last` carries the finish reason.
    pub fn token_chunk(&self, text: &str, id: u32, last: bool, with_ids: bool) -> Value {
        let finish = if last { json!("length") } else { Value::Null };
        let mut choice = match self.endpoint {
            Endpoint::Completions => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
            _ => {
                json!({"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": finish})
            }
        };
        if let (true, Value::Object(c)) = (with_ids, &mut choice) {
            c.insert("token_ids".into(), json!([id]));
        }
        self.head(true, json!([choice]))
    }

    /// The final usage chunk (`stream_options.include_usage`): no choices.
    pub fn usage_chunk(&self, usage: Value) -> Value {
        let mut chunk = self.head(true, json!([]));
        if let Value::Object(c) = &mut chunk {
            c.insert("usage".into(), usage);
        }
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_follow_openai_and_vllm_fields() {
        let o = Options::parse(
            &json!({"model": "m", "max_tokens": 5, "max_completion_tokens": 7, "stream": true,
                     "stream_options": {"include_usage": true}, "ignore_eos": true}),
            16,
        )
        .unwrap();
        assert_eq!(o.max_tokens, 7);
        assert!(o.stream && o.include_usage && !o.return_token_ids);
        assert_eq!(
            Options::parse(&json!({"prompt": "x"}), 16)
                .unwrap()
                .max_tokens,
            16
        );
        for bad in [
            json!([1]),
            json!({"max_tokens": -1}),
            json!({"max_tokens": 0}),
            json!({"stream": "yes"}),
            json!({"model": 3}),
            json!({"stream_options": 1}),
        ] {
            let e = Options::parse(&bad, 16).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn answers_carry_cached_tokens_in_usage() {
        let meta = AnswerMeta {
            endpoint: Endpoint::ChatCompletions,
            id: "chatcmpl-1".into(),
            created: 1,
            model: "m".into(),
        };
        let a = meta.complete("hi", &[1], Some(&[5, 6]), usage(200, 128, 1));
        assert_eq!(a["usage"]["prompt_tokens_details"]["cached_tokens"], 128);
        assert_eq!(a["prompt_token_ids"], json!([5, 6]));
        assert_eq!(a["choices"][0]["message"]["content"], "hi");
        let u = meta.usage_chunk(usage(200, 0, 3));
        assert_eq!(u["choices"], json!([]));
        assert_eq!(u["usage"]["total_tokens"], 203);
        let e = ApiError::bad_request("nope").body();
        assert_eq!(e["error"]["code"], 400);
    }
}
