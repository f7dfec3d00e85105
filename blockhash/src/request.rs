//! OpenAI `/v1/chat/completions`, `/v1/completions` and Anthropic `/v1/messages` bodies,
//! parsed into what the prompt depends on.
//!
//! Only the fields that change the prompt tokens or the extra keys are kept; everything
//! else (sampling parameters, `stream`, unknown fields) is ignored, because the router
//! must hash what vLLM will hash and nothing more. Messages are normalized the way vLLM
//! normalizes them before rendering (text parts joined, tool-call arguments parsed to
//! objects, Anthropic blocks converted to chat messages), so the chat template sees what it
//! sees inside vLLM. Anything vLLM would tokenize differently from a text prompt (images,
//! audio, a batch of prompts) is a typed error: the caller passes such a request unrouted.

use serde_json::{Map, Value};

use crate::{Error, Result};

/// Which API a body was sent to (detected from the body when not known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    AnthropicMessages,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::AnthropicMessages,
    ];

    /// The short name configurations use (`chat`, `completions`, `messages`).
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat",
            Endpoint::Completions => "completions",
            Endpoint::AnthropicMessages => "messages",
        }
    }

    /// The endpoint's standard path, which [`Endpoint::from_path`] reads back.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::AnthropicMessages => "/v1/messages",
        }
    }

    /// The endpoint a request path names, if it is one kvroute routes.
    pub fn from_path(path: &str) -> Option<Self> {
        let path = path.split('?').next().unwrap_or(path).trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Some(Endpoint::ChatCompletions)
        } else if path.ends_with("/completions") {
            Some(Endpoint::Completions)
        } else if path.ends_with("/messages") {
            Some(Endpoint::AnthropicMessages)
        } else {
            None
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = Error;

    /// Reads [`Endpoint::name`].
    fn from_str(s: &str) -> Result<Self> {
        Endpoint::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown API {s:?} (expected chat, completions or messages)"
                ))
            })
    }
}

/// A parsed request: the parts that decide the prompt tokens and extra keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub endpoint: Endpoint,
    pub model: Option<String>,
    pub cache_salt: Option<String>,
    pub prompt: Prompt,
}

/// What is tokenized.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// A conversation rendered with the model's chat template.
    Chat(ChatPrompt),
    /// A completions prompt string (tokenized with special tokens added).
    Text(String),
    /// A completions prompt given as token ids (used as is).
    TokenIds(Vec<u32>),
}

/// A conversation and the template switches that change its rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatPrompt {
    /// Messages as the template sees them (objects with role, content, ...).
    pub messages: Vec<Value>,
    pub tools: Option<Vec<Value>>,
    pub add_generation_prompt: bool,
    pub continue_final_message: bool,
    /// `chat_template_kwargs`, e.g. Qwen3's `enable_thinking`.
    pub template_kwargs: Map<String, Value>,
    /// A per-request template (vLLM's `chat_template` request field).
    pub chat_template: Option<String>,
}

impl Request {
    /// Parse a body; `endpoint` = None detects it from the body's fields.
    pub fn parse(body: &[u8], endpoint: Option<Endpoint>) -> Result<Self> {
        let value: Value = serde_json::from_slice(body).map_err(|e| Error::Json(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(Error::Malformed("body is not a JSON object".into()));
        };
        let endpoint = match endpoint {
            Some(e) => e,
            None => detect(&obj)?,
        };
        let model = opt_string(&obj, "model")?;
        let cache_salt = opt_string(&obj, "cache_salt")?;
        let prompt = match endpoint {
            Endpoint::ChatCompletions => Prompt::Chat(parse_chat(&obj)?),
            Endpoint::Completions => parse_completion(&obj)?,
            Endpoint::AnthropicMessages => Prompt::Chat(parse_anthropic(&obj)?),
        };
        Ok(Request {
            endpoint,
            model,
            cache_salt,
            prompt,
        })
    }
}

fn detect(obj: &Map<String, Value>) -> Result<Endpoint> {
    if obj.contains_key("messages") {
        // Anthropic puts the system prompt at the top level and requires max_tokens;
        // OpenAI has no top-level `system`.
        if obj.contains_key("system") || has_anthropic_blocks(obj) {
            Ok(Endpoint::AnthropicMessages)
        } else {
            Ok(Endpoint::ChatCompletions)
        }
    } else if obj.contains_key("prompt") {
        Ok(Endpoint::Completions)
    } else {
        Err(Error::Malformed(
            "neither `messages` nor `prompt`: not a chat or completions request".into(),
        ))
    }
}

fn has_anthropic_blocks(obj: &Map<String, Value>) -> bool {
    let Some(Value::Array(messages)) = obj.get("messages") else {
        return false;
    };
    messages.iter().any(|m| {
        m.get("content")
            .and_then(Value::as_array)
            .is_some_and(|parts| {
                parts.iter().any(|p| {
                    matches!(
                        p.get("type").and_then(Value::as_str),
                        Some("tool_use" | "tool_result")
                    )
                })
            })
    })
}

fn opt_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::Malformed(format!("`{key}` must be a string"))),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str, default: bool) -> Result<bool> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Error::Malformed(format!("`{key}` must be a boolean"))),
    }
}

