//! An exact fast path for the pre-tokenization regex of Qwen2/Qwen3 and Llama 3
//! tokenizers, which dominates encoding time inside Envoy's wasm VM.
//!
//! Their `tokenizer.json` splits text with a backtracking regex (`fancy-regex`, because of
//! the `(?!\S)` look-ahead) before the BPE model runs:
//!
//! ```text
//! (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//! ```
//!
//! (Llama 3: `\p{N}{1,3}` instead of `\p{N}`). [`Gpt4Split`] implements that one pattern as
//! a hand-written scanner with the same leftmost-first alternation semantics, on character
//! classes taken from the same Unicode tables the regex engine uses (`regex-syntax`:
//! `\p{L}`, `\p{N}`, `\s`). [`FastPreTokenizer`] plugs it into `tokenizers` in place of the
//! `Split` + `ByteLevel` sequence: deserialize a `tokenizer.json` as [`FastTokenizer`] and
//! it loads exactly as `Tokenizer` does, or fails when the pattern is not one of these
//! (the caller then keeps the regular `Tokenizer`). Tests compare every split and every
//! token id with `tokenizers` itself on real tokenizer files and adversarial text.

use std::ops::Range;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    DecoderWrapper, ModelWrapper, NormalizedString, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizedString, PreTokenizer, TokenizerImpl,
};

/// The Qwen2 / Qwen3 split pattern, exactly as in their tokenizer.json.
pub const QWEN_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Llama 3 split pattern (numbers in runs of up to three digits).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const LETTER: u8 = 1;
const NUMBER: u8 = 2;
const SPACE: u8 = 4;

/// The regex engine's own Unicode ranges of `\p{L}`, `\p{N}` and `\s`: a table for the BMP
/// (64 KiB, the common case) and sorted ranges for the rest, built once.
struct ClassTables {
    bmp: Vec<u8>,
    astral: Vec<(u32, u32, u8)>,
}

fn class_tables() -> &'static ClassTables {
    static TABLES: OnceLock<ClassTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut bmp = vec![0u8; 0x10000];
        let mut astral = Vec::new();
        for (pattern, bit) in [(r"\p{L}", LETTER), (r"\p{N}", NUMBER), (r"\s", SPACE)] {
            let Ok(hir) = regex_syntax::Parser::new().parse(pattern) else {
                continue;
            };
            let regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(class)) =
                hir.kind()
            else {
                continue;
            };
            for r in class.ranges() {
                let (lo, hi) = (r.start() as u32, r.end() as u32);
                for cp in lo..=hi.min(0xFFFF) {
                    bmp[cp as usize] |= bit;
                }
                if hi > 0xFFFF {
                    astral.push((lo.max(0x10000), hi, bit));
                }
            }
        }
        astral.sort_unstable();
        ClassTables { bmp, astral }
    })
}

fn class(c: char) -> u8 {
    let t = class_tables();
    match t.bmp.get(c as usize) {
        Some(bits) => *bits,
        None => {
            let cp = c as u32;
            t.astral
                .iter()
                .filter(|(lo, hi, _)| *lo <= cp && cp <= *hi)
                .fold(0, |acc, (_, _, bit)| acc | bit)
        }
    }
}

/// The split regex of Qwen2/3 (`max_digits` 1) or Llama 3 (`max_digits` 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gpt4Split {
    max_digits: usize,
}

impl Gpt4Split {
    /// The scanner for `pattern` when it is one this module implements exactly.
    pub fn from_pattern(pattern: &str) -> Option<Self> {
        match pattern {
            QWEN_PATTERN => Some(Self { max_digits: 1 }),
            LLAMA3_PATTERN => Some(Self { max_digits: 3 }),
            _ => None,
        }
    }

