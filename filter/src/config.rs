//! The plugin configuration (the JSON in Envoy's `plugin_config`), parsed and checked once
//! when the plugin starts, so a typo is a clear error at load time instead of a silent
//! misroute per request. Every field has a default; `{}` is a valid configuration.
//!
//! It reads what a person writes: numeric fields take a number or a numeric string
//! (`"call_timeout_ms": "50"`), flags a boolean or `"true"`/`"false"`, and `hash_seed` a
//! string or an integer (`42`, as `PYTHONHASHSEED=42` is written). A configuration that is
//! still unusable is refused here with the reason; the plugin then loads anyway and routes
//! nothing (see `root.rs`), so a typo never turns Envoy's fail-open filter into fail-closed.

use std::collections::BTreeMap;
use std::time::Duration;

use kvroute_blockhash::{Endpoint, HashConfig, HashScheme};
use serde::Deserialize;

use crate::allow_list::AllowList;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("plugin configuration is not valid JSON: {0}")]
    Json(String),
    #[error("plugin configuration: {0}")]
    Invalid(String),
}

/// What the filter does with requests it may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Hash the prompt's blocks and ask the indexer for the pod holding the longest prefix
    /// (whether the indexer scores from KV events or from its routing history is its own
    /// `--mode`).
    Precise,
    /// Touch nothing: every request takes the fallback route.
    Off,
}

/// Where a model's prompt is tokenized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizeIn {
    /// In the wasm VM with the shared crate; only block hashes travel to the indexer.
    Filter,
    /// The body is sent to the indexer's `/v1/route/prompt`, which tokenizes natively.
    Indexer,
}

/// Where a model's tokenizer files are fetched from (an Envoy cluster, no filesystem).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSource {
    /// Envoy cluster serving the files; default: the indexer cluster.
    #[serde(default)]
    pub cluster: Option<String>,
    /// `:authority` of the fetch; default: the indexer authority.
    #[serde(default)]
    pub authority: Option<String>,
    /// Files are fetched from `<path_prefix>/tokenizer.json`, `<path_prefix>/tokenizer_config.json`
    /// and, optionally, `<path_prefix>/chat_template.jinja`; default `/v1/tokenizers/<model>`.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// Per-model settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub tokenizer: Option<TokenizerSource>,
    /// Overrides the plugin-wide `tokenize_in` for this model.
    #[serde(default)]
    pub tokenize_in: Option<TokenizeIn>,
    /// This model name is a LoRA adapter of the named base model: the base's tokenizer is
    /// used, the adapter name goes into the block extra keys, and the indexer is asked for
    /// the base model's pods.
    #[serde(default)]
    pub lora_of: Option<String>,
    /// The adapter's path as the engines loaded it, for deployments whose vLLM folds it
    /// into the LoRA extra key too (`("lora", name, path)`).
    #[serde(default)]
    pub lora_path: Option<String>,
}

/// The raw JSON shape, with serde defaults; [`PluginConfig::parse`] validates it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_indexer_cluster")]
    indexer_cluster: String,
    #[serde(default = "default_indexer_authority")]
    indexer_authority: String,
    #[serde(
        default = "default_call_timeout_ms",
        deserialize_with = "lenient::number"
    )]
    call_timeout_ms: u64,
    #[serde(
        default = "default_max_body_bytes",
        deserialize_with = "lenient::number"
    )]
    max_body_bytes: usize,
    #[serde(default = "default_block_size", deserialize_with = "lenient::number")]
    block_size: usize,
    #[serde(default = "default_hash_scheme")]
    hash_scheme: String,
    #[serde(default, deserialize_with = "lenient::seed")]
    hash_seed: Option<String>,
    #[serde(default = "default_mode")]
    mode: Mode,
    #[serde(default = "default_tokenize_in")]
    tokenize_in: TokenizeIn,
    #[serde(default)]
    models: BTreeMap<String, ModelConfig>,
    #[serde(default, deserialize_with = "lenient::flag")]
    debug_headers: bool,
    /// Request path -> API name (`Endpoint::name`), parsed by `Endpoint::from_str`.
    #[serde(default = "default_paths")]
    paths: BTreeMap<String, String>,
    #[serde(default = "default_route_path")]
    route_path: String,
    #[serde(default = "default_prompt_route_path")]
    prompt_route_path: String,
    #[serde(default = "default_complete_path")]
    complete_path: String,
    #[serde(
        default = "default_tokenizer_fetch_timeout_ms",
        deserialize_with = "lenient::number"
    )]
    tokenizer_fetch_timeout_ms: u64,
    #[serde(
        default = "default_report_completion",
        deserialize_with = "lenient::flag"
    )]
    report_completion: bool,
    #[serde(
        default = "default_indexer_replicas",
        deserialize_with = "lenient::number"
    )]
    indexer_replicas: usize,
    #[serde(
        default = "default_preload_tokenizers",
        deserialize_with = "lenient::flag"
    )]
    preload_tokenizers: bool,
    /// Absent: `allow_list::DEFAULT_ALLOWED`.
    #[serde(default)]
    allowed_endpoints: Option<Vec<String>>,
    /// The indexer API's shared secret (`kvroute serve --api-token-file`).
    #[serde(default)]
    api_token: Option<String>,
}

