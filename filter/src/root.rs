//! The per-VM root context: reads the plugin configuration, defines the metrics, fetches
//! each model's tokenizer files (when the plugin starts, or at the VM's first request with
//! `preload_tokenizers: false`; retrying every second until they load) and creates one
//! [`crate::stream::KvRouteStream`] per request. Until a model's tokenizer is loaded its
//! requests pass unrouted, so a slow or absent indexer never delays Envoy's start. A
//! configuration it cannot use leaves the VM inert (routing nothing, counted), never
//! failing the plugin's load.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use kvroute_blockhash::PromptEncoder;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use crate::config::{FetchTarget, PluginConfig};
use crate::host;
use crate::metrics::FilterMetrics;
use crate::stream::KvRouteStream;
use crate::tokenizer_fetch::{ModelFetch, TokenizerFile};
use crate::vm_state::VmState;

/// How often a root context checks whether its tokenizers are wanted or must be retried.
const TICK: Duration = Duration::from_millis(200);
/// Ticks to wait after a failed fetch before trying again (about a second).
const RETRY_TICKS: u32 = 5;

pub struct KvRouteRoot {
    context_id: u32,
    vm: Option<Rc<VmState>>,
    /// Models still to load, with where to fetch them from.
    to_load: Vec<(String, FetchTarget)>,
    /// Fetches in flight, by model.
    fetching: HashMap<String, ModelFetch>,
    /// Call token -> (model, file).
    calls: HashMap<u32, (String, TokenizerFile)>,
    /// Ticks to skip before the next attempt (back-off after a failure).
    backoff: u32,
}

impl KvRouteRoot {
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            vm: None,
            to_load: Vec::new(),
            fetching: HashMap::new(),
            calls: HashMap::new(),
            backoff: 0,
        }
    }

    fn start_fetches(&mut self) {
        let Some(vm) = self.vm.clone() else { return };
        let timeout = vm.config.tokenizer_fetch_timeout;
        for (model, target) in self.to_load.clone() {
            if self.fetching.contains_key(&model) || vm.encoders.borrow().contains_key(&model) {
                continue;
            }
            let mut fetch = ModelFetch::default();
            for file in TokenizerFile::ALL {
                let path = format!("{}/{}", target.path_prefix, file.file_name());
                match host::get(
                    &target.cluster,
                    &target.authority,
                    &path,
                    target.authorization.as_deref(),
                    timeout,
                ) {
                    Ok(token) => {
                        self.calls.insert(token, (model.clone(), file));
                    }
                    Err(status) => {
                        host::log(
                            LogLevel::Warn,
                            &format!(
                                "kvroute: cannot fetch {path} from cluster {}: {status:?}",
                                target.cluster
                            ),
                        );
                        fetch.dispatch_failed(file);
                    }
                }
            }
            self.fetching.insert(model.clone(), fetch);
            self.finish_if_complete(&model);
        }
    }

    fn finish_if_complete(&mut self, model: &str) {
        let Some(vm) = self.vm.clone() else { return };
        let Some(outcome) = self.fetching.get_mut(model).and_then(ModelFetch::outcome) else {
            return;
        };
        self.fetching.remove(model);
        match outcome {
            Ok(files) => {
                let started = host::now();
                match PromptEncoder::from_files(
                    &files.tokenizer_json,
                    &files.tokenizer_config_json,
                    files.chat_template.as_deref(),
                ) {
                    Ok(encoder) => {
                        vm.encoders
                            .borrow_mut()
                            .insert(model.to_string(), Rc::new(encoder));
                        self.to_load.retain(|(m, _)| m != model);
                        vm.metrics.tokenizer_loaded();
                        host::log(
                            LogLevel::Info,
                            &format!(
                                "kvroute: tokenizer of {model} loaded in {} ms",
                                host::micros_since(started) / 1000
                            ),
                        );
                    }
                    Err(e) => {
                        vm.metrics.tokenizer_fetch_failed();
                        self.backoff = RETRY_TICKS;
                        host::log(
                            LogLevel::Error,
                            &format!("kvroute: tokenizer of {model} unusable: {e}"),
                        );
                    }
                }
            }
            Err(e) => {
                vm.metrics.tokenizer_fetch_failed();
                self.backoff = RETRY_TICKS;
                host::log(
                    LogLevel::Warn,
                    &format!("kvroute: tokenizer of {model} not fetched ({e}); retrying"),
                );
            }
        }
        if self.to_load.is_empty() {
            host::set_tick_period(Duration::ZERO);
        }
    }
}

impl Context for KvRouteRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some((model, file)) = self.calls.remove(&token_id) else {
            return;
        };
        let status = host::call_response_status();
        let body = host::buffer(BufferType::HttpCallResponseBody, body_size);
        if let Some(fetch) = self.fetching.get_mut(&model) {
            fetch.record(file, status, body);
        }
        self.finish_if_complete(&model);
    }
}

impl RootContext for KvRouteRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = host::buffer(BufferType::PluginConfiguration, plugin_configuration_size)
            .unwrap_or_default();
        let config = match PluginConfig::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                // Refusing the configuration would make Envoy fail every request of the
                // listener (closed), whatever the filter's fail-open setting: load inert.
                host::log(
                    LogLevel::Critical,
                    &format!("kvroute: {e}; the filter routes nothing until it is fixed"),
                );
                self.to_load.clear();
                self.fetching.clear();
                self.calls.clear();
                self.vm = PluginConfig::parse(b"{}").ok().map(|defaults| {
                    Rc::new(VmState::inert(
                        e.to_string(),
                        defaults,
                        FilterMetrics::define_all(),
                        self.context_id,
                    ))
                });
                return true;
            }
        };
        self.to_load = config
            .models_to_load()
            .into_iter()
            .map(|(m, t)| (m.to_string(), t))
            .collect();
        let preload = config.preload_tokenizers;
        let metrics = FilterMetrics::define_all();
        self.vm = Some(Rc::new(VmState::new(config, metrics, self.context_id)));
        self.fetching.clear();
        self.calls.clear();
        if !self.to_load.is_empty() {
            if preload {
                self.start_fetches();
            }
            host::set_tick_period(TICK);
        }
        true
    }

    fn on_tick(&mut self) {
        // With `preload_tokenizers: false` a VM loads its tokenizers once it has seen a
        // request. The VM on Envoy's main thread never does, which saves a whole tokenizer
        // (~100 MiB) per Envoy, at the price of each worker's first request going unrouted.
        let wanted = self
            .vm
            .as_ref()
            .is_some_and(|vm| vm.config.preload_tokenizers || vm.demand.get());
        if !wanted {
            return;
        }
        if self.backoff > 0 {
            self.backoff -= 1;
            return;
        }
        self.start_fetches();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        if let Some(vm) = &self.vm {
            vm.demand.set(true);
        }
        Some(Box::new(KvRouteStream::new(context_id, self.vm.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
