//! Where a containers-storage image is: the store (graph root, driver, read-only image stores)
//! as c/storage finds it, and the image the reference names in it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use skiff_storage::OciDigest;

use crate::options::SourceOptions;
use crate::podman::storage_conf;
use crate::reference::docker::is_image_id;

/// Rootless podman's graph root below `$XDG_DATA_HOME` (or `~/.local/share`).
const ROOTLESS_GRAPHROOT: &str = "containers/storage";

/// Where a store lies: from the reference's `[driver@root+runroot]`, else `--storage-root`,
/// else storage.conf, else c/storage's default.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageLocation {
    /// The graph driver (`overlay` is the one read natively).
    pub(crate) driver: String,
    /// The graph root.
    pub(crate) root: PathBuf,
    /// The run root (not read here; named to skopeo when the image is read through it).
    pub(crate) run_root: PathBuf,
    /// Read-only image stores searched after the root (`STORAGE_OPTS`' `additionalimagestore=`).
    pub(crate) image_stores: Vec<PathBuf>,
}

/// A `containers-storage:` reference split into its store and its image: `[SPEC]IMAGE` where
/// SPEC is `driver@root+runroot:options` (each part but root optional) and IMAGE is
/// `NAME[:TAG]`, `NAME@DIGEST`, an image ID, `@ID` or `NAME@ID`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageRef {
    pub(crate) driver: Option<String>,
    pub(crate) root: Option<PathBuf>,
    pub(crate) run_root: Option<PathBuf>,
    /// The image part, as written.
    pub(crate) image_text: String,
    pub(crate) image: ImageSpec,
}

/// Which image of the store a reference names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ImageSpec {
    /// By name (`localhost/app:v1`; `:latest` when no tag is given).
    Name(String),
    /// By manifest digest, optionally with a name.
    Digest(Option<String>, OciDigest),
    /// By image ID (the config digest's hex).
    Id(String),
}

impl StorageRef {
    pub(crate) fn parse(spec: &str) -> Result<Self> {
        let (driver, root, run_root, image) = match spec.strip_prefix('[') {
            Some(rest) => {
                let (store, image) = rest.split_once(']').with_context(|| {
                    format!("containers-storage:{spec}: the store specification has no closing ]")
                })?;
                // `:options` (graph driver options) follow the paths; they do not move the store.
                let store = store.split_once(':').map_or(store, |(s, _)| s);
                let (driver, paths) = match store.split_once('@') {
                    Some((d, p)) => (Some(d.to_owned()).filter(|d| !d.is_empty()), p),
                    None => (None, store),
                };
                let (root, run_root) = match paths.split_once('+') {
                    Some((r, run)) => (r, Some(PathBuf::from(run)).filter(|p| p.is_absolute())),
                    None => (paths, None),
                };
                if root.is_empty() || !root.starts_with('/') {
                    bail!("containers-storage:{spec}: the store's root must be an absolute path");
                }
                (driver, Some(PathBuf::from(root)), run_root, image)
            }
            None => (None, None, None, spec),
        };
        let spec_of_image = if let Some(id) = image.strip_prefix('@') {
            if !is_image_id(id) {
                bail!("containers-storage:{spec}: {id:?} is not an image ID (64 hex digits)");
            }
            ImageSpec::Id(id.to_owned())
        } else if is_image_id(image) {
            ImageSpec::Id(image.to_owned())
        } else if let Some((name, at)) = image.split_once('@') {
            if is_image_id(at) {
                ImageSpec::Id(at.to_owned())
            } else {
                let digest: OciDigest = at
                    .parse()
                    .with_context(|| format!("containers-storage:{spec}: bad digest {at:?}"))?;
                ImageSpec::Digest(Some(name.to_owned()).filter(|n| !n.is_empty()), digest)
            }
        } else if image.is_empty() {
            bail!("containers-storage:{spec}: no image named");
        } else {
            ImageSpec::Name(image.to_owned())
        };
        Ok(Self {
            driver,
            root,
            run_root,
            image_text: image.to_owned(),
            image: spec_of_image,
        })
    }
}

