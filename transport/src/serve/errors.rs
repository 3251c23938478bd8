//! Errors as the distribution spec has a registry answer them: an HTTP status and a JSON body
//! `{"errors": [{"code": "...", "message": "...", "detail": ...}]}` whose code clients match
//! (skopeo prints the message, the conformance suite checks the code).

use hyper::StatusCode;

/// The spec's error codes (distribution-spec, "Error Codes"), and the status each goes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// Not a spec code: the store failed (I/O, a damaged object). Answered 500.
    Internal,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::Internal => "UNKNOWN",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::BlobUnknown | Self::BlobUploadUnknown | Self::ManifestUnknown => {
                StatusCode::NOT_FOUND
            }
            Self::NameUnknown => StatusCode::NOT_FOUND,
            Self::BlobUploadInvalid
            | Self::DigestInvalid
            | Self::ManifestBlobUnknown
            | Self::ManifestInvalid
            | Self::NameInvalid
            | Self::SizeInvalid => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Denied => StatusCode::FORBIDDEN,
            Self::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A request answered with an error.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) code: Code,
    /// Overrides the code's usual status (413 for a body over a limit, 416 for a bad range).
    pub(crate) status: Option<StatusCode>,
    pub(crate) message: String,
    /// An upload session still open after the error, for the `Location` header (a client
    /// that sent a chunk out of order asks it where to go on).
    pub(crate) location: Option<String>,
}

impl ApiError {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            status: None,
            message: message.into(),
            location: None,
        }
    }

    /// The same error answered with `status`.
    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// The same error, naming the upload session that is still open.
    pub(crate) fn with_location(mut self, location: String) -> Self {
        self.location = Some(location);
        self
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status.unwrap_or(self.code.status())
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "errors": [{ "code": self.code.as_str(), "message": self.message }]
        }))
        .expect("JSON of strings")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

/// A failure of the store or of I/O: 500, with the cause chain (the client sees why).
impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::new(Code::Internal, format!("{e:#}"))
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        Self::new(Code::Internal, e.to_string())
    }
}

/// What a handler returns.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_the_specs_json_with_its_status() {
        let e = ApiError::new(Code::BlobUnknown, "no such blob");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"errors": [{"code": "BLOB_UNKNOWN", "message": "no such blob"}]})
        );
        let big =
            ApiError::new(Code::SizeInvalid, "too big").with_status(StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
