//! How containers/storage cuts a regular file's content into zstd:chunked chunks (see the
//! [module format](super)).
//!
//! A bup-style rolling checksum (window 64, character offset 31) runs over the content, restarted
//! for each file; a chunk ends after the byte where the low 16 bits of the checksum are all ones
//! (64 KiB on average). A run of at least 1 KiB of zero bytes is a chunk of its own, of type
//! `zeros` (the checksum still rolls over it); shorter runs are ordinary data. The same
//! boundaries, with the same digests, are what a TOC lists for the file.

/// A run of this many zero bytes or more is a hole (`zeros` chunk).
const HOLE_THRESHOLD: usize = 1024;
/// Rolling checksum window.
const WINDOW: usize = 64;
/// Rolling checksum character offset.
const CHAR_OFFSET: u32 = 31;
/// A chunk ends where the low bits of the checksum are all ones (average chunk 64 KiB).
const SPLIT_MASK: u32 = (1 << 16) - 1;

/// bup/perkeep's rolling checksum.
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

    fn roll(&mut self, ch: u8) {
        let drop = self.window[self.wofs] as u32;
        self.s1 = self.s1.wrapping_add(ch as u32).wrapping_sub(drop);
        self.s2 = self
            .s2
            .wrapping_add(self.s1)
            .wrapping_sub((WINDOW as u32).wrapping_mul(drop + CHAR_OFFSET));
        self.window[self.wofs] = ch;
        self.wofs = (self.wofs + 1) % WINDOW;
    }

    fn on_split(&self) -> bool {
        self.s2 & SPLIT_MASK == SPLIT_MASK
    }
}

/// The chunks of a file's content: (offset, length, is a hole).
pub fn chunk_boundaries(data: &[u8]) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    let mut sum = RollSum::new();
    let mut start = 0;
    let mut i = 0;
    while i < data.len() {
        if data[i] == 0 {
            let run = data[i..].iter().take_while(|&&b| b == 0).count();
            if run >= HOLE_THRESHOLD {
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
            for _ in 0..run {
                sum.roll(0);
                i += 1;
                if sum.on_split() {
                    out.push((start, i - start, false));
                    start = i;
                }
            }
            continue;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_tile_the_content_and_holes_stand_alone() {
        let mut data = noise(300_000);
        data.extend(std::iter::repeat_n(0u8, HOLE_THRESHOLD));
        data.extend(noise(10));
        data.extend(std::iter::repeat_n(0u8, HOLE_THRESHOLD - 1));
        data.extend(noise(10));
        let chunks = chunk_boundaries(&data);
        let mut next = 0;
        for &(start, len, _) in &chunks {
            assert_eq!(start, next);
            assert!(len > 0);
            next = start + len;
        }
        assert_eq!(next, data.len());
        assert!(chunks.len() > 2, "300 KB of noise is cut: {chunks:?}");
        let holes: Vec<_> = chunks.iter().filter(|c| c.2).collect();
        assert_eq!(holes, [&(300_000, HOLE_THRESHOLD, true)]);
        assert!(chunk_boundaries(&[]).is_empty());
    }
}
