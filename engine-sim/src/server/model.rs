//! The served model's prompt side, through the shared crate: the same template rendering,
//! tokenization and chained block hashes the router computes, so the blocks this engine
//! caches and publishes are the ones vLLM would (and the ones the filter asks about).

use std::path::Path;

use kvroute_blockhash::{
    BlockDigest, BlockHasher, Endpoint, ExtraKeysStyle, HashConfig, PromptEncoder, Request,
    RequestExtras,
};

use crate::server::ServerError;

/// A request's prompt as the engine holds it: tokens, and per full block its digest (the
/// parent of the next block) and the value published in events.
#[derive(Debug, Clone)]
pub struct PromptBlocks {
    pub token_ids: Vec<u32>,
    pub digests: Vec<BlockDigest>,
    pub hashes: Vec<u64>,
    /// The request's cache salt: vLLM hashes it into the first block and publishes it in
    /// that block's extra keys.
    pub cache_salt: Option<String>,
    /// vLLM 0.32's `session_id` request field, echoed in the request's `BlockStored` events.
    pub session_id: Option<String>,
}

pub struct ServedModel {
    pub name: String,
    encoder: PromptEncoder,
    hasher: BlockHasher,
    style: ExtraKeysStyle,
}

impl ServedModel {
    /// Loads `tokenizer.json`, `tokenizer_config.json` and, when present,
    /// `chat_template.jinja` (an override, as vLLM's --chat-template) from `dir`.
    pub fn load(
        name: &str,
        dir: &Path,
        hash: HashConfig,
        style: ExtraKeysStyle,
    ) -> Result<Self, ServerError> {
        let encoder = PromptEncoder::from_dir(dir)?;
        Ok(Self {
            name: name.to_string(),
            encoder,
            hasher: BlockHasher::new(hash),
            style,
        })
    }

    pub fn block_size(&self) -> usize {
        self.hasher.block_size()
    }

    /// The digest of block `block_index` of a request, chained from `parent` (the previous
    /// block's; `None` for the first), as vLLM hashes a block that generated tokens filled.
    pub fn hash_block(
        &self,
        parent: Option<&BlockDigest>,
        tokens: &[u32],
        block_index: usize,
        cache_salt: Option<&str>,
    ) -> BlockDigest {
        let extras = RequestExtras {
            cache_salt: cache_salt.map(str::to_owned),
            ..Default::default()
        };
        let parent = parent.copied().unwrap_or_else(|| self.hasher.none_hash());
        let extra = extras.block_extra_keys(block_index, self.style);
        self.hasher.hash_block(&parent, tokens, extra.as_ref())
    }

    /// Tokens and block hashes of a body sent to `endpoint`; the error is the client's
    /// (malformed body, unsupported content).
    pub fn prompt(
        &self,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<PromptBlocks, kvroute_blockhash::Error> {
        let request = Request::parse(body, Some(endpoint))?;
        let token_ids = self.encoder.prompt_tokens(&request)?;
        let extras = RequestExtras {
            cache_salt: request.cache_salt.clone(),
            ..Default::default()
        };
        let style = self.style;
        let digests = self
            .hasher
            .chain(None, &token_ids, &|i| extras.block_extra_keys(i, style));
        let hashes = digests.iter().map(BlockDigest::event_value).collect();
        Ok(PromptBlocks {
            token_ids,
            digests,
            hashes,
            cache_salt: request.cache_salt,
            session_id: None,
        })
    }
}

/// Output token `i` of every request, text and id: a fixed cycle of words (the simulator
/// models time and cache, not language). The ids are Qwen3's for these words, so blocks
/// that generated tokens fill hold plausible tokens.
pub fn output_token(i: usize) -> (&'static str, u32) {
    const WORDS: [(&str, u32); 9] = [
        (" The", 576),
        (" engine", 4712),
        (" is", 374),
        (" simulated", 45736),
        (",", 11),
        (" the", 279),
        (" cache", 6500),
        (" real", 1931),
        (".", 13),
    ];
    WORDS[i % WORDS.len()]
}
