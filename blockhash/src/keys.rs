//! The whole chain: request body -> prompt tokens -> block hashes.
//!
//! [`PromptEncoder`] is what every component holds per model (the filter per VM, the
//! indexer and the simulated engines per process): template and tokenizer, loaded from file
//! contents, with the segment cache. [`RequestKeys`] is the answer: the prompt's token ids
//! and the event values of its full blocks, exactly what vLLM will publish for them.

use serde_json::Value;

use crate::request::{ChatPrompt, Prompt};
use crate::template::ChatTemplate;
use crate::tokenize::{PromptTokenizer, DEFAULT_CACHE_BYTES};
use crate::{BlockHasher, Error, ExtraKeysStyle, Request, RequestExtras, Result};

/// A model's tokenizer and chat template, loaded from file contents (no I/O here).
pub struct PromptEncoder {
    template: Option<ChatTemplate>,
    tokenizer_config: Value,
    tokenizer: PromptTokenizer,
}

impl std::fmt::Debug for PromptEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptEncoder")
            .field("has_template", &self.template.is_some())
            .field("tokenizer", &self.tokenizer)
            .finish()
    }
}

impl PromptEncoder {
    /// `tokenizer_json`: tokenizer.json; `tokenizer_config_json`: tokenizer_config.json
    /// (with `chat_template`, bos/eos); `chat_template`: an override (`chat_template.jinja`).
    pub fn from_files(
        tokenizer_json: &[u8],
        tokenizer_config_json: &[u8],
        chat_template: Option<&str>,
    ) -> Result<Self> {
        Self::with_cache_bytes(
            tokenizer_json,
            tokenizer_config_json,
            chat_template,
            DEFAULT_CACHE_BYTES,
        )
    }

    /// As [`PromptEncoder::from_files`] with a segment-cache bound (0 disables it).
    pub fn with_cache_bytes(
        tokenizer_json: &[u8],
        tokenizer_config_json: &[u8],
        chat_template: Option<&str>,
        cache_bytes: usize,
    ) -> Result<Self> {
        let tokenizer_config: Value = serde_json::from_slice(tokenizer_config_json)
            .map_err(|e| Error::Config(format!("tokenizer_config.json: {e}")))?;
        let source = chat_template
            .map(str::to_owned)
            .or_else(|| ChatTemplate::source_from_config(&tokenizer_config));
        let template = source
            .map(|s| ChatTemplate::new(&s, &tokenizer_config))
            .transpose()?;
        Ok(Self {
            template,
            tokenizer_config,
            tokenizer: PromptTokenizer::from_json(tokenizer_json, cache_bytes)?,
        })
    }

    /// The rendered chat prompt, as vLLM hands it to the tokenizer.
    pub fn render_chat(&self, chat: &ChatPrompt) -> Result<String> {
        match &chat.chat_template {
            Some(per_request) => {
                ChatTemplate::new(per_request, &self.tokenizer_config)?.render(chat)
            }
            None => self
                .template
                .as_ref()
                .ok_or_else(|| Error::Template("the model has no chat template".into()))?
                .render(chat),
        }
    }

    /// Prompt token ids exactly as vLLM computes them for this request.
    pub fn prompt_tokens(&self, request: &Request) -> Result<Vec<u32>> {
        match &request.prompt {
            Prompt::Chat(chat) => self.tokenizer.encode_chat(&self.render_chat(chat)?),
            Prompt::Text(text) => self.tokenizer.encode_completion(text),
            Prompt::TokenIds(ids) => Ok(ids.clone()),
        }
    }

    pub fn tokenizer(&self) -> &PromptTokenizer {
        &self.tokenizer
    }
}

/// What `kvroute keys` prints and what the filter sends to the indexer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RequestKeys {
    pub prompt_tokens: usize,
    pub token_ids: Vec<u32>,
    pub block_hashes: Vec<u64>,
}

impl RequestKeys {
    /// Tokens -> event values of each full block, with the request's extra keys.
    pub fn compute(
        encoder: &PromptEncoder,
        hasher: &BlockHasher,
        request: &Request,
        extras: &RequestExtras,
    ) -> Result<Self> {
        Self::compute_with_style(encoder, hasher, request, extras, ExtraKeysStyle::Tagged)
    }

    pub fn compute_with_style(
        encoder: &PromptEncoder,
        hasher: &BlockHasher,
        request: &Request,
        extras: &RequestExtras,
        style: ExtraKeysStyle,
    ) -> Result<Self> {
        let token_ids = encoder.prompt_tokens(request)?;
        Ok(Self::from_tokens(token_ids, hasher, extras, style))
    }

    /// Keys of already-tokenized prompts (engines, re-keying from event token ids).
    pub fn from_tokens(
        token_ids: Vec<u32>,
        hasher: &BlockHasher,
        extras: &RequestExtras,
        style: ExtraKeysStyle,
    ) -> Self {
        let block_hashes = hasher
            .chain(None, &token_ids, &|i| extras.block_extra_keys(i, style))
            .iter()
            .map(|d| d.event_value())
            .collect();
        Self {
            prompt_tokens: token_ids.len(),
            token_ids,
            block_hashes,
        }
    }
}
