//! What the help says beyond the flags: what skiff is for, and each command's examples. The man
//! pages are written from the same text (skiff-gen-docs), so both say the same.

/// The first line of `skiff -h` and the man page's NAME line.
pub(super) const ABOUT: &str = "Copy container images into composefs storage and out: skopeo copy, with composefs as a transport";

/// What `skiff --help` and skiff(1) open with (wrapped here: clap prints it as it is).
pub(super) const LONG_ABOUT: &str = "\
skiff copies container images into composefs storage.

`skiff copy SOURCE composefs:PATH:NAME` is skopeo's copy with a composefs repository
as the destination: the same source syntax (docker://, oci:, oci-archive:,
docker-archive:, dir:, containers-storage:) and the same flag names. Every blob's
digest and every layer's DiffID is checked before the image is tagged. Layers the
repository already holds are not fetched again, zstd:chunked layers in a registry are
fetched only for the files the repository lacks, and an oci-delta artifact in the
registry is used when it costs fewer bytes. cfsctl and bootc read the repository as
their own.

`skiff copy composefs:PATH:NAME DESTINATION` copies an image out again, to oci:,
oci-archive:, dir:, docker:// or containers-storage:, with its original manifest digest
where the repository keeps the layers' blobs (skiff init --keep-blobs, skiff copy
--keep-blobs), else with its layers compressed again.

`skiff podman` serves the repository's layers to podman's pulls (an Additional Layer
Store): podman then downloads no layer skiff holds.

The other commands make oci-delta artifacts (delta create) and look after a repository
(init, images, inspect, rm, gc, fsck). composefs::NAME is an image of the default
repository: $SKIFF_REPO, else ~/.var/lib/composefs.";

/// The heading `examples` puts first; skiff-gen-docs turns what follows into an EXAMPLES section.
pub const EXAMPLES_HEADING: &str = "Examples:";

/// An example: what it does, and the command (words split at spaces: no quoting).
type Example = (&'static str, &'static str);

pub(super) const SKIFF: &[Example] = &[
    (
        "Copy an image from a registry into the repository /srv/cfs, as fedora:41",
        "skiff copy docker://quay.io/fedora/fedora:41 composefs:/srv/cfs:fedora:41",
    ),
    (
        "List the images of that repository",
        "skiff images /srv/cfs",
    ),
    ("Check every object and image in it", "skiff fsck /srv/cfs"),
];

pub(super) const COPY: &[Example] = &[
    (
        "From a registry into /srv/cfs, as fedora:41 (a missing repository is created)",
        "skiff copy docker://quay.io/fedora/fedora:41 composefs:/srv/cfs:fedora:41",
    ),
    (
        "From an OCI layout into the default repository",
        "skiff copy oci:./layout:v1 composefs::app",
    ),
    (
        "From a registry that needs a login and trusts the CA certificates in ./certs",
        "skiff copy --src-creds user:secret --src-cert-dir ./certs \
         docker://registry.example:5000/app:v2 composefs:/srv/cfs:app",
    ),
    (
        "An image podman pulled, read from podman's store (file contents cloned on XFS)",
        "skiff copy containers-storage:quay.io/fedora/fedora:41 composefs:/srv/cfs:fedora:41",
    ),
    (
        "Apply an oci-delta artifact (the image it was made from must be in /srv/cfs)",
        "skiff copy oci-archive:app-v1-v2.delta composefs:/srv/cfs:app:v2",
    ),
    (
        "Copy in keeping the original layer blobs...",
        "skiff copy --keep-blobs oci:./layout:v1 composefs:/srv/cfs:app",
    ),
    (
        "...so that the image goes out again with its manifest digest",
        "skiff copy --preserve-digests composefs:/srv/cfs:app oci:./out:app",
    ),
];

const DELTA_TO_ARCHIVE: Example = (
    "The delta that rebuilds v2 (an OCI layout) from v1 (stored in /srv/cfs), into an archive",
    "skiff delta create composefs:/srv/cfs:app:v1 oci:./layout:v2 oci-archive:app-v1-v2.delta",
);

pub(super) const DELTA: &[Example] = &[DELTA_TO_ARCHIVE];

pub(super) const DELTA_CREATE: &[Example] = &[
    DELTA_TO_ARCHIVE,
    (
        "The same, pushed to the registry that serves app:v2, where skiff copy finds it",
        "skiff delta create --dest-creds me:secret composefs:/srv/cfs:app:v1 oci:./layout:v2 \
         docker://registry.example/app:v1-to-v2",
    ),
];

pub(super) const INIT: &[Example] = &[
    (
        "A repository with sha512 object names",
        "skiff init /srv/cfs",
    ),
    (
        "sha256 object names, and only on a filesystem with fs-verity",
        "skiff init --hash sha256 --require-verity /srv/cfs",
    ),
    (
        "Keep the original layer blobs of every image copied in (also on an existing repository)",
        "skiff init --keep-blobs /srv/cfs",
    ),
];

pub(super) const IMAGES: &[Example] = &[
    ("The images of /srv/cfs", "skiff images /srv/cfs"),
    (
        "Those of the default repository, as JSON",
        "skiff images --json",
    ),
];

pub(super) const INSPECT: &[Example] = &[
    (
        "An image's digest, layers and labels",
        "skiff inspect composefs:/srv/cfs:app",
    ),
    (
        "Its config as stored",
        "skiff inspect --config --raw composefs:/srv/cfs:app",
    ),
];

