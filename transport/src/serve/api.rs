//! The request paths of the distribution API (distribution-spec v1.1, "Endpoints") parsed into
//! routes, with the spec's grammar for repository names, tags and digests checked before
//! anything is looked up, so that a name with path tricks (`..`, `%2F`, upper case) never
//! reaches the store.
//!
//! ```text
//! /v2/                                   api version check
//! /v2/_catalog                           repositories
//! /v2/NAME/tags/list                     tags of NAME
//! /v2/NAME/manifests/TAG|DIGEST          manifests
//! /v2/NAME/blobs/DIGEST                  blobs
//! /v2/NAME/blobs/uploads/[ID]            upload sessions
//! /v2/NAME/referrers/DIGEST              referrers of a manifest
//! ```
//!
//! A repository `NAME` with tag `TAG` is the stored image named `NAME:TAG`; a digest names
//! a stored manifest whatever its tags.

use skiff_storage::OciDigest;
use skiff_storage::images::StoredRef;

use super::errors::{ApiError, ApiResult, Code};

/// Longest repository name (the spec lets registries bound it; distribution's is 255).
const MAX_NAME_LEN: usize = 255;

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reference {
    Tag(String),
    Digest(OciDigest),
}

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Base,
    Catalog,
    Tags { name: String },
    Manifest { name: String, reference: Reference },
    Blob { name: String, digest: OciDigest },
    Uploads { name: String },
    Upload { name: String, id: String },
    Referrers { name: String, digest: OciDigest },
}

