//! The registry flags of the commands that read from a registry (`--src-*`) or write to one
//! (`--dest-*`), spelled as skopeo spells them and defined once for `copy`, `delta create` and
//! `sync`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use skiff_transport::options::SourceOptions;

use super::{GlobalOptions, parse_optional_creds};

/// How to reach the source registry.
#[derive(Debug, Args)]
pub(crate) struct SrcRegistryFlags {
    /// Credentials for the source registry, USERNAME[:PASSWORD].
    #[arg(long, value_name = "USERNAME[:PASSWORD]")]
    pub(crate) src_creds: Option<String>,
    /// Access the source registry anonymously.
    #[arg(long)]
    pub(crate) src_no_creds: bool,
    /// Path of the authentication file for the source registry (overrides --authfile).
    #[arg(long, value_name = "PATH")]
    pub(crate) src_authfile: Option<PathBuf>,
    /// Require HTTPS and verify certificates when talking to the source registry.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) src_tls_verify: Option<bool>,
    /// Use certificates at PATH (*.crt, *.cert, *.key) to connect to the source registry.
    #[arg(long, value_name = "PATH")]
    pub(crate) src_cert_dir: Option<PathBuf>,
}

/// How to reach the destination registry.
#[derive(Debug, Args)]
pub(crate) struct DestRegistryFlags {
    /// Credentials for the destination registry, USERNAME[:PASSWORD].
    #[arg(long, value_name = "USERNAME[:PASSWORD]")]
    pub(crate) dest_creds: Option<String>,
    /// Access the destination registry anonymously.
    #[arg(long)]
    pub(crate) dest_no_creds: bool,
    /// Path of the authentication file for the destination registry (overrides --authfile).
    #[arg(long, value_name = "PATH")]
    pub(crate) dest_authfile: Option<PathBuf>,
    /// Require HTTPS and verify certificates when talking to the destination registry.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) dest_tls_verify: Option<bool>,
    /// Use certificates at PATH (*.crt, *.cert, *.key) to connect to the destination registry.
    #[arg(long, value_name = "PATH")]
    pub(crate) dest_cert_dir: Option<PathBuf>,
}

/// One side's flags, whichever side.
struct Side<'a> {
    prefix: &'static str,
    creds: Option<&'a str>,
    no_creds: bool,
    authfile: Option<&'a PathBuf>,
    tls_verify: Option<bool>,
    cert_dir: Option<&'a PathBuf>,
}

impl Side<'_> {
    /// `authfile`: the command's `--authfile`, used when the side names none of its own.
    fn options(&self, global: &GlobalOptions, authfile: Option<&PathBuf>) -> Result<SourceOptions> {
        let prefix = self.prefix;
        let creds = parse_optional_creds(self.creds, &format!("--{prefix}-creds"))?;
        if self.no_creds && creds.is_some() {
            bail!("--{prefix}-no-creds and --{prefix}-creds cannot be used together");
        }
        Ok(SourceOptions {
            creds,
            no_creds: self.no_creds,
            authfile: self.authfile.or(authfile).cloned(),
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.cloned(),
            arch: global.override_arch.clone(),
            os: global.override_os.clone(),
            variant: global.override_variant.clone(),
            policy: global.policy.clone(),
            insecure_policy: global.insecure_policy,
            ..Default::default()
        })
    }

    /// The first flag given, spelled as on the command line.
    fn first_given(&self) -> Option<&'static str> {
        let names: [(bool, &'static str); 5] = match self.prefix {
            "src" => [
                (self.creds.is_some(), "--src-creds"),
                (self.no_creds, "--src-no-creds"),
                (self.authfile.is_some(), "--src-authfile"),
                (self.tls_verify.is_some(), "--src-tls-verify"),
                (self.cert_dir.is_some(), "--src-cert-dir"),
            ],
            _ => [
                (self.creds.is_some(), "--dest-creds"),
                (self.no_creds, "--dest-no-creds"),
                (self.authfile.is_some(), "--dest-authfile"),
                (self.tls_verify.is_some(), "--dest-tls-verify"),
                (self.cert_dir.is_some(), "--dest-cert-dir"),
            ],
        };
        names
            .into_iter()
            .find_map(|(given, name)| given.then_some(name))
    }
}

impl SrcRegistryFlags {
    fn side(&self) -> Side<'_> {
        Side {
            prefix: "src",
            creds: self.src_creds.as_deref(),
            no_creds: self.src_no_creds,
            authfile: self.src_authfile.as_ref(),
            tls_verify: self.src_tls_verify,
            cert_dir: self.src_cert_dir.as_ref(),
        }
    }

    /// The options these flags give; `authfile` is the command's `--authfile`.
    pub(crate) fn options(
        &self,
        global: &GlobalOptions,
        authfile: Option<&PathBuf>,
    ) -> Result<SourceOptions> {
        self.side().options(global, authfile)
    }

    /// The first of these flags given, spelled as on the command line.
    pub(crate) fn first_given(&self) -> Option<&'static str> {
        self.side().first_given()
    }
}

impl DestRegistryFlags {
    fn side(&self) -> Side<'_> {
        Side {
            prefix: "dest",
            creds: self.dest_creds.as_deref(),
            no_creds: self.dest_no_creds,
            authfile: self.dest_authfile.as_ref(),
            tls_verify: self.dest_tls_verify,
            cert_dir: self.dest_cert_dir.as_ref(),
        }
    }

    /// The options these flags give; `authfile` is the command's `--authfile`.
    pub(crate) fn options(
        &self,
        global: &GlobalOptions,
        authfile: Option<&PathBuf>,
    ) -> Result<SourceOptions> {
        self.side().options(global, authfile)
    }

    /// The first of these flags given, spelled as on the command line.
    pub(crate) fn first_given(&self) -> Option<&'static str> {
        self.side().first_given()
    }
}
