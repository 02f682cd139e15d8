//! Markdown tables and PNG plots for docs/performance-load.md.

use anyhow::Result;
use std::path::Path;

/// Writes the generated blocks of `markdown` and the plots into `img_dir`.
pub fn write(
    _load: &Path,
    _stacks: Option<&Path>,
    _markdown: &Path,
    _img_dir: &Path,
) -> Result<()> {
    anyhow::bail!("not yet")
}
