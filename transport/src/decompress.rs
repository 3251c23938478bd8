//! Blocking decompression of layer blobs: gzip (any number of members, each checked against its
//! CRC-32 and length) by zlib-rs, zstd (any number of frames, skippable frames skipped) by
//! libzstd.
//!
//! Why zlib-rs and not flate2: flate2 uses the C zlib of the system whenever any crate in the
//! build asks for it (composefs-oci does), and zlib 1.2.13 inflates at half zlib-rs's speed on
//! the machines skiff is measured on (334 MB of a real site-packages layer: 0.88 s against
//! 0.44 s). Inflating is the largest single cost of a cold pull of a gzip image.

use std::io::Read;

use crate::format::media::Compression;

/// Compressed bytes read from the source at a time.
const INPUT_BUFFER: usize = 128 * 1024;

/// `compressed` decompressed as `compression` says.
pub(crate) fn reader<'a>(
    compression: Compression,
    compressed: impl Read + Send + 'a,
) -> std::io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(compressed),
        Compression::Gzip => Box::new(GzipReader::new(compressed)),
        Compression::Zstd => Box::new(ZstdReader(zstd::stream::read::Decoder::new(compressed)?)),
    })
}

/// libzstd's decoder, its end-of-input error saying what ended early.
struct ZstdReader<R: Read>(zstd::stream::read::Decoder<'static, std::io::BufReader<R>>);

impl<R: Read> Read for ZstdReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(out).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                std::io::Error::new(
                    e.kind(),
                    format!("unexpected end of file: the zstd stream ends inside a frame ({e})"),
                )
            } else {
                e
            }
        })
    }
}

/// A gzip stream of one or more members, decompressed.
pub(crate) struct GzipReader<R> {
    inner: R,
    inflate: zlib_rs::Inflate,
    input: Box<[u8]>,
    /// `input[start..end]` is read and not yet consumed.
    start: usize,
    end: usize,
    /// `inner` has reached its end.
    eof: bool,
    /// The current member has ended; another starts if more input follows.
    member_done: bool,
}

impl<R> std::fmt::Debug for GzipReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipReader")
            .field("total_in", &self.inflate.total_in())
            .field("total_out", &self.inflate.total_out())
            .finish_non_exhaustive()
    }
}

/// zlib's window bits for a gzip header and trailer around a 32 KiB window.
const GZIP_WINDOW_BITS: u8 = 16 + 15;

impl<R: Read> GzipReader<R> {
    /// Decompresses `inner`.
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            inflate: zlib_rs::Inflate::new(true, GZIP_WINDOW_BITS),
            input: vec![0; INPUT_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            member_done: false,
        }
    }

    /// Reads more input when all of it is consumed; false at the end of `inner`.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.start < self.end {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        let n = loop {
            match self.inner.read(&mut self.input) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        (self.start, self.end) = (0, n);
        self.eof = n == 0;
        Ok(n > 0)
    }
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

impl<R: Read> Read for GzipReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let more = self.fill()?;
            if self.member_done {
                if !more {
                    return Ok(0);
                }
                // Another member follows (as `gzip a b` or pigz write them).
                self.inflate = zlib_rs::Inflate::new(true, GZIP_WINDOW_BITS);
                self.member_done = false;
            }
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self
                .inflate
                .decompress(
                    &self.input[self.start..self.end],
                    out,
                    zlib_rs::InflateFlush::NoFlush,
                )
                .map_err(|e| {
                    invalid(format!(
                        "gzip data invalid after {} compressed bytes: {}",
                        self.inflate.total_in(),
                        self.inflate.error_message().unwrap_or(e.as_str())
                    ))
                })?;
            let consumed = (self.inflate.total_in() - in_before) as usize;
            let produced = (self.inflate.total_out() - out_before) as usize;
            self.start += consumed;
            if matches!(status, zlib_rs::Status::StreamEnd) {
                self.member_done = true;
            }
            if produced > 0 {
                return Ok(produced);
            }
            if !self.member_done && consumed == 0 && !more {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "unexpected end of file: the gzip stream ends inside a member, after {} \
                         compressed bytes",
                        self.inflate.total_in()
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Reads all through reads of at most `step` bytes.
    fn read_all(mut r: impl Read, step: usize) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0; step];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i * 7 % 251) as u8 ^ (i / 1000) as u8)
            .collect()
    }

    #[test]
    fn members_are_read_one_after_the_other() {
        let (a, b) = (sample(300_000), sample(5));
        let mut blob = gzip(&a);
        blob.extend(gzip(&b));
        blob.extend(gzip(b""));
        for step in [1, 7, 64 * 1024] {
            let out = read_all(GzipReader::new(&blob[..]), step).unwrap();
            assert_eq!(out, [a.clone(), b.clone()].concat(), "reads of {step}");
        }
    }

    #[test]
    fn input_arriving_a_byte_at_a_time_is_decompressed_whole() {
        let data = sample(100_000);
        let blob = gzip(&data);
        // A reader that yields one byte per read.
        struct OneByte<R>(R);
        impl<R: Read> Read for OneByte<R> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(1);
                self.0.read(&mut buf[..n])
            }
        }
        let out = read_all(GzipReader::new(OneByte(&blob[..])), 4096).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_an_end() {
        let blob = gzip(&sample(200_000));
        for cut in [5, blob.len() / 2, blob.len() - 4] {
            let err = read_all(GzipReader::new(&blob[..cut]), 8192).unwrap_err();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::UnexpectedEof,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_wrong_checksum_or_length_is_refused() {
        let data = sample(50_000);
        let blob = gzip(&data);
        let n = blob.len();
        // The trailer: CRC-32, then ISIZE.
        for at in [n - 8, n - 1] {
            let mut bad = blob.clone();
            bad[at] ^= 1;
            let err = read_all(GzipReader::new(&bad[..]), 8192).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "byte {at}");
            assert!(err.to_string().contains("gzip data invalid"), "{err}");
        }
    }

    #[test]
    fn a_truncated_zstd_stream_says_so() {
        let data = sample(100_000);
        let blob = zstd::encode_all(&data[..], 3).unwrap();
        let mut r = reader(Compression::Zstd, &blob[..blob.len() - 10]).unwrap();
        let err = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
        assert!(
            err.to_string().contains("zstd stream ends inside a frame"),
            "{err}"
        );
    }

    #[test]
    fn garbage_after_a_member_is_refused() {
        let mut blob = gzip(&sample(1000));
        blob.extend_from_slice(b"not gzip");
        let err = read_all(GzipReader::new(&blob[..]), 8192).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    }
}
