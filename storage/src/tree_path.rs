//! Paths inside an image: tar entry names and link targets, cleaned and confined to the root.
//!
//! A name is taken relative to the image root whether or not it starts with `/`; `.` and empty
//! components are dropped; `..` removes the previous component and may never climb above the
//! root (containers/storage refuses such layers too).

/// Why a path cannot name anything inside the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `..` component climbs above the image root.
    #[error("the path leaves the image root")]
    EscapesRoot,
    /// The name contains a NUL byte.
    #[error("the path contains a NUL byte")]
    Nul,
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
            other => parts.push(other),
        }
    }
    Ok(parts)
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
}
