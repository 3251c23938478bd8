//! Tar entry headers read as Go's `archive/tar` (and so containers/storage) reads them.
//!
//! Every image users run was unpacked by Go; skiff must see the same tree. tar-core parses the
//! headers, and this module corrects it where it differs from Go:
//!
//! - a header with the ustar magic (`ustar\0`) and any version field is ustar, so its prefix
//!   field names the directory (tar-core reads the prefix only with version `00`, and then
//!   does not recognise the PAX and GNU long-name headers before such an entry either);
//! - of several PAX extended headers, GNU long names or GNU long links before one entry, the
//!   last of each kind wins (tar-core refuses them);
//! - a GNU long name or link ends at its first NUL (tar-core drops only a trailing one);
//! - links, symlinks, devices, directories and FIFOs carry no data whatever their size field
//!   says (POSIX; tar-core reports the size and the next header would be read as data).
//!
//! Sparse files (old GNU, PAX 0.0, 0.1, 1.0) come with their map, checked as Go checks it.
//!
//! The importer and the tree builder both read headers through [`HeaderReader`], so the
//! splitstream is cut where the tree reads it back.

use std::ops::Range;

use tar_core::parse::{Limits, ParseError, ParseEvent, ParsedEntry, Parser};
use tar_core::{EntryType, HEADER_SIZE, Header, PaxExtensions, SparseEntry};

/// The logical size of a sparse file is bounded: its holes become zeros in the stored file,
/// which is written and hashed in full, so a few bytes of tar could otherwise ask for
/// exabytes. 64 GiB is far above any sparse file in a real image (disk images, lastlog).
pub const MAX_SPARSE_SIZE: u64 = 64 << 30;

/// Why headers were refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// tar-core refused the (corrected) headers.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A sparse file's map is inconsistent or too large.
    #[error("sparse file {path:?}: {reason}")]
    Sparse {
        /// The entry's name.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The map of a sparse file: where its stored data goes in the logical file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseMap {
    /// Regions of data, in order, not overlapping; the rest of the file is zeros.
    pub regions: Vec<SparseEntry>,
    /// Size of the logical file.
    pub real_size: u64,
}

/// One entry's headers, resolved.
#[derive(Debug, Clone)]
pub struct EntryHeader {
    /// The entry type of the main header.
    pub entry_type: EntryType,
    /// The name as stored (PAX `path` > GNU long name > ustar prefix + name).
    pub path: Vec<u8>,
    /// Link target (PAX `linkpath` > GNU long link > header), if any.
    pub link_target: Option<Vec<u8>>,
    /// Mode bits as stored.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, whole seconds.
    pub mtime: u64,
    /// Nanoseconds of a PAX `mtime`, as composefs-oci reads them.
    pub mtime_nsec: u32,
    /// Device numbers (ustar and GNU headers).
    pub dev_major: Option<u32>,
    /// Device numbers (ustar and GNU headers).
    pub dev_minor: Option<u32>,
    /// `SCHILY.xattr.*` records, in order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes of data that follow the headers (before padding to 512): 0 for types that carry
    /// none; for a sparse file, its stored regions.
    pub data_size: u64,
    /// The map of a sparse file.
    pub sparse: Option<SparseMap>,
}

impl EntryHeader {
    /// The name for messages.
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    /// True for regular files, sparse or not.
    pub fn is_file(&self) -> bool {
        self.sparse.is_some() || self.entry_type.is_file()
    }
}

/// What the next bytes of a tar hold.
#[derive(Debug)]
pub enum HeaderEvent {
    /// At least this many bytes (from the start of the input) are needed.
    NeedData(usize),
    /// A PAX global header: `consumed` bytes, nothing to apply.
    Global {
        /// Bytes of the header and its records.
        consumed: usize,
    },
    /// The end-of-archive blocks.
    End {
        /// Bytes of the blocks.
        consumed: usize,
    },
    /// An entry: `consumed` bytes of headers (with a sparse file's map blocks), then
    /// `header.data_size` bytes of data and padding to 512.
    Entry {
        /// Bytes of headers.
        consumed: usize,
        /// The resolved headers.
        header: EntryHeader,
    },
}

/// Largest extension data (PAX records, GNU long names and link targets together) of one tar
/// entry, as Go's archive/tar allows (its `maxSpecialFileSize`); tar-core refuses more.
pub const MAX_TAR_METADATA_BYTES: u32 = 1024 * 1024;

/// Largest run of tar header bytes buffered before one entry: the extension data above, plus
/// the header blocks around it and an old GNU sparse map (tar-core: at most 10,000 regions, 21
/// a block). Bounds what a hostile tar can make us buffer.
pub const MAX_HEADER_BYTES: usize = 2 * MAX_TAR_METADATA_BYTES as usize;

