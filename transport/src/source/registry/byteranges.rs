//! HTTP byte ranges as registries speak them (RFC 9110 §14 and Appendix A of RFC 7233).
//!
//! A request names its ranges in one header, inclusive at both ends:
//!
//! ```text
//! Range: bytes=0-99,4096-8191
//! ```
//!
//! The answer is one of:
//!
//! - `206 Partial Content` with `Content-Range: bytes FIRST-LAST/SIZE` and the bytes of one range
//!   (always so for a single range; some servers also merge several ranges into one);
//! - `206` with `Content-Type: multipart/byteranges; boundary=B` and one part per range:
//!
//!   ```text
//!   --B\r\n
//!   Content-Type: application/octet-stream\r\n
//!   Content-Range: bytes 0-99/10000\r\n
//!   \r\n
//!   <100 bytes>\r\n
//!   --B\r\n
//!   ...
//!   --B--\r\n
//!   ```
//!
//!   Part bodies are binary and may contain anything, the boundary included: a part is read by
//!   the length its `Content-Range` gives, never by searching for the boundary.
//! - `200 OK` with the whole blob: the server ignored the header (S3 and MinIO do so for several
//!   ranges; Go's `http.ServeContent` does so when the ranges add up to more than the blob);
//! - `400` or `416` when the server refuses the set of ranges.
//!
//! Parts are not trusted to come in the requested order or shape: each requested range is taken
//! from a part whose `Content-Range` covers it, and a range no part covers is an error.

use std::ops::Range;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;

/// The `Range` header value for `ranges` (half-open, non-empty).
pub fn range_header(ranges: &[Range<u64>]) -> String {
    let mut out = String::from("bytes=");
    for (i, r) in ranges.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{}-{}", r.start, r.end - 1));
    }
    out
}

/// Parses `Content-Range: bytes FIRST-LAST/SIZE` (SIZE may be `*`) into a half-open range.
pub fn parse_content_range(value: &str) -> Result<Range<u64>> {
    let bad = || format!("malformed Content-Range {value:?}");
    let spec = value
        .trim()
        .strip_prefix("bytes ")
        .with_context(bad)?
        .trim_start();
    let (span, _size) = spec.split_once('/').with_context(bad)?;
    let (first, last) = span.split_once('-').with_context(bad)?;
    let first: u64 = first.trim().parse().ok().with_context(bad)?;
    let last: u64 = last.trim().parse().ok().with_context(bad)?;
    ensure!(first <= last, "{}", bad());
    Ok(first..last.checked_add(1).with_context(bad)?)
}

/// The boundary of a `multipart/byteranges` content type, or `None` for another type.
pub fn multipart_boundary(content_type: &str) -> Result<Option<String>> {
    let mut params = content_type.split(';');
    let kind = params.next().unwrap_or_default().trim();
    if !kind.eq_ignore_ascii_case("multipart/byteranges") {
        return Ok(None);
    }
    for param in params {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        if key.trim().eq_ignore_ascii_case("boundary") {
            let value = value.trim().trim_matches('"');
            ensure!(
                !value.is_empty() && value.len() <= 70,
                "multipart boundary of {} bytes (1 to 70 allowed)",
                value.len()
            );
            return Ok(Some(value.to_owned()));
        }
    }
    bail!("multipart/byteranges answer without a boundary")
}

/// Splits a `multipart/byteranges` body into its parts: `(range, bytes)` in body order.
pub fn parse_multipart(body: &Bytes, boundary: &str) -> Result<Vec<(Range<u64>, Bytes)>> {
    let delimiter = format!("--{boundary}");
    let mut pos = find(body, delimiter.as_bytes(), 0)
        .context("multipart answer without its first boundary")?
        + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        pos = skip_line_end(body, pos).context("multipart boundary not followed by a line end")?;
        let headers_end = find(body, b"\r\n\r\n", pos).context("multipart part without a body")?;
        let mut range = None;
        for line in body[pos..headers_end].split(|&b| b == b'\n') {
            let line = std::str::from_utf8(line)
                .context("multipart part header is not text")?
                .trim_end_matches('\r');
            if let Some((name, value)) = line.split_once(':')
                && name.trim().eq_ignore_ascii_case("content-range")
            {
                range = Some(parse_content_range(value)?);
            }
        }
        let range = range.context("multipart part without Content-Range")?;
        let start = headers_end + 4;
        let len = usize::try_from(range.end - range.start)?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= body.len())
            .with_context(|| format!("multipart part {range:?} is cut short"))?;
        parts.push((range, body.slice(start..end)));
        pos = skip_line_end(body, end).unwrap_or(end);
        ensure!(
            body[pos..].starts_with(delimiter.as_bytes()),
            "multipart part {:?} is longer than its Content-Range",
            parts.last().map(|p| p.0.clone())
        );
        pos += delimiter.len();
    }
}