impl Reference {
    /// The stored image a reference of repository `name` names.
    pub(crate) fn stored(&self, name: &str) -> StoredRef {
        match self {
            Self::Tag(tag) => StoredRef::Tag(format!("{name}:{tag}")),
            Self::Digest(digest) => StoredRef::Digest(digest.clone()),
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tag(t) => write!(f, "{t}"),
            Self::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// Parses a request path (without its query).
pub(crate) fn parse_route(path: &str) -> ApiResult<Route> {
    let not_found = || ApiError::new(Code::NameUnknown, format!("no such endpoint: {path}"));
    let rest = match path {
        "/v2" | "/v2/" => return Ok(Route::Base),
        _ => path.strip_prefix("/v2/").ok_or_else(not_found)?,
    };
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags {
            name: repository_name(name)?,
        });
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or(rest.strip_suffix("/blobs/uploads"))
    {
        return Ok(Route::Uploads {
            name: repository_name(name)?,
        });
    }
    // The last keyword wins: a repository may itself be called `x/blobs`.
    let (head, last) = rest.rsplit_once('/').ok_or_else(not_found)?;
    let (name, keyword) = head.rsplit_once('/').ok_or_else(not_found)?;
    if keyword == "uploads"
        && let Some(name) = name.strip_suffix("/blobs")
    {
        return Ok(Route::Upload {
            name: repository_name(name)?,
            id: upload_id(last)?,
        });
    }
    match keyword {
        "manifests" => Ok(Route::Manifest {
            name: repository_name(name)?,
            reference: reference(last)?,
        }),
        "blobs" => Ok(Route::Blob {
            name: repository_name(name)?,
            digest: digest(last)?,
        }),
        "referrers" => Ok(Route::Referrers {
            name: repository_name(name)?,
            digest: digest(last)?,
        }),
        _ => Err(not_found()),
    }
}

/// Checks a repository name against the spec's grammar: path components of lower-case letters
/// and digits, separated within by `.`, `_`, `__` or runs of `-`.
pub(crate) fn repository_name(name: &str) -> ApiResult<String> {
    let invalid = || {
        ApiError::new(
            Code::NameInvalid,
            format!("invalid repository name {name:?}"),
        )
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid());
    }
    for component in name.split('/') {
        if !valid_component(component) {
            return Err(invalid());
        }
    }
    Ok(name.to_owned())
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__` or `-`+, between alphanumerics.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !bytes.get(i).copied().is_some_and(alnum) {
            return false;
        }
    }
    true
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub(crate) fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn reference(text: &str) -> ApiResult<Reference> {
    if text.contains(':') {
        return Ok(Reference::Digest(digest(text)?));
    }
    if valid_tag(text) {
        Ok(Reference::Tag(text.to_owned()))
    } else {
        Err(
            ApiError::new(Code::ManifestInvalid, format!("invalid tag {text:?}"))
                .with_status(hyper::StatusCode::BAD_REQUEST),
        )
    }
}

/// A `sha256:` digest (the only algorithm the store names blobs by).
pub(crate) fn digest(text: &str) -> ApiResult<OciDigest> {
    let invalid = |why: &str| ApiError::new(Code::DigestInvalid, format!("digest {text:?}: {why}"));
    let (algorithm, hex) = text
        .split_once(':')
        .ok_or_else(|| invalid("not ALGORITHM:HEX"))?;
    if algorithm != "sha256" {
        return Err(invalid("only sha256 digests are supported"));
    }
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(invalid("not 64 lower-case hex digits"));
    }
    text.parse().map_err(|_| invalid("malformed"))
}

/// Upload session ids are the hex strings the server hands out.
fn upload_id(text: &str) -> ApiResult<String> {
    if !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_owned())
    } else {
        Err(ApiError::new(
            Code::BlobUploadUnknown,
            format!("no upload {text:?}"),
        ))
    }
}

/// The value of `key` in a query string, percent-decoded (`digest=sha256%3A...`).
pub(crate) fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1])
                .zip(hex(bytes[i + 2]))
                .map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn paths_are_routed_by_their_last_keyword() {
        assert_eq!(parse_route("/v2/").unwrap(), Route::Base);
        assert_eq!(
            parse_route("/v2/a/b/tags/list").unwrap(),
            Route::Tags { name: "a/b".into() }
        );
        assert_eq!(
            parse_route("/v2/app/manifests/v1.0").unwrap(),
            Route::Manifest {
                name: "app".into(),
                reference: Reference::Tag("v1.0".into())
            }
        );
        assert!(matches!(
            parse_route(&format!("/v2/x/blobs/manifests/{D}")).unwrap(),
            Route::Manifest { name, reference: Reference::Digest(_) } if name == "x/blobs"
        ));
        assert!(matches!(
            parse_route(&format!("/v2/x/blobs/{D}")).unwrap(),
            Route::Blob { name, .. } if name == "x"
        ));
        assert_eq!(
            parse_route("/v2/x/blobs/uploads/").unwrap(),
            Route::Uploads { name: "x".into() }
        );
        assert_eq!(
            parse_route("/v2/x/blobs/uploads/00ff").unwrap(),
            Route::Upload {
                name: "x".into(),
                id: "00ff".into()
            }
        );
        assert!(matches!(
            parse_route(&format!("/v2/x/referrers/{D}")).unwrap(),
            Route::Referrers { .. }
        ));
    }

    #[test]
    fn names_tags_and_digests_with_tricks_are_refused_with_the_specs_codes() {
        for bad in [
            "/v2/../manifests/v1",
            "/v2/a/../b/manifests/v1",
            "/v2/A/manifests/v1",
            "/v2/a%2Fb/manifests/v1",
            "/v2/a//b/manifests/v1",
            "/v2/-a/manifests/v1",
            "/v2/a-/manifests/v1",
            "/v2/a___b/manifests/v1",
        ] {
            assert_eq!(
                parse_route(bad).unwrap_err().code,
                Code::NameInvalid,
                "{bad}"
            );
        }
        for bad in [
            "/v2/a/manifests/.hidden",
            "/v2/a/manifests/-x",
            "/v2/a/manifests/a%2F",
        ] {
            assert_eq!(
                parse_route(bad).unwrap_err().code,
                Code::ManifestInvalid,
                "{bad}"
            );
        }
        let long_tag = format!("/v2/a/manifests/{}", "t".repeat(129));
        assert_eq!(
            parse_route(&long_tag).unwrap_err().code,
            Code::ManifestInvalid
        );
        // Slashes cut the path before any digest is read: no route at all.
        assert_eq!(
            parse_route("/v2/a/blobs/sha256:../../etc")
                .unwrap_err()
                .code,
            Code::NameUnknown
        );
        for bad in ["sha256:00", "sha512:00", "sha256:..", &D.to_uppercase()[..]] {
            let e = parse_route(&format!("/v2/a/blobs/{bad}")).unwrap_err();
            assert_eq!(e.code, Code::DigestInvalid, "{bad}");
        }
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/not-hex").unwrap_err().code,
            Code::BlobUploadUnknown
        );
        assert!(repository_name("a.b_c__d---e/f0").is_ok());
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let q = Some("mount=sha256%3Aab&from=a%2Fb&digest");
        assert_eq!(query_param(q, "mount").as_deref(), Some("sha256:ab"));
        assert_eq!(query_param(q, "from").as_deref(), Some("a/b"));
        assert_eq!(query_param(q, "digest").as_deref(), Some(""));
        assert_eq!(query_param(q, "n"), None);
        assert_eq!(query_param(Some("x=%zz%4"), "x").as_deref(), Some("%zz%4"));
    }
}