pub(super) const RM: &[Example] = &[
    ("Untag app", "skiff rm composefs:/srv/cfs:app"),
    (
        "Then free what no tag reaches any more",
        "skiff gc /srv/cfs",
    ),
];

pub(super) const GC: &[Example] = &[
    ("Free what no tag of /srv/cfs reaches", "skiff gc /srv/cfs"),
    ("The same in the default repository", "skiff gc"),
];

pub(super) const SERVE: &[Example] = &[
    (
        "Serve /srv/cfs on 127.0.0.1:5000 (push with skopeo copy --dest-tls-verify=false ... docker://127.0.0.1:5000/app:v1)",
        "skiff serve /srv/cfs",
    ),
    (
        "Pull-only, on any free port",
        "skiff serve --read-only --listen 127.0.0.1:0 /srv/cfs",
    ),
    (
        "On the network: TLS and htpasswd (bcrypt) required",
        "skiff serve --listen 0.0.0.0:443 --tls-cert cert.pem --tls-key key.pem --htpasswd users /srv/cfs",
    ),
];

pub(super) const PODMAN: &[Example] = &[
    (
        "Serve the layers of /srv/cfs to podman, then pull app with skiff and with podman",
        "skiff podman enable /srv/cfs",
    ),
    (
        "Copy an image in and expose its layers at once",
        "skiff copy --expose docker://quay.io/fedora/fedora:41 composefs:/srv/cfs:fedora",
    ),
    (
        "What podman can take from the store",
        "skiff podman status /srv/cfs",
    ),
];

pub(super) const PODMAN_ENABLE: &[Example] = &[
    (
        "Layer store /var/lib/skiff/als for /srv/cfs, listed in /etc/containers/storage.conf",
        "skiff podman enable /srv/cfs",
    ),
    (
        "Another directory; print the storage.conf line instead of editing the file",
        "skiff podman enable --dir /srv/als --print /srv/cfs",
    ),
];

pub(super) const PODMAN_EXPOSE: &[Example] = &[(
    "Make the layers of app available to podman pull",
    "skiff podman expose composefs:/srv/cfs:app",
)];

pub(super) const PODMAN_STATUS: &[Example] = &[
    (
        "The exposed layers of /srv/cfs",
        "skiff podman status /srv/cfs",
    ),
    ("As JSON", "skiff podman status --json /srv/cfs"),
];

pub(super) const PODMAN_PRUNE: &[Example] = &[(
    "Withdraw the layers no stored image names and podman does not use",
    "skiff podman prune /srv/cfs",
)];

pub(super) const PODMAN_WATCH: &[Example] = &[
    (
        "Copy every image podman pulls into /srv/cfs, as it is pulled (until SIGTERM or SIGINT)",
        "skiff podman watch /srv/cfs",
    ),
    (
        "The same, each image's layers also served to podman's later pulls",
        "skiff podman watch --expose /srv/cfs",
    ),
];

pub(super) const SYNC: &[Example] = &[
    (
        "Mirror a pinned fixture image with its platforms, deltas and signatures",
        "skiff sync docker://quay.io/fedora/fedora@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef docker://ghcr.io/me/fixture-fedora:41",
    ),
    (
        "Mirror every pair of a list (SOURCE DESTINATION a line), going on after a failure",
        "skiff sync --from-file ci/fixture-images.txt --keep-going",
    ),
    (
        "skopeo sync's YAML, each image under mirror.local/ci/REGISTRY/REPOSITORY",
        "skiff sync --src yaml sync.yml mirror.local/ci",
    ),
    (
        "Show what mirroring every tag of a repository would copy",
        "skiff sync --dry-run docker://quay.io/app docker://mirror.local/app",
    ),
    (
        "Mirror into an OCI layout, then read every digest back",
        "skiff sync --verify docker://quay.io/app:v2 oci:./mirror:v2",
    ),
];

pub(super) const FSCK: &[Example] = &[
    ("Check /srv/cfs", "skiff fsck /srv/cfs"),
    ("Check the default repository", "skiff fsck"),
];

/// The text clap prints after a command's flags: the heading, then each example's comment and
/// command.
pub(super) fn examples(list: &[Example]) -> String {
    let mut text = String::from(EXAMPLES_HEADING);
    for (what, command) in list {
        text.push_str(&format!("\n  # {what}\n  {command}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::Cli;

    /// Every visible command, with its path (`skiff delta create`).
    fn commands(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() != "help" {
                commands(sub, format!("{path} {}", sub.get_name()), out);
            }
        }
        out.push((path, cmd.clone()));
    }

    #[test]
    fn every_command_ends_its_help_with_examples_the_parser_accepts() {
        let mut all = Vec::new();
        commands(&Cli::command(), "skiff".into(), &mut all);
        assert_eq!(
            all.len(),
            18,
            "{:?}",
            all.iter().map(|c| &c.0).collect::<Vec<_>>()
        );
        for (path, cmd) in all {
            let after = cmd
                .get_after_help()
                .unwrap_or_else(|| panic!("{path}: no examples"))
                .to_string();
            assert!(after.starts_with(EXAMPLES_HEADING), "{path}: {after}");
            let commands: Vec<&str> = after
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("skiff "))
                .collect();
            assert!(!commands.is_empty(), "{path}: {after}");
            for line in commands {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let Err(e) = Cli::try_parse_from(&words) {
                    panic!("{path}: example `{line}` does not parse: {e}");
                }
            }
        }
    }

    #[test]
    fn help_opens_with_what_skiff_does() {
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.starts_with("skiff copies container images into composefs storage."),
            "{help}"
        );
        assert!(!help.contains("library"), "{help}");
    }
}
