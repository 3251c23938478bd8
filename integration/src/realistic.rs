//! The realistic benchmark images: what users pull, built on the machine from real packages.
//!
//! Two layers, as a `FROM debian` + `pip install` Containerfile makes them:
//! 1. the base: Debian bookworm `debootstrap --variant=minbase`, apt's caches and lists removed;
//! 2. a Python data-science site-packages (numpy, scipy, pandas, matplotlib, scikit-learn,
//!    pillow and their dependencies), installed from PyPI's manylinux wheels with
//!    `pip install --target /usr/local/lib/python3.11/site-packages`.
//!
//! `v1` and `v2` share the base layer; v2's site-packages has newer pandas, scikit-learn,
//! matplotlib, pillow and fonttools (the rest unchanged), which is what an application image's
//! update looks like. Layer tars are written by GNU tar (PAX format, names sorted, no atime or
//! ctime, mtimes clamped to 2024-01-01), so a rebuild gives the same bytes and files unchanged
//! between v1 and v2 have the same headers.
//!
//! Everything is cached under the directory given to [`ensure`] (the base tree, the two
//! site-packages trees, the layer tars), since debootstrap and pip need the network and the
//! compressions take a while; a step interrupted half way leaves a `.tmp` that the next run
//! removes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::fixtures::{self, Compression};
use crate::tools::{require, run};

/// The Debian suite of the base layer.
const SUITE: &str = "bookworm";
/// Where debootstrap downloads the base packages.
const MIRROR: &str = "http://deb.debian.org/debian";
/// Where the wheels go in the image (the Python of bookworm is 3.11, as is the wheels' ABI).
const SITE_PACKAGES: &str = "usr/local/lib/python3.11/site-packages";

/// Wheels of v1's site-packages (pinned; all cp311 manylinux or pure Python).
const V1_WHEELS: &[&str] = &[
    "numpy==1.26.4",
    "scipy==1.11.4",
    "pandas==2.1.4",
    "matplotlib==3.8.2",
    "scikit-learn==1.3.2",
    "pillow==10.1.0",
    "contourpy==1.2.0",
    "fonttools==4.47.0",
    "kiwisolver==1.4.5",
    "pyparsing==3.1.1",
    "cycler==0.12.1",
    "python-dateutil==2.8.2",
    "pytz==2023.3.post1",
    "tzdata==2023.4",
    "six==1.16.0",
    "joblib==1.3.2",
    "threadpoolctl==3.2.0",
    "packaging==23.2",
];

/// v2's changes to [`V1_WHEELS`]: (package, new pin).
const V2_UPGRADES: &[(&str, &str)] = &[
    ("pandas", "pandas==2.2.0"),
    ("scikit-learn", "scikit-learn==1.4.0"),
    ("matplotlib", "matplotlib==3.8.3"),
    ("pillow", "pillow==10.2.0"),
    ("fonttools", "fonttools==4.48.1"),
];

/// The wheels of `version` (1 or 2).
fn wheels(version: u8) -> Vec<&'static str> {
    V1_WHEELS
        .iter()
        .map(|pin| {
            let name = pin.split("==").next().unwrap_or(pin);
            match V2_UPGRADES.iter().find(|(n, _)| *n == name) {
                Some((_, new)) if version == 2 => *new,
                _ => *pin,
            }
        })
        .collect()
}

/// The built images: one OCI layout holding every variant.
#[derive(Debug, Clone)]
pub struct RealisticImages {
    /// The layout. Tags: `v1` and `v2` (gzip, as built), `v1-zstd`, `v1-chunked` and
    /// `v2-chunked` (recompressed by containers/image, `skiff-peer-copy`).
    pub layout: PathBuf,
    /// Uncompressed bytes of v1's layers.
    pub v1_tar_bytes: u64,
    /// Regular files in v1.
    pub v1_files: u64,
}

impl RealisticImages {
    /// `oci:LAYOUT:TAG`.
    pub fn oci_ref(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.layout.display())
    }
}

/// Builds what is missing of the realistic images under `cache` and returns them.
pub fn ensure(cache: &Path) -> Result<RealisticImages> {
    std::fs::create_dir_all(cache)?;
    let base = cached_dir(cache, "base-root", debootstrap)?;
    let base_tar = cached_file(cache, "base.tar", |out| layer_tar(&base, out))?;
    let mut site_tars = Vec::new();
    for version in [1u8, 2] {
        let root = cached_dir(cache, &format!("site-v{version}-root"), |dir| {
            pip_install(dir, &wheels(version))
        })?;
        site_tars.push(cached_file(
            cache,
            &format!("site-v{version}.tar"),
            |out| layer_tar(&root, out),
        )?);
    }
    let layout = cache.join("layout");
    let done = cache.join("layout.done");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&layout);
        for (version, site) in [(1u8, &site_tars[0]), (2, &site_tars[1])] {
            eprintln!("realistic image: writing v{version} (gzip)");
            write_gzip_image(&layout, &format!("v{version}"), &[&base_tar, site])?;
        }
        for (from, to, format) in [
            ("v1", "v1-zstd", "zstd"),
            ("v1", "v1-chunked", "zstd:chunked"),
            ("v2", "v2-chunked", "zstd:chunked"),
        ] {
            eprintln!("realistic image: {to} ({format}, by containers/image)");
            run(crate::tools::peer_copy()
                .args(["--dest-compress-format", format])
                .arg(format!("oci:{}:{from}", layout.display()))
                .arg(format!("oci:{}:{to}", layout.display())))?;
        }
        std::fs::write(&done, b"")?;
    }
    let (v1_tar_bytes, v1_files) = tar_figures(&[&base_tar, &site_tars[0]])?;
    Ok(RealisticImages {
        layout,
        v1_tar_bytes,
        v1_files,
    })
}

