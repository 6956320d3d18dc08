//! The terminal's encrypted store. So far: sealing (`crypto`) and key management (`keys`);
//! records (sled) and the vector index (usearch) build on them.
//!
//! Invariant: nothing reaches disk unencrypted; store/ depends on no other module of the crate.

pub mod crypto;
pub mod keys;
