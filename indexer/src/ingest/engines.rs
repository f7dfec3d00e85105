//! Who the engines are, as configured: `--engine` specs, `--engine-dns` names, the topic
//! layout that names a publisher, and the allow-list of engines whose events are believed.
//! Pure parsing and bookkeeping; a spec that does not parse is an error at start, never a
//! silent fallback to a default port.

use std::sync::Arc;

/// A configuration value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("--engine {spec:?}: {why} (expected HOST[:ZMQ_PORT][=HTTP_PORT])")]
    Engine { spec: String, why: &'static str },
    #[error("--engine-dns {spec:?}: {why} (expected NAME[:ZMQ_PORT])")]
    Dns { spec: String, why: &'static str },
    #[error("--topic-pattern {0:?}: it must contain {{host}}")]
    TopicPattern(String),
}

/// One engine as configured: where its events come from, where its requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSpec {
    pub host: String,
    pub zmq_port: u16,
    /// The engine's OpenAI server, `host:port`: its identity.
    pub endpoint: Arc<str>,
}

impl EngineSpec {
    /// An engine on `host` with these ports.
    pub fn new(host: &str, zmq_port: u16, http_port: u16) -> Self {
        Self {
            host: host.to_owned(),
            zmq_port,
            endpoint: format!("{host}:{http_port}").into(),
        }
    }

    /// `HOST[:ZMQ_PORT][=HTTP_PORT]`, the ports missing taken from the defaults given. A
    /// bare IPv6 address (colons in the host) has no ZeroMQ port.
    pub fn parse(spec: &str, zmq_port: u16, http_port: u16) -> Result<Self, SpecError> {
        let bad = |why| SpecError::Engine {
            spec: spec.to_owned(),
            why,
        };
        let (zmq, http) = match spec.split_once('=') {
            Some((z, h)) => (z, Some(h.parse::<u16>().map_err(|_| bad("bad HTTP port"))?)),
            None => (spec, None),
        };
        let (host, zmq_port) = match zmq.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => {
                (h, p.parse::<u16>().map_err(|_| bad("bad ZeroMQ port"))?)
            }
            _ => (zmq, zmq_port),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self::new(host, zmq_port, http.unwrap_or(http_port)))
    }
}

/// `--engine-dns NAME[:ZMQ_PORT]`: the name to resolve and the engines' ZeroMQ port.
pub fn parse_dns(spec: &str, zmq_port: u16) -> Result<(String, u16), SpecError> {
    let bad = |why| SpecError::Dns {
        spec: spec.to_owned(),
        why,
    };
    let (name, port) = match spec.rsplit_once(':') {
        Some((name, port)) => (
            name,
            port.parse::<u16>().map_err(|_| bad("bad ZeroMQ port"))?,
        ),
        None => (spec, zmq_port),
    };
    if name.is_empty() {
        return Err(bad("no name"));
    }
    Ok((name.to_owned(), port))
}

/// What a topic says about its publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicParts {
    pub host: String,
    /// When the topic names `host:port`.
    pub port: Option<u16>,
    pub model: Option<String>,
}

/// `--topic-pattern`: `{host}` is the engine (IP, optionally `:port`), `{model}` its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern(String);

impl TopicPattern {
    pub fn new(pattern: &str) -> Result<Self, SpecError> {
        if !pattern.contains("{host}") {
            return Err(SpecError::TopicPattern(pattern.to_owned()));
        }
        Ok(Self(pattern.to_owned()))
    }

