//! Paths inside an image: tar entry names and link targets, cleaned and confined to the root.
//!
//! A name is taken relative to the image root whether or not it starts with `/`; `.` and empty
//! components are dropped; `..` removes the previous component and may never climb above the
//! root (containers/storage refuses such layers too).

/// Deepest path accepted, in components below the root. composefs walks the trees it builds,
/// merges and writes as EROFS by recursion, one stack frame a level: on a thread of the default
/// 2 MiB, 5,000 levels overflowed it, and cfsctl 0.9.4 (on its 8 MiB main thread) imports 20,000
/// levels and aborts at 25,000. The steps that walk a tree run on [`on_tree_stack`], sized for
/// this depth. Real images stay far below: PATH_MAX (4096 bytes) allows 2048 levels.
pub const MAX_PATH_DEPTH: usize = 32_768;

/// Stack of a thread that builds, writes or drops a tree of [`MAX_PATH_DEPTH`] levels: composefs
/// needs about 500 bytes a level (2 MiB held 4,000 levels); this allows 2 KiB a level, and 8 MiB
/// for the rest. Only the pages used are ever touched.
pub const TREE_STACK_BYTES: usize = 2 * 1024 * MAX_PATH_DEPTH + 8 * 1024 * 1024;

/// Runs `f` on a thread of [`TREE_STACK_BYTES`] of stack and waits for it: for the steps where
/// composefs recurses over a tree (building, merging and writing an image, dropping a tree).
pub fn on_tree_stack<T: Send>(f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("skiff-tree".into())
            .stack_size(TREE_STACK_BYTES)
            .spawn_scoped(scope, f)?;
        Ok(thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

/// Why a path cannot name anything inside the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `..` component climbs above the image root.
    #[error("the path leaves the image root")]
    EscapesRoot,
    /// The name contains a NUL byte.
    #[error("the path contains a NUL byte")]
    Nul,
    /// More components than [`MAX_PATH_DEPTH`].
    #[error("the path is more than {MAX_PATH_DEPTH} directories deep")]
    TooDeep,
}

/// Cleans `name` into its components below the root (empty for the root itself).
pub fn normalize_entry_path(name: &[u8]) -> Result<Vec<&[u8]>, PathError> {
    if name.contains(&0) {
        return Err(PathError::Nul);
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop().ok_or(PathError::EscapesRoot)?;
            }
            other => {
                if parts.len() == MAX_PATH_DEPTH {
                    return Err(PathError::TooDeep);
                }
                parts.push(other)
            }
        }
    }
    Ok(parts)
}

/// Bytes of a long path shown at each end in a message.
const SHOWN_PATH_END: usize = 64;

/// A path for an error message, lossily decoded: whole when short, else its first and last
/// bytes around the count of those left out (a hostile tar's names reach a megabyte).
pub fn shown_path(name: &[u8]) -> String {
    if name.len() <= 3 * SHOWN_PATH_END {
        return String::from_utf8_lossy(name).into_owned();
    }
    let (head, tail) = (
        &name[..SHOWN_PATH_END],
        &name[name.len() - SHOWN_PATH_END..],
    );
    format!(
        "{}[... {} bytes ...]{}",
        String::from_utf8_lossy(head),
        name.len() - 2 * SHOWN_PATH_END,
        String::from_utf8_lossy(tail)
    )
}

/// Cleans `name` into the absolute form composefs uses for tar entries: `/a/b`, or an empty
/// path for the root.
pub fn absolute_entry_path(name: &[u8]) -> Result<std::path::PathBuf, PathError> {
    use std::os::unix::ffi::OsStringExt;
    let parts = normalize_entry_path(name)?;
    let mut out = Vec::with_capacity(name.len() + 1);
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    Ok(std::ffi::OsString::from_vec(out).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_and_confines() {
        let ok: &[(&[u8], &str)] = &[
            (b"a/b", "/a/b"),
            (b"/a/b/", "/a/b"),
            (b"./a//./b", "/a/b"),
            (b"a/../b", "/b"),
            (b"./", ""),
            (b"/", ""),
        ];
        for (input, want) in ok {
            assert_eq!(
                absolute_entry_path(input).unwrap().to_str().unwrap(),
                *want,
                "{input:?}"
            );
        }
        for bad in [&b"../x"[..], b"/../etc/passwd", b"a/../../b", b".."] {
            assert_eq!(
                normalize_entry_path(bad),
                Err(PathError::EscapesRoot),
                "{bad:?}"
            );
        }
        assert_eq!(normalize_entry_path(b"a\0b"), Err(PathError::Nul));
    }

    #[test]
    fn depth_is_bounded() {
        let deepest = "d/".repeat(MAX_PATH_DEPTH);
        assert_eq!(
            normalize_entry_path(deepest.as_bytes()).unwrap().len(),
            MAX_PATH_DEPTH
        );
        let deeper = format!("{deepest}x");
        assert_eq!(
            normalize_entry_path(deeper.as_bytes()),
            Err(PathError::TooDeep)
        );
        // `..` takes levels back before they count.
        let back = format!("{deepest}../x");
        assert!(normalize_entry_path(back.as_bytes()).is_ok());
    }

    #[test]
    fn long_paths_are_shortened_for_messages() {
        assert_eq!(shown_path(b"a/b"), "a/b");
        let long = "ab/".repeat(1000);
        let shown = shown_path(long.as_bytes());
        assert!(shown.len() < 200, "{shown}");
        assert!(shown.contains("[... 2872 bytes ...]"), "{shown}");
    }
}
