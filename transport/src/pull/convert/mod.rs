//! Layer converters: each takes a layer's bytes (a blob stream, byte ranges of a blob, or a
//! delta blob plus the files of an image the store holds) and returns a verified pending layer,
//! not yet named in the store.
//!
//! - [`full`]: a compressed layer blob, streamed;
//! - [`chunked`]: a zstd:chunked layer rebuilt from stored files, stored chunks
//!   ([`stored_chunks`]) and byte ranges of the blob;
//! - [`delta`]: a tar-diff applied to the files of the delta's source image
//!   ([`source_files`]).

pub(crate) mod chunked;
pub(crate) mod delta;
pub(crate) mod full;
pub(crate) mod source_files;
pub(crate) mod stored_chunks;