fn parse_chat(obj: &Map<String, Value>) -> Result<ChatPrompt> {
    let Some(Value::Array(raw)) = obj.get("messages") else {
        return Err(Error::Malformed("`messages` must be an array".into()));
    };
    if raw.is_empty() {
        return Err(Error::Malformed("`messages` is empty".into()));
    }
    let messages = raw
        .iter()
        .enumerate()
        .map(|(i, m)| normalize_message(i, m))
        .collect::<Result<Vec<_>>>()?;
    let continue_final_message = opt_bool(obj, "continue_final_message", false)?;
    // vLLM rejects both at once; without a generation prompt is its rule for continuing.
    let add_generation_prompt = opt_bool(obj, "add_generation_prompt", true)?;
    if continue_final_message && add_generation_prompt && obj.contains_key("add_generation_prompt")
    {
        return Err(Error::Unsupported(
            "continue_final_message with add_generation_prompt".into(),
        ));
    }
    let template_kwargs = match obj.get("chat_template_kwargs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(Error::Malformed(
                "`chat_template_kwargs` must be an object".into(),
            ))
        }
    };
    Ok(ChatPrompt {
        messages,
        tools: parse_tools(obj)?,
        add_generation_prompt: add_generation_prompt && !continue_final_message,
        continue_final_message,
        template_kwargs,
        chat_template: opt_string(obj, "chat_template")?,
    })
}

fn parse_tools(obj: &Map<String, Value>) -> Result<Option<Vec<Value>>> {
    match obj.get("tools") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(tools)) if tools.is_empty() => Ok(None),
        Some(Value::Array(tools)) => Ok(Some(tools.clone())),
        Some(_) => Err(Error::Malformed("`tools` must be an array".into())),
    }
}

/// One message as vLLM hands it to the template: string content (text parts joined by
/// newlines), tool-call arguments parsed from their JSON strings.
fn normalize_message(index: usize, message: &Value) -> Result<Value> {
    let Value::Object(m) = message else {
        return Err(Error::Malformed(format!(
            "message {index} is not an object"
        )));
    };
    let role = match m.get("role") {
        Some(Value::String(r)) => r.clone(),
        _ => return Err(Error::Malformed(format!("message {index} has no role"))),
    };
    let mut out = Map::new();
    out.insert("role".into(), Value::String(role));
    let content = match m.get("content") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) => Value::String(join_text_parts(index, parts)?),
        Some(_) => {
            return Err(Error::Malformed(format!(
                "message {index}: content must be a string or an array of parts"
            )))
        }
    };
    out.insert("content".into(), content);
    for (key, value) in m {
        match key.as_str() {
            "role" | "content" => {}
            "tool_calls" => {
                out.insert(key.clone(), normalize_tool_calls(index, value)?);
            }
            "name" | "tool_call_id" | "reasoning_content" | "reasoning" => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

fn join_text_parts(index: usize, parts: &[Value]) -> Result<String> {
    let mut texts = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            Value::String(s) => texts.push(s.as_str()),
            Value::Object(p) => match p.get("type").and_then(Value::as_str) {
                Some("text") | Some("input_text") | None => match p.get("text") {
                    Some(Value::String(t)) => texts.push(t),
                    _ => {
                        return Err(Error::Malformed(format!(
                            "message {index}: text part without text"
                        )))
                    }
                },
                Some(other) => {
                    return Err(Error::Unsupported(format!(
                        "message {index}: `{other}` content parts are not text"
                    )))
                }
            },
            _ => {
                return Err(Error::Malformed(format!(
                    "message {index}: content part is not an object"
                )))
            }
        }
    }
    Ok(texts.join("\n"))
}

