//! The plan of a copy: for each layer of the target image, how it comes into the store,
//! decided once per image before anything is fetched. A plan is data: [`plan_layers`] needs
//! only the manifest, the DiffIDs, what the store holds and the delta in use, if any.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail};
use containers_image_proxy::oci_spec::image::Descriptor;
use skiff_storage::OciDigest;

use crate::format::media::Compression;
use crate::format::oci_delta::{DeltaManifest, MEDIA_TYPE_TAR_DIFF};
use crate::format::zstd_chunked::{Annotations, Position};

/// How one layer comes into the store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LayerPlan {
    /// The store holds it (by DiffID): nothing to do.
    Skip,
    /// Its blob, streamed whole. `reason` says why a zstd:chunked layer is not pulled
    /// partially.
    Full { reason: Option<String> },
    /// zstd:chunked: rebuilt from the files the store holds and byte ranges of the blob (whole,
    /// if the source cannot serve ranges or the partial pull fails).
    Partial(ChunkedLayout),
    /// Replayed from the source's unpacked layer (containers-storage): no blob is read.
    Unpacked,
    /// From the delta in use: `blob` is a tar-diff applied to the delta's source image, or the
    /// layer's blob carried whole.
    Delta {
        blob: Box<Descriptor>,
        tar_diff: bool,
    },
}

/// Where a zstd:chunked layer's metadata lies, from its annotations.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChunkedLayout {
    /// `sha256:` of the compressed TOC.
    pub(crate) toc_digest: String,
    pub(crate) toc: Position,
    pub(crate) tar_split: Position,
}

/// One layer to bring in, with its plan.
#[derive(Debug, Clone)]
pub(crate) struct LayerJob {
    pub(crate) desc: Descriptor,
    pub(crate) diff_id: OciDigest,
    /// Position in the manifest (1-based), for messages.
    pub(crate) index: usize,
    pub(crate) plan: LayerPlan,
}

impl LayerJob {
    /// Bytes the job fetches at most (its blob's size), for ordering.
    fn size(&self) -> u64 {
        match &self.plan {
            LayerPlan::Skip => 0,
            LayerPlan::Delta { blob, .. } => blob.size(),
            _ => self.desc.size(),
        }
    }
}

/// Plans every layer of an image: one job per distinct blob (digest and size) and DiffID, the
/// stored ones skipped, the others largest first. With a `delta`, each layer not stored must
/// come from it.
///
/// `kept_blobs` is given when blobs are kept (`--keep-blobs`): the blobs the store holds. Then,
/// without a delta, a layer whose blob is not held is fetched whole so that its blob is kept,
/// even when the layer itself is stored or could be pulled partially.
///
/// `unpacked`: the source holds the layers unpacked (containers-storage), and every layer not
/// stored is replayed from there.
pub(crate) fn plan_layers(
    layers: &[Descriptor],
    diff_ids: &[OciDigest],
    stored: &HashSet<OciDigest>,
    kept_blobs: Option<&HashSet<OciDigest>>,
    delta: Option<&DeltaManifest>,
    unpacked: bool,
) -> Result<Vec<LayerJob>> {
    let mut jobs = Vec::new();
    let mut seen = HashSet::new();
    for (i, (desc, diff_id)) in layers.iter().zip(diff_ids).enumerate() {
        // A blob the manifest names twice is read once; two different blobs with one DiffID
        // are both read and checked, although the layer is stored once.
        if !seen.insert((desc.digest(), desc.size(), diff_id)) {
            continue;
        }
        // An unpacked layer has no blob to keep.
        let to_keep = delta.is_none()
            && !unpacked
            && kept_blobs.is_some_and(|held| !held.contains(desc.digest()));
        let plan = if stored.contains(diff_id) && !to_keep {
            LayerPlan::Skip
        } else if let Some(delta) = delta {
            from_delta(delta, desc, diff_id)?
        } else if unpacked {
            LayerPlan::Unpacked
        } else {
            Compression::of_layer(desc.media_type())
                .with_context(|| format!("Layer {}", desc.digest()))?;
            match from_annotations(desc) {
                LayerPlan::Partial(_) if to_keep => LayerPlan::Full {
                    reason: Some("its blob is kept whole (--keep-blobs)".into()),
                },
                plan => plan,
            }
        };
        jobs.push(LayerJob {
            desc: desc.clone(),
            diff_id: diff_id.clone(),
            index: i + 1,
            plan,
        });
    }
    // Largest first: the longest transfer starts at once (a stable sort keeps manifest order
    // among equals).
    jobs.sort_by_key(|job| std::cmp::Reverse(job.size()));
    Ok(jobs)
}

