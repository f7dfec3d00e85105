//! Reading an OpenAI chat-completions stream (server-sent events) incrementally: has the
//! first non-empty content arrived (the TTFT instant; vLLM's first chunk carries only the
//! role), and the final usage chunk that `stream_options.include_usage` adds. Only the events
//! that can matter are parsed as JSON; a thousand token chunks per request stay cheap.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
}

#[derive(Debug, Default)]
pub struct StreamReader {
    pending: Vec<u8>,
    first_content: bool,
    usage: Option<Usage>,
    done: bool,
}

impl StreamReader {
    pub fn first_content_seen(&self) -> bool {
        self.first_content
    }
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }
    pub fn done(&self) -> bool {
        self.done
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        let mut consumed = 0;
        while let Some(end) = find(&self.pending[consumed..], b"\n\n") {
            let event = self.pending[consumed..consumed + end].to_vec();
            consumed += end + 2;
            self.event(&event);
        }
        self.pending.drain(..consumed);
    }

    fn event(&mut self, event: &[u8]) {
        for line in event.split(|&b| b == b'\n') {
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.trim_ascii();
            if data == b"[DONE]" {
                self.done = true;
                continue;
            }
            let has_usage =
                find(data, b"\"usage\":{").is_some() || find(data, b"\"usage\": {").is_some();
            if self.first_content && !has_usage {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
                continue;
            };
            if !self.first_content {
                let content = v["choices"][0]["delta"]["content"]
                    .as_str()
                    .or_else(|| v["choices"][0]["text"].as_str());
                if content.is_some_and(|c| !c.is_empty()) {
                    self.first_content = true;
                }
            }
            let u = &v["usage"];
            if u.is_object() {
                self.usage = Some(Usage {
                    prompt_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
                    completion_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
                    cached_tokens: u["prompt_tokens_details"]["cached_tokens"]
                        .as_u64()
                        .unwrap_or(0),
                });
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_content_and_usage_across_split_chunks() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7210,\"completion_tokens\":3,",
            "\"prompt_tokens_details\":{\"cached_tokens\":7168}}}\n\n",
            "data: [DONE]\n\n"
        );
        let mut r = StreamReader::default();
        let bytes = stream.as_bytes();
        let usage_at = stream.find("data: {\"choices\":[]").unwrap();
        r.feed(&bytes[..40]);
        assert!(!r.first_content_seen());
        r.feed(&bytes[40..usage_at + 30]);
        assert!(r.first_content_seen());
        assert_eq!(r.usage(), None);
        r.feed(&bytes[usage_at + 30..]);
        assert!(r.done());
        assert_eq!(
            r.usage(),
            Some(Usage {
                prompt_tokens: 7210,
                completion_tokens: 3,
                cached_tokens: 7168
            })
        );
    }
}
