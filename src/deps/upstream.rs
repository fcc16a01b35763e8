//! Requests to the upstream repositories: one pooled HTTP/1.1 client (HTTPS with the system's
//! roots, or plain HTTP), conditional GETs, redirects followed (a Gradle distribution's URL
//! redirects to its CDN), credentials sent only to the upstream's own host.

use std::time::Duration;

use base64::Engine;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

use crate::fronts::s3::forward::upstream::{connector, error_chain};
use crate::server::body::{self, ResponseBody};

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;
/// Idle pooled connections are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(30);
const USER_AGENT: &str = concat!("build-cache-proxy/", env!("CARGO_PKG_VERSION"));

/// The client every upstream request goes out on.
#[derive(Clone)]
pub struct Client {
    client: HyperClient<HttpsConnector<HttpConnector>, ResponseBody>,
    response_timeout: Duration,
}

/// What the cached copy says, for a conditional GET.
#[derive(Debug, Clone, Default)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// Why there is no answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("no answer from the upstream within {0:?}")]
    Timeout(Duration),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("bad redirect: {0}")]
    BadRedirect(String),
}

impl Client {
    pub fn new(connect_timeout: Duration, response_timeout: Duration) -> std::io::Result<Client> {
        // Plain-HTTP-only when the system has no roots; an https upstream then fails per request
        // with the reason, rather than the daemon refusing to start.
        let connector = connector(connect_timeout, false, "an upstream repository")?;
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Ok(Client {
            client,
            response_timeout,
        })
    }

    /// The response time limit, also each body piece's.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// GETs `url`, following redirects; `credentials` go only to `url`'s own host.
    pub async fn get(
        &self,
        url: &Uri,
        credentials: Option<&(String, String)>,
        validators: &Validators,
    ) -> Result<Response<Incoming>, FetchError> {
        let origin = url.authority().cloned();
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let same_host = url.authority() == origin.as_ref();
            let request = request(&url, credentials.filter(|_| same_host), validators);
            let response =
                tokio::time::timeout(self.response_timeout, self.client.request(request))
                    .await
                    .map_err(|_| FetchError::Timeout(self.response_timeout))?
                    .map_err(|e| FetchError::Unreachable(error_chain(&e)))?;
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED
            {
                return Ok(response);
            }
            url = redirect_target(&url, &response)?;
        }
        Err(FetchError::TooManyRedirects)
    }
}

fn request(
    url: &Uri,
    credentials: Option<&(String, String)>,
    validators: &Validators,
) -> Request<ResponseBody> {
    let mut request = Request::new(body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = url.clone();
    let headers = request.headers_mut();
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    // The bytes are checked and kept as the upstream has them.
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if let Some((user, password)) = credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        if let Ok(value) = HeaderValue::from_str(&format!("Basic {token}")) {
            headers.insert(header::AUTHORIZATION, value);
        }
    }
    if let Some(value) = validators
        .etag
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(header::IF_NONE_MATCH, value);
    }
    if let Some(value) = validators
        .last_modified
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(header::IF_MODIFIED_SINCE, value);
    }
    request
}

/// Where a redirect points: an absolute URL, or a path on the same host.
fn redirect_target(from: &Uri, response: &Response<Incoming>) -> Result<Uri, FetchError> {
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| FetchError::BadRedirect("no Location".into()))?;
    let target: Uri = location
        .parse()
        .map_err(|_| FetchError::BadRedirect(format!("{location:?} is not a URL")))?;
    if target.scheme().is_some() {
        return match target.scheme_str() {
            Some("http" | "https") => Ok(target),
            _ => Err(FetchError::BadRedirect(format!("{location:?}"))),
        };
    }
    if !location.starts_with('/') {
        return Err(FetchError::BadRedirect(format!(
            "{location:?} is not absolute"
        )));
    }
    let mut parts = from.clone().into_parts();
    parts.path_and_query = target.path_and_query().cloned();
    Uri::from_parts(parts).map_err(|e| FetchError::BadRedirect(e.to_string()))
}

/// A base URL and a path under it, as one URL (`https://repo/maven2/` + `org/x.pom`).
pub fn join(base: &str, path: &str) -> Option<Uri> {
    let sep = if base.ends_with('/') { "" } else { "/" };
    format!("{base}{sep}{path}").parse().ok()
}
