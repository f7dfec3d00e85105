//! A raw OpenAI/Anthropic request body to the keys it routes on, tokenized and hashed as
//! the engines will: the one path shared by `POST /v1/route/prompt` and the endpoint picker
//! (`kvroute-epp`), so both answer the same body the same way.

use kvroute_blockhash::request::Endpoint;
use kvroute_blockhash::{BlockHasher, HashConfig, Request, RequestExtras, RequestKeys};

use crate::http::AppState;
use crate::router::RouteError;

/// What a body routes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptKeys {
    /// The model whose engines serve it (a LoRA adapter's base model).
    pub model: String,
    pub block_hashes: Vec<u64>,
    pub prompt_tokens: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// Not a body kvroute can hash (not JSON, no prompt, no model, ...).
    #[error("{0}")]
    Malformed(String),
    /// A model the indexer has no tokenizer for.
    #[error(transparent)]
    Route(#[from] RouteError),
}

impl AppState {
    /// The keys of `body`, sent to `path` (`/v1/chat/completions`, ...; detected if None).
    pub fn prompt_keys(&self, body: &[u8], path: Option<&str>) -> Result<PromptKeys, PromptError> {
        let endpoint = path.and_then(Endpoint::from_path);
        let request =
            Request::parse(body, endpoint).map_err(|e| PromptError::Malformed(e.to_string()))?;
        let Some(requested) = request.model.clone() else {
            return Err(PromptError::Malformed("the body names no model".into()));
        };
        let (model, lora_name, lora_path) = match self.lora_bases.get(&requested) {
            Some(adapter) => (
                adapter.base.clone(),
                Some(requested.clone()),
                adapter.path.clone(),
            ),
            None => (requested, None, None),
        };
        let Some(m) = self.models.get(&model) else {
            return Err(RouteError::UnknownModel(model).into());
        };
        let block_size = self
            .router
            .registry
            .block_size(&model)
            .unwrap_or(self.hash.block_size);
        let hasher = BlockHasher::new(HashConfig {
            block_size,
            ..self.hash.clone()
        });
        let extras = RequestExtras {
            cache_salt: request.cache_salt.clone(),
            lora_name,
            lora_path,
        };
        let keys = RequestKeys::compute_with_style(
            &m.encoder,
            &hasher,
            &request,
            &extras,
            self.extra_keys,
        )
        .map_err(|e| PromptError::Malformed(e.to_string()))?;
        Ok(PromptKeys {
            model,
            block_hashes: keys.block_hashes,
            prompt_tokens: keys.prompt_tokens,
        })
    }
}
