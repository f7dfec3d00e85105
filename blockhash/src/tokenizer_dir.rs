//! A model's tokenizer folder as vLLM reads it: `tokenizer.json`, `tokenizer_config.json`
//! (chat template, bos/eos) and an optional `chat_template.jinja` override. The CLI, the
//! indexer, the simulated engine and the benchmark all load models from such a folder; this
//! is the one place that knows its file names. It is the crate's only file I/O, behind the
//! `fs` feature: the filter has no filesystem and gets the same bytes over HTTP.

use std::path::{Path, PathBuf};

use crate::keys::PromptEncoder;

pub const TOKENIZER_JSON: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_JSON: &str = "tokenizer_config.json";
pub const CHAT_TEMPLATE_JINJA: &str = "chat_template.jinja";

/// Why a tokenizer folder could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerDirError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tokenizer in {dir}: {source}")]
    Encoder { dir: PathBuf, source: crate::Error },
}

/// The raw files of one tokenizer folder.
#[derive(Debug, Clone)]
pub struct TokenizerFiles {
    pub dir: PathBuf,
    pub tokenizer_json: Vec<u8>,
    pub tokenizer_config_json: Vec<u8>,
    /// The override, when the folder has one (vLLM's `--chat-template`).
    pub chat_template: Option<String>,
}

impl TokenizerFiles {
    pub fn read(dir: &Path) -> Result<Self, TokenizerDirError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| TokenizerDirError::Io { path, source })
        };
        let path = dir.join(CHAT_TEMPLATE_JINJA);
        let chat_template = match std::fs::read(&path) {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(TokenizerDirError::Io { path, source }),
        };
        Ok(Self {
            dir: dir.to_owned(),
            tokenizer_json: read(TOKENIZER_JSON)?,
            tokenizer_config_json: read(TOKENIZER_CONFIG_JSON)?,
            chat_template,
        })
    }

    /// The encoder with the default segment cache.
    pub fn encoder(&self) -> Result<PromptEncoder, TokenizerDirError> {
        self.wrap(PromptEncoder::from_files(
            &self.tokenizer_json,
            &self.tokenizer_config_json,
            self.chat_template.as_deref(),
        ))
    }

    /// The encoder with a segment-cache bound (0 disables the cache).
    pub fn encoder_with_cache_bytes(
        &self,
        cache_bytes: usize,
    ) -> Result<PromptEncoder, TokenizerDirError> {
        self.wrap(PromptEncoder::with_cache_bytes(
            &self.tokenizer_json,
            &self.tokenizer_config_json,
            self.chat_template.as_deref(),
            cache_bytes,
        ))
    }

    fn wrap(&self, r: crate::Result<PromptEncoder>) -> Result<PromptEncoder, TokenizerDirError> {
        r.map_err(|source| TokenizerDirError::Encoder {
            dir: self.dir.clone(),
            source,
        })
    }
}

impl PromptEncoder {
    /// Load a tokenizer folder with the default segment cache.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerDirError> {
        TokenizerFiles::read(dir)?.encoder()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_folder_names_the_file() {
        let err = TokenizerFiles::read(Path::new("/nonexistent/kvroute")).unwrap_err();
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }
}
