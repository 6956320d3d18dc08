//! Command-line tools over the pipeline: detect, embed, eval, bench.
//!
//! Invariant: tools print results to stdout (a table, or one JSON document with `--json`) and
//! logs to stderr; they never print embeddings except where asked to (`embed --json`).

pub mod attack;
pub mod bench;
pub mod bench_door;
pub mod bench_index;
pub mod bench_models;
pub mod bench_store;
pub mod bench_stream;
pub mod cameras;
pub mod detect;
pub mod eval;
pub mod liveness;
pub mod metrics;
pub mod pad_eval;
pub mod store;

use std::path::Path;

use anyhow::Context;

pub(crate) fn read_image(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))
}

pub(crate) fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Threads one model run uses now (tract's pool, set from `pipeline.threads` at start).
pub fn model_threads() -> usize {
    use tract_linalg::multithread::{Executor, current_tract_executor};
    match current_tract_executor() {
        Executor::MultiThread(pool) => pool.current_num_threads(),
        _ => 1,
    }
}