fn default_indexer_cluster() -> String {
    "kvroute_indexer".into()
}
fn default_indexer_authority() -> String {
    "kvroute-indexer".into()
}
fn default_call_timeout_ms() -> u64 {
    50
}
fn default_max_body_bytes() -> usize {
    1 << 20
}
fn default_block_size() -> usize {
    64
}
fn default_hash_scheme() -> String {
    "sha256_cbor".into()
}
fn default_mode() -> Mode {
    Mode::Precise
}
fn default_tokenize_in() -> TokenizeIn {
    TokenizeIn::Filter
}
fn default_paths() -> BTreeMap<String, String> {
    Endpoint::ALL
        .into_iter()
        .map(|e| (e.path().to_string(), e.name().to_string()))
        .collect()
}
fn default_route_path() -> String {
    kvroute_api::ROUTE_PATH.into()
}
fn default_prompt_route_path() -> String {
    kvroute_api::PROMPT_ROUTE_PATH.into()
}
fn default_complete_path() -> String {
    kvroute_api::COMPLETE_PATH.into()
}
fn default_tokenizer_fetch_timeout_ms() -> u64 {
    30_000
}
fn default_report_completion() -> bool {
    true
}
/// One indexer: each completion is sent once.
fn default_indexer_replicas() -> usize {
    1
}
/// More copies of each completion than this would be a configuration mistake.
const MAX_INDEXER_REPLICAS: usize = 16;
/// Every VM fetches its tokenizers when the plugin starts, so a worker's first request is
/// routed; the price is one tokenizer in the main thread's VM too, which serves no
/// requests (`false` saves it, and the first request per worker then goes unrouted).
fn default_preload_tokenizers() -> bool {
    true
}

/// Deserializers that take the forms a person writes for a value.
mod lenient {
    use serde::de::{Deserializer, Error};
    use serde::Deserialize;
    use serde_json::Value;

    /// A non-negative integer, as a JSON number or a numeric string.
    pub fn number<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        let v = Value::deserialize(d)?;
        let n = match &v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        n.and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| D::Error::custom(format!("expected a non-negative integer, got {v}")))
    }

    /// A boolean, or the strings `"true"`/`"false"`.
    pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(D::Error::custom(format!("expected true or false, got {v}"))),
        }
    }

    /// `PYTHONHASHSEED` as vLLM reads it (a string): a string, an integer or null.
    pub fn seed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Number(n) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
            other => Err(D::Error::custom(format!(
                "hash_seed: expected the engines' PYTHONHASHSEED as a string or an integer, got {other}"
            ))),
        }
    }
}

