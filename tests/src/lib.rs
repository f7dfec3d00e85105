//! End-to-end test support. SKELETON.
