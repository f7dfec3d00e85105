//! The models the indexer serves: tokenizer files (for the filter to fetch) and a
//! `PromptEncoder` each (for `/v1/route/prompt`). Loaded once at start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use kvroute_blockhash::tokenizer_dir::{self, TokenizerFiles};
use kvroute_blockhash::PromptEncoder;

/// Files the filter may fetch, by name.
pub const SERVED_FILES: [&str; 3] = [
    tokenizer_dir::TOKENIZER_JSON,
    tokenizer_dir::TOKENIZER_CONFIG_JSON,
    tokenizer_dir::CHAT_TEMPLATE_JINJA,
];

pub struct Model {
    pub name: String,
    pub files: BTreeMap<String, Arc<[u8]>>,
    pub encoder: PromptEncoder,
}

/// Model name -> its tokenizer.
#[derive(Default)]
pub struct Models {
    by_name: BTreeMap<String, Model>,
}

impl Models {
    /// Load `NAME=DIR` specs (DIR holds tokenizer.json, tokenizer_config.json and
    /// optionally chat_template.jinja).
    pub fn load(specs: &[String]) -> anyhow::Result<Self> {
        let mut by_name = BTreeMap::new();
        for spec in specs {
            let (name, dir) = spec
                .split_once('=')
                .with_context(|| format!("--model {spec:?}: expected NAME=DIR"))?;
            let model = Self::load_one(name, Path::new(dir))?;
            by_name.insert(name.to_owned(), model);
        }
        Ok(Self { by_name })
    }

    fn load_one(name: &str, dir: &Path) -> anyhow::Result<Model> {
        let tokenizer = TokenizerFiles::read(dir)?;
        let encoder = tokenizer
            .encoder()
            .with_context(|| format!("model {name}"))?;
        let mut files: BTreeMap<String, Arc<[u8]>> = BTreeMap::new();
        files.insert(
            tokenizer_dir::TOKENIZER_JSON.to_owned(),
            Arc::from(tokenizer.tokenizer_json),
        );
        files.insert(
            tokenizer_dir::TOKENIZER_CONFIG_JSON.to_owned(),
            Arc::from(tokenizer.tokenizer_config_json),
        );
        if let Some(template) = tokenizer.chat_template {
            files.insert(
                tokenizer_dir::CHAT_TEMPLATE_JINJA.to_owned(),
                Arc::from(template.into_bytes()),
            );
        }
        Ok(Model {
            name: name.to_owned(),
            files,
            encoder,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Model> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    /// The only model, when there is exactly one (single-model fleets need no topic).
    pub fn single(&self) -> Option<String> {
        (self.by_name.len() == 1)
            .then(|| self.by_name.keys().next().cloned())
            .flatten()
    }
}
