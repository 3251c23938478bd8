//! Content-defined chunks of a file, cut where containers/storage cuts them for zstd:chunked.
//!
//! A bup-style rolling checksum (window 64, character offset 31) runs over the content, restarted
//! for each file; a chunk ends after the byte where the low 16 bits of the checksum are all ones
//! (64 KiB on average). A run of at least 1 KiB of zero bytes is a chunk of its own, a hole
//! (`zeros` in a TOC; the checksum still rolls over it); shorter runs are ordinary data. The
//! same boundaries, with the same sha256 per chunk, are what a zstd:chunked TOC lists for the
//! file (`chunkOffset`, `chunkSize`, `chunkDigest`), so a chunk the store holds is found by the
//! digest a TOC names.
//!
//! [`Chunker`] cuts a file fed in pieces of any size, hashing the file and its data chunks as
//! the bytes pass (each byte of the first chunk is hashed once: that chunk's digest is the
//! file hash so far); [`chunk_boundaries`] cuts a file held in memory.

use openssl::sha::Sha256;

/// A run of this many zero bytes or more is a hole.
const HOLE_THRESHOLD: u64 = 1024;
/// Rolling checksum window.
const WINDOW: usize = 64;
/// Rolling checksum character offset.
const CHAR_OFFSET: u32 = 31;
/// A chunk ends where the low bits of the checksum are all ones (average chunk 64 KiB).
const SPLIT_MASK: u32 = (1 << 16) - 1;

/// Zero bytes to hash from: holes and short zero runs are hashed from here, not from the input.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// bup/perkeep's rolling checksum.
#[derive(Clone)]
struct RollSum {
    s1: u32,
    s2: u32,
    window: [u8; WINDOW],
    wofs: usize,
}

impl RollSum {
    fn new() -> Self {
        Self {
            s1: WINDOW as u32 * CHAR_OFFSET,
            s2: WINDOW as u32 * (WINDOW as u32 - 1) * CHAR_OFFSET,
            window: [0; WINDOW],
            wofs: 0,
        }
    }

    #[inline(always)]
    fn roll(&mut self, ch: u8) {
        let drop = self.window[self.wofs] as u32;
        self.s1 = self.s1.wrapping_add(ch as u32).wrapping_sub(drop);
        self.s2 = self
            .s2
            .wrapping_add(self.s1)
            .wrapping_sub((WINDOW as u32).wrapping_mul(drop + CHAR_OFFSET));
        self.window[self.wofs] = ch;
        self.wofs = (self.wofs + 1) & (WINDOW - 1);
    }

    /// Rolls the bytes of `data`, stopping after a byte where a chunk ends: how many bytes were
    /// rolled, and whether the last one ends a chunk. The loop over the file's bytes, kept in
    /// registers: the byte leaving the window is the old window's for the first WINDOW bytes
    /// of `data`, then `data`'s own, WINDOW bytes back (two loops, so neither asks which).
    fn roll_until_split(&mut self, data: &[u8]) -> (usize, bool) {
        let (mut s1, mut s2) = (self.s1, self.s2);
        #[inline(always)]
        fn step(s1: &mut u32, s2: &mut u32, ch: u8, drop: u8) -> bool {
            let (ch, drop) = (ch as u32, drop as u32);
            *s1 = s1.wrapping_add(ch).wrapping_sub(drop);
            *s2 =
                s2.wrapping_add(s1.wrapping_sub((WINDOW as u32).wrapping_mul(drop + CHAR_OFFSET)));
            *s2 & SPLIT_MASK == SPLIT_MASK
        }
        let head = data.len().min(WINDOW);
        let mut rolled = data.len();
        let mut split = false;
        for (k, &ch) in data[..head].iter().enumerate() {
            if step(
                &mut s1,
                &mut s2,
                ch,
                self.window[(self.wofs + k) & (WINDOW - 1)],
            ) {
                (rolled, split) = (k + 1, true);
                break;
            }
        }
        if !split {
            for (k, (&ch, &drop)) in data[head..].iter().zip(data).enumerate() {
                if step(&mut s1, &mut s2, ch, drop) {
                    (rolled, split) = (head + k + 1, true);
                    break;
                }
            }
        }
        // The window now holds the last WINDOW bytes rolled.
        let mut window = [0u8; WINDOW];
        for (j, slot) in window.iter_mut().enumerate() {
            // Byte `rolled - WINDOW + j` of the stream, from the old window or from `data`.
            let back = WINDOW - j;
            *slot = if rolled >= back {
                data[rolled - back]
            } else {
                self.window[(self.wofs + rolled + j) & (WINDOW - 1)]
            };
        }
        (self.s1, self.s2, self.window, self.wofs) = (s1, s2, window, 0);
        (rolled, split)
    }

