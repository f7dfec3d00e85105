//! Chat template rendering, byte-identical to transformers' `apply_chat_template`.
//! SKELETON: the owner fills it in.