    /// Byte ranges of the pieces of `text`, in order, covering it entirely (every
    /// character matches some alternative, so `Isolated` splitting leaves no gaps).
    pub fn split(&self, text: &str) -> Vec<Range<usize>> {
        let chars: Vec<(usize, char, u8)> =
            text.char_indices().map(|(i, c)| (i, c, class(c))).collect();
        let byte_at = |k: usize| chars.get(k).map_or(text.len(), |c| c.0);
        let mut out = Vec::with_capacity(chars.len() / 3 + 1);
        let mut i = 0;
        while i < chars.len() {
            let j = self.match_at(&chars, i);
            out.push(byte_at(i)..byte_at(j));
            i = j;
        }
        out
    }

    /// End (exclusive, in chars) of the match starting at `i`; always > `i`.
    fn match_at(&self, chars: &[(usize, char, u8)], i: usize) -> usize {
        let n = chars.len();
        let is = |k: usize, bit: u8| chars.get(k).is_some_and(|c| c.2 & bit != 0);
        let is_newline = |k: usize| chars.get(k).is_some_and(|c| c.1 == '\r' || c.1 == '\n');
        let is_other = |k: usize| {
            chars
                .get(k)
                .is_some_and(|c| c.2 & (LETTER | NUMBER | SPACE) == 0)
        };
        let letters_from = |mut k: usize| {
            while is(k, LETTER) {
                k += 1;
            }
            k
        };
        let (_, c, bits) = chars[i];

        // (?i:'s|'t|'re|'ve|'m|'ll|'d): first alternative that matches, not the longest.
        if c == '\'' {
            let lower = |k: usize| chars.get(k).map(|c| fold_case(c.1));
            match lower(i + 1) {
                Some('s' | 't' | 'm' | 'd') => return i + 2,
                Some('r' | 'v') if lower(i + 2) == Some('e') => return i + 3,
                Some('l') if lower(i + 2) == Some('l') => return i + 3,
                _ => {}
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if bits & LETTER != 0 {
            return letters_from(i);
        }
        if !is_newline(i) && bits & NUMBER == 0 && is(i + 1, LETTER) {
            return letters_from(i + 1);
        }
        // \p{N}{1,max_digits}
        if bits & NUMBER != 0 {
            let mut k = i + 1;
            while k - i < self.max_digits && is(k, NUMBER) {
                k += 1;
            }
            return k;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let p = if c == ' ' && is_other(i + 1) {
            i + 1
        } else {
            i
        };
        if is_other(p) {
            let mut k = p;
            while is_other(k) {
                k += 1;
            }
            while is_newline(k) {
                k += 1;
            }
            return k;
        }
        // Only whitespace is left here. The maximal whitespace run [i, j):
        let mut j = i;
        while is(j, SPACE) {
            j += 1;
        }
        if j == i {
            // Unreachable for valid class tables; never loop forever.
            return i + 1;
        }
        // \s*[\r\n]+: backtracks to the run's last newline.
        if let Some(last_newline) = (i..j).rev().find(|k| is_newline(*k)) {
            return last_newline + 1;
        }
        // \s+(?!\S): the whole run at the end of text, else all but its last character.
        if j == n || j - 1 > i {
            return if j == n { j } else { j - 1 };
        }
        // \s+
        j
    }
}

/// Simple case folding restricted to the letters of the contractions.
fn fold_case(c: char) -> char {
    match c {
        'S' | '\u{17F}' => 's', // LATIN SMALL LETTER LONG S folds to s
        'T' => 't',
        'R' => 'r',
        'E' => 'e',
        'V' => 'v',
        'M' => 'm',
        'L' => 'l',
        'D' => 'd',
        other => other,
    }
}

/// `Split(pattern, Isolated)` followed by `ByteLevel(use_regex = false)`, with the split done
/// by [`Gpt4Split`].
#[derive(Debug, Clone)]
pub struct FastPreTokenizer {
    split: Gpt4Split,
    byte_level: ByteLevel,
}

impl FastPreTokenizer {
    /// Recognizes a `pre_tokenizer` entry of tokenizer.json this module can replace.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let seq = value.get("pretokenizers")?.as_array()?;
        if value.get("type")?.as_str()? != "Sequence" || seq.len() != 2 {
            return None;
        }
        let (split, bl) = (&seq[0], &seq[1]);
        let ok = split.get("type")?.as_str()? == "Split"
            && split.get("behavior")?.as_str()? == "Isolated"
            && !split.get("invert")?.as_bool()?
            && bl.get("type")?.as_str()? == "ByteLevel"
            && !bl.get("use_regex")?.as_bool()?;
        if !ok {
            return None;
        }
        let scanner = Gpt4Split::from_pattern(split.get("pattern")?.get("Regex")?.as_str()?)?;
        // Build the class tables at load time, not on the first request.
        class_tables();
        let flag = |k: &str| {
            bl.get(k)
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
        };
        Some(Self {
            split: scanner,
            byte_level: ByteLevel::new(flag("add_prefix_space"), flag("trim_offsets"), false),
        })
    }
}

impl PreTokenizer for FastPreTokenizer {
    fn pre_tokenize(&self, pretokenized: &mut PreTokenizedString) -> tokenizers::Result<()> {
        pretokenized.split(|_, normalized: NormalizedString| {
            let pieces: Vec<NormalizedString> = self
                .split
                .split(normalized.get())
                .into_iter()
                .filter_map(|r| normalized.slice(tokenizers::normalizer::Range::Normalized(r)))
                .collect();
            Ok(pieces)
        })?;
        self.byte_level.pre_tokenize(pretokenized)
    }
}

impl<'de> Deserialize<'de> for FastPreTokenizer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Self::from_json(&value).ok_or_else(|| {
            serde::de::Error::custom(
                "pre_tokenizer has no exact fast path (not the Qwen/Llama 3 split)",
            )
        })
    }
}