fn normalize_tool_calls(index: usize, value: &Value) -> Result<Value> {
    let Value::Array(calls) = value else {
        return Err(Error::Malformed(format!(
            "message {index}: tool_calls must be an array"
        )));
    };
    let mut out = Vec::with_capacity(calls.len());
    for call in calls {
        let mut call = call.clone();
        if let Some(Value::Object(function)) = call.get_mut("function") {
            if let Some(Value::String(args)) = function.get("arguments") {
                // vLLM parses the arguments so templates can iterate them as a mapping.
                let parsed: Value = serde_json::from_str(args).map_err(|e| {
                    Error::Malformed(format!(
                        "message {index}: tool call arguments are not JSON: {e}"
                    ))
                })?;
                function.insert("arguments".into(), parsed);
            }
        }
        out.push(call);
    }
    Ok(Value::Array(out))
}

fn parse_completion(obj: &Map<String, Value>) -> Result<Prompt> {
    match obj.get("prompt") {
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) && !items.is_empty() => {
            let ids = items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| Error::Malformed("token ids must be u32".into()))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Prompt::TokenIds(ids))
        }
        Some(Value::Array(items)) if items.len() == 1 => match &items[0] {
            Value::String(s) => Ok(Prompt::Text(s.clone())),
            _ => Err(Error::Unsupported("a batch of prompts".into())),
        },
        Some(Value::Array(_)) => Err(Error::Unsupported("a batch of prompts".into())),
        _ => Err(Error::Malformed(
            "`prompt` must be a string or token ids".into(),
        )),
    }
}

/// Anthropic Messages to chat messages, the way vLLM's Anthropic endpoint converts them.
fn parse_anthropic(obj: &Map<String, Value>) -> Result<ChatPrompt> {
    let Some(Value::Array(raw)) = obj.get("messages") else {
        return Err(Error::Malformed("`messages` must be an array".into()));
    };
    let mut messages = Vec::with_capacity(raw.len() + 1);
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(chat_message("system", Value::String(s.clone()))),
        Some(Value::Array(blocks)) => messages.push(chat_message(
            "system",
            Value::String(join_text_parts(0, blocks)?),
        )),
        Some(_) => {
            return Err(Error::Malformed(
                "`system` must be a string or blocks".into(),
            ))
        }
    }
    for (i, m) in raw.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Malformed(format!("message {i} has no role")))?;
        match m.get("content") {
            Some(Value::String(s)) => messages.push(chat_message(role, Value::String(s.clone()))),
            Some(Value::Array(blocks)) => convert_anthropic_blocks(i, role, blocks, &mut messages)?,
            _ => {
                return Err(Error::Malformed(format!(
                    "message {i}: content must be a string or blocks"
                )))
            }
        }
    }
    if messages.is_empty() {
        return Err(Error::Malformed("`messages` is empty".into()));
    }
    let tools = match obj.get("tools") {
        Some(Value::Array(tools)) if !tools.is_empty() => Some(
            tools
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "type": "function",
                        "function": {
                            "name": t.get("name").cloned().unwrap_or(Value::Null),
                            "description": t.get("description").cloned().unwrap_or(Value::Null),
                            "parameters": t.get("input_schema").cloned().unwrap_or(Value::Null),
                        }
                    })
                })
                .collect(),
        ),
        _ => None,
    };
    Ok(ChatPrompt {
        messages,
        tools,
        add_generation_prompt: true,
        continue_final_message: false,
        template_kwargs: Map::new(),
        chat_template: None,
    })
}

fn chat_message(role: &str, content: Value) -> Value {
    let mut m = Map::new();
    m.insert("role".into(), Value::String(role.to_owned()));
    m.insert("content".into(), content);
    Value::Object(m)
}

