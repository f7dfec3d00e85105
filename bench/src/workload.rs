//! The seed's shared-prefix workload with real text, so the real tokenizer, template and
//! filter do the work they do in production: each group (customer) has its own ~6,000-token
//! system prompt, each of its users a ~1,200-token question, sent as OpenAI chat requests.
//! Deterministic per seed: the same seed writes the same bytes, tokens and block hashes.

use std::sync::Arc;

use engine_sim::fleet::Rng;
use kvroute_blockhash::{
    BlockHasher, HashConfig, PromptEncoder, Request, RequestExtras, RequestKeys,
};
use kvroute_engine_sim as engine_sim;

use crate::error::BenchError;

/// Sizes of the workload (the seed: 150 groups x 5 users, 6,000 + 1,200 tokens; its
/// 1,000-token `max_tokens` cannot fit its own `--max-model-len 8192`, so output lengths are
/// drawn per request, see `schedule`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkloadSpec {
    pub model: String,
    pub groups: usize,
    pub users_per_group: usize,
    pub system_tokens: usize,
    pub question_tokens: usize,
    /// Mean output tokens per request.
    pub output_mean: f64,
    /// vLLM's `--max-model-len`, which the engines enforce.
    pub max_model_len: usize,
    pub seed: u64,
}

/// One distinct prompt: a group's system prompt and one user's question.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The OpenAI chat body, streaming with usage, cut where its `max_tokens` value goes.
    body: Arc<(Vec<u8>, Vec<u8>)>,
    pub prompt_tokens: usize,
    /// vLLM's published block hashes of the prompt (what engines store, what the oracle sees).
    pub block_hashes: Arc<Vec<u64>>,
}

/// Written where the `max_tokens` value goes, then cut there.
const MAX_TOKENS_MARK: u64 = 987_654_321;

impl Prompt {
    /// The request body asking for `max_tokens` output tokens.
    pub fn body(&self, max_tokens: usize) -> Vec<u8> {
        let (head, tail) = &*self.body;
        let mut body = Vec::with_capacity(head.len() + tail.len() + 8);
        body.extend_from_slice(head);
        body.extend_from_slice(max_tokens.to_string().as_bytes());
        body.extend_from_slice(tail);
        body
    }
}

/// Every distinct prompt, indexed `group * users_per_group + user`.
#[derive(Debug, Clone)]
pub struct Workload {
    pub spec: WorkloadSpec,
    pub prompts: Vec<Prompt>,
}

/// Words the text is drawn from: plain business English, so the tokenizer sees ordinary
/// words, punctuation and numbers rather than noise.
const WORDS: &[&str] = &[
    "account",
    "invoice",
    "customer",
    "contract",
    "delivery",
    "warehouse",
    "shipment",
    "refund",
    "policy",
    "support",
    "ticket",
    "priority",
    "escalation",
    "manager",
    "region",
    "quarter",
    "forecast",
    "revenue",
    "margin",
    "supplier",
    "order",
    "payment",
    "balance",
    "credit",
    "discount",
    "renewal",
    "subscription",
    "license",
    "seat",
    "usage",
    "report",
    "dashboard",
    "metric",
    "target",
    "deadline",
    "schedule",
    "meeting",
    "review",
    "approval",
    "request",
    "response",
    "service",
    "level",
    "agreement",
    "uptime",
    "incident",
    "outage",
    "maintenance",
    "window",
    "release",
    "feature",
    "product",
    "catalog",
    "price",
    "tier",
    "enterprise",
    "partner",
    "reseller",
    "channel",
    "market",
    "segment",
    "campaign",
    "lead",
    "opportunity",
    "pipeline",
    "stage",
    "owner",
    "team",
    "department",
    "finance",
    "legal",
    "security",
    "compliance",
    "audit",
    "control",
    "risk",
    "vendor",
    "procurement",
    "budget",
    "expense",
    "travel",
    "employee",
    "onboarding",
    "training",
    "document",
    "template",
    "record",
    "database",
    "backup",
    "storage",
    "network",
    "latency",
    "capacity",
    "cluster",
    "region",
    "zone",
    "migration",
    "integration",
    "interface",
    "webhook",
    "token",
    "secret",
    "rotation",
    "password",
    "access",
    "role",
    "permission",
    "group",
    "member",
    "invitation",
    "notification",
    "email",
    "message",
    "channel",
    "thread",
    "comment",
    "attachment",
    "upload",
    "download",
    "export",
    "import",
    "format",
    "spreadsheet",
    "column",
    "row",
    "value",
    "field",
    "label",
    "status",
    "pending",
    "active",
    "closed",
    "archived",
    "draft",
    "the",
    "a",
    "an",
    "and",
    "or",
    "but",
    "with",
    "without",
    "for",
    "from",
    "to",
    "into",
    "on",
    "in",
    "at",
    "by",
    "after",
    "before",
    "during",
    "while",
    "when",
    "if",
    "unless",
    "must",
    "should",
    "may",
    "will",
    "can",
    "always",
    "never",
    "usually",
    "only",
    "also",
    "every",
    "each",
    "any",
    "all",
    "no",
    "new",
    "old",
    "first",
    "last",
    "next",
    "previous",
    "monthly",
    "weekly",
    "daily",
    "annual",
    "open",
    "close",
    "send",
    "receive",
    "check",
    "verify",
    "confirm",
    "update",
    "create",
    "delete",
    "assign",
    "transfer",
    "notify",
    "explain",
    "summarize",
    "compare",
    "calculate",
    "include",
    "exclude",
    "apply",
    "remove",
];