/// Takes each of `wanted` from the `parts` that cover it.
pub fn select(parts: &[(Range<u64>, Bytes)], wanted: &[Range<u64>]) -> Result<Vec<Bytes>> {
    wanted
        .iter()
        .map(|w| {
            let (range, bytes) = parts
                .iter()
                .find(|(r, _)| r.start <= w.start && w.end <= r.end)
                .with_context(|| format!("the answer has no part covering bytes {w:?}"))?;
            let from = (w.start - range.start) as usize;
            Ok(bytes.slice(from..from + (w.end - w.start) as usize))
        })
        .collect()
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

fn skip_line_end(body: &[u8], pos: usize) -> Option<usize> {
    if body[pos..].starts_with(b"\r\n") {
        Some(pos + 2)
    } else if body[pos..].starts_with(b"\n") {
        Some(pos + 1)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_inclusive() {
        assert_eq!(range_header(&[0..100, 4096..8192]), "bytes=0-99,4096-8191");
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 0-99/1000").unwrap(), 0..100);
        assert_eq!(parse_content_range("bytes 5-5/*").unwrap(), 5..6);
        for bad in ["bytes */1000", "0-99/1000", "bytes 9-3/10", "bytes a-b/1"] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn boundary() {
        let b = multipart_boundary("multipart/byteranges; boundary=abc").unwrap();
        assert_eq!(b.as_deref(), Some("abc"));
        let b = multipart_boundary("multipart/byteranges; boundary=\"a:b\"").unwrap();
        assert_eq!(b.as_deref(), Some("a:b"));
        assert_eq!(
            multipart_boundary("application/octet-stream").unwrap(),
            None
        );
        assert!(multipart_boundary("multipart/byteranges").is_err());
    }

    fn body(parts: &[(&str, &[u8])]) -> Bytes {
        let mut out = b"\r\n".to_vec();
        for (range, data) in parts {
            out.extend_from_slice(b"--XyZ\r\nContent-Type: application/octet-stream\r\n");
            out.extend_from_slice(format!("Content-Range: {range}\r\n\r\n").as_bytes());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        Bytes::from(out)
    }

    #[test]
    fn parts_are_read_by_length_even_when_they_hold_the_boundary() {
        let b = body(&[
            ("bytes 0-9/100", b"--XyZ\r\n--X"),
            ("bytes 50-52/100", b"abc"),
        ]);
        let parts = parse_multipart(&b, "XyZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(&parts[0].1[..], b"--XyZ\r\n--X");
        assert_eq!(parts[1].0, 50..53);
        let got = select(&parts, &[51..53, 0..2]).unwrap();
        assert_eq!(&got[0][..], b"bc");
        assert_eq!(&got[1][..], b"--");
    }

    #[test]
    fn wrong_parts_are_refused() {
        // A part shorter than it says.
        let mut raw = body(&[("bytes 0-9/100", b"0123456789")]).to_vec();
        raw.truncate(raw.len() - 14);
        assert!(parse_multipart(&Bytes::from(raw), "XyZ").is_err());
        // A part longer than its Content-Range.
        let b = body(&[("bytes 0-3/100", b"0123456789")]);
        assert!(parse_multipart(&b, "XyZ").is_err());
        // A requested range that no part covers.
        let b = body(&[("bytes 0-3/100", b"0123")]);
        let parts = parse_multipart(&b, "XyZ").unwrap();
        assert!(select(&parts, &[2..6, 0..1]).is_err());
        // No boundary at all.
        assert!(parse_multipart(&Bytes::from_static(b"hello"), "XyZ").is_err());
    }

    /// Disjoint ascending ranges with their data, as a server sends them.
    fn parts_strategy() -> impl Strategy<Value = Vec<(Range<u64>, Vec<u8>)>> {
        proptest::collection::vec(
            (0u64..10_000, proptest::collection::vec(any::<u8>(), 1..200)),
            1..8,
        )
        .prop_map(|gaps| {
            let mut start = 0;
            gaps.into_iter()
                .map(|(gap, data)| {
                    let range = start + gap..start + gap + data.len() as u64;
                    start = range.end;
                    (range, data)
                })
                .collect()
        })
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn multipart_bodies_round_trip(
            parts in parts_strategy(),
            boundary in "[A-Za-z0-9'()+_,./:=?-]{1,70}",
        ) {
            let mut raw = b"\r\n".to_vec();
            for (range, data) in &parts {
                raw.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
                raw.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
                raw.extend_from_slice(
                    format!("Content-Range: bytes {}-{}/*\r\n\r\n", range.start, range.end - 1)
                        .as_bytes(),
                );
                raw.extend_from_slice(data);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            let ct = format!("multipart/byteranges; boundary=\"{boundary}\"");
            prop_assert_eq!(multipart_boundary(&ct).unwrap(), Some(boundary.clone()));
            let parsed = parse_multipart(&Bytes::from(raw.clone()), &boundary).unwrap();
            prop_assert_eq!(parsed.len(), parts.len());
            for ((range, data), (got_range, got)) in parts.iter().zip(&parsed) {
                prop_assert_eq!(range, got_range);
                prop_assert_eq!(&data[..], &got[..]);
            }
            // Any sub-range of a part is selected from it; the header asks for the parts.
            let wanted: Vec<_> = parts.iter().map(|(r, _)| r.start + 1.min(r.end - r.start - 1)..r.end).collect();
            let selected = select(&parsed, &wanted).unwrap();
            for ((w, got), (r, data)) in wanted.iter().zip(&selected).zip(&parts) {
                let at = (w.start - r.start) as usize;
                prop_assert_eq!(&data[at..], &got[..]);
            }
            let header = range_header(&parts.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>());
            for (spec, (r, _)) in header["bytes=".len()..].split(',').zip(&parts) {
                let parsed = parse_content_range(&format!("bytes {spec}/*")).unwrap();
                prop_assert_eq!(&parsed, r);
            }
            // A body cut anywhere before its closing boundary is refused, never misread.
            let closing = raw.len() - boundary.len() - 6;
            for cut in [closing / 2, closing - 1] {
                prop_assert!(parse_multipart(&Bytes::from(raw[..cut].to_vec()), &boundary).is_err());
            }
        }
    }
}