    #[inline(always)]
    fn on_split(&self) -> bool {
        self.s2 & SPLIT_MASK == SPLIT_MASK
    }

    /// Rolls `n` zero bytes where no split is looked for. Once the window holds only zeros,
    /// rolling another zero changes nothing, so at most a window's worth is rolled.
    fn roll_zeros(&mut self, n: u64) {
        for _ in 0..n.min(WINDOW as u64) {
            self.roll(0);
        }
    }
}

/// One chunk of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentChunk {
    /// Offset in the file.
    pub offset: u64,
    /// Length.
    pub size: u64,
    /// sha256 of the chunk's bytes; `None` for a hole.
    pub sha256: Option<[u8; 32]>,
}

/// Cuts a file fed in pieces into chunks and hashes it (see the [module](self)).
pub struct Chunker {
    sum: RollSum,
    /// The file's hash: every byte classified so far.
    file: Sha256,
    /// The open data chunk's hash, when it does not start the file (the first chunk's hash is
    /// the file's).
    chunk: Option<Sha256>,
    /// Bytes classified (pending zeros excluded).
    position: u64,
    /// Where the open chunk starts.
    chunk_start: u64,
    /// Zero bytes seen and not classified yet: a hole if the run reaches [`HOLE_THRESHOLD`].
    pending_zeros: u64,
    chunks: Vec<ContentChunk>,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("position", &self.position)
            .field("chunks", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

impl Default for Chunker {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunker {
    /// A chunker at the start of a file.
    pub fn new() -> Self {
        Self {
            sum: RollSum::new(),
            file: Sha256::new(),
            chunk: None,
            position: 0,
            chunk_start: 0,
            pending_zeros: 0,
            chunks: Vec::new(),
        }
    }

    /// Hashes `data` (bytes of the open data chunk) into the file and the chunk.
    fn absorb(&mut self, data: &[u8]) {
        self.file.update(data);
        if let Some(chunk) = &mut self.chunk {
            chunk.update(data);
        }
    }

    /// Ends the open data chunk at `position`, if it holds anything.
    fn cut(&mut self) {
        if self.position == self.chunk_start {
            return;
        }
        let sha256 = match self.chunk.take() {
            Some(chunk) => chunk.finish(),
            None => self.file.clone().finish(),
        };
        self.chunks.push(ContentChunk {
            offset: self.chunk_start,
            size: self.position - self.chunk_start,
            sha256: Some(sha256),
        });
        self.chunk_start = self.position;
        self.chunk = Some(Sha256::new());
    }

    /// Classifies the pending zero run: a hole, or data rolled and cut like any other byte.
    fn settle_zeros(&mut self) {
        let run = std::mem::take(&mut self.pending_zeros);
        if run == 0 {
            return;
        }
        if run >= HOLE_THRESHOLD {
            self.cut();
            self.sum.roll_zeros(run);
            let mut left = run;
            while left > 0 {
                let n = left.min(ZEROS.len() as u64);
                self.file.update(&ZEROS[..n as usize]);
                left -= n;
            }
            self.chunks.push(ContentChunk {
                offset: self.position,
                size: run,
                sha256: None,
            });
            self.position += run;
            self.chunk_start = self.position;
            self.chunk = Some(Sha256::new());
            return;
        }
        // Shorter than a hole: at most HOLE_THRESHOLD - 1 bytes, hashed from ZEROS.
        let mut unhashed = 0usize;
        for _ in 0..run {
            self.sum.roll(0);
            unhashed += 1;
            self.position += 1;
            if self.sum.on_split() {
                self.absorb(&ZEROS[..unhashed]);
                unhashed = 0;
                self.cut();
            }
        }
        self.absorb(&ZEROS[..unhashed]);
    }

    /// Feeds the next bytes of the file.
    ///
    /// Zero runs shorter than a hole are rolled like any byte, so the loop only stops at
    /// holes (found by a scan of 8-byte words), at chunk ends, and before the zeros that end
    /// the piece (they may continue as a hole in the next one: pending until it says).
    pub fn update(&mut self, data: &[u8]) {
        let mut i = 0;
        if self.pending_zeros > 0 {
            let lead = data.iter().take_while(|&&b| b == 0).count();
            self.pending_zeros += lead as u64;
            if lead == data.len() {
                return;
            }
            i = lead;
            self.settle_zeros();
        }
        let end = data
            .iter()
            .rposition(|&b| b != 0)
            .map_or(i, |last| last + 1)
            .max(i);
        // The first byte of `data` not yet hashed.
        let mut mark = i;
        while i < end {
            let hole = find_hole(&data[i..end]).map(|(start, stop)| (i + start, i + stop));
            let rolled_to = hole.map_or(end, |(start, _)| start);
            while i < rolled_to {
                let (rolled, split) = self.sum.roll_until_split(&data[i..rolled_to]);
                i += rolled;
                self.position += rolled as u64;
                if split {
                    self.absorb(&data[mark..i]);
                    mark = i;
                    self.cut();
                }
            }
            if let Some((start, stop)) = hole {
                self.absorb(&data[mark..start]);
                self.pending_zeros = (stop - start) as u64;
                self.settle_zeros();
                i = stop;
                mark = stop;
            }
        }
        self.absorb(&data[mark..end]);
        self.pending_zeros = (data.len() - end) as u64;
    }

    /// Ends the file: its sha256 and its chunks, in order, tiling the content.
    pub fn finish(mut self) -> ([u8; 32], Vec<ContentChunk>) {
        self.settle_zeros();
        self.cut();
        (self.file.finish(), self.chunks)
    }
}

/// The first run of at least [`HOLE_THRESHOLD`] zero bytes in `data`: (start, end). Such a
/// run holds at least 127 whole aligned 8-byte words of zeros, so words are scanned and only
/// candidates are measured byte by byte.
fn find_hole(data: &[u8]) -> Option<(usize, usize)> {
    const WORD: usize = 8;
    const MIN_WORDS: usize = (HOLE_THRESHOLD as usize - 2 * (WORD - 1)) / WORD;
    let words = data.len() / WORD;
    let mut zero_words = 0;
    let mut w = 0;
    while w < words {
        let word = u64::from_ne_bytes(data[w * WORD..(w + 1) * WORD].try_into().expect("8 bytes"));
        w += 1;
        if word != 0 {
            zero_words = 0;
            continue;
        }
        zero_words += 1;
        if zero_words < MIN_WORDS {
            continue;
        }
        let mut start = (w - zero_words) * WORD;
        while start > 0 && data[start - 1] == 0 {
            start -= 1;
        }
        let mut stop = w * WORD;
        while stop < data.len() && data[stop] == 0 {
            stop += 1;
        }
        if (stop - start) as u64 >= HOLE_THRESHOLD {
            return Some((start, stop));
        }
        // A run just short of a hole: look on after it.
        zero_words = 0;
        w = stop.div_ceil(WORD);
    }
    None
}

/// The chunks of a file's content: (offset, length, is a hole).
pub fn chunk_boundaries(data: &[u8]) -> Vec<(usize, usize, bool)> {
    let mut chunker = Chunker::new();
    chunker.update(data);
    let (_, chunks) = chunker.finish();
    chunks
        .into_iter()
        .map(|c| (c.offset as usize, c.size as usize, c.sha256.is_none()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The batch reference: the rule of the module documentation, byte by byte.
    fn reference(data: &[u8]) -> Vec<(usize, usize, bool)> {
        let mut out = Vec::new();
        let mut sum = RollSum::new();
        let (mut start, mut i) = (0, 0);
        while i < data.len() {
            if data[i] == 0 {
                let run = data[i..].iter().take_while(|&&b| b == 0).count();
                if run as u64 >= HOLE_THRESHOLD {
                    if i > start {
                        out.push((start, i - start, false));
                    }
                    for _ in 0..run {
                        sum.roll(0);
                    }
                    out.push((i, run, true));
                    i += run;
                    start = i;
                    continue;
                }
            }
            sum.roll(data[i]);
            i += 1;
            if sum.on_split() {
                out.push((start, i - start, false));
                start = i;
            }
        }
        if i > start {
            out.push((start, i - start, false));
        }
        out
    }

    fn with_holes(seed: u64) -> Vec<u8> {
        let mut data = noise(300_000, seed);
        data.extend(std::iter::repeat_n(0u8, HOLE_THRESHOLD as usize));
        data.extend(noise(10, seed + 1));
        data.extend(std::iter::repeat_n(0u8, HOLE_THRESHOLD as usize - 1));
        data.extend(noise(200_000, seed + 2));
        data.extend(std::iter::repeat_n(0u8, 100_000));
        data
    }

    #[test]
    fn chunks_tile_the_content_and_holes_stand_alone() {
        let data = with_holes(0);
        let chunks = chunk_boundaries(&data);
        assert_eq!(chunks, reference(&data));
        let mut next = 0;
        for &(start, len, _) in &chunks {
            assert_eq!(start, next);
            assert!(len > 0);
            next = start + len;
        }
        assert_eq!(next, data.len());
        assert!(chunks.len() > 4, "500 KB of noise is cut: {chunks:?}");
        let holes: Vec<_> = chunks.iter().filter(|c| c.2).collect();
        assert_eq!(
            holes,
            [
                &(300_000, HOLE_THRESHOLD as usize, true),
                &(data.len() - 100_000, 100_000, true)
            ]
        );
        assert!(chunk_boundaries(&[]).is_empty());
    }

    #[test]
    fn pieces_of_any_size_give_the_same_chunks_and_digests() {
        let data = with_holes(7);
        let mut whole = Chunker::new();
        whole.update(&data);
        let (sha, chunks) = whole.finish();
        assert_eq!(sha, openssl::sha::sha256(&data));
        for c in &chunks {
            let bytes = &data[c.offset as usize..(c.offset + c.size) as usize];
            match c.sha256 {
                Some(d) => assert_eq!(d, openssl::sha::sha256(bytes)),
                None => assert!(bytes.iter().all(|&b| b == 0)),
            }
        }
        for piece in [1, 7, 512, 1023, 1024, 4096, 65_537] {
            let mut fed = Chunker::new();
            for p in data.chunks(piece) {
                fed.update(p);
            }
            assert_eq!(fed.finish(), (sha, chunks.clone()), "pieces of {piece}");
        }
    }

    #[test]
    fn zero_runs_around_the_hole_threshold_at_every_alignment() {
        for len in 1000..1040 {
            for align in 0..9 {
                let mut data = noise(align + 5, 0);
                data.extend(std::iter::repeat_n(0u8, len));
                data.extend(noise(70_000, len as u64 + 1));
                data.extend(std::iter::repeat_n(0u8, len));
                assert_eq!(
                    chunk_boundaries(&data),
                    reference(&data),
                    "{len} at {align}"
                );
                let mut fed = Chunker::new();
                for p in data.chunks(4096 + align) {
                    fed.update(p);
                }
                let cut: Vec<_> = fed
                    .finish()
                    .1
                    .iter()
                    .map(|c| (c.offset as usize, c.size as usize, c.sha256.is_none()))
                    .collect();
                assert_eq!(cut, reference(&data), "{len} at {align}, in pieces");
            }
        }
    }

    #[test]
    fn a_file_of_one_chunk_has_the_file_digest() {
        let data = noise(100, 3);
        let mut c = Chunker::new();
        c.update(&data);
        let (sha, chunks) = c.finish();
        assert_eq!(
            chunks,
            [ContentChunk {
                offset: 0,
                size: 100,
                sha256: Some(sha)
            }]
        );
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn streaming_matches_the_reference(
            parts in proptest::collection::vec((0u8..4, 1usize..3000, any::<u64>()), 0..12),
            piece in 1usize..5000,
        ) {
            // Noise and zero runs of every length around the hole threshold.
            let mut data = Vec::new();
            for (kind, len, seed) in parts {
                if kind == 0 {
                    data.extend(std::iter::repeat_n(0u8, len));
                } else {
                    data.extend(noise(len * 40, seed));
                }
            }
            let mut fed = Chunker::new();
            for p in data.chunks(piece) {
                fed.update(p);
            }
            let (sha, chunks) = fed.finish();
            prop_assert_eq!(sha, openssl::sha::sha256(&data));
            let cut: Vec<_> = chunks
                .iter()
                .map(|c| (c.offset as usize, c.size as usize, c.sha256.is_none()))
                .collect();
            prop_assert_eq!(cut, reference(&data));
            for c in &chunks {
                if let Some(d) = c.sha256 {
                    prop_assert_eq!(d, openssl::sha::sha256(&data[c.offset as usize..(c.offset + c.size) as usize]));
                }
            }
        }
    }
}