/// `cache/name`, made by `make` into `cache/name.tmp` first when missing.
fn cached_dir(cache: &Path, name: &str, make: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let dir = cache.join(name);
    if !dir.exists() {
        let tmp = cache.join(format!("{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        eprintln!("realistic image: building {name}");
        make(&tmp).with_context(|| format!("building {name}"))?;
        std::fs::rename(&tmp, &dir)?;
    }
    Ok(dir)
}

/// `cache/name`, written by `make` into `cache/name.tmp` first when missing.
fn cached_file(
    cache: &Path,
    name: &str,
    make: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let file = cache.join(name);
    if !file.exists() {
        let tmp = cache.join(format!("{name}.tmp"));
        make(&tmp).with_context(|| format!("writing {name}"))?;
        std::fs::rename(&tmp, &file)?;
    }
    Ok(file)
}

/// A bookworm minbase tree in `dir`, without apt's caches and package lists (as images are
/// published).
fn debootstrap(dir: &Path) -> Result<()> {
    run(Command::new(require("debootstrap"))
        .args(["--variant=minbase", SUITE])
        .arg(dir)
        .arg(MIRROR))?;
    for emptied in ["var/cache/apt", "var/lib/apt/lists"] {
        let path = dir.join(emptied);
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if entry.file_name() != "partial" && entry.file_name() != "archives" {
                    std::fs::remove_dir_all(entry.path())?;
                }
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    let archives = dir.join("var/cache/apt/archives");
    if archives.exists() {
        for entry in std::fs::read_dir(&archives)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}

/// `wheels` installed into `dir/`[`SITE_PACKAGES`] (no dependencies resolved: the list is
/// complete; no byte-compiling, whose output holds the time).
fn pip_install(dir: &Path, wheels: &[&str]) -> Result<()> {
    let target = dir.join(SITE_PACKAGES);
    std::fs::create_dir_all(&target)?;
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-compile",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux2014_x86_64",
            "--implementation",
            "cp",
            "--target",
        ])
        .arg(&target)
        .args(wheels))?;
    Ok(())
}

/// The tar of the tree `root` (its entries, not `root` itself), as GNU tar writes it with
/// stable bytes: PAX format without atime and ctime, names sorted, numeric owners, mtimes no
/// later than 2024-01-01.
fn layer_tar(root: &Path, out: &Path) -> Result<()> {
    let mut top: Vec<_> = std::fs::read_dir(root)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    top.sort();
    run(Command::new("tar")
        .arg("-C")
        .arg(root)
        .args([
            "--format=pax",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "--sort=name",
            "--numeric-owner",
            "--mtime=2024-01-01 00:00:00Z",
            "--clamp-mtime",
            "-cf",
        ])
        .arg(out)
        .arg("--")
        .args(&top))?;
    Ok(())
}

/// Writes the image of the layer tars `tars` (gzip-compressed by `gzip -n`, default level, as
/// container builders compress) into `layout` under `tag`.
fn write_gzip_image(layout: &Path, tag: &str, tars: &[&Path]) -> Result<()> {
    let mut blobs = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in tars {
        let bytes = std::fs::read(tar)?;
        diff_ids.push(fixtures::digest(&bytes));
        drop(bytes);
        let out = Command::new("gzip")
            .args(["-n", "-c"])
            .arg(tar)
            .output()
            .context("running gzip")?;
        if !out.status.success() {
            bail!("gzip {} failed", tar.display());
        }
        blobs.push((
            fixtures::media_type(Compression::Gzip).to_owned(),
            out.stdout,
        ));
    }
    fixtures::write_image_raw(layout, tag, &blobs, &diff_ids, fixtures::native_arch())?;
    Ok(())
}

/// Total bytes and regular files of the tars `tars`.
fn tar_figures(tars: &[&Path]) -> Result<(u64, u64)> {
    let mut bytes = 0;
    let mut files = 0;
    for path in tars {
        bytes += std::fs::metadata(path)?.len();
        let mut archive = tar::Archive::new(std::fs::File::open(path)?);
        for entry in archive.entries()? {
            if entry?.header().entry_type().is_file() {
                files += 1;
            }
        }
    }
    Ok((bytes, files))
}

/// The database update images: one layer holding an rpm-style SQLite database
/// (`var/lib/rpm/rpmdb.sqlite`, [`DB_BYTES`]), v2 the same database after a transaction that
/// rewrote rows on about 1% of its pages, as an OS update does to the rpm database.
#[derive(Debug)]
pub struct DatabaseImages {
    /// The layout. Tags: `v1` and `v2` (gzip), `v1-chunked` and `v2-chunked` (by
    /// containers/image).
    pub layout: PathBuf,
    /// The database file of each version.
    pub db: [Vec<u8>; 2],
    /// Pages of the database, and pages that differ between the versions.
    pub pages: (usize, usize),
}

/// Size the database grows to (64 MiB).
const DB_BYTES: u64 = 64 << 20;
/// Path of the database in the image.
pub const DB_PATH: &str = "var/lib/rpm/rpmdb.sqlite";

/// Builds (once, under `cache/database`) the database update images with the `sqlite3` CLI.
pub fn ensure_database(cache: &Path) -> Result<DatabaseImages> {
    let dir = cache.join("database");
    std::fs::create_dir_all(&dir)?;
    let v1 = cached_file(&dir, "v1.sqlite", |out| sqlite(out, &database_rows().0))?;
    let v2 = cached_file(&dir, "v2.sqlite", |out| {
        std::fs::copy(&v1, out)?;
        sqlite(out, &database_update(std::fs::metadata(&v1)?.len()))
    })?;
    let db = [std::fs::read(&v1)?, std::fs::read(&v2)?];
    let page = 4096;
    let pages = db[0].len() / page;
    let changed = db[0]
        .chunks(page)
        .zip(db[1].chunks(page))
        .filter(|(a, b)| a != b)
        .count()
        + db[1].len().saturating_sub(db[0].len()) / page;
    let layout = dir.join("layout");
    let done = dir.join("layout.done");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&layout);
        for (i, content) in db.iter().enumerate() {
            let mut layer = fixtures::Layer::default();
            layer
                .add("var/", fixtures::dir())
                .add("var/lib/", fixtures::dir())
                .add("var/lib/rpm/", fixtures::dir())
                .add(DB_PATH, fixtures::file(content.clone()));
            fixtures::write_oci_layout(
                &layout,
                &format!("v{}", i + 1),
                &[layer],
                Compression::Gzip,
            )?;
        }
        for (from, to) in [("v1", "v1-chunked"), ("v2", "v2-chunked")] {
            run(crate::tools::peer_copy()
                .args(["--dest-compress-format", "zstd:chunked"])
                .arg(format!("oci:{}:{from}", layout.display()))
                .arg(format!("oci:{}:{to}", layout.display())))?;
        }
        std::fs::write(&done, b"")?;
    }
    Ok(DatabaseImages {
        layout,
        db,
        pages: (pages, changed),
    })
}