const SYLLABLES: &[&str] = &[
    "ar", "bel", "cor", "dan", "el", "fin", "gal", "hul", "ix", "jor", "kel", "lum", "mor", "nov",
    "or", "pax", "quin", "ros", "sol", "tar", "ul", "ven", "wex", "yor", "zen",
];

fn company_name(rng: &mut Rng) -> String {
    let n = 2 + rng.below(2);
    let mut name: String = (0..n)
        .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
        .collect();
    if let Some(first) = name.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    name
}

fn sentence(rng: &mut Rng, out: &mut String) {
    let words = 8 + rng.below(14);
    for i in 0..words {
        let w = WORDS[rng.below(WORDS.len())];
        if i == 0 {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                out.extend(f.to_uppercase());
                out.push_str(c.as_str());
            }
        } else {
            out.push(' ');
            out.push_str(w);
        }
        if rng.below(12) == 0 {
            out.push_str(&format!(" {}", rng.below(10_000)));
        } else if i + 1 < words && rng.below(9) == 0 {
            out.push(',');
        }
    }
    out.push_str(". ");
}

/// Text of about `tokens` tokens (within a sentence), grown sentence by sentence from
/// `rng`. Sentences are counted one by one: the pre-tokenizer splits at their spaces and
/// punctuation, so counts add up, and the whole text is never re-tokenized.
fn text_of_tokens(
    encoder: &PromptEncoder,
    rng: &mut Rng,
    opening: &str,
    tokens: usize,
) -> Result<String, BenchError> {
    let count = |t: &str| {
        encoder
            .tokenizer()
            .encode_uncached(t, false)
            .map(|v| v.len())
    };
    let mut text = opening.to_string();
    let mut have = count(&text)?;
    let mut sentences = 0usize;
    while have < tokens {
        let mut s = String::new();
        sentence(rng, &mut s);
        sentences += 1;
        if sentences.is_multiple_of(6) {
            s.push_str("\n\n");
        }
        have += count(&s)?;
        text.push_str(&s);
    }
    Ok(text)
}

