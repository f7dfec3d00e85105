//! Byte-bounded LRU of token ids per prompt segment (split at special/added tokens).
//! SKELETON: the owner fills it in.
