//! HTTP client plumbing shared by enact's HTTP clients (model servers here, environment
//! servers in `enact-remote`): a reqwest client builder with the TLS crypto provider
//! installed, and response bodies read under a size cap.

/// A reqwest client builder that can make HTTPS connections. reqwest is built with rustls and
/// no bundled crypto provider (no aws-lc): this installs ring as the process default (an
/// already installed default is kept).
pub fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the response is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the connection failed while reading the response: {0}")]
    Transport(#[source] reqwest::Error),
}

/// Reads the whole body of `response`, failing as soon as it exceeds `limit` bytes (a
/// broken or hostile server cannot exhaust memory). A declared `Content-Length` over the
/// limit fails before anything is read.
pub async fn read_body_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let too_large = BodyError::TooLarge { limit };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large);
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if bytes.len() + chunk.len() > limit {
            return Err(too_large);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
