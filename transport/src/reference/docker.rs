//! Docker references (`docker://NAME`): the one parser, normalising as containers/image does.
//!
//! Grammar (distribution's `reference` package, as vendored by skopeo 1.9.3):
//!
//! ```text
//! NAME       := [HOST "/"] COMPONENT ("/" COMPONENT)* [":" TAG] ["@" DIGEST]
//! HOST       := DOMAIN-PART ("." DOMAIN-PART)* [":" PORT] | "[" IPv6 "]" [":" PORT]
//! COMPONENT  := [a-z0-9]+ (("." | "_" | "__" | "-"+) [a-z0-9]+)*
//! TAG        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! DIGEST     := ("sha256" | "sha384" | "sha512") ":" lower-case hex of the algorithm's length
//! ```
//!
//! Normalisation: the first component is a host only when it contains `.` or `:` or is
//! `localhost`; otherwise the host is `docker.io`. `index.docker.io` is `docker.io`. On
//! `docker.io` a single-component repository is under `library/`. The repository must be lower
//! case, the whole name (host and repository) at most 255 bytes, and a bare 64-digit hex string
//! is refused (it would read as an image ID). A tag and a digest may both be given (skopeo then
//! refuses to open it; skiff does not guess which one wins).
//!
//! [`DockerRef`]'s `Display` is the short ("familiar") form containers/image prints: without
//! `docker.io/` and `library/`.

/// The registry of names without a host.
pub const DOCKER_HUB: &str = "docker.io";

/// The old name of [`DOCKER_HUB`], accepted and rewritten.
const DOCKER_HUB_LEGACY: &str = "index.docker.io";

/// Where Docker Hub's registry API answers.
const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

/// Longest `HOST/REPOSITORY` distribution accepts.
const MAX_NAME_LEN: usize = 255;

/// Longest tag distribution accepts.
const MAX_TAG_LEN: usize = 128;

/// The tag containers/image assumes when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// A `docker://` name that does not parse; the message names the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DockerRefError(String);

/// A parsed, normalised Docker reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DockerRef {
    host: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl DockerRef {
    /// The registry as auth files and certificate directories name it (`docker.io`, `quay.io`,
    /// `127.0.0.1:5000`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The repository path in the registry (`library/busybox`, `fedora/fedora`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag given, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest given (`sha256:HEX`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `HOST/REPOSITORY`, normalised (`docker.io/library/busybox`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.host, self.repository)
    }

    /// The key of this registry's entry in an auth file written for it.
    pub fn auth_key(&self) -> &str {
        &self.host
    }

    /// The `HOST[:PORT]` that serves the registry API (`registry-1.docker.io` for Docker Hub).
    pub fn endpoint(&self) -> &str {
        if self.host == DOCKER_HUB {
            DOCKER_HUB_ENDPOINT
        } else {
            &self.host
        }
    }

    /// The signature-policy scopes of this image, most specific first, as containers/image
    /// forms them: the identity (`NAME:TAG`, `NAME@DIGEST`; `:latest` when neither is
    /// given), the repository and each parent namespace up to the host, then the host's
    /// wildcard domains without the port (`*.example.com`, `*.com`).
    pub fn scopes(&self) -> Vec<String> {
        let name = self.name();
        let mut scopes = Vec::new();
        if let Some(digest) = &self.digest {
            scopes.push(format!("{name}@{digest}"));
        }
        match (&self.tag, &self.digest) {
            (Some(tag), _) => scopes.push(format!("{name}:{tag}")),
            (None, None) => scopes.push(format!("{name}:{DEFAULT_TAG}")),
            (None, Some(_)) => {}
        }
        let mut current = name.as_str();
        loop {
            scopes.push(current.to_owned());
            match current.rfind('/') {
                Some(i) => current = &current[..i],
                None => break,
            }
        }
        let mut domain = host_without_port(&self.host);
        while let Some(dot) = domain.find('.') {
            domain = &domain[dot + 1..];
            scopes.push(format!("*.{domain}"));
        }
        scopes
    }
}

