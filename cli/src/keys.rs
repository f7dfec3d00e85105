//! `kvroute keys`: why did a request miss? Prints the token ids and block hashes kvroute
//! computes for a request body, to compare with what an engine published.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kvroute_blockhash::{
    BlockHasher, ExtraKeysStyle, HashConfig, HashScheme, PromptEncoder, Request, RequestExtras,
    RequestKeys, TokenizerFiles,
};

#[derive(clap::Args)]
pub struct KeysArgs {
    /// Folder with tokenizer.json and tokenizer_config.json (and optionally chat_template.jinja).
    #[arg(long)]
    tokenizer: PathBuf,
    /// vLLM's --block-size.
    #[arg(long, default_value_t = 64)]
    block_size: usize,
    /// vLLM's --prefix-caching-hash-algo: sha256 (vLLM's default), sha256_cbor, xxhash,
    /// xxhash_cbor or sha256_cbor_64bit.
    #[arg(long, default_value = "sha256_cbor")]
    hash_algo: HashScheme,
    /// The engines' PYTHONHASHSEED (default: vLLM's "vllm-none-hash").
    #[arg(long)]
    hash_seed: Option<String>,
    /// The request's model is a LoRA adapter of this base model: hash its name as extra key.
    #[arg(long, value_name = "BASE")]
    lora_of: Option<String>,
    /// The adapter's path as the engines loaded it (vLLM 0.31+ hashes it in the tagged key).
    #[arg(long, value_name = "PATH", requires = "lora_of")]
    lora_path: Option<String>,
    /// Extra keys as today's vLLM tags them, or bare as older versions did.
    #[arg(long, default_value = "tagged")]
    extra_keys: ExtraKeysStyle,
}

pub fn run(args: KeysArgs) -> ExitCode {
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("kvroute keys: cannot read the request from stdin: {e}");
        return ExitCode::from(2);
    }
    // Options no engine can match are the user's configuration, not the body: exit 1.
    let hasher = match BlockHasher::try_new(HashConfig {
        scheme: args.hash_algo,
        block_size: args.block_size,
        seed: args.hash_seed.clone(),
    }) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("kvroute keys: {e}");
            return ExitCode::from(1);
        }
    };
    if args.lora_of.is_some()
        && args.lora_path.is_none()
        && args.extra_keys == ExtraKeysStyle::Tagged
    {
        eprintln!(
            "kvroute keys: --lora-of with tagged extra keys needs --lora-path (vLLM hashes the adapter's path), or --extra-keys bare"
        );
        return ExitCode::from(1);
    }
    let encoder = match load_encoder(&args.tokenizer) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("kvroute keys: {e:#}");
            return ExitCode::from(1);
        }
    };
    match keys(&args, &encoder, &hasher, &body) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvroute keys: {e}");
            ExitCode::from(2)
        }
    }
}

fn load_encoder(dir: &Path) -> anyhow::Result<PromptEncoder> {
    // No segment cache: one request per run.
    Ok(TokenizerFiles::read(dir)?.encoder_with_cache_bytes(0)?)
}

fn keys(
    args: &KeysArgs,
    encoder: &PromptEncoder,
    hasher: &BlockHasher,
    body: &[u8],
) -> kvroute_blockhash::Result<String> {
    let request = Request::parse(body, None)?;
    let lora_name = match (&args.lora_of, &request.model) {
        (Some(base), Some(model)) if model != base => Some(model.clone()),
        _ => None,
    };
    let extras = RequestExtras {
        cache_salt: request.cache_salt.clone(),
        lora_path: lora_name.as_ref().and(args.lora_path.clone()),
        lora_name,
    };
    let keys =
        RequestKeys::compute_with_style(encoder, hasher, &request, &extras, args.extra_keys)?;
    Ok(serde_json::to_string(&keys).unwrap_or_default())
}
