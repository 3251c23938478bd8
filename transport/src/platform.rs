//! Choosing one image of a multi-platform index, as skopeo does: the running system's OS,
//! architecture and variant unless `--override-os/-arch/-variant` say otherwise.

use containers_image_proxy::oci_spec::image::{Descriptor, ImageIndex};

/// The platform to choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedPlatform {
    /// GOOS spelling (`linux`).
    pub os: String,
    /// GOARCH spelling (`amd64`, `arm64`).
    pub arch: String,
    /// `v7`, `v8`...; `None` accepts any.
    pub variant: Option<String>,
}

impl WantedPlatform {
    /// This machine, overridden where given.
    pub fn new(os: Option<&str>, arch: Option<&str>, variant: Option<&str>) -> Self {
        let native_arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            os: os.unwrap_or(std::env::consts::OS).to_owned(),
            arch: arch.unwrap_or(native_arch).to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Reads `OS/ARCH[/VARIANT]`, as podman's and crane's `--platform` take it.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut parts = text.split('/');
        let (Some(os), Some(arch)) = (parts.next(), parts.next()) else {
            anyhow::bail!("platform {text:?}: give OS/ARCH or OS/ARCH/VARIANT (linux/arm64/v8)");
        };
        let variant = parts.next();
        anyhow::ensure!(
            parts.next().is_none() && !os.is_empty() && !arch.is_empty() && variant != Some(""),
            "platform {text:?}: give OS/ARCH or OS/ARCH/VARIANT (linux/arm64/v8)"
        );
        Ok(Self {
            os: os.to_owned(),
            arch: arch.to_owned(),
            variant: variant.map(str::to_owned),
        })
    }

    /// Whether an index entry's `platform` (a JSON object) is this platform.
    pub fn matches_json(&self, platform: &serde_json::Value) -> bool {
        platform["os"].as_str() == Some(self.os.as_str())
            && platform["architecture"].as_str() == Some(self.arch.as_str())
            && self
                .variant
                .as_deref()
                .is_none_or(|v| platform["variant"].as_str() == Some(v))
    }

    /// The best matching manifest of `index`: exact variant first, then any variant.
    pub fn choose<'a>(&self, index: &'a ImageIndex) -> Option<&'a Descriptor> {
        let candidates = index.manifests().iter().filter(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == self.os && p.architecture().to_string() == self.arch
            })
        });
        let mut fallback = None;
        for d in candidates {
            let variant = d.platform().as_ref().and_then(|p| p.variant().clone());
            match (&self.variant, variant) {
                (Some(want), Some(have)) if *want == have => return Some(d),
                (Some(_), _) => {}
                (None, _) => {
                    fallback.get_or_insert(d);
                }
            }
        }
        fallback
    }
}

impl std::fmt::Display for WantedPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_by_os_arch_variant() {
        let index: ImageIndex = serde_json::from_str(r#"{
            "schemaVersion": 2,
            "manifests": [
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v6"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc","size":1,"platform":{"os":"linux","architecture":"amd64"}}
            ]}"#).unwrap();
        let pick = |arch, variant| {
            WantedPlatform::new(Some("linux"), Some(arch), variant)
                .choose(&index)
                .map(|d| d.digest().to_string())
        };
        assert!(pick("amd64", None).unwrap().contains("cccc"));
        assert!(pick("arm", Some("v7")).unwrap().contains("bbbb"));
        assert!(pick("arm", None).unwrap().contains("aaaa"));
        assert!(pick("s390x", None).is_none());
        assert!(pick("arm", Some("v8")).is_none());
    }

    #[test]
    fn parses_and_matches_platform_names() {
        let arm = WantedPlatform::parse("linux/arm/v7").unwrap();
        assert_eq!(arm.to_string(), "linux/arm/v7");
        let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert!(arm.matches_json(&json(
            r#"{"os":"linux","architecture":"arm","variant":"v7"}"#
        )));
        assert!(!arm.matches_json(&json(
            r#"{"os":"linux","architecture":"arm","variant":"v6"}"#
        )));
        let amd = WantedPlatform::parse("linux/amd64").unwrap();
        assert!(amd.matches_json(&json(
            r#"{"os":"linux","architecture":"amd64","variant":"v3"}"#
        )));
        assert!(!amd.matches_json(&json(r#"{"os":"windows","architecture":"amd64"}"#)));
        assert!(!amd.matches_json(&serde_json::Value::Null));
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/arm/",
            "linux/arm/v7/x",
            "",
        ] {
            assert!(WantedPlatform::parse(bad).is_err(), "{bad}");
        }
    }
}
