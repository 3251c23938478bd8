//! Image references in skopeo's syntax, plus skiff's own `composefs:` transport.
//!
//! | reference                     | meaning                                              |
//! |-------------------------------|------------------------------------------------------|
//! | `docker://NAME[:TAG][@DIGEST]`| a registry image                                     |
//! | `oci:PATH[:REF]`              | an OCI layout directory; REF is a tag or `@DIGEST`   |
//! | `oci-archive:PATH[:REF]`      | an OCI layout in a tar file                          |
//! | `docker-archive:PATH[:REF]`   | a `docker save` tar                                  |
//! | `dir:PATH`                    | skopeo's directory format                            |
//! | `containers-storage:REF`      | podman's image store                                 |
//! | `composefs:PATH:NAME`         | image NAME in the composefs repository at PATH       |
//! | `composefs:PATH@sha256:HEX`   | an image of that repository by manifest digest       |
//! | `composefs::NAME`             | NAME in the default repository                       |
//!
//! PATH ends at the first `:` (as for `oci:`); NAME may contain `:` and `/`.

pub(crate) mod docker;

use std::path::PathBuf;

use skiff_storage::images::StoredRef;

pub use docker::{DEFAULT_TAG, DOCKER_HUB, DockerRef, DockerRefError};

/// A reference that does not parse; the message names the bad part.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    /// No `transport:` prefix.
    #[error(
        "invalid image reference {0:?}: expected TRANSPORT:DETAILS (for example docker://quay.io/fedora/fedora:41 or composefs:/srv/cfs:fedora)"
    )]
    NoTransport(String),
    /// A transport skopeo does not know either.
    #[error(
        "invalid image reference {reference:?}: unknown transport {transport:?} (known: docker, oci, oci-archive, docker-archive, dir, containers-storage, composefs)"
    )]
    UnknownTransport {
        /// The whole reference.
        reference: String,
        /// The part before the first `:`.
        transport: String,
    },
    /// The part after the transport is wrong.
    #[error("invalid image reference {reference:?}: {problem}")]
    Invalid {
        /// The whole reference.
        reference: String,
        /// What is wrong.
        problem: String,
    },
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `docker://NAME`.
    Docker(DockerRef),
    /// `oci:PATH[:REF]`.
    Oci {
        /// The layout directory.
        path: PathBuf,
        /// A tag (`org.opencontainers.image.ref.name`), a `@sha256:` digest, or none.
        reference: Option<String>,
    },
    /// `oci-archive:PATH[:REF]`.
    OciArchive {
        /// The archive.
        path: PathBuf,
        /// As for [`ImageRef::Oci`].
        reference: Option<String>,
    },
    /// `docker-archive:...`, passed to skopeo as given.
    DockerArchive(String),
    /// `dir:PATH`.
    Dir(PathBuf),
    /// `containers-storage:...`, passed to skopeo as given.
    ContainersStorage(String),
    /// `composefs:PATH:NAME`, `composefs:PATH@DIGEST`, `composefs::NAME`.
    Composefs {
        /// The repository; `None` for the default one.
        repo: Option<PathBuf>,
        /// The image in it.
        image: StoredRef,
    },
}

impl std::str::FromStr for ImageRef {
    type Err = RefError;

    fn from_str(s: &str) -> Result<Self, RefError> {
        let invalid = |problem: &str| RefError::Invalid {
            reference: s.to_owned(),
            problem: problem.to_owned(),
        };
        let (transport, rest) = s
            .split_once(':')
            .ok_or_else(|| RefError::NoTransport(s.to_owned()))?;
        match transport {
            "docker" => {
                let name = rest
                    .strip_prefix("//")
                    .ok_or_else(|| invalid("a docker reference must start with docker://"))?;
                if name.is_empty() {
                    return Err(invalid("no image name after docker://"));
                }
                let parsed = name
                    .parse()
                    .map_err(|e: DockerRefError| invalid(&e.to_string()))?;
                Ok(Self::Docker(parsed))
            }
            "oci" | "oci-archive" => {
                let (path, reference) = match rest.split_once(':') {
                    Some((p, r)) => (p, Some(r.to_owned())),
                    None => (rest, None),
                };
                if path.is_empty() {
                    return Err(invalid("no path given"));
                }
                if reference.as_deref() == Some("") {
                    return Err(invalid("empty reference after the path's ':'"));
                }
                let path = PathBuf::from(path);
                Ok(if transport == "oci" {
                    Self::Oci { path, reference }
                } else {
                    Self::OciArchive { path, reference }
                })
            }
            "docker-archive" => {
                if rest.is_empty() {
                    return Err(invalid("no path given"));
                }
                Ok(Self::DockerArchive(rest.to_owned()))
            }
            "dir" => {
                if rest.is_empty() {
                    return Err(invalid("no path given"));
                }
                Ok(Self::Dir(PathBuf::from(rest)))
            }
            "containers-storage" => {
                if rest.is_empty() {
                    return Err(invalid("no image given"));
                }
                Ok(Self::ContainersStorage(rest.to_owned()))
            }
            "composefs" => parse_composefs(rest).map_err(|p| invalid(&p)),
            other => Err(RefError::UnknownTransport {
                reference: s.to_owned(),
                transport: other.to_owned(),
            }),
        }
    }
}