/// The plan of a layer that is not stored: partial when it is zstd:chunked.
fn from_annotations(desc: &Descriptor) -> LayerPlan {
    match Annotations::parse(desc.annotations().as_ref()) {
        Ok(Annotations::Chunked {
            toc_digest,
            toc,
            tar_split,
        }) => LayerPlan::Partial(ChunkedLayout {
            toc_digest,
            toc,
            tar_split,
        }),
        Ok(Annotations::None) => LayerPlan::Full { reason: None },
        Ok(Annotations::Unusable(reason)) => LayerPlan::Full {
            reason: Some(reason),
        },
        Err(e) => LayerPlan::Full {
            reason: Some(format!("{e:#}")),
        },
    }
}

fn from_delta(delta: &DeltaManifest, desc: &Descriptor, diff_id: &OciDigest) -> Result<LayerPlan> {
    let Some(blob) = delta.layers_by_to.get(&desc.digest().to_string()) else {
        bail!(
            "layer {} (DiffID {diff_id}) is neither in the delta nor in the repository",
            desc.digest()
        );
    };
    Ok(LayerPlan::Delta {
        tar_diff: blob.media_type().to_string() == MEDIA_TYPE_TAR_DIFF,
        blob: Box::new(blob.clone()),
    })
}

/// True when some job is a partial pull (which needs the store's files to reuse).
pub(crate) fn has_partial(jobs: &[LayerJob]) -> bool {
    jobs.iter()
        .any(|job| matches!(job.plan, LayerPlan::Partial(_)))
}

/// Turns partial pulls into full ones: with nothing to reuse, one read of the whole blob beats
/// reading it piecewise.
pub(crate) fn without_partials(jobs: &mut [LayerJob]) {
    for job in jobs {
        if matches!(job.plan, LayerPlan::Partial(_)) {
            job.plan = LayerPlan::Full { reason: None };
        }
    }
}

