//! Which requests the filter touches, decided from the request headers alone so that
//! everything else (GETs, other paths, non-JSON bodies, bodiless POSTs) continues at once
//! without being buffered or delayed.

use kvroute_blockhash::Endpoint;

use crate::config::PluginConfig;

/// The request-header facts the decision needs.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub content_length: Option<&'a str>,
    /// The headers ended the stream: there is no body.
    pub end_of_stream: bool,
}

/// What to do with a request after its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Buffer the body and route it as this API.
    Touch(Endpoint),
    /// Declared larger than `max_body_bytes`: pass on, counted as body_too_large.
    TooLarge,
    /// Not ours: continue untouched and uncounted.
    Pass,
}

pub fn gate(config: &PluginConfig, head: &RequestHead<'_>) -> Gate {
    if config.mode == crate::config::Mode::Off || head.end_of_stream {
        return Gate::Pass;
    }
    if !head.method.is_some_and(|m| m.eq_ignore_ascii_case("POST")) {
        return Gate::Pass;
    }
    let Some(kind) = head.path.and_then(|p| config.path_kind(p)) else {
        return Gate::Pass;
    };
    // A missing content type is tolerated (curl -d sends form-urlencoded, many SDKs send
    // JSON); an explicit non-JSON one is not ours.
    if let Some(ct) = head.content_type {
        let ct = ct.to_ascii_lowercase();
        if !ct.contains("json") && !ct.starts_with("application/x-www-form-urlencoded") {
            return Gate::Pass;
        }
    }
    if let Some(len) = head
        .content_length
        .and_then(|l| l.trim().parse::<usize>().ok())
    {
        if len > config.max_body_bytes {
            return Gate::TooLarge;
        }
    }
    Gate::Touch(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(method: &'a str, path: &'a str, ct: Option<&'a str>) -> RequestHead<'a> {
        RequestHead {
            method: Some(method),
            path: Some(path),
            content_type: ct,
            ..Default::default()
        }
    }

    #[test]
    fn only_json_posts_to_configured_paths_are_touched() {
        let c = PluginConfig::parse(br#"{"max_body_bytes": 100}"#).expect("config");
        let json = Some("application/json");
        assert_eq!(
            gate(&c, &head("POST", "/v1/chat/completions", json)),
            Gate::Touch(Endpoint::ChatCompletions)
        );
        assert_eq!(
            gate(&c, &head("post", "/v1/completions?a=b", None)),
            Gate::Touch(Endpoint::Completions)
        );
        assert_eq!(
            gate(&c, &head("GET", "/v1/chat/completions", json)),
            Gate::Pass
        );
        assert_eq!(gate(&c, &head("POST", "/v1/embeddings", json)), Gate::Pass);
        assert_eq!(
            gate(
                &c,
                &head("POST", "/v1/chat/completions", Some("text/plain"))
            ),
            Gate::Pass
        );
        let mut h = head("POST", "/v1/chat/completions", json);
        h.end_of_stream = true;
        assert_eq!(gate(&c, &h), Gate::Pass);
        let mut h = head("POST", "/v1/chat/completions", json);
        h.content_length = Some("101");
        assert_eq!(gate(&c, &h), Gate::TooLarge);
        let off = PluginConfig::parse(br#"{"mode":"off"}"#).expect("config");
        assert_eq!(
            gate(&off, &head("POST", "/v1/chat/completions", json)),
            Gate::Pass
        );
    }
}
