//! Writes include/kcore.h (or the path given as the first argument) from the
//! crate's source with the committed cbindgen.toml.
//!
//! `cargo run -p kcore-ffi --example gen-header -- include/kcore.h`

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir.join("../../include/kcore.h"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))?;
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/lib.rs"))
        .generate()?;
    bindings.write_to_file(&out);
    Ok(())
}