fn convert_anthropic_blocks(
    index: usize,
    role: &str,
    blocks: &[Value],
    out: &mut Vec<Value>,
) -> Result<()> {
    let mut texts: Vec<String> = Vec::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => texts.push(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            ),
            Some("tool_use") => tool_calls.push(serde_json::json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").cloned().unwrap_or(Value::Object(Map::new())),
                }
            })),
            Some("tool_result") => {
                let content = match block.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => join_text_parts(index, parts)?,
                    _ => String::new(),
                };
                let mut m = Map::new();
                m.insert("role".into(), Value::String("tool".into()));
                m.insert("content".into(), Value::String(content));
                m.insert(
                    "tool_call_id".into(),
                    block.get("tool_use_id").cloned().unwrap_or(Value::Null),
                );
                out.push(Value::Object(m));
            }
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "message {index}: `{other}` blocks are not text"
                )))
            }
            None => {
                return Err(Error::Malformed(format!(
                    "message {index}: block without type"
                )))
            }
        }
    }
    if !texts.is_empty() || !tool_calls.is_empty() {
        let mut m = Map::new();
        m.insert("role".into(), Value::String(role.to_owned()));
        m.insert("content".into(), Value::String(texts.join("\n")));
        if !tool_calls.is_empty() {
            m.insert("tool_calls".into(), Value::Array(tool_calls));
        }
        out.push(Value::Object(m));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_and_paths_read_back() {
        for e in Endpoint::ALL {
            assert_eq!(e.name().parse::<Endpoint>().expect("name"), e);
            assert_eq!(Endpoint::from_path(e.path()), Some(e));
        }
        assert!("chat_completions".parse::<Endpoint>().is_err());
    }

    fn chat(body: &str) -> ChatPrompt {
        match Request::parse(body.as_bytes(), None).unwrap().prompt {
            Prompt::Chat(c) => c,
            other => panic!("not chat: {other:?}"),
        }
    }

    #[test]
    fn endpoint_is_detected_from_the_body() {
        let r = Request::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            None,
        );
        assert_eq!(r.unwrap().endpoint, Endpoint::ChatCompletions);
        let r = Request::parse(br#"{"prompt":"x"}"#, None).unwrap();
        assert_eq!(r.prompt, Prompt::Text("x".into()));
        let r = Request::parse(
            br#"{"system":"s","messages":[{"role":"user","content":"x"}]}"#,
            None,
        );
        assert_eq!(r.unwrap().endpoint, Endpoint::AnthropicMessages);
        assert_eq!(
            Endpoint::from_path("/v1/chat/completions?x=1"),
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(
            Endpoint::from_path("/v1/completions"),
            Some(Endpoint::Completions)
        );
    }

    #[test]
    fn text_parts_are_joined_and_tool_arguments_parsed() {
        let c = chat(
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]}],
            "add_generation_prompt":false,"chat_template_kwargs":{"enable_thinking":false},"unknown":1}"#,
        );
        assert_eq!(c.messages[0]["content"], "a\nb");
        assert_eq!(
            c.messages[1]["tool_calls"][0]["function"]["arguments"]["x"],
            1
        );
        assert!(!c.add_generation_prompt);
        assert_eq!(c.template_kwargs["enable_thinking"], false);
    }

    #[test]
    fn bad_bodies_are_typed_errors() {
        for (body, want) in [
            ("not json", "Json"),
            ("[1]", "Malformed"),
            (r#"{"messages":[]}"#, "Malformed"),
            (r#"{"foo":1}"#, "Malformed"),
            (r#"{"prompt":["a","b"]}"#, "Unsupported"),
            (r#"{"prompt":[1,-2]}"#, "Malformed"),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
                "Unsupported",
            ),
            (r#"{"messages":[{"content":"x"}]}"#, "Malformed"),
        ] {
            let err = Request::parse(body.as_bytes(), None).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{body}: {err:?}");
        }
    }

    #[test]
    fn completions_take_strings_and_token_ids() {
        let r = Request::parse(br#"{"prompt":[1,2,3],"cache_salt":"s"}"#, None).unwrap();
        assert_eq!(r.prompt, Prompt::TokenIds(vec![1, 2, 3]));
        assert_eq!(r.cache_salt.as_deref(), Some("s"));
    }

    #[test]
    fn anthropic_blocks_become_chat_messages() {
        let c = chat(
            r#"{"model":"m","max_tokens":5,"system":[{"type":"text","text":"sys"}],
            "messages":[{"role":"user","content":"q"},
            {"role":"assistant","content":[{"type":"text","text":"t"},{"type":"tool_use","id":"u1","name":"f","input":{"a":1}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"u1","content":"42"}]}]}"#,
        );
        let roles: Vec<&str> = c
            .messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(
            c.messages[2]["tool_calls"][0]["function"]["arguments"]["a"],
            1
        );
        assert_eq!(c.messages[3]["tool_call_id"], "u1");
    }
}
