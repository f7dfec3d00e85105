//! Chat template rendering, byte-identical to transformers' `apply_chat_template`.
//!
//! vLLM renders chat requests with the model's Jinja template through transformers, so the
//! prompt text (and therefore every token and block hash) depends on Jinja2's exact
//! whitespace handling and on the helpers transformers installs. minijinja reproduces it with
//! `trim_blocks` + `lstrip_blocks`, Python-compatible string/dict methods (minijinja-contrib
//! `pycompat`), and the helpers below: `tojson` as Python's `json.dumps` (", " and ": "
//! separators, non-ASCII kept), `raise_exception`, `strftime_now`.

use std::sync::Arc;

use minijinja::value::{Kwargs, Value as JinjaValue};
use minijinja::{Environment, ErrorKind};
use serde_json::{Map, Value};

use crate::request::ChatPrompt;
use crate::{Error, Result};

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template plus the special tokens transformers passes to it.
pub struct ChatTemplate {
    env: Environment<'static>,
    special_tokens: Map<String, Value>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compile `source`; `tokenizer_config` supplies bos/eos/unk/pad tokens.
    pub fn new(source: &str, tokenizer_config: &Value) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| Error::Template(e.to_string()))?;
        let mut special_tokens = Map::new();
        for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            if let Some(token) = tokenizer_config.get(key).and_then(token_content) {
                special_tokens.insert(key.to_owned(), Value::String(token));
            }
        }
        Ok(Self {
            env,
            special_tokens,
        })
    }

    /// The template text of a tokenizer_config.json (`chat_template` as a string, or the
    /// `default` entry of a list of named templates).
    pub fn source_from_config(tokenizer_config: &Value) -> Option<String> {
        match tokenizer_config.get("chat_template")? {
            Value::String(s) => Some(s.clone()),
            Value::Array(named) => named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        }
    }

    /// Render the conversation as transformers would for vLLM.
    pub fn render(&self, chat: &ChatPrompt) -> Result<String> {
        let mut ctx = self.special_tokens.clone();
        // Request kwargs come first so the fixed names below cannot be overridden by them,
        // as in transformers (explicit arguments win over **kwargs).
        for (k, v) in &chat.template_kwargs {
            ctx.insert(k.clone(), v.clone());
        }
        ctx.insert("messages".into(), Value::Array(chat.messages.clone()));
        ctx.insert(
            "tools".into(),
            chat.tools.clone().map(Value::Array).unwrap_or(Value::Null),
        );
        ctx.insert("documents".into(), Value::Null);
        ctx.insert(
            "add_generation_prompt".into(),
            Value::Bool(chat.add_generation_prompt),
        );
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::Template(e.to_string()))?;
        let rendered = tmpl
            .render(JinjaValue::from_serialize(&ctx))
            .map_err(|e| Error::Template(e.to_string()))?;
        if chat.continue_final_message {
            continue_final_message(rendered, chat)
        } else {
            Ok(rendered)
        }
    }
}

/// transformers cuts the rendering right after the final message's (stripped) content so
/// the model continues it instead of starting a new turn.
fn continue_final_message(rendered: String, chat: &ChatPrompt) -> Result<String> {
    let last = chat
        .messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let needle = last.trim();
    match rendered.rfind(needle) {
        Some(at) if !needle.is_empty() => Ok(rendered[..at + needle.len()].to_owned()),
        _ => Err(Error::Template(
            "continue_final_message: the final message is not in the rendered prompt".into(),
        )),
    }
}

fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn raise_exception(message: String) -> std::result::Result<JinjaValue, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// transformers' `strftime_now`: the current local time formatted with a strftime format.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&format, secs)
}

/// The strftime subset chat templates use, in UTC.
fn strftime(format: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{:02}", secs_of_day / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs_of_day / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs_of_day % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`.
fn tojson(value: JinjaValue, kwargs: Kwargs) -> std::result::Result<JinjaValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<JinjaValue> = kwargs.get("separators")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let (item_sep, key_sep) = match separators {
        Some(seps) => {
            let a = seps.get_item(&JinjaValue::from(0))?.to_string();
            let b = seps.get_item(&JinjaValue::from(1))?.to_string();
            (a, b)
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let style = PyJsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    style.write(&json, 0, &mut out);
    Ok(JinjaValue::from_safe_string(out))
}

struct PyJsonStyle {
    indent: Option<usize>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl PyJsonStyle {
    fn newline(&self, depth: usize, out: &mut String) {
        if let Some(n) = self.indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    }

    fn write(&self, v: &Value, depth: usize, out: &mut String) {
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(&py_number(n)),
            Value::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
            Value::Array(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    self.write(item, depth + 1, out);
                }
                self.newline(depth, out);
                out.push(']');
            }
            Value::Object(map) => {
                if map.is_empty() {
                    out.push_str("{}");
                    return;
                }
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    out.push_str(&serde_json::to_string(k).unwrap_or_default());
                    out.push_str(&self.key_sep);
                    self.write(item, depth + 1, out);
                }
                self.newline(depth, out);
                out.push('}');
            }
        }
    }
}

/// Python's float repr differs from Rust's for exponents (`1e+16` vs `1e16`).
fn py_number(n: &serde_json::Number) -> String {
    if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
        if f.is_finite() && f == f.trunc() && f.abs() < 1e16 {
            return format!("{f:.1}");
        }
        let s = format!("{f:e}");
        // Rust: 1.5e-7 / 1e16; Python: 1.5e-07 / 1e+16.
        if let Some((mant, exp)) = s.split_once('e') {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            if f.abs() >= 1e16 || f.abs() < 1e-4 {
                return format!("{mant}e{sign}{digits:0>2}");
            }
        }
        return f.to_string();
    }
    n.to_string()
}

/// Shared so a template compiled once serves every request of a model.
pub type SharedTemplate = Arc<ChatTemplate>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tojson_matches_python_json_dumps() {
        let env_src = r#"{{ x | tojson }}|{{ x | tojson(indent=2) }}"#;
        let t = ChatTemplate::new(env_src, &Value::Null).unwrap();
        let chat = ChatPrompt {
            messages: vec![],
            tools: None,
            add_generation_prompt: false,
            continue_final_message: false,
            template_kwargs: serde_json::from_str(r#"{"x":{"b":[1,2.5,"é\n"],"a":null}}"#).unwrap(),
            chat_template: None,
        };
        let out = t.render(&chat).unwrap();
        assert_eq!(
            out,
            "{\"b\": [1, 2.5, \"é\\n\"], \"a\": null}|{\n  \"b\": [\n    1,\n    2.5,\n    \"é\\n\"\n  ],\n  \"a\": null\n}"
        );
    }

    #[test]
    fn strftime_formats_a_known_date() {
        // 2024-07-26 12:34:56 UTC, a Friday.
        assert_eq!(strftime("%d %b %Y", 1_721_997_296), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %Y-%m-%d %H:%M:%S", 1_721_997_296),
            "Friday July 2024-07-26 12:34:56"
        );
    }

    #[test]
    fn raise_exception_is_a_template_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system') }}", &Value::Null).unwrap();
        let chat = ChatPrompt {
            messages: vec![],
            tools: None,
            add_generation_prompt: true,
            continue_final_message: false,
            template_kwargs: Map::new(),
            chat_template: None,
        };
        assert!(matches!(t.render(&chat), Err(Error::Template(m)) if m.contains("no system")));
    }
}
