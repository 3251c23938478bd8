//! Writes skiff's deterministic fixture images into an OCI layout.
//!
//! `skiff-fixtures DIR TAG KIND [COMPRESSION]`, KIND one of `rich`, `scratch`, `many`,
//! `big-file`, `large`,
//! `large-v2`, `demo-v1`, `demo-v2`; COMPRESSION one of `gzip` (default), `zstd`, `zstd-chunked`, `none`.

use anyhow::{Result, bail};
use skiff_integration::fixtures::{self, Compression};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, tag, kind, rest @ ..] = args.as_slice() else {
        bail!("usage: skiff-fixtures DIR TAG KIND [gzip|zstd|zstd-chunked|none]");
    };
    let compression = match rest.first().map(String::as_str) {
        None | Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some("none") => Compression::None,
        Some("zstd-chunked") => Compression::ZstdChunked,
        Some(other) => bail!("unknown compression {other}"),
    };
    let layers = fixtures::by_name(kind)?;
    let written = fixtures::write_oci_layout(dir.as_ref(), tag, &layers, compression)?;
    println!(
        "{} {} ({} bytes uncompressed)",
        tag, written.manifest_digest, written.tar_bytes
    );
    Ok(())
}
