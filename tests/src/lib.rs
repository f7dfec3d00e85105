//! kvroute's end-to-end tests are the files under `tests/` (each a test binary); the
//! harness they drive (Envoy, `kvroute serve`, engines, stacks) is the `kvroute-harness`
//! crate. Cargo needs a library or binary target in every package: this is it, empty.