/// `host` without a `:PORT` (an IPv6 literal keeps its brackets).
fn host_without_port(host: &str) -> &str {
    let after_literal = if host.starts_with('[') {
        host.find(']').map_or(host.len(), |i| i + 1)
    } else {
        0
    };
    match host[after_literal..].find(':') {
        Some(i) => &host[..after_literal + i],
        None => host,
    }
}

impl std::str::FromStr for DockerRef {
    type Err = DockerRefError;

    /// Parses NAME of `docker://NAME`.
    fn from_str(name: &str) -> Result<Self, DockerRefError> {
        let err = DockerRefError;
        if name.is_empty() {
            return Err(err("no image name".into()));
        }
        if is_image_id(name) {
            return Err(err(format!(
                "{name:?} is a 64-digit hex string, which names an image ID, not a repository"
            )));
        }
        let (rest, digest) = match name.split_once('@') {
            Some((r, d)) => (r, Some(parse_digest(d).map_err(err)?)),
            None => (name, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(err)?;
        }
        let (host, repository) = match path.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                check_host(first).map_err(err)?;
                let host = if first == DOCKER_HUB_LEGACY {
                    DOCKER_HUB
                } else {
                    first
                };
                (host, rest)
            }
            _ => (DOCKER_HUB, path),
        };
        let repository = if host == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        check_repository(&repository).map_err(err)?;
        let full = host.len() + 1 + repository.len();
        if full > MAX_NAME_LEN {
            return Err(err(format!(
                "the name is {full} bytes long, at most {MAX_NAME_LEN} are allowed"
            )));
        }
        Ok(Self {
            host: host.to_owned(),
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }
}

impl std::fmt::Display for DockerRef {
    /// The short form: `busybox` for `docker.io/library/busybox`, `user/app` for
    /// `docker.io/user/app`, else `HOST/REPOSITORY`; then `:TAG` and `@DIGEST`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host == DOCKER_HUB {
            let short = match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short,
                _ => &self.repository,
            };
            // The short form must not read as a host, or as an image ID.
            let first = short.split('/').next().unwrap_or_default();
            let reads_as_host =
                short.contains('/') && (first.contains('.') || first == "localhost");
            let reads_as_id = self.tag.is_none() && self.digest.is_none() && is_image_id(short);
            if reads_as_host || reads_as_id {
                write!(f, "{DOCKER_HUB}/{}", self.repository)?;
            } else {
                f.write_str(short)?;
            }
        } else {
            write!(f, "{}/{}", self.host, self.repository)?;
        }
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// 64 lower-case hex digits: how an image ID is written.
pub(crate) fn is_image_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn parse_digest(digest: &str) -> Result<String, String> {
    let bad = || {
        format!("bad digest {digest:?}: expected sha256:, sha384: or sha512: and lower-case hex")
    };
    let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(bad()),
    };
    let hex_ok = hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex_ok {
        return Err(format!(
            "bad digest {digest:?}: {algorithm} takes {len} lower-case hex digits"
        ));
    }
    Ok(digest.to_owned())
}

/// Whether `tag` may be a registry tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
pub(crate) fn is_valid_tag(tag: &str) -> bool {
    check_tag(tag).is_ok()
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = tag.len() <= MAX_TAG_LEN
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad tag {tag:?} (letters, digits, _ . - only, not first . or -, at most {MAX_TAG_LEN})"
        ))
    }
}

/// `DOMAIN-PART("."DOMAIN-PART)*[:PORT]` or `[IPv6][:PORT]`.
fn check_host(host: &str) -> Result<(), String> {
    let bad = || format!("bad registry host {host:?}");
    let (name, port) = if let Some(literal) = host.strip_prefix('[') {
        let (address, after) = literal.split_once(']').ok_or_else(bad)?;
        let address_ok =
            !address.is_empty() && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        if !address_ok {
            return Err(bad());
        }
        match after {
            "" => return Ok(()),
            _ => ("", after.strip_prefix(':').ok_or_else(bad)?),
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) => (n, p),
            None => (host, ""),
        }
    };
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    let name_ok = name.is_empty() && host.starts_with('[') || name.split('.').all(part_ok);
    let port_ok = !host.contains(':') && port.is_empty()
        || !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Every `/`-separated component: lower-case alphanumerics joined by one `.`, one or two `_`,
