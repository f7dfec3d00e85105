//! What one wasm VM (one Envoy worker) shares between its root context and its request
//! contexts: the validated configuration, the hasher, metric ids and the loaded
//! tokenizers. Single-threaded by construction (a VM runs on one thread), hence `Rc`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use kvroute_blockhash::{BlockHasher, PromptEncoder};

use crate::config::PluginConfig;
use crate::metrics::FilterMetrics;

pub struct VmState {
    pub config: PluginConfig,
    pub hasher: BlockHasher,
    pub metrics: FilterMetrics,
    /// Base model name -> its encoder, once fetched and loaded.
    pub encoders: RefCell<HashMap<String, Rc<PromptEncoder>>>,
    /// The root context's id: completion reports are sent on its behalf so that they
    /// outlive the request context that triggers them.
    pub root_context_id: u32,
    /// This VM has created a request context: it serves traffic, so it needs tokenizers.
    pub demand: Cell<bool>,
    /// Why the configuration was refused, when it was: the VM is inert (routes nothing,
    /// counts `config_invalid`) instead of failing Envoy's plugin load.
    pub unusable: Option<String>,
}

impl VmState {
    pub fn new(config: PluginConfig, metrics: FilterMetrics, root_context_id: u32) -> Self {
        let hasher = BlockHasher::new(config.hash.clone());
        Self {
            config,
            hasher,
            metrics,
            encoders: RefCell::new(HashMap::new()),
            root_context_id,
            demand: Cell::new(false),
            unusable: None,
        }
    }

    /// A VM whose configuration was refused for `reason`: `defaults` (the configuration
    /// `{}`) decides which requests it would have routed, and those are counted.
    pub fn inert(
        reason: String,
        defaults: PluginConfig,
        metrics: FilterMetrics,
        root_context_id: u32,
    ) -> Self {
        let mut vm = Self::new(defaults, metrics, root_context_id);
        vm.unusable = Some(reason);
        vm
    }

    pub fn encoder(&self, model: &str) -> Option<Rc<PromptEncoder>> {
        self.encoders.borrow().get(model).cloned()
    }
}
