//! Collecting one model's tokenizer files over HTTP. The wasm VM has no filesystem, so the
//! files come from the indexer (`GET /v1/tokenizers/{model}/{file}`) or another configured
//! source; the three answers arrive in any order and this state machine says when the set
//! is complete and whether it is usable. Pure, unit-tested natively.

/// The files a model's encoder is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenizerFile {
    TokenizerJson,
    TokenizerConfig,
    /// `chat_template.jinja`: optional override of the config's `chat_template`.
    ChatTemplate,
}

impl TokenizerFile {
    pub const ALL: [TokenizerFile; 3] = [
        TokenizerFile::TokenizerJson,
        TokenizerFile::TokenizerConfig,
        TokenizerFile::ChatTemplate,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            TokenizerFile::TokenizerJson => "tokenizer.json",
            TokenizerFile::TokenizerConfig => "tokenizer_config.json",
            TokenizerFile::ChatTemplate => "chat_template.jinja",
        }
    }

    fn index(self) -> usize {
        match self {
            TokenizerFile::TokenizerJson => 0,
            TokenizerFile::TokenizerConfig => 1,
            TokenizerFile::ChatTemplate => 2,
        }
    }
}

/// The complete, usable set of files.
#[derive(Debug)]
pub struct TokenizerFiles {
    pub tokenizer_json: Vec<u8>,
    pub tokenizer_config_json: Vec<u8>,
    pub chat_template: Option<String>,
}

/// One model's fetch in progress.
#[derive(Debug, Default)]
pub struct ModelFetch {
    /// `None`: still waiting; `Some(None)`: absent or failed; `Some(Some(body))`: fetched.
    answers: [Option<Option<Vec<u8>>>; 3],
    errors: Vec<String>,
}

impl ModelFetch {
    /// Record one answer; `status` is `None` when the call failed without a response.
    pub fn record(&mut self, file: TokenizerFile, status: Option<u16>, body: Option<Vec<u8>>) {
        let ok = status == Some(200) && body.as_ref().is_some_and(|b| !b.is_empty());
        if !ok && file != TokenizerFile::ChatTemplate {
            self.errors.push(format!(
                "{}: {}",
                file.file_name(),
                status.map_or("no response".to_string(), |s| format!("HTTP {s}"))
            ));
        }
        self.answers[file.index()] = Some(if ok { body } else { None });
    }

    /// A file could not even be requested.
    pub fn dispatch_failed(&mut self, file: TokenizerFile) {
        self.record(file, None, None);
    }

    /// `None` while answers are missing; then the files or why they are unusable.
    pub fn outcome(&mut self) -> Option<Result<TokenizerFiles, String>> {
        if self.answers.iter().any(Option::is_none) {
            return None;
        }
        if !self.errors.is_empty() {
            return Some(Err(self.errors.join(", ")));
        }
        let [json, config, template] = std::mem::take(&mut self.answers);
        let (Some(Some(tokenizer_json)), Some(Some(tokenizer_config_json))) = (json, config) else {
            return Some(Err("required tokenizer file missing".into()));
        };
        let chat_template = match template.flatten().map(String::from_utf8) {
            Some(Ok(t)) => Some(t),
            Some(Err(_)) => return Some(Err("chat_template.jinja is not UTF-8".into())),
            None => None,
        };
        Some(Ok(TokenizerFiles {
            tokenizer_json,
            tokenizer_config_json,
            chat_template,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_when_all_three_answered_and_template_is_optional() {
        let mut f = ModelFetch::default();
        f.record(
            TokenizerFile::TokenizerConfig,
            Some(200),
            Some(b"{}".to_vec()),
        );
        assert!(f.outcome().is_none());
        f.record(
            TokenizerFile::ChatTemplate,
            Some(404),
            Some(b"{\"error\":\"no\"}".to_vec()),
        );
        assert!(f.outcome().is_none());
        f.record(
            TokenizerFile::TokenizerJson,
            Some(200),
            Some(b"{\"model\":{}}".to_vec()),
        );
        let files = f.outcome().expect("complete").expect("usable");
        assert_eq!(files.tokenizer_config_json, b"{}");
        assert!(files.chat_template.is_none());
    }

    #[test]
    fn a_missing_required_file_is_an_error_naming_it() {
        let mut f = ModelFetch::default();
        f.dispatch_failed(TokenizerFile::TokenizerJson);
        f.record(
            TokenizerFile::TokenizerConfig,
            Some(200),
            Some(b"{}".to_vec()),
        );
        f.record(
            TokenizerFile::ChatTemplate,
            Some(200),
            Some(b"{{ x }}".to_vec()),
        );
        let err = f.outcome().expect("complete").expect_err("unusable");
        assert!(err.contains("tokenizer.json: no response"), "{err}");
    }
}