/// Runs the SQL `script` on the database `db` with the `sqlite3` CLI.
fn sqlite(db: &Path, script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new(require("sqlite3"))
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("sqlite3 stdin")?
        .write_all(script.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("sqlite3 {} failed: {status}", db.display());
    }
    Ok(())
}

/// A package header of `len` bytes: text, as rpm's file lists and descriptions mostly are.
fn header_text(seed: u64, len: usize) -> String {
    String::from_utf8(fixtures::text(seed, len)).expect("fixtures text is ASCII")
}

/// Rows of an rpm-like database: a Packages table of headers (1 to 3 KiB) and a Name index,
/// up to [`DB_BYTES`]; and the number of rows.
fn database_rows() -> (String, u64) {
    let mut sql = String::from(
        "PRAGMA page_size=4096;\nBEGIN;\nCREATE TABLE Packages (hnum INTEGER PRIMARY KEY, \
         name TEXT, header TEXT);\nCREATE INDEX Name ON Packages(name);\n",
    );
    let mut total = 0u64;
    let mut n = 0u64;
    // Headers take about 45/64 of the file; the rest is the index, page headers and slack.
    while total < DB_BYTES * 45 / 64 {
        n += 1;
        let len = 1024 + (fixtures::noise(n, 2)[0] as usize * 8);
        total += len as u64 + 40;
        sql.push_str(&format!(
            "INSERT INTO Packages VALUES ({n}, 'package-{n:06}', '{}');\n",
            header_text(n, len)
        ));
    }
    sql.push_str("COMMIT;\n");
    (sql, n)
}

/// The update: rows spread over the database rewritten in place (same sizes), one per 100
/// pages of a database of `bytes`.
fn database_update(bytes: u64) -> String {
    let pages = bytes / 4096;
    let rows = database_rows().1;
    let mut sql = String::from("BEGIN;\n");
    for (i, pick) in fixtures::noise(0xDB, (pages / 100) as usize * 8)
        .chunks(8)
        .enumerate()
    {
        let row = u64::from_le_bytes(pick.try_into().expect("8 bytes")) % rows + 1;
        let len = 1024 + (fixtures::noise(row, 2)[0] as usize * 8);
        sql.push_str(&format!(
            "UPDATE Packages SET header = '{}' WHERE hnum = {row};\n",
            header_text(row ^ (0xF00D + i as u64), len)
        ));
    }
    sql.push_str("COMMIT;\n");
    sql
}
