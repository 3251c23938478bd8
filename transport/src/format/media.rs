//! Layer media types and how each is compressed.
//!
//! Accepted: OCI `tar`, `tar+gzip`, `tar+zstd` and their non-distributable variants; Docker
//! v2s2 `rootfs.diff.tar.gzip`, `rootfs.foreign.diff.tar.gzip` and `rootfs.diff.tar`. zstd
//! layers may hold many frames and skippable frames (zstd:chunked, of every generation).
//!
//! The media type decides whether a blob is a layer; its first bytes decide how to decompress
//! it ([`Compression::sniff`]).

use containers_image_proxy::oci_spec::image::MediaType;

/// An OCI image manifest.
pub(crate) const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index.
pub(crate) const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip, possibly several members.
    Gzip,
    /// zstd, possibly several frames and skippable frames.
    Zstd,
}

/// A layer media type skiff cannot import.
#[derive(Debug, thiserror::Error)]
#[error("unsupported layer media type {0:?} (skiff imports tar, tar+gzip and tar+zstd layers)")]
pub struct UnsupportedMediaType(pub String);

impl Compression {
    /// The compression of a blob, from its first bytes: gzip and zstd by their magic numbers
    /// (a zstd:chunked blob starts with an ordinary frame), anything else is taken as tar.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// The compression a layer media type names.
    pub fn of_layer(media_type: &MediaType) -> Result<Self, UnsupportedMediaType> {
        Ok(match media_type {
            MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Self::None,
            MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => Self::Gzip,
            MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => Self::Zstd,
            other => match other.to_string().as_str() {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
                | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Self::Gzip,
                "application/vnd.docker.image.rootfs.diff.tar" => Self::None,
                s => return Err(UnsupportedMediaType(s.to_owned())),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Compression::None),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Compression::Gzip,
            ),
        ];
        for (mt, want) in cases {
            assert_eq!(
                Compression::of_layer(&MediaType::from(mt)).unwrap(),
                want,
                "{mt}"
            );
        }
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"usr/"), Compression::None);
        assert_eq!(Compression::sniff(b""), Compression::None);
        let err =
            Compression::of_layer(&MediaType::from("application/vnd.example.bzip2")).unwrap_err();
        assert!(err.to_string().contains("application/vnd.example.bzip2"));
    }
}
