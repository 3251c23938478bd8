//! A filesystem of its own for a test: an XFS image with reflinks, loop-mounted (root only),
//! unmounted and deleted when dropped. Tests that measure what clones share use it: the machine's
//! own filesystem (ext4 here) cannot clone.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::tools::{require, run};

/// A mounted XFS filesystem.
#[derive(Debug)]
pub struct LoopXfs {
    image: PathBuf,
    mount: PathBuf,
}

impl LoopXfs {
    /// Makes an XFS of `size_mib` MiB with reflinks in `dir/xfs.img` and mounts it at `dir/mnt`.
    pub fn new(dir: &Path, size_mib: u64) -> Result<Self> {
        let image = dir.join("xfs.img");
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount)?;
        std::fs::File::create(&image)?.set_len(size_mib * 1024 * 1024)?;
        run(Command::new(require("mkfs.xfs"))
            .args(["-q", "-m", "reflink=1"])
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount))
        .context("mounting the XFS image (needs root and loop devices)")?;
        Ok(Self { image, mount })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Bytes in use (statvfs: blocks less free blocks).
    pub fn used_bytes(&self) -> Result<u64> {
        let st = rustix::fs::statvfs(&self.mount)?;
        Ok((st.f_blocks - st.f_bfree) * st.f_frsize)
    }
}

impl Drop for LoopXfs {
    fn drop(&mut self) {
        // Lazily: a podman mount below it may take a moment to go.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = std::fs::remove_file(&self.image);
    }
}
