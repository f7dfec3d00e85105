//! The Envoy filter. SKELETON: owner fills in.
