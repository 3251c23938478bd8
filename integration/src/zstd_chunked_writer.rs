//! Writing zstd:chunked layers in the containers/storage ≥ 1.54 layout (the format is described
//! in `skiff_transport::format::zstd_chunked`), for fixtures and tests: skiff itself only reads them.
//!
//! The tar is cut as containers/storage's compressor cuts it: the raw bytes between file
//! contents (padding, headers with their PAX and GNU extensions) accumulate in one frame; each
//! regular file's content is split into chunks, one zstd frame each, at the boundaries of
//! [`chunk_boundaries`] (runs of zeros become `zeros` chunks). The bytes after the last entry go
//! into the final frame. Then come the TOC, the tar-split and the footer as skippable frames.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde::Serialize;
use skiff_storage::tar_header::{MAX_HEADER_BYTES, tar_parser};
use tar_core::HEADER_SIZE;
use tar_core::parse::ParseEvent;

use skiff_storage::content_chunks::chunk_boundaries;
use skiff_transport::format::zstd_chunked::{
    FOOTER_MAGIC, MANIFEST_CHECKSUM, MANIFEST_POSITION, SKIPPABLE_MAGIC, TARSPLIT_POSITION,
    crc64_iso,
};

/// zstd level of containers/storage's compressor.
pub const DEFAULT_LEVEL: i32 = 10;

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct OutEntry {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    link_name: String,
    #[serde(skip_serializing_if = "is_zero")]
    mode: i64,
    #[serde(skip_serializing_if = "is_zero")]
    size: i64,
    #[serde(skip_serializing_if = "is_zero")]
    uid: i64,
    #[serde(skip_serializing_if = "is_zero")]
    gid: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    modtime: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    dev_major: i64,
    #[serde(skip_serializing_if = "is_zero")]
    dev_minor: i64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    xattrs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    offset: i64,
    #[serde(skip_serializing_if = "is_zero")]
    end_offset: i64,
    #[serde(skip_serializing_if = "is_zero")]
    chunk_size: i64,
    #[serde(skip_serializing_if = "is_zero")]
    chunk_offset: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk_type: Option<&'static str>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn sha256_string(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(openssl::sha::sha256(data)))
}

/// Counts what is written through it.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_frame<W: Write>(out: &mut Counting<W>, data: &[u8], level: i32) -> Result<()> {
    let mut encoder = zstd::stream::write::Encoder::new(&mut *out, level)?;
    encoder.include_checksum(true)?;
    encoder.write_all(data)?;
    encoder.finish()?;
    Ok(())
}

fn write_skippable<W: Write>(out: &mut Counting<W>, payload: &[u8]) -> Result<u64> {
    out.write_all(&SKIPPABLE_MAGIC)?;
    out.write_all(
        &u32::try_from(payload.len())
            .context("metadata over 4 GiB")?
            .to_le_bytes(),
    )?;
    let offset = out.written;
    out.write_all(payload)?;
    Ok(offset)
}

/// What [`write_zstd_chunked`] produced.
#[derive(Debug, Clone)]
pub struct WrittenLayer {
    /// The layer descriptor's annotations.
    pub annotations: BTreeMap<String, String>,
    /// Size of the blob.
    pub size: u64,
    /// sha256 of the tar (the DiffID).
    pub diff_id: String,
}