/// The validated plugin configuration.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub indexer_cluster: String,
    pub indexer_authority: String,
    pub call_timeout: Duration,
    pub max_body_bytes: usize,
    pub hash: HashConfig,
    pub mode: Mode,
    pub tokenize_in: TokenizeIn,
    pub models: BTreeMap<String, ModelConfig>,
    pub debug_headers: bool,
    pub paths: BTreeMap<String, Endpoint>,
    pub route_path: String,
    pub prompt_route_path: String,
    pub complete_path: String,
    pub tokenizer_fetch_timeout: Duration,
    pub report_completion: bool,
    /// Indexer replicas behind `indexer_cluster`. Each replica knows only the decisions it
    /// made, and Envoy picks a replica per call, so a completion goes to every replica:
    /// this many copies back to back, which round robin spreads over that many replicas.
    pub indexer_replicas: usize,
    /// Load tokenizers when the plugin starts instead of at a VM's first request (every VM,
    /// including the main thread's, which never serves requests).
    pub preload_tokenizers: bool,
    /// The `ip:port`s the indexer may send requests to.
    pub allowed_endpoints: AllowList,
    /// `Authorization` value of every call to the indexer (`Bearer <api_token>`), if the
    /// configuration has a token; never sent to another cluster.
    pub indexer_authorization: Option<String>,
}

/// The model a request is routed as, resolved from the request's `model` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel<'a> {
    /// The model whose tokenizer and pods are used (the base model for a LoRA adapter).
    pub base: &'a str,
    /// The adapter name when the requested model is a configured LoRA adapter.
    pub lora_name: Option<&'a str>,
    /// The adapter's path, when configured.
    pub lora_path: Option<&'a str>,
    pub tokenize_in: TokenizeIn,
}

impl PluginConfig {
    /// Parse and validate; an empty buffer means "all defaults".
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_json::from_slice(b"{}").map_err(|e| ConfigError::Json(e.to_string()))?
        } else {
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?
        };
        let scheme: HashScheme = raw
            .hash_scheme
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("hash_scheme: {e}")))?;
        if raw.block_size == 0 {
            return Err(ConfigError::Invalid("block_size must be at least 1".into()));
        }
        if raw.call_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "call_timeout_ms must be at least 1".into(),
            ));
        }
        if !(1..=MAX_INDEXER_REPLICAS).contains(&raw.indexer_replicas) {
            return Err(ConfigError::Invalid(format!(
                "indexer_replicas must be 1 to {MAX_INDEXER_REPLICAS}"
            )));
        }
        if raw.indexer_cluster.is_empty() {
            return Err(ConfigError::Invalid("indexer_cluster is empty".into()));
        }
        let mut paths = BTreeMap::new();
        for (path, api) in raw.paths {
            if !path.starts_with('/') {
                return Err(ConfigError::Invalid(format!(
                    "path {path:?} must start with '/'"
                )));
            }
            let endpoint: Endpoint = api
                .parse()
                .map_err(|e| ConfigError::Invalid(format!("path {path:?}: {e}")))?;
            paths.insert(path, endpoint);
        }
        for (name, model) in &raw.models {
            if let Some(base) = &model.lora_of {
                match raw.models.get(base) {
                    Some(b) if b.lora_of.is_none() => {}
                    _ => {
                        return Err(ConfigError::Invalid(format!(
                            "model {name:?}: lora_of {base:?} must name a configured base model"
                        )))
                    }
                }
            }
        }
        let allowed_endpoints = match &raw.allowed_endpoints {
            Some(list) => AllowList::parse(list).map_err(ConfigError::Invalid)?,
            None => AllowList::default_ranges(),
        };
        let hash = HashConfig {
            scheme,
            block_size: raw.block_size,
            seed: raw.hash_seed,
        };
        // An unseeded sha256_cbor_64bit/xxhash_cbor is seeded randomly by vLLM: refuse a
        // configuration whose every lookup would miss.
        hash.check()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(Self {
            indexer_cluster: raw.indexer_cluster,
            indexer_authority: raw.indexer_authority,
            call_timeout: Duration::from_millis(raw.call_timeout_ms),
            max_body_bytes: raw.max_body_bytes,
            hash,
            mode: raw.mode,
            tokenize_in: raw.tokenize_in,
            models: raw.models,
            debug_headers: raw.debug_headers,
            paths,
            route_path: raw.route_path,
            prompt_route_path: raw.prompt_route_path,
            complete_path: raw.complete_path,
            tokenizer_fetch_timeout: Duration::from_millis(raw.tokenizer_fetch_timeout_ms),
            report_completion: raw.report_completion,
            indexer_replicas: raw.indexer_replicas,
            preload_tokenizers: raw.preload_tokenizers,
            allowed_endpoints,
            indexer_authorization: raw
                .api_token
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .map(|t| format!("Bearer {t}")),
        })
    }

    /// The configured API kind of a request path (query string ignored).
    pub fn path_kind(&self, path: &str) -> Option<Endpoint> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.paths.get(path).copied()
    }

    /// Resolve a request's model; `None` when it is not configured.
    pub fn resolve_model<'a>(&'a self, model: &'a str) -> Option<ResolvedModel<'a>> {
        let (name, cfg) = self.models.get_key_value(model)?;
        match &cfg.lora_of {
            Some(base) => {
                let base_cfg = self.models.get(base.as_str())?;
                Some(ResolvedModel {
                    base: base.as_str(),
                    lora_name: Some(name.as_str()),
                    lora_path: cfg.lora_path.as_deref(),
                    tokenize_in: cfg
                        .tokenize_in
                        .or(base_cfg.tokenize_in)
                        .unwrap_or(self.tokenize_in),
                })
            }
            None => Some(ResolvedModel {
                base: name.as_str(),
                lora_name: None,
                lora_path: None,
                tokenize_in: cfg.tokenize_in.unwrap_or(self.tokenize_in),
            }),
        }
    }

    /// Base models whose tokenizers this VM must load (those tokenized in the filter).
    pub fn models_to_load(&self) -> Vec<(&str, FetchTarget)> {
        self.models
            .iter()
            .filter(|(_, m)| m.lora_of.is_none())
            .filter(|(_, m)| m.tokenize_in.unwrap_or(self.tokenize_in) == TokenizeIn::Filter)
            .map(|(name, m)| (name.as_str(), self.fetch_target(name, m)))
            .collect()
    }

    fn fetch_target(&self, name: &str, model: &ModelConfig) -> FetchTarget {
        let src = model.tokenizer.as_ref();
        let cluster = src
            .and_then(|s| s.cluster.clone())
            .unwrap_or_else(|| self.indexer_cluster.clone());
        FetchTarget {
            // The secret is the indexer's: a tokenizer served elsewhere does not get it.
            authorization: (cluster == self.indexer_cluster)
                .then(|| self.indexer_authorization.clone())
                .flatten(),
            cluster,
            authority: src
                .and_then(|s| s.authority.clone())
                .unwrap_or_else(|| self.indexer_authority.clone()),
            path_prefix: src
                .and_then(|s| s.path_prefix.clone())
                .unwrap_or_else(|| format!("{}/{name}", kvroute_api::TOKENIZERS_PATH))
                .trim_end_matches('/')
                .to_string(),
        }
    }
}

