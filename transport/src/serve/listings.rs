//! What the server lists: repositories (`_catalog`), the tags of a repository (paged, with
//! `Link`), and the referrers of a manifest (an index, filtered by `artifactType`).

use std::sync::Arc;

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use skiff_storage::{FsVerityHashValue, OciDigest};

use super::api::query_param;
use super::content::Content;
use super::errors::{ApiError, ApiResult, Code};
use super::handlers::{Body, json_response};
use crate::blob::MAX_MANIFEST_SIZE;
use crate::format::media::INDEX_MEDIA_TYPE;

/// Tags listed per page when the client names no `n`.
const MAX_TAGS_PAGE: usize = 1000;

/// The repositories: the names of the stored tags.
pub(super) async fn catalog<H: FsVerityHashValue>(
    content: &Arc<Content<H>>,
) -> ApiResult<Response<Body>> {
    let c = content.clone();
    let names = tokio::task::spawn_blocking(move || -> ApiResult<Vec<String>> {
        let mut names: Vec<String> = composefs_oci::oci_image::list_refs(c.store.repo())?
            .into_iter()
            .filter_map(|(tag, _)| split_tag(&tag).map(|(n, _)| n.to_owned()))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    })
    .await
    .map_err(anyhow::Error::from)??;
    json_response(&serde_json::json!({ "repositories": names }), None)
}

/// `NAME:TAG` of a stored tag that the API can name.
fn split_tag(stored: &str) -> Option<(&str, &str)> {
    let (name, tag) = stored.rsplit_once(':')?;
    (super::api::repository_name(name).is_ok() && super::api::valid_tag(tag)).then_some((name, tag))
}

pub(super) async fn tags<H: FsVerityHashValue>(
    content: &Arc<Content<H>>,
    name: &str,
    query: Option<&str>,
) -> ApiResult<Response<Body>> {
    let c = content.clone();
    let owned = name.to_owned();
    let mut tags = tokio::task::spawn_blocking(move || -> ApiResult<Vec<String>> {
        Ok(composefs_oci::oci_image::list_refs(c.store.repo())?
            .into_iter()
            .filter_map(|(tag, _)| match split_tag(&tag) {
                Some((n, t)) if n == owned => Some(t.to_owned()),
                _ => None,
            })
            .collect())
    })
    .await
    .map_err(anyhow::Error::from)??;
    tags.sort();
    if let Some(last) = query_param(query, "last") {
        tags.retain(|t| *t > last);
    }
    let n = match query_param(query, "n") {
        Some(n) => n.parse::<usize>().map_err(|_| {
            ApiError::new(Code::Unsupported, format!("n={n} is not a number"))
                .with_status(StatusCode::BAD_REQUEST)
        })?,
        None => MAX_TAGS_PAGE,
    };
    let more = tags.len() > n;
    tags.truncate(n);
    let link = match (more, tags.last()) {
        (true, Some(last)) => Some(format!(
            "</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\""
        )),
        _ => None,
    };
    json_response(&serde_json::json!({ "name": name, "tags": tags }), link)
}

/// The referrers API: an index of the stored manifests whose `subject` is `digest`.
pub(super) async fn referrers<H: FsVerityHashValue>(
    content: &Arc<Content<H>>,
    digest: &OciDigest,
    query: Option<&str>,
) -> ApiResult<Response<Body>> {
    let c = content.clone();
    let subject = digest.clone();
    let found = tokio::task::spawn_blocking(move || {
        skiff_storage::artifacts::referrers(&c.store, &subject, MAX_MANIFEST_SIZE)
    })
    .await
    .map_err(anyhow::Error::from)??;
    let wanted = query_param(query, "artifactType");
    let mut manifests = Vec::new();
    for (digest, bytes) in found {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let artifact_type = json["artifactType"]
            .as_str()
            .or(json["config"]["mediaType"].as_str())
            .unwrap_or_default()
            .to_owned();
        if wanted.as_ref().is_some_and(|w| *w != artifact_type) {
            continue;
        }
        let mut descriptor = serde_json::json!({
            "mediaType": super::content::media_type_of(&json),
            "digest": digest.to_string(),
            "size": bytes.len(),
            "artifactType": artifact_type,
        });
        if let Some(annotations) = json.get("annotations") {
            descriptor["annotations"] = annotations.clone();
        }
        manifests.push(descriptor);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
    });
    let mut r = json_response(&index, None)?;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(INDEX_MEDIA_TYPE),
    );
    if wanted.is_some() {
        r.headers_mut().insert(
            "OCI-Filters-Applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tags_the_api_can_name_are_listed() {
        assert_eq!(split_tag("app:v1"), Some(("app", "v1")));
        assert_eq!(split_tag("a/b:latest"), Some(("a/b", "latest")));
        assert_eq!(split_tag("notag"), None);
        assert_eq!(split_tag("Upper:v1"), None);
        assert_eq!(split_tag("skiff-serve/untagged/app/00"), None);
    }
}
