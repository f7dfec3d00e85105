//! The indexer daemon library. SKELETON: owner fills in.