    /// The parts of `topic`, or None when it does not follow the pattern.
    pub fn parse(&self, topic: &str) -> Option<TopicParts> {
        let pattern = &self.0;
        let h = pattern.find("{host}")?;
        let prefix = &pattern[..h];
        let rest_pat = &pattern[h + "{host}".len()..];
        let rest = topic.strip_prefix(prefix)?;
        let (host, model) = match rest_pat.find("{model}") {
            Some(m) => {
                let sep = &rest_pat[..m];
                let (host, model) = if sep.is_empty() {
                    (rest, "")
                } else {
                    rest.split_once(sep)?
                };
                (host, (!model.is_empty()).then(|| model.to_owned()))
            }
            None => (rest.strip_suffix(rest_pat).unwrap_or(rest), None),
        };
        // `kv@10.0.0.5:5557@model`: the host and its port.
        let (host, port) = match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => match p.parse::<u16>() {
                Ok(p) => (h, Some(p)),
                Err(_) => (host, None),
            },
            _ => (host, None),
        };
        Some(TopicParts {
            host: host.to_owned(),
            port,
            model,
        })
    }
}

/// Engines allowed to publish (static list + discovery).
#[derive(Debug, Default)]
pub struct AllowList(Vec<EngineSpec>);

impl AllowList {
    /// Adds `spec`; false if it was there already.
    pub fn allow(&mut self, spec: EngineSpec) -> bool {
        if self.0.contains(&spec) {
            return false;
        }
        self.0.push(spec);
        true
    }

    /// Removes and returns the engines on `host`.
    pub fn remove_host(&mut self, host: &str) -> Vec<EngineSpec> {
        let (gone, kept) = self.0.drain(..).partition(|s| s.host == host);
        self.0 = kept;
        gone
    }

    pub fn contains_endpoint(&self, endpoint: &str) -> bool {
        self.0.iter().any(|s| &*s.endpoint == endpoint)
    }

    /// The known engine a topic names: by host, and by port when the topic carries one and
    /// several engines share the host.
    pub fn spec_for_topic(&self, host: &str, port: Option<u16>) -> Option<&EngineSpec> {
        let on_host: Vec<&EngineSpec> = self.0.iter().filter(|s| s.host == host).collect();
        let by_port = port.and_then(|p| {
            on_host.iter().find(|s| {
                s.zmq_port == p || s.endpoint.rsplit(':').next() == Some(p.to_string().as_str())
            })
        });
        by_port.or(on_host.first()).copied()
    }

    /// Every allowed engine's host, once.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.0.iter().map(|s| s.host.clone()).collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_specs_parse_or_say_why() {
        let ok = |s: &str| EngineSpec::parse(s, 5557, 8000).expect(s);
        assert_eq!(ok("10.0.0.5"), EngineSpec::new("10.0.0.5", 5557, 8000));
        assert_eq!(ok("10.0.0.5:6000"), EngineSpec::new("10.0.0.5", 6000, 8000));
        assert_eq!(
            ok("127.0.0.1:6001=8001"),
            EngineSpec::new("127.0.0.1", 6001, 8001)
        );
        assert_eq!(ok("::1"), EngineSpec::new("::1", 5557, 8000));
        for bad in ["10.0.0.5:70000", "10.0.0.5:x", "10.0.0.5=80x", "", ":5557"] {
            assert!(
                matches!(
                    EngineSpec::parse(bad, 5557, 8000),
                    Err(SpecError::Engine { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn dns_names_parse_or_say_why() {
        assert_eq!(
            parse_dns("vllm.ns.svc:6000", 5557),
            Ok(("vllm.ns.svc".into(), 6000))
        );
        assert_eq!(parse_dns("vllm", 5557), Ok(("vllm".into(), 5557)));
        assert!(parse_dns("vllm:http", 5557).is_err());
        assert!(parse_dns(":5557", 5557).is_err());
    }

    #[test]
    fn topics_name_host_port_and_model() {
        let p = TopicPattern::new("kv@{host}@{model}").unwrap();
        assert_eq!(
            p.parse("kv@10.0.0.5:5557@Qwen3-32B"),
            Some(TopicParts {
                host: "10.0.0.5".into(),
                port: Some(5557),
                model: Some("Qwen3-32B".into())
            })
        );
        assert_eq!(p.parse("kv@10.0.0.5@").unwrap().model, None);
        assert_eq!(p.parse("other"), None);
        assert!(TopicPattern::new("kv@{model}").is_err());
    }
}