/// The tar parser with skiff's limits ([`MAX_TAR_METADATA_BYTES`]).
pub fn tar_parser() -> Parser {
    Parser::new(Limits {
        max_metadata_size: MAX_TAR_METADATA_BYTES,
        ..Default::default()
    })
}

/// Reads one tar entry's headers at a time. Holds tar-core's parser (and its limits).
pub struct HeaderReader {
    parser: Parser,
}

impl std::fmt::Debug for HeaderReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderReader").finish_non_exhaustive()
    }
}

impl Default for HeaderReader {
    fn default() -> Self {
        Self::new()
    }
}

/// The extension headers before a main header, as found in the input.
#[derive(Default)]
struct Run {
    /// Last PAX header, GNU long name and GNU long link (whole blocks), in input order.
    pax: Option<Range<usize>>,
    long_name: Option<Range<usize>>,
    long_link: Option<Range<usize>>,
    /// Offset of the main header.
    main: usize,
    /// The input must be rewritten before tar-core sees it.
    rewrite: bool,
}

fn is_zero_block(block: &[u8]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// A header with the ustar magic and a version other than `00` (e.g. GNU's `" \0"`).
fn needs_ustar_version(block: &[u8]) -> bool {
    &block[257..263] == tar_core::USTAR_MAGIC && &block[263..265] != tar_core::USTAR_VERSION
}

/// The header block as tar-core must see it: with version `00` if it has the ustar magic and
/// another version, and its checksum is right (a wrong one is left for tar-core to report).
fn header_for_core(block: &[u8]) -> Vec<u8> {
    if !needs_ustar_version(block) {
        return block.to_vec();
    }
    let raw: &[u8; HEADER_SIZE] = block.try_into().expect("a header block");
    let mut header = *Header::from_bytes(raw);
    if header.verify_checksum().is_err() {
        return block.to_vec();
    }
    header.as_mut_bytes()[263..265].copy_from_slice(tar_core::USTAR_VERSION);
    header.set_checksum();
    header.as_bytes().to_vec()
}

/// Finds the extension headers before the next main header.
fn scan(input: &[u8]) -> Result<Result<Run, usize>, ParseError> {
    let mut run = Run::default();
    let mut off = 0;
    loop {
        let Some(block) = input.get(off..off + HEADER_SIZE) else {
            return Ok(Err(off + HEADER_SIZE));
        };
        if is_zero_block(block) {
            // End of archive or a stray zero block: tar-core decides on the raw input.
            run.main = off;
            run.rewrite = false;
            return Ok(Ok(run));
        }
        run.rewrite |= needs_ustar_version(block);
        let raw: &[u8; HEADER_SIZE] = block.try_into().expect("a header block");
        let header = Header::from_bytes(raw);
        let extensible = &block[257..263] == tar_core::USTAR_MAGIC || header.is_gnu();
        let slot = match header.entry_type() {
            EntryType::XHeader if extensible => &mut run.pax,
            EntryType::GnuLongName if extensible => &mut run.long_name,
            EntryType::GnuLongLink if extensible => &mut run.long_link,
            _ => {
                run.main = off;
                return Ok(Ok(run));
            }
        };
        let size = header.entry_size()?;
        let end = size
            .checked_next_multiple_of(HEADER_SIZE as u64)
            .and_then(|p| usize::try_from(p).ok())
            .and_then(|p| (off + HEADER_SIZE).checked_add(p))
            .ok_or(ParseError::InvalidSize(size))?;
        if input.len() < end {
            return Ok(Err(end));
        }
        run.rewrite |= slot.is_some();
        *slot = Some(off..end);
        off = end;
    }
}

/// The content of a GNU long name or link header, as tar-core returns it (one trailing NUL
/// dropped) and as Go reads it (up to the first NUL).
fn long_name_forms(input: &[u8], range: &Range<usize>) -> (Vec<u8>, Vec<u8>) {
    let block: &[u8; HEADER_SIZE] = input[range.start..range.start + HEADER_SIZE]
        .try_into()
        .expect("a header block");
    let size = Header::from_bytes(block).entry_size().unwrap_or(0) as usize;
    let data = &input[range.start + HEADER_SIZE..][..size];
    let core = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
    let go = data.split(|&b| b == 0).next().unwrap_or_default().to_vec();
    (core, go)
}

impl HeaderReader {
    /// A reader with skiff's limits ([`tar_parser`]).
    pub fn new() -> Self {
        Self {
            parser: tar_parser(),
        }
    }

    /// Reads the headers at the start of `input`.
    pub fn parse(&mut self, input: &[u8]) -> Result<HeaderEvent, HeaderError> {
        let run = match scan(input)? {
            Ok(run) => run,
            Err(need) => return Ok(HeaderEvent::NeedData(need)),
        };
        let event = if run.rewrite {
            self.parse_rewritten(input, &run)?
        } else {
            let event = self.parser.parse(input)?;
            convert(event, 0)?
        };
        let HeaderEvent::Entry {
            consumed,
            mut header,
        } = event
        else {
            return Ok(event);
        };
        for (range, field) in [
            (&run.long_name, Some(&mut header.path)),
            (&run.long_link, header.link_target.as_mut()),
        ] {
            if let (Some(range), Some(field)) = (range, field) {
                let (core, go) = long_name_forms(input, range);
                if *field == core {
                    *field = go;
                }
            }
        }
        Ok(HeaderEvent::Entry { consumed, header })
    }

    /// Parses a copy of the headers keeping only the last extension of each kind, with ustar
    /// versions set to `00`; offsets are mapped back to `input`.
    fn parse_rewritten(&mut self, input: &[u8], run: &Run) -> Result<HeaderEvent, HeaderError> {
        let mut kept: Vec<&Range<usize>> = [&run.pax, &run.long_name, &run.long_link]
            .into_iter()
            .flatten()
            .collect();
        kept.sort_by_key(|r| r.start);
        let mut copy = Vec::new();
        for range in kept {
            copy.extend_from_slice(&header_for_core(&input[range.start..][..HEADER_SIZE]));
            copy.extend_from_slice(&input[range.start + HEADER_SIZE..range.end]);
        }
        // Bytes of `input` dropped from the copy (repeated extensions).
        let dropped = run.main - copy.len();
        copy.extend_from_slice(&header_for_core(&input[run.main..][..HEADER_SIZE]));
        loop {
            match self.parser.parse(&copy)? {
                ParseEvent::NeedData { min_bytes } => {
                    // A sparse file's map blocks follow the main header unchanged.
                    let need = min_bytes + dropped;
                    if input.len() < need {
                        return Ok(HeaderEvent::NeedData(need));
                    }
                    let have = copy.len() + dropped;
                    copy.extend_from_slice(&input[have..need]);
                }
                event => return convert(event, dropped),
            }
        }
    }
}

/// tar-core's event as ours, its byte counts moved by `dropped`.
fn convert(event: ParseEvent<'_>, dropped: usize) -> Result<HeaderEvent, HeaderError> {
    Ok(match event {
        ParseEvent::NeedData { min_bytes } => HeaderEvent::NeedData(min_bytes + dropped),
        ParseEvent::GlobalExtensions { consumed, .. } => HeaderEvent::Global {
            consumed: consumed + dropped,
        },
        ParseEvent::End { consumed } => HeaderEvent::End {
            consumed: consumed + dropped,
        },
        ParseEvent::Entry { consumed, entry } => HeaderEvent::Entry {
            consumed: consumed + dropped,
            header: entry_header(entry, None)?,
        },
        ParseEvent::SparseEntry {
            consumed,
            entry,
            sparse_map,
            real_size,
        } => HeaderEvent::Entry {
            consumed: consumed + dropped,
            header: entry_header(
                entry,
                Some(SparseMap {
                    regions: sparse_map,
                    real_size,
                }),
            )?,
        },
    })
}

/// Types whose size field POSIX (and Go) ignore: no data follows them.
fn carries_no_data(t: EntryType) -> bool {
    matches!(
        t,
        EntryType::Link
            | EntryType::Symlink
            | EntryType::Char
            | EntryType::Block
            | EntryType::Directory
            | EntryType::Fifo
    )
}

fn entry_header(
    entry: ParsedEntry<'_>,
    sparse: Option<SparseMap>,
) -> Result<EntryHeader, HeaderError> {
    let data_size = if carries_no_data(entry.entry_type) && sparse.is_none() {
        0
    } else {
        entry.size
    };
    let header = EntryHeader {
        entry_type: entry.entry_type,
        path: entry.path.into_owned(),
        link_target: entry.link_target.map(|l| l.into_owned()),
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        mtime: entry.mtime,
        mtime_nsec: entry.pax.map_or(0, pax_mtime_nsec),
        dev_major: entry.dev_major,
        dev_minor: entry.dev_minor,
        xattrs: entry
            .xattrs
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        data_size,
        sparse,
    };
    if let Some(map) = &header.sparse {
        check_sparse(map, data_size).map_err(|reason| HeaderError::Sparse {
            path: header.name(),
            reason,
        })?;
    }
    Ok(header)
}

/// Go's checks: regions in order, not overlapping, inside the file; their data is exactly the
/// stored data.
fn check_sparse(map: &SparseMap, data_size: u64) -> Result<(), String> {
    if map.real_size > MAX_SPARSE_SIZE {
        return Err(format!(
            "its logical size {} is above the {MAX_SPARSE_SIZE} bytes allowed",
            map.real_size
        ));
    }
    let mut end = 0u64;
    let mut stored = 0u64;
    for r in &map.regions {
        let r_end = r
            .offset
            .checked_add(r.length)
            .filter(|&e| e <= map.real_size)
            .ok_or_else(|| format!("a region ends past the file's {} bytes", map.real_size))?;
        if r.offset < end {
            return Err("its regions overlap or are out of order".into());
        }
        end = r_end;
        stored += r.length;
    }
    if stored != data_size {
        return Err(format!(
            "its map holds {stored} bytes of data but the entry stores {data_size}"
        ));
    }
    Ok(())
}

/// Nanoseconds of the first PAX `mtime` record: up to 9 fractional digits, fewer scaled up,
/// anything unparsable 0. The same as composefs-oci 0.9.4 reads it, so that trees match.
fn pax_mtime_nsec(pax: &[u8]) -> u32 {
    let Some(ext) = PaxExtensions::new(pax)
        .map_while(Result::ok)
        .find(|e| e.key_bytes() == b"mtime")
    else {
        return 0;
    };
    let Some((_, frac)) = ext.value().ok().and_then(|v| v.split_once('.')) else {
        return 0;
    };
    if frac.len() >= 9 {
        frac[..9].parse().unwrap_or(0)
    } else {
        frac.parse::<u32>()
            .map_or(0, |v| v * 10u32.pow(9 - frac.len() as u32))
    }
}

/// Writes the logical content of a sparse file: `data` (its stored regions, in order) placed
/// at the map's offsets, zeros elsewhere, through `write_at(offset, bytes)`. `data` yields
/// pieces of any size.
pub fn expand_sparse<E>(
    map: &SparseMap,
    data: impl IntoIterator<Item = Result<Vec<u8>, E>>,
    mut write_at: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut regions = map.regions.iter().filter(|r| r.length > 0);
    let mut current = regions.next().map(|r| (r.offset, r.length));
    for piece in data {
        let piece = piece?;
        let mut piece = &piece[..];
        while !piece.is_empty() {
            // The map was checked against the data size: the data never outruns the regions.
            let Some((offset, left)) = current.as_mut() else {
                break;
            };
            let n = (*left).min(piece.len() as u64) as usize;
            write_at(*offset, &piece[..n])?;
            *offset += n as u64;
            *left -= n as u64;
            piece = &piece[n..];
            if *left == 0 {
                current = regions.next().map(|r| (r.offset, r.length));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_nanoseconds_as_composefs_reads_them() {
        for (pax, want) in [
            (&b"20 mtime=12345.5678\n"[..], 567_800_000),
            (b"22 mtime=1.1234567891\n", 123_456_789),
            (b"12 mtime=17\n", 0),
            (b"14 mtime=1.xy\n", 0),
            (b"10 mtime=1.5\n", 0),
        ] {
            assert_eq!(
                pax_mtime_nsec(pax),
                want,
                "{:?}",
                String::from_utf8_lossy(pax)
            );
        }
    }

    #[test]
    fn sparse_maps_are_checked() {
        let map = |regions: &[(u64, u64)], real_size| SparseMap {
            regions: regions
                .iter()
                .map(|&(offset, length)| SparseEntry { offset, length })
                .collect(),
            real_size,
        };
        assert!(check_sparse(&map(&[(0, 5), (10, 5), (20, 0)], 20), 10).is_ok());
        assert!(check_sparse(&map(&[(10, 5), (0, 5)], 20), 10).is_err());
        assert!(check_sparse(&map(&[(0, 5), (3, 5)], 20), 10).is_err());
        assert!(check_sparse(&map(&[(18, 5)], 20), 5).is_err());
        assert!(check_sparse(&map(&[(0, 5)], 20), 6).is_err());
        assert!(check_sparse(&map(&[], MAX_SPARSE_SIZE + 1), 0).is_err());
        let mut out = vec![0u8; 20];
        let pieces: Vec<Result<Vec<u8>, ()>> = vec![Ok(b"abc".to_vec()), Ok(b"defghij".to_vec())];
        expand_sparse(&map(&[(1, 5), (12, 5)], 20), pieces, |off, b| {
            out[off as usize..][..b.len()].copy_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(&out, b"\0abcde\0\0\0\0\0\0fghij\0\0\0");
    }
}
