//! facegate: a face-recognition door terminal daemon. See ARCHITECTURE.md for the code map.

pub mod api;
pub mod app;
pub mod camera;
pub mod cli;
pub mod config;
pub mod door;
pub mod notify;
pub mod pipeline;
pub mod sessions;
pub mod store;
pub mod tools;