/// or any number of `-`.
fn check_repository(repository: &str) -> Result<(), String> {
    for component in repository.split('/') {
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "bad repository name component {component:?}: it must be lower case"
            ));
        }
        if !component_ok(component) {
            return Err(format!(
                "bad repository name component {component:?} (lower case letters and digits, \
                 joined by '.', '_', '__' or dashes)"
            ));
        }
    }
    Ok(())
}

fn component_ok(component: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between alphanumeric runs: ".", "_", "__" or "-"+.
    bytes
        .split(alnum)
        .filter(|s| !s.is_empty())
        .all(|sep| matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|&b| b == b'-'))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> DockerRef {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalises_as_containers_image() {
        let cases = [
            ("busybox", "docker.io", "library/busybox", None),
            ("library/busybox", "docker.io", "library/busybox", None),
            ("user/app:v1", "docker.io", "user/app", Some("v1")),
            (
                "index.docker.io/busybox",
                "docker.io",
                "library/busybox",
                None,
            ),
            (
                "docker.io/busybox:1",
                "docker.io",
                "library/busybox",
                Some("1"),
            ),
            (
                "quay.io/fedora/fedora:41",
                "quay.io",
                "fedora/fedora",
                Some("41"),
            ),
            ("localhost/app", "localhost", "app", None),
            ("localhost:5000/a/b:t", "localhost:5000", "a/b", Some("t")),
            ("127.0.0.1:5000/app:v1", "127.0.0.1:5000", "app", Some("v1")),
            ("[::1]:5000/app", "[::1]:5000", "app", None),
            ("a-b__c/e.f", "docker.io", "a-b__c/e.f", None),
            ("docker.io/a.b/c", "docker.io", "a.b/c", None),
        ];
        for (input, host, repository, tag) in cases {
            let r = parse(input);
            assert_eq!(
                (r.host(), r.repository(), r.tag()),
                (host, repository, tag),
                "{input}"
            );
        }
        let d = format!("sha256:{}", "e".repeat(64));
        let r = parse(&format!("localhost/app:tag@{d}"));
        assert_eq!((r.tag(), r.digest()), (Some("tag"), Some(d.as_str())));
        assert_eq!(parse("busybox").endpoint(), "registry-1.docker.io");
        assert_eq!(parse("busybox").auth_key(), "docker.io");
        assert_eq!(parse("127.0.0.1:5000/a").endpoint(), "127.0.0.1:5000");
        assert_eq!(
            parse("index.docker.io/library/busybox").to_string(),
            "busybox"
        );
        assert_eq!(parse("docker.io/user/app").to_string(), "user/app");
        // Where the short form would read differently, the host stays.
        assert_eq!(parse("docker.io/a.b/c").to_string(), "docker.io/a.b/c");
        assert_eq!(
            parse("docker.io/localhost/c").to_string(),
            "docker.io/localhost/c"
        );
        let hex = "b".repeat(64);
        assert_eq!(
            parse(&format!("library/{hex}")).to_string(),
            format!("docker.io/library/{hex}")
        );
    }

    #[test]
    fn refuses_what_containers_image_refuses() {
        let hex = "a".repeat(64);
        let cases = [
            ("", "no image name"),
            ("Fedora/App", "must be lower case"),
            ("quay.io/Fedora/app", "must be lower case"),
            ("app:bad tag", "bad tag"),
            ("app:.x", "bad tag"),
            ("app@sha256:zz", "bad digest"),
            ("app@md5:0123456789abcdef0123456789abcdef", "bad digest"),
            ("app@sha256:abc", "bad digest"),
            ("a..b", "bad repository name component"),
            ("-a", "bad repository name component"),
            ("a___b", "bad repository name component"),
            ("a//b", "bad repository name component"),
            ("quay.io/", "bad repository name component"),
            ("bad_host.io:x/app", "bad registry host"),
            ("-x.io/app", "bad registry host"),
            (hex.as_str(), "64-digit hex"),
        ];
        for (input, want) in cases {
            let e = input.parse::<DockerRef>().unwrap_err().to_string();
            assert!(e.contains(want), "{input}: {e}");
        }
        let long = format!("quay.io/{}", "a".repeat(250));
        assert!(
            long.parse::<DockerRef>()
                .unwrap_err()
                .to_string()
                .contains("255")
        );
    }

    #[test]
    fn scopes_most_specific_first() {
        assert_eq!(
            parse("quay.io/fedora/fedora:41").scopes(),
            [
                "quay.io/fedora/fedora:41",
                "quay.io/fedora/fedora",
                "quay.io/fedora",
                "quay.io",
                "*.io"
            ]
        );
        assert_eq!(
            parse("busybox").scopes(),
            [
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox",
                "docker.io/library",
                "docker.io",
                "*.io"
            ]
        );
        assert_eq!(
            parse("registry.example.com:5000/app:v1").scopes(),
            [
                "registry.example.com:5000/app:v1",
                "registry.example.com:5000/app",
                "registry.example.com:5000",
                "*.example.com",
                "*.com"
            ]
        );
        let d = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            parse(&format!("localhost/app@{d}")).scopes(),
            [
                format!("localhost/app@{d}"),
                "localhost/app".into(),
                "localhost".into()
            ]
        );
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,4}((\\.|_|__|-{1,3})[a-z0-9]{1,4}){0,2}"
    }

    fn host() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("localhost".to_owned())),
            "[a-z0-9]{1,6}(\\.[a-z0-9]{1,6}){1,2}(:[0-9]{1,5})?".prop_map(Some),
            "localhost:[0-9]{1,5}".prop_map(Some),
            "\\[[0-9a-f]{0,4}:[0-9a-f:]{1,8}\\](:[0-9]{1,5})?".prop_map(Some),
            Just(Some("docker.io".to_owned())),
            Just(Some("index.docker.io".to_owned())),
        ]
    }

    prop_compose! {
        /// A valid `docker://` name (without the prefix), in any of the accepted spellings.
        pub(crate) fn docker_name()(
            host in host(),
            components in prop::collection::vec(component(), 1..4),
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"),
            digest in proptest::option::of("[0-9a-f]{64}"),
        ) -> String {
            // Without a host, a first component with a '.' would be read as one.
            let components = match &host {
                None if components.len() > 1 => {
                    let mut c = components;
                    c[0] = c[0].replace('.', "-");
                    c
                }
                _ => components,
            };
            let mut s = host.map(|h| format!("{h}/")).unwrap_or_default();
            s.push_str(&components.join("/"));
            if let Some(t) = tag { s.push(':'); s.push_str(&t); }
            if let Some(d) = digest { s.push_str("@sha256:"); s.push_str(&d); }
            s
        }
    }

    /// `input` parses; printing and parsing again gives the same value, and the printed form
    /// is a fixed point.
    pub(crate) fn round_trip<T>(input: &str) -> Result<(), TestCaseError>
    where
        T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
        T::Err: std::fmt::Display,
    {
        let parse = |s: &str| {
            s.parse::<T>()
                .map_err(|e| TestCaseError::fail(format!("{s}: {e}")))
        };
        let parsed = parse(input)?;
        let shown = parsed.to_string();
        let again = parse(&shown)?;
        prop_assert_eq!(&again, &parsed);
        prop_assert_eq!(again.to_string(), shown);
        Ok(())
    }

    proptest! {
        /// Every valid name round-trips through `Display`.
        #[test]
        fn display_round_trips(name in docker_name()) {
            round_trip::<DockerRef>(&name)?;
        }

        /// Any string either fails to parse or round-trips.
        #[test]
        fn arbitrary_input_never_panics(name in "[a-zA-Z0-9:/@._\\-\\[\\]]{0,40}") {
            if let Ok(parsed) = name.parse::<DockerRef>() {
                prop_assert_eq!(parsed.to_string().parse::<DockerRef>().ok(), Some(parsed));
            }
        }
    }
}