/// The compressed bytes of the layers a copy without a delta would fetch, by blob digest: the
/// layers not stored.
pub(crate) fn missing_blobs<'a>(
    layers: &'a [Descriptor],
    diff_ids: &[OciDigest],
    stored: &HashSet<OciDigest>,
) -> HashMap<&'a str, u64> {
    layers
        .iter()
        .zip(diff_ids)
        .filter(|(_, diff_id)| !stored.contains(*diff_id))
        .map(|(desc, _)| (desc.digest().as_ref(), desc.size()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> OciDigest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn layer(c: char, size: u64, annotations: serde_json::Value) -> Descriptor {
        serde_json::from_value(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
            "digest": digest(c).to_string(),
            "size": size,
            "annotations": annotations,
        }))
        .unwrap()
    }

    fn chunked() -> serde_json::Value {
        serde_json::json!({
            "io.github.containers.zstd-chunked.manifest-checksum": digest('f').to_string(),
            "io.github.containers.zstd-chunked.manifest-position": "100:20:40:1",
            "io.github.containers.zstd-chunked.tarsplit-position": "120:10:30",
        })
    }

    #[test]
    fn stored_layers_are_skipped_and_the_rest_go_largest_first() {
        let layers = [
            layer('a', 10, serde_json::json!({})),
            layer('b', 30, serde_json::json!({})),
            layer('c', 20, chunked()),
        ];
        let diff_ids = [digest('1'), digest('2'), digest('3')];
        let stored = HashSet::from([digest('2')]);
        let jobs = plan_layers(&layers, &diff_ids, &stored, None, None, false).unwrap();
        let plans: Vec<_> = jobs.iter().map(|j| (j.index, j.plan.clone())).collect();
        assert!(matches!(plans[0], (3, LayerPlan::Partial(_))), "{plans:?}");
        assert_eq!(plans[1], (1, LayerPlan::Full { reason: None }));
        assert_eq!(plans[2], (2, LayerPlan::Skip));
        let mut jobs = jobs;
        assert!(has_partial(&jobs));
        without_partials(&mut jobs);
        assert!(!has_partial(&jobs));
        let missing = missing_blobs(&layers, &diff_ids, &stored);
        assert_eq!(missing.values().sum::<u64>(), 30);
    }

    #[test]
    fn kept_blobs_fetch_whole_every_layer_whose_blob_is_not_held() {
        let layers = [
            layer('a', 10, serde_json::json!({})),
            layer('b', 20, chunked()),
            layer('c', 30, serde_json::json!({})),
        ];
        let diff_ids = [digest('1'), digest('2'), digest('3')];
        // Layer 1 is stored without its blob, layer 3 with it; layer 2 is not stored.
        let stored = HashSet::from([digest('1'), digest('3')]);
        let held = HashSet::from([digest('c')]);
        let jobs = plan_layers(&layers, &diff_ids, &stored, Some(&held), None, false).unwrap();
        let plans: Vec<_> = jobs.iter().map(|j| (j.index, j.plan.clone())).collect();
        assert!(
            matches!(&plans[0], (2, LayerPlan::Full { reason: Some(r) }) if r.contains("--keep-blobs")),
            "{plans:?}"
        );
        assert_eq!(plans[1], (1, LayerPlan::Full { reason: None }));
        assert_eq!(plans[2], (3, LayerPlan::Skip));
    }

    #[test]
    fn a_repeated_blob_is_planned_once_and_a_repeated_diff_id_twice() {
        let layers = [
            layer('a', 10, serde_json::json!({})),
            layer('a', 10, serde_json::json!({})),
            layer('b', 10, serde_json::json!({})),
        ];
        let diff_ids = [digest('1'), digest('1'), digest('1')];
        let jobs = plan_layers(&layers, &diff_ids, &HashSet::new(), None, None, false).unwrap();
        assert_eq!(jobs.iter().map(|j| j.index).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn unusable_chunked_annotations_mean_a_full_pull_with_the_reason() {
        let mut bad = chunked();
        bad["io.github.containers.zstd-chunked.manifest-position"] = "nonsense".into();
        let jobs = plan_layers(
            &[layer('a', 10, bad)],
            &[digest('1')],
            &HashSet::new(),
            None,
            None,
            false,
        )
        .unwrap();
        assert!(
            matches!(&jobs[0].plan, LayerPlan::Full { reason: Some(r) } if !r.is_empty()),
            "{:?}",
            jobs[0].plan
        );
    }

    #[test]
    fn a_layer_that_is_not_a_layer_is_refused_before_anything_runs() {
        let mut config_as_layer = layer('a', 10, serde_json::json!({}));
        config_as_layer
            .set_media_type(containers_image_proxy::oci_spec::image::MediaType::ImageConfig);
        let e = plan_layers(
            &[config_as_layer],
            &[digest('1')],
            &HashSet::new(),
            None,
            None,
            false,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains(&digest('a').to_string()), "{e:#}");
    }

    #[test]
    fn unpacked_layers_are_replayed_unless_stored_whatever_their_compression() {
        let layers = [
            layer('a', 10, chunked()),
            layer('b', 20, serde_json::json!({})),
        ];
        let diff_ids = [digest('1'), digest('2')];
        let stored: HashSet<_> = [digest('2')].into();
        let held = HashSet::new();
        let jobs = plan_layers(&layers, &diff_ids, &stored, Some(&held), None, true).unwrap();
        let plans: Vec<_> = jobs
            .iter()
            .map(|j| (j.diff_id.clone(), j.plan.clone()))
            .collect();
        // Largest first: a stored layer costs nothing.
        assert_eq!(
            plans,
            [
                (digest('1'), LayerPlan::Unpacked),
                (digest('2'), LayerPlan::Skip)
            ]
        );
    }

    #[test]
    fn with_a_delta_every_missing_layer_comes_from_it() {
        let tar_diff: Descriptor = serde_json::from_value(serde_json::json!({
            "mediaType": MEDIA_TYPE_TAR_DIFF, "digest": digest('d').to_string(), "size": 5,
        }))
        .unwrap();
        let delta = DeltaManifest {
            source_config: digest('9'),
            target_manifest: tar_diff.clone(),
            target_config: tar_diff.clone(),
            layers_by_to: HashMap::from([(digest('b').to_string(), tar_diff.clone())]),
            named_targets: Vec::new(),
        };
        let layers = [
            layer('a', 10, serde_json::json!({})),
            layer('b', 10, serde_json::json!({})),
        ];
        let diff_ids = [digest('1'), digest('2')];
        let stored = HashSet::from([digest('1')]);
        let jobs = plan_layers(&layers, &diff_ids, &stored, None, Some(&delta), false).unwrap();
        assert_eq!(
            jobs[0].plan,
            LayerPlan::Delta {
                blob: Box::new(tar_diff),
                tar_diff: true
            }
        );
        assert_eq!(jobs[1].plan, LayerPlan::Skip);
        let e = plan_layers(
            &layers,
            &diff_ids,
            &HashSet::new(),
            None,
            Some(&delta),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("neither in the delta"), "{e}");
    }
}