impl StorageLocation {
    /// The store `reference` and `options` name, as c/storage would find it.
    pub(crate) fn find(reference: &StorageRef, options: &SourceOptions) -> Result<Self> {
        let (conf_text, root_key) = storage_conf_text()?;
        let root = reference
            .root
            .clone()
            .or_else(|| options.storage_root.clone())
            .or_else(|| {
                storage_conf::storage_value(&conf_text, root_key)
                    .filter(|p| !p.contains('$'))
                    .map(PathBuf::from)
            })
            .unwrap_or_else(default_graphroot);
        let driver = reference
            .driver
            .clone()
            .or_else(|| {
                std::env::var("STORAGE_DRIVER")
                    .ok()
                    .filter(|d| !d.is_empty())
            })
            .or_else(|| storage_conf::storage_value(&conf_text, "driver"))
            .unwrap_or_else(|| "overlay".to_owned());
        let run_root = reference
            .run_root
            .clone()
            .or_else(|| options.run_root.clone())
            .or_else(|| storage_conf::storage_value(&conf_text, "runroot").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(storage_conf::DEFAULT_RUNROOT));
        let image_stores = std::env::var("STORAGE_OPTS")
            .map(|opts| image_stores_of(&opts))
            .unwrap_or_default();
        Ok(Self {
            driver,
            root,
            run_root,
            image_stores,
        })
    }

    /// The reference naming `image` in this store explicitly, for skopeo (which knows no
    /// `--storage-root`).
    pub(crate) fn reference_for(&self, image: &str) -> String {
        format!(
            "[{}@{}+{}]{image}",
            self.driver,
            self.root.display(),
            self.run_root.display()
        )
    }
}

/// The storage.conf c/storage reads, and the key that names the graph root in it: for root
/// (or with `$CONTAINERS_STORAGE_CONF`) the system's file and `graphroot`; for anyone else
/// `~/.config/containers/storage.conf` and its `graphroot` when it exists, else the system's
/// file and its `rootless_storage_path`.
fn storage_conf_text() -> Result<(String, &'static str)> {
    let system = || storage_conf::read_or_default(&storage_conf::active_storage_conf());
    if rustix::process::geteuid().is_root() || std::env::var_os("CONTAINERS_STORAGE_CONF").is_some()
    {
        return Ok((system()?, "graphroot"));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")));
    if let Some(user) = config.map(|c| c.join("containers/storage.conf"))
        && let Ok(text) = std::fs::read_to_string(&user)
    {
        return Ok((text, "graphroot"));
    }
    Ok((system()?, "rootless_storage_path"))
}

fn default_graphroot() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from(storage_conf::DEFAULT_GRAPHROOT);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join(ROOTLESS_GRAPHROOT)
}

/// The read-only image stores of a `STORAGE_OPTS` value (`additionalimagestore=` or
/// `imagestore=`, with or without the `overlay.` prefix, comma-separated).
fn image_stores_of(opts: &str) -> Vec<PathBuf> {
    opts.split(',')
        .filter_map(|item| {
            let item = item.trim();
            let item = item.strip_prefix("overlay.").unwrap_or(item);
            let (key, value) = item.split_once('=')?;
            matches!(key.trim(), "additionalimagestore" | "imagestore")
                .then(|| PathBuf::from(value.trim()))
        })
        .filter(|p| p.is_absolute())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "2a0d50079eb9d4c37241b9da45c190bc0e084abf8463e7ea66133cceced7e556";

    #[test]
    fn references_name_a_store_and_an_image() {
        let r =
            StorageRef::parse("[overlay@/srv/root+/run/root:overlay.mountopt=x]app:v1").unwrap();
        assert_eq!(r.driver.as_deref(), Some("overlay"));
        assert_eq!(r.root, Some(PathBuf::from("/srv/root")));
        assert_eq!(r.image, ImageSpec::Name("app:v1".into()));
        let r = StorageRef::parse("[/srv/root]localhost/app").unwrap();
        assert_eq!((r.driver, r.root), (None, Some(PathBuf::from("/srv/root"))));
        assert_eq!(
            StorageRef::parse(ID).unwrap().image,
            ImageSpec::Id(ID.into())
        );
        assert_eq!(
            StorageRef::parse(&format!("@{ID}")).unwrap().image,
            ImageSpec::Id(ID.into())
        );
        let digest = format!("sha256:{ID}");
        assert_eq!(
            StorageRef::parse(&format!("localhost/app@{digest}"))
                .unwrap()
                .image,
            ImageSpec::Digest(Some("localhost/app".into()), digest.parse().unwrap())
        );
        for bad in [
            "[overlay@/x",
            "[relative]app",
            "@nothex",
            "[/x]",
            "app@sha256:12",
        ] {
            assert!(StorageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn storage_opts_name_read_only_image_stores() {
        assert_eq!(
            image_stores_of(
                "overlay.mountopt=nodev, additionalimagestore=/a,overlay.imagestore=/b,imagestore=rel"
            ),
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
    }
}