impl Workload {
    /// Writes and tokenizes every distinct prompt (groups x users).
    pub fn build(
        spec: WorkloadSpec,
        encoder: &PromptEncoder,
        hash: &HashConfig,
    ) -> Result<Self, BenchError> {
        let hasher = BlockHasher::try_new(hash.clone())?;
        let mut prompts = Vec::with_capacity(spec.groups * spec.users_per_group);
        for group in 0..spec.groups {
            let mut rng = Rng::new(spec.seed ^ (group as u64 + 1).wrapping_mul(0x51_7CC1_B727));
            let company = company_name(&mut rng);
            let opening = format!(
                "You are the support assistant of {company} (customer {group}). Answer from \
                 the account handbook below; quote section numbers.\n\n# {company} account handbook\n\n"
            );
            let system = text_of_tokens(encoder, &mut rng, &opening, spec.system_tokens)?;
            for user in 0..spec.users_per_group {
                let mut qrng = Rng::new(
                    spec.seed
                        ^ (((group as u64) << 20) | (user as u64 + 1)).wrapping_mul(0x2545_F491),
                );
                let opening = format!("I am user {user} at {company}. My question:\n\n");
                let question = text_of_tokens(encoder, &mut qrng, &opening, spec.question_tokens)?;
                let body = serde_json::json!({
                    "model": spec.model,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": question},
                    ],
                    "max_tokens": MAX_TOKENS_MARK,
                    "stream": true,
                    "stream_options": {"include_usage": true},
                });
                let bytes = serde_json::to_vec(&body)?;
                let mark = MAX_TOKENS_MARK.to_string();
                let at = bytes
                    .windows(mark.len())
                    .position(|w| w == mark.as_bytes())
                    .ok_or(BenchError::NoMaxTokensMark)?;
                let cut = (bytes[..at].to_vec(), bytes[at + mark.len()..].to_vec());
                let request = Request::parse(&bytes, None)?;
                let keys =
                    RequestKeys::compute(encoder, &hasher, &request, &RequestExtras::default())?;
                prompts.push(Prompt {
                    body: Arc::new(cut),
                    prompt_tokens: keys.prompt_tokens,
                    block_hashes: Arc::new(keys.block_hashes),
                });
            }
        }
        Ok(Self { spec, prompts })
    }

    #[cfg(test)]
    pub fn prompt(&self, group: usize, user: usize) -> &Prompt {
        &self.prompts[group * self.spec.users_per_group + user]
    }
}

/// Loads the model's tokenizer folder as the indexer and the engines do, without the
/// segment cache: each prompt is tokenized once, to build the workload.
pub fn load_encoder(dir: &std::path::Path) -> Result<PromptEncoder, BenchError> {
    Ok(kvroute_blockhash::TokenizerFiles::read(dir)?.encoder_with_cache_bytes(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoder() -> PromptEncoder {
        load_encoder(&kvroute_harness::paths::tokenizers_dir().join("qwen3"))
            .expect("qwen3 tokenizer")
    }

    #[test]
    fn prompts_are_deterministic_sized_and_share_their_group_prefix() {
        let spec = WorkloadSpec {
            model: "Qwen3-32B".into(),
            groups: 2,
            users_per_group: 2,
            system_tokens: 640,
            question_tokens: 130,
            output_mean: 10.0,
            max_model_len: 8192,
            seed: 5,
        };
        let enc = encoder();
        let a = Workload::build(spec.clone(), &enc, &HashConfig::default()).unwrap();
        let b = Workload::build(spec, &enc, &HashConfig::default()).unwrap();
        assert_eq!(a.prompts[3].body(7), b.prompts[3].body(7));
        let body: serde_json::Value = serde_json::from_slice(&a.prompts[3].body(123)).unwrap();
        assert_eq!(body["max_tokens"], 123);
        for p in &a.prompts {
            assert!((770..840).contains(&p.prompt_tokens), "{}", p.prompt_tokens);
        }
        let (u0, u1, other) = (a.prompt(0, 0), a.prompt(0, 1), a.prompt(1, 0));
        let shared = |x: &Prompt, y: &Prompt| {
            x.block_hashes
                .iter()
                .zip(y.block_hashes.iter())
                .take_while(|(p, q)| p == q)
                .count()
        };
        assert!(
            shared(u0, u1) >= 9,
            "a group's users share its system prompt"
        );
        assert_eq!(shared(u0, other), 0, "groups share nothing");
    }
}
