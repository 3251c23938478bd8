//! A filesystem of its own for a test or a benchmark, loop-mounted (root only), unmounted and
//! deleted when dropped:
//! - XFS with reflinks, for tests that measure what clones share (the machine's own filesystem,
//!   ext4 here, cannot clone);
//! - a new ext4, for benchmarks: on a filesystem where thousands of files were just deleted,
//!   ext4 skips each inode freed in the last minute (up to six when its block is still dirty)
//!   when it allocates one, so that creating files costs many times more than on a fresh one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::tools::{require, run};

/// A mounted loop filesystem.
#[derive(Debug)]
pub struct LoopFs {
    image: PathBuf,
    mount: PathBuf,
}

impl LoopFs {
    /// Makes an XFS of `size_mib` MiB with reflinks in `dir/xfs.img` and mounts it at `dir/mnt`.
    pub fn xfs(dir: &Path, size_mib: u64) -> Result<Self> {
        Self::make(dir, "xfs", size_mib, &["mkfs.xfs", "-q", "-m", "reflink=1"])
    }

    /// Makes an ext4 of `size_mib` MiB (a sparse image) in `dir/ext4.img` and mounts it at
    /// `dir/mnt`.
    pub fn ext4(dir: &Path, size_mib: u64) -> Result<Self> {
        Self::make(dir, "ext4", size_mib, &["mkfs.ext4", "-q", "-F"])
    }

    fn make(dir: &Path, kind: &str, size_mib: u64, mkfs: &[&str]) -> Result<Self> {
        let image = dir.join(format!("{kind}.img"));
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount)?;
        std::fs::File::create(&image)?.set_len(size_mib * 1024 * 1024)?;
        run(Command::new(require(mkfs[0])).args(&mkfs[1..]).arg(&image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount))
        .with_context(|| format!("mounting the {kind} image (needs root and loop devices)"))?;
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

impl Drop for LoopFs {
    fn drop(&mut self) {
        // Lazily: a podman mount below it may take a moment to go.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = std::fs::remove_file(&self.image);
    }
}
