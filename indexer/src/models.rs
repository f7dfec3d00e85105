//! The models the indexer serves: tokenizer files (for the filter to fetch) and a
//! `PromptEncoder` each (for `/v1/route/prompt`). Loaded once at start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use kvroute_blockhash::PromptEncoder;

/// Files the filter may fetch, by name.
pub const SERVED_FILES: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
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
        let mut files = BTreeMap::new();
        for file in SERVED_FILES {
            match std::fs::read(dir.join(file)) {
                Ok(bytes) => {
                    files.insert(file.to_owned(), Arc::from(bytes));
                }
                Err(_) if file == "chat_template.jinja" => {}
                Err(e) => return Err(e).with_context(|| format!("{}", dir.join(file).display())),
            }
        }
        let template = files
            .get("chat_template.jinja")
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let encoder = PromptEncoder::from_files(
            &files["tokenizer.json"],
            &files["tokenizer_config.json"],
            template.as_deref(),
        )
        .with_context(|| format!("model {name}"))?;
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