/// Compresses the tar read from `tar` as zstd:chunked into `out`.
pub fn write_zstd_chunked(mut tar: impl Read, out: impl Write, level: i32) -> Result<WrittenLayer> {
    let mut out = Counting {
        inner: out,
        written: 0,
    };
    let mut parser = tar_parser();
    let mut buf: Vec<u8> = Vec::new();
    let mut need = HEADER_SIZE;
    let mut diff = openssl::sha::Sha256::new();
    // Raw tar bytes (headers, padding) go both into the current zstd frame, which only a file's
    // content closes, and into the current tar-split segment, which every entry closes.
    let mut frame = Vec::new();
    let mut pending = Vec::new();
    let mut entries: Vec<OutEntry> = Vec::new();
    let mut split_lines: Vec<String> = Vec::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut eof = false;
    let mut fill = |buf: &mut Vec<u8>,
                    need: usize,
                    eof: &mut bool,
                    diff: &mut openssl::sha::Sha256|
     -> Result<()> {
        while buf.len() < need && !*eof {
            let mut chunk = vec![0u8; (need - buf.len()).max(64 * 1024)];
            let n = tar.read(&mut chunk)?;
            if n == 0 {
                *eof = true;
            }
            diff.update(&chunk[..n]);
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    let segment = |lines: &mut Vec<String>, bytes: &[u8]| {
        if !bytes.is_empty() {
            let position = lines.len();
            lines.push(format!(
                r#"{{"type":2,"payload":"{}","position":{position}}}"#,
                b64.encode(bytes)
            ));
        }
    };
    loop {
        if need > MAX_HEADER_BYTES {
            bail!("a tar header needs {need} bytes");
        }
        fill(&mut buf, need, &mut eof, &mut diff)?;
        if buf.len() < need {
            if buf.is_empty() {
                break;
            }
            bail!("the tar ends inside a header");
        }
        match parser.parse(&buf).map_err(|e| anyhow::anyhow!("{e}"))? {
            ParseEvent::NeedData { min_bytes } => need = min_bytes,
            ParseEvent::GlobalExtensions { consumed, .. } => {
                pending.extend(buf.drain(..consumed));
                need = HEADER_SIZE;
            }
            ParseEvent::SparseEntry { .. } => bail!("sparse tar entries are not supported"),
            ParseEvent::End { consumed } => {
                pending.extend(buf.drain(..consumed));
                break;
            }
            ParseEvent::Entry { consumed, entry } => {
                let name = String::from_utf8_lossy(&entry.path).into_owned();
                let kind = match () {
                    _ if entry.entry_type.is_file() => "reg",
                    _ if entry.entry_type.is_dir() => "dir",
                    _ if entry.entry_type.is_symlink() => "symlink",
                    _ if entry.entry_type.is_hard_link() => "hardlink",
                    _ if entry.entry_type.is_character_special() => "char",
                    _ if entry.entry_type.is_block_special() => "block",
                    _ if entry.entry_type.is_fifo() => "fifo",
                    _ => bail!("tar entry {name:?}: unsupported type"),
                };
                let mut e = OutEntry {
                    kind,
                    name: name.clone(),
                    link_name: entry
                        .link_target
                        .as_deref()
                        .map(|l| String::from_utf8_lossy(l).into_owned())
                        .unwrap_or_default(),
                    mode: (entry.mode & 0o7777) as i64,
                    uid: entry.uid as i64,
                    gid: entry.gid as i64,
                    modtime: (entry.mtime != 0).then(|| {
                        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(entry.mtime);
                        rfc3339(t)
                    }),
                    dev_major: entry.dev_major.unwrap_or(0) as i64,
                    dev_minor: entry.dev_minor.unwrap_or(0) as i64,
                    xattrs: entry
                        .xattrs
                        .iter()
                        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), b64.encode(v)))
                        .collect(),
                    ..Default::default()
                };
                let size = usize::try_from(entry.size).context("tar entry size")?;
                let is_reg = kind == "reg";
                let raw_name = entry.path.to_vec();
                pending.extend(buf.drain(..consumed));
                let padded = size
                    .checked_next_multiple_of(512)
                    .context("tar entry size")?;
                fill(&mut buf, padded, &mut eof, &mut diff)?;
                if buf.len() < padded {
                    bail!("the tar ends inside {name:?}");
                }
                let content: Vec<u8> = buf.drain(..size).collect();
                segment(&mut split_lines, &pending);
                frame.append(&mut pending);
                if is_reg && size > 0 {
                    write_frame(&mut out, &frame, level)?;
                    frame.clear();
                    e.size = size as i64;
                    e.digest = Some(sha256_string(&content));
                    e.offset = out.written as i64;
                    let chunks = chunk_boundaries(&content);
                    let mut chunk_entries = Vec::new();
                    for (i, &(start, len, zeros)) in chunks.iter().enumerate() {
                        let frame_start = out.written as i64;
                        write_frame(&mut out, &content[start..start + len], level)?;
                        if chunks.len() > 1 {
                            let fields = (
                                len as i64,
                                Some(sha256_string(&content[start..start + len])),
                                // containers/storage omits an empty chunkType.
                                zeros.then_some("zeros"),
                            );
                            if i == 0 {
                                (e.chunk_size, e.chunk_digest, e.chunk_type) = fields;
                            } else {
                                chunk_entries.push(OutEntry {
                                    kind: "chunk",
                                    name: name.clone(),
                                    offset: frame_start,
                                    chunk_size: fields.0,
                                    chunk_offset: start as i64,
                                    chunk_digest: fields.1,
                                    chunk_type: fields.2,
                                    ..Default::default()
                                });
                            }
                        }
                    }
                    e.end_offset = out.written as i64;
                    entries.push(e);
                    entries.extend(chunk_entries);
                } else {
                    entries.push(e);
                }
                let position = split_lines.len();
                let name_field = match std::str::from_utf8(&raw_name) {
                    Ok(n) => format!(r#""name":{}"#, serde_json::to_string(n)?),
                    Err(_) => format!(r#""name_raw":"{}""#, b64.encode(&raw_name)),
                };
                let line = if size > 0 {
                    format!(
                        r#"{{"type":1,{name_field},"size":{size},"payload":"{}","position":{position}}}"#,
                        b64.encode(crc64_iso(&content).to_be_bytes())
                    )
                } else {
                    format!(r#"{{"type":1,{name_field},"payload":null,"position":{position}}}"#)
                };
                split_lines.push(line);
                // The padding after the content opens the next segment.
                pending.extend(buf.drain(..padded - size));
                need = HEADER_SIZE;
            }
        }
    }
    // Whatever follows the end-of-archive blocks is part of the tar too.
    loop {
        let want = buf.len() + 1;
        fill(&mut buf, want, &mut eof, &mut diff)?;
        pending.append(&mut buf);
        if eof {
            break;
        }
    }
    segment(&mut split_lines, &pending);
    frame.append(&mut pending);
    write_frame(&mut out, &frame, level)?;

    let mut split_json = split_lines.join("\n");
    split_json.push('\n');
    let split_z = zstd::encode_all(split_json.as_bytes(), level)?;
    let toc = serde_json::json!({ "version": 1, "entries": entries, "tarSplitDigest": sha256_string(&split_z) });
    let toc_json = serde_json::to_vec(&toc)?;
    let toc_z = zstd::encode_all(&toc_json[..], level)?;
    let toc_offset = write_skippable(&mut out, &toc_z)?;
    let split_offset = write_skippable(&mut out, &split_z)?;
    let mut footer = Vec::with_capacity(64);
    for v in [
        toc_offset,
        toc_z.len() as u64,
        toc_json.len() as u64,
        1,
        split_offset,
        split_z.len() as u64,
        split_json.len() as u64,
    ] {
        footer.extend_from_slice(&v.to_le_bytes());
    }
    footer.extend_from_slice(FOOTER_MAGIC);
    write_skippable(&mut out, &footer)?;
    out.flush()?;
    let annotations = BTreeMap::from([
        (MANIFEST_CHECKSUM.to_owned(), sha256_string(&toc_z)),
        (
            MANIFEST_POSITION.to_owned(),
            format!("{toc_offset}:{}:{}:1", toc_z.len(), toc_json.len()),
        ),
        (
            TARSPLIT_POSITION.to_owned(),
            format!("{split_offset}:{}:{}", split_z.len(), split_json.len()),
        ),
    ]);
    Ok(WrittenLayer {
        annotations,
        size: out.written,
        diff_id: format!("sha256:{}", hex::encode(diff.finish())),
    })
}

/// RFC 3339 in UTC, seconds precision (`2024-01-01T00:00:00Z`).
fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_transport::format::zstd_chunked::{Annotations, Metadata};

    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_mtime(1_704_067_200);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data).unwrap();
        };
        let mut noise = Vec::new();
        let mut x: u64 = 0x1234_5678;
        for _ in 0..600_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push(x as u8);
        }
        add("hello.txt", b"hello world\n");
        add("big.bin", &noise);
        let mut holes = vec![7u8; 100];
        holes.extend(std::iter::repeat_n(0u8, 300_000));
        holes.extend(vec![9u8; 100]);
        add("holes.bin", &holes);
        add("empty", b"");
        b.into_inner().unwrap()
    }

    #[test]
    fn round_trip_through_the_reader() {
        let tar = sample_tar();
        let mut blob = Vec::new();
        let written = write_zstd_chunked(&tar[..], &mut blob, 3).unwrap();
        assert_eq!(written.size, blob.len() as u64);
        assert_eq!(
            written.diff_id,
            format!("sha256:{}", hex::encode(openssl::sha::sha256(&tar)))
        );
        // Any zstd decoder gives the tar back.
        let decoded = zstd::decode_all(&blob[..]).unwrap();
        let first_diff = decoded.iter().zip(&tar).position(|(a, b)| a != b);
        assert!(
            decoded == tar,
            "decoded {} bytes, tar {} bytes, first difference at {first_diff:?}",
            decoded.len(),
            tar.len()
        );
        let annotations: std::collections::HashMap<String, String> =
            written.annotations.into_iter().collect();
        let Annotations::Chunked {
            toc_digest,
            toc,
            tar_split,
        } = Annotations::parse(Some(&annotations)).unwrap()
        else {
            panic!("not chunked");
        };
        let slice = |p: skiff_transport::format::zstd_chunked::Position| {
            &blob[p.range(blob.len() as u64).unwrap().start as usize..][..p.length as usize]
        };
        let meta = Metadata::load(
            &toc_digest,
            toc,
            slice(toc),
            tar_split,
            slice(tar_split),
            blob.len() as u64,
        )
        .unwrap();
        assert_eq!(meta.tar_split.tar_size(), tar.len() as u64);
        let holes = meta
            .toc
            .files
            .iter()
            .find(|f| f.name == b"holes.bin")
            .unwrap();
        assert_eq!(
            holes
                .chunks
                .iter()
                .map(|c| (c.size, c.zeros))
                .collect::<Vec<_>>(),
            vec![(100, false), (300_000, true), (100, false)]
        );
        // Every file's frames decompress to its content.
        for file in &meta.toc.files {
            let range = file.chunks[0].compressed.start as usize
                ..file.chunks.last().unwrap().compressed.end as usize;
            let content = zstd::decode_all(&blob[range]).unwrap();
            assert_eq!(openssl::sha::sha256(&content), file.sha256);
        }
        let footer =
            skiff_transport::format::zstd_chunked::Footer::parse(&blob[blob.len() - 72..]).unwrap();
        assert_eq!(footer.toc, toc);
        assert_eq!(footer.tar_split, tar_split);
    }

    #[test]
    fn metadata_checks_refuse_tampering() {
        let tar = sample_tar();
        let mut blob = Vec::new();
        let written = write_zstd_chunked(&tar[..], &mut blob, 3).unwrap();
        let annotations: std::collections::HashMap<String, String> =
            written.annotations.into_iter().collect();
        let Annotations::Chunked {
            toc_digest,
            toc,
            tar_split,
        } = Annotations::parse(Some(&annotations)).unwrap()
        else {
            panic!("not chunked");
        };
        let size = blob.len() as u64;
        let part = |p: skiff_transport::format::zstd_chunked::Position| {
            blob[p.offset as usize..(p.offset + p.length) as usize].to_vec()
        };
        let (toc_bytes, split_bytes) = (part(toc), part(tar_split));
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err =
            Metadata::load(&wrong, toc, &toc_bytes, tar_split, &split_bytes, size).unwrap_err();
        assert!(err.to_string().contains("TOC checksum mismatch"), "{err:#}");
        let mut bad_split = split_bytes.clone();
        let last = bad_split.len() - 1;
        bad_split[last] ^= 1;
        let err =
            Metadata::load(&toc_digest, toc, &toc_bytes, tar_split, &bad_split, size).unwrap_err();
        assert!(
            err.to_string().contains("tar-split digest mismatch"),
            "{err:#}"
        );
        // A TOC that claims a blob larger than the one at hand.
        let err = Metadata::load(&toc_digest, toc, &toc_bytes, tar_split, &split_bytes, 1000)
            .unwrap_err();
        assert!(format!("{err:#}").contains("outside"), "{err:#}");
    }

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_704_067_200), "2024-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
    }
}