/// Longest file name Linux filesystems accept: a tag is stored as one.
const MAX_TAG_FILE_NAME: usize = 255;

fn parse_composefs(rest: &str) -> Result<ImageRef, String> {
    // A digest reference: PATH@sha256:HEX (PATH may be empty for the default repository).
    if let Some(at) = rest
        .find("@sha256:")
        .filter(|&at| !rest[..at].contains(':'))
    {
        let (path, digest) = (&rest[..at], &rest[at + 1..]);
        let digest = digest
            .parse()
            .map_err(|e| format!("bad manifest digest {digest:?}: {e}"))?;
        let hex = &rest[at + 8..];
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(format!(
                "bad manifest digest {digest}: expected 64 lower-case hex digits"
            ));
        }
        let repo = (!path.is_empty()).then(|| PathBuf::from(path));
        return Ok(ImageRef::Composefs {
            repo,
            image: StoredRef::Digest(digest),
        });
    }
    let (path, name) = rest
        .split_once(':')
        .ok_or("expected composefs:PATH:NAME, composefs:PATH@sha256:HEX or composefs::NAME")?;
    if name.is_empty() {
        return Err("no image name after the repository path".into());
    }
    if name.starts_with('@') {
        return Err(format!(
            "image name {name:?} cannot start with '@' (digests are written PATH@sha256:HEX)"
        ));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(format!("image name {name:?} contains control characters"));
    }
    if name == "." || name == ".." {
        return Err(format!("image name {name:?} is not a name"));
    }
    // Tags are files under streams/refs/oci/, with '/' and '%' percent-encoded.
    let encoded_len = name.len() + 2 * name.matches(['/', '%']).count();
    if encoded_len > MAX_TAG_FILE_NAME {
        return Err(format!(
            "image name is {} bytes long once encoded; at most {MAX_TAG_FILE_NAME} are possible",
            encoded_len
        ));
    }
    let repo = (!path.is_empty()).then(|| PathBuf::from(path));
    Ok(ImageRef::Composefs {
        repo,
        image: StoredRef::Tag(name.to_owned()),
    })
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with_ref =
            |f: &mut std::fmt::Formatter<'_>, t: &str, p: &PathBuf, r: &Option<String>| match r {
                Some(r) => write!(f, "{t}:{}:{r}", p.display()),
                None => write!(f, "{t}:{}", p.display()),
            };
        match self {
            Self::Docker(n) => write!(f, "docker://{n}"),
            Self::Oci { path, reference } => with_ref(f, "oci", path, reference),
            Self::OciArchive { path, reference } => with_ref(f, "oci-archive", path, reference),
            Self::DockerArchive(r) => write!(f, "docker-archive:{r}"),
            Self::Dir(p) => write!(f, "dir:{}", p.display()),
            Self::ContainersStorage(r) => write!(f, "containers-storage:{r}"),
            Self::Composefs { repo, image } => {
                let path = repo
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                match image {
                    StoredRef::Tag(t) => write!(f, "composefs:{path}:{t}"),
                    StoredRef::Digest(d) => write!(f, "composefs:{path}@{d}"),
                }
            }
        }
    }
}

/// The default repository: `$SKIFF_REPO`, else `$HOME/.var/lib/composefs` (composefs-rs' user
/// location).
pub fn default_repository() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SKIFF_REPO").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "neither SKIFF_REPO nor HOME is set: cannot find the default repository"
            )
        })?;
    Ok(PathBuf::from(home).join(".var/lib/composefs"))
}