/// A tokenizer whose pre-tokenization is [`FastPreTokenizer`]; everything else (model,
/// normalizer, added tokens, post-processor) loads from tokenizer.json as usual.
pub type FastTokenizer = TokenizerImpl<
    ModelWrapper,
    NormalizerWrapper,
    FastPreTokenizer,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// Load `tokenizer_json` with the fast pre-tokenizer, or `None` when it has no fast path.
pub fn fast_tokenizer(tokenizer_json: &[u8]) -> Option<FastTokenizer> {
    serde_json::from_slice(tokenizer_json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::{OffsetReferential, OffsetType, SplitDelimiterBehavior, Tokenizer};

    fn tokenizer_dir(name: &str) -> std::path::PathBuf {
        kvroute_testdata::tokenizer_dir(name)
    }

    /// What `tokenizers` itself splits, as byte ranges.
    fn reference_split(pattern: &str, text: &str) -> Vec<Range<usize>> {
        let split = Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .expect("pattern compiles");
        let mut pts = PreTokenizedString::from(text);
        split.pre_tokenize(&mut pts).expect("split");
        pts.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(_, (s, e), _)| s..e)
            .collect()
    }

    /// Characters chosen to hit every alternative and boundary of the pattern.
    const POOL: &[char] = &[
        'a',
        'Z',
        's',
        'S',
        't',
        'r',
        'e',
        'E',
        'v',
        'm',
        'l',
        'L',
        'd',
        'D',
        'ſ',
        'é',
        'ß',
        'Ω',
        'ж',
        '中',
        '文',
        'の',
        'ア',
        '한',
        'ع',
        '\u{0301}',
        '\u{0663}',
        '0',
        '7',
        '²',
        '½',
        'Ⅻ',
        '\'',
        '\u{2019}',
        '"',
        '!',
        '?',
        '.',
        ',',
        '-',
        '_',
        '(',
        '{',
        '$',
        '€',
        '+',
        '=',
        '@',
        '#',
        '%',
        '😀',
        '🙂',
        '\u{1F3FD}',
        '𝔘',
        '𐐷',
        ' ',
        ' ',
        ' ',
        '\t',
        '\n',
        '\n',
        '\r',
        '\u{0B}',
        '\u{0C}',
        '\u{85}',
        '\u{A0}',
        '\u{2003}',
        '\u{3000}',
        '\u{200B}',
        '\u{FEFF}',
        '<',
        '>',
        '|',
        '/',
        '\\',
        '*',
        '`',
        '~',
        '^',
        '&',
    ];

    fn random_text(seed: u64, len: usize) -> String {
        // xorshift: deterministic, no dependency.
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(17) {
                    // Any Unicode scalar, to cover classes the pool misses.
                    char::from_u32((x >> 20) as u32 % 0x3_0000).unwrap_or('x')
                } else {
                    POOL[(x >> 8) as usize % POOL.len()]
                }
            })
            .collect()
    }

    fn corpus(random: u64) -> Vec<String> {
        let mut texts: Vec<String> = vec![
            String::new(),
            "Hello world".into(),
            "I'm here, you're there; it's 2024-11-25 and they'll say 'sam'll' DON'T".into(),
            "  leading and trailing spaces   ".into(),
            "line one\nline two\r\n\r\n  indented\n\n\n   \n".into(),
            "tabs\tand\u{A0}no-break\u{3000}ideographic space".into(),
            "numbers 1234567 3.14159 ½ ²³ Ⅻ ٣٤٥".into(),
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n".into(),
            "emoji 😀🙂👍🏽 and math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and CJK 北京欢迎你 東京 データ".into(),
            "code: fn main() { println!(\"{}\", x?); } // a->b => c != d".into(),
        ];
        for seed in 0..random {
            texts.push(random_text(seed, 1 + (seed as usize * 7) % 300));
        }
        texts
    }

    #[test]
    fn splits_exactly_as_the_regex_on_adversarial_text() {
        for (pattern, name) in [(QWEN_PATTERN, "qwen"), (LLAMA3_PATTERN, "llama3")] {
            let fast = Gpt4Split::from_pattern(pattern).expect("known pattern");
            for text in corpus(150) {
                assert_eq!(
                    fast.split(&text),
                    reference_split(pattern, &text),
                    "{name}: {text:?}"
                );
            }
        }
    }

    #[test]
    fn the_patterns_are_those_of_the_real_tokenizer_files() {
        for (dir, pattern) in [("qwen3", QWEN_PATTERN), ("llama3", LLAMA3_PATTERN)] {
            let json: serde_json::Value = serde_json::from_slice(
                &std::fs::read(tokenizer_dir(dir).join("tokenizer.json")).expect("tokenizer.json"),
            )
            .expect("json");
            let pre = &json["pre_tokenizer"];
            assert_eq!(
                pre["pretokenizers"][0]["pattern"]["Regex"].as_str(),
                Some(pattern),
                "{dir}"
            );
            assert!(FastPreTokenizer::from_json(pre).is_some(), "{dir}");
        }
        let ds: serde_json::Value = serde_json::from_slice(
            &std::fs::read(tokenizer_dir("deepseek_v3").join("tokenizer.json"))
                .expect("tokenizer.json"),
        )
        .expect("json");
        assert!(
            FastPreTokenizer::from_json(&ds["pre_tokenizer"]).is_none(),
            "no fast path claimed for DeepSeek V3"
        );
    }

    #[test]
    fn token_ids_equal_the_regular_tokenizer_on_real_files() {
        for dir in ["qwen3", "llama3"] {
            let bytes =
                std::fs::read(tokenizer_dir(dir).join("tokenizer.json")).expect("tokenizer.json");
            let regular = Tokenizer::from_bytes(&bytes).expect("tokenizer");
            let fast = fast_tokenizer(&bytes).expect("fast path");
            for text in corpus(30) {
                for special in [false, true] {
                    let a = regular.encode(text.as_str(), special).expect("encode");
                    let b = fast.encode(text.as_str(), special).expect("encode");
                    assert_eq!(
                        a.get_ids(),
                        b.get_ids(),
                        "{dir} special={special}: {text:?}"
                    );
                }
            }
        }
    }
}