/// Where one model's tokenizer files are fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTarget {
    pub cluster: String,
    pub authorization: Option<String>,
    pub authority: String,
    pub path_prefix: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_takes_the_documented_defaults() {
        let c = PluginConfig::parse(b"").expect("empty config");
        assert_eq!(c.call_timeout, Duration::from_millis(50));
        assert_eq!(c.hash.block_size, 64);
        assert_eq!(c.hash.scheme, HashScheme::Sha256Cbor);
        assert_eq!(c.mode, Mode::Precise);
        assert!(c.preload_tokenizers, "tokenizers load at plugin start");
        assert_eq!(c.indexer_cluster, "kvroute_indexer");
        assert_eq!(
            c.path_kind("/v1/chat/completions?x=1"),
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(c.path_kind("/v1/models"), None);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(matches!(
            PluginConfig::parse(br#"{"call_timeout":5}"#),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            PluginConfig::parse(br#"{"hash_scheme":"md5"}"#),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            PluginConfig::parse(br#"{"block_size":0}"#),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            PluginConfig::parse(br#"{"hash_scheme":"xxhash_cbor"}"#),
            Err(ConfigError::Invalid(_))
        ));
        assert!(PluginConfig::parse(br#"{"hash_scheme":"xxhash_cbor","hash_seed":"0"}"#).is_ok());
        assert!(matches!(
            PluginConfig::parse(b"{not json"),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            PluginConfig::parse(br#"{"models":{"a":{"lora_of":"missing"}}}"#),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn the_api_token_goes_to_the_indexer_cluster_only() {
        let c = PluginConfig::parse(
            br#"{"api_token": " s3cret\n", "models": {
            "a": {},
            "b": {"tokenizer": {"cluster": "hub", "authority": "hub", "path_prefix": "/t"}}
        }}"#,
        )
        .expect("valid");
        assert_eq!(c.indexer_authorization.as_deref(), Some("Bearer s3cret"));
        let targets: BTreeMap<&str, FetchTarget> = c.models_to_load().into_iter().collect();
        assert_eq!(targets["a"].authorization.as_deref(), Some("Bearer s3cret"));
        assert_eq!(targets["b"].authorization, None, "another cluster");
        let open = PluginConfig::parse(b"{}").expect("valid");
        assert_eq!(open.indexer_authorization, None);
    }

    #[test]
    fn lora_adapters_resolve_to_their_base_model() {
        let c = PluginConfig::parse(
            br#"{"models":{"Qwen3-32B":{},"sql-lora":{"lora_of":"Qwen3-32B"},"big":{"tokenize_in":"indexer"}}}"#,
        )
        .expect("config");
        let r = c.resolve_model("sql-lora").expect("adapter");
        assert_eq!(r.base, "Qwen3-32B");
        assert_eq!(r.lora_name, Some("sql-lora"));
        assert_eq!(
            c.resolve_model("big").map(|r| r.tokenize_in),
            Some(TokenizeIn::Indexer)
        );
        assert!(c.resolve_model("other").is_none());
        let load: Vec<_> = c
            .models_to_load()
            .into_iter()
            .map(|(n, t)| (n, t.path_prefix))
            .collect();
        assert_eq!(
            load,
            vec![("Qwen3-32B", "/v1/tokenizers/Qwen3-32B".to_string())]
        );
    }

    #[test]
    fn what_a_person_writes_is_read() {
        let c = PluginConfig::parse(
            br#"{"hash_seed":42,"call_timeout_ms":"75","block_size":"16","debug_headers":"true","preload_tokenizers":false}"#,
        )
        .expect("lenient forms");
        assert_eq!(c.hash.seed.as_deref(), Some("42"));
        assert_eq!(c.call_timeout, Duration::from_millis(75));
        assert_eq!(c.hash.block_size, 16);
        assert!(c.debug_headers);
        assert!(!c.preload_tokenizers);
        assert_eq!(
            PluginConfig::parse(br#"{"hash_seed":"42"}"#)
                .expect("string seed")
                .hash
                .seed
                .as_deref(),
            Some("42")
        );
        for bad in [
            &br#"{"hash_seed":4.2}"#[..],
            br#"{"call_timeout_ms":-1}"#,
            br#"{"block_size":"sixteen"}"#,
            br#"{"debug_headers":"yes"}"#,
        ] {
            let e = PluginConfig::parse(bad).expect_err("refused");
            assert!(e.to_string().contains("expected"), "{e}");
        }
    }

    #[test]
    fn the_routes_default_to_the_contract_paths() {
        let c = PluginConfig::parse(b"{}").expect("defaults");
        assert_eq!(c.route_path, kvroute_api::ROUTE_PATH);
        assert_eq!(c.prompt_route_path, kvroute_api::PROMPT_ROUTE_PATH);
        assert_eq!(c.complete_path, kvroute_api::COMPLETE_PATH);
        assert!(matches!(
            PluginConfig::parse(br#"{"mode":"estimate"}"#),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            PluginConfig::parse(br#"{"paths":{"/x":"chat_completions"}}"#),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            PluginConfig::parse(br#"{"hash_scheme":"sha256"}"#),
            Ok(PluginConfig { hash, .. }) if hash.scheme == HashScheme::Sha256
        ));
    }

    #[test]
    fn indexer_replicas_default_to_one_and_are_bounded() {
        assert_eq!(PluginConfig::parse(b"{}").unwrap().indexer_replicas, 1);
        let three = PluginConfig::parse(br#"{"indexer_replicas":"3"}"#).unwrap();
        assert_eq!(three.indexer_replicas, 3);
        for bad in [
            &br#"{"indexer_replicas":0}"#[..],
            br#"{"indexer_replicas":17}"#,
        ] {
            assert!(matches!(
                PluginConfig::parse(bad),
                Err(ConfigError::Invalid(_))
            ));
        }
    }
}