/// The repository a `composefs:` reference names.
pub fn repository_path(repo: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match repo {
        Some(p) => Ok(p.clone()),
        None => default_repository(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> ImageRef {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_transport_and_prints_it_back() {
        for s in [
            "docker://quay.io/fedora/fedora:41",
            "docker://127.0.0.1:5000/app:v1",
            "docker://busybox",
            "docker://localhost/app@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "oci:/tmp/layout:v1",
            "oci:/tmp/layout",
            "oci-archive:/tmp/a.tar:latest",
            "docker-archive:/tmp/d.tar",
            "dir:/tmp/d",
            "containers-storage:localhost/app:v1",
            "composefs:/srv/cfs:quay.io/fedora/fedora:41",
            "composefs::app",
        ] {
            assert_eq!(ok(s).to_string(), s);
        }
        assert_eq!(
            ok("composefs:/srv/cfs:quay.io/fedora/fedora:41"),
            ImageRef::Composefs {
                repo: Some("/srv/cfs".into()),
                image: StoredRef::Tag("quay.io/fedora/fedora:41".into())
            }
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            ok(&format!("composefs:/srv/cfs@{d}")),
            ImageRef::Composefs {
                repo: Some("/srv/cfs".into()),
                image: StoredRef::Digest(d.parse().unwrap())
            }
        );
        assert!(matches!(
            ok(&format!("composefs:@{d}")),
            ImageRef::Composefs { repo: None, .. }
        ));
    }

    #[test]
    fn errors_name_the_bad_part() {
        let cases = [
            ("fedora", "expected TRANSPORT:DETAILS"),
            ("ftp://x/y", "unknown transport \"ftp\""),
            ("docker:busybox", "docker://"),
            ("docker://Fedora/App", "must be lower case"),
            ("docker://a..b", "bad repository name component \"a..b\""),
            ("docker://app:bad tag", "bad tag"),
            ("docker://app@sha256:zz", "bad digest"),
            ("oci:", "no path"),
            ("oci:/x:", "empty reference"),
            ("composefs:/srv/cfs", "expected composefs:PATH:NAME"),
            ("composefs:/srv/cfs:", "no image name"),
            ("composefs:/srv/cfs@sha256:abc", "bad manifest digest"),
            ("composefs:/srv/cfs:..", "is not a name"),
            ("composefs:/srv/cfs:.", "is not a name"),
        ];
        for (input, want) in cases {
            let err = input.parse::<ImageRef>().unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
        let long = format!("composefs:/r:{}", "a/".repeat(90));
        assert!(
            long.parse::<ImageRef>()
                .unwrap_err()
                .to_string()
                .contains("once encoded")
        );
    }

    /// A valid reference of any transport, spelled as a user may write it.
    fn any_reference() -> impl Strategy<Value = String> {
        let path = "/[a-z0-9._-]{1,8}(/[a-z0-9._-]{1,8}){0,2}";
        let name = "[a-zA-Z0-9._-][a-zA-Z0-9._/:-]{0,20}";
        let digest = "sha256:[0-9a-f]{64}";
        prop_oneof![
            docker::tests::docker_name().prop_map(|n| format!("docker://{n}")),
            (path, proptest::option::of(name)).prop_map(|(p, r)| match r {
                Some(r) => format!("oci:{p}:{r}"),
                None => format!("oci:{p}"),
            }),
            (path, proptest::option::of(name)).prop_map(|(p, r)| format!(
                "oci-archive:{p}{}",
                r.map(|r| format!(":{r}")).unwrap_or_default()
            )),
            path.prop_map(|p| format!("docker-archive:{p}")),
            path.prop_map(|p| format!("dir:{p}")),
            name.prop_map(|n| format!("containers-storage:{n}")),
            (proptest::option::of(path), name)
                .prop_filter("not a name", |(_, n)| n != "." && n != "..")
                .prop_map(|(p, n)| format!("composefs:{}:{n}", p.unwrap_or_default())),
            (proptest::option::of(path), digest)
                .prop_map(|(p, d)| format!("composefs:{}@{d}", p.unwrap_or_default())),
        ]
    }

    proptest! {
        /// Parsing what `Display` printed gives the same reference back, and printing is a
        /// fixed point after one normalising parse.
        #[test]
        fn display_round_trips(s in any_reference()) {
            docker::tests::round_trip::<ImageRef>(&s)?;
        }
    }
}
