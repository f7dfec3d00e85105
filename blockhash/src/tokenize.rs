//! Tokenization as vLLM does it, with the segment cache on the hot path.
//! SKELETON: the owner fills it in.
