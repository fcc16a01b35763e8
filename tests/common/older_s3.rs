//! An S3-compatible store from before full-object checksums: an HTTP proxy in front of the test
//! S3 server that answers a CreateMultipartUpload asking for `x-amz-checksum-type: FULL_OBJECT`
//! as such a store does (400 InvalidRequest), and passes every other request through unchanged
//! (the Host header too, so signatures still hold).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub struct OlderS3 {
    pub addr: SocketAddr,
    refused: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

type Answer = Response<Either<Incoming, Full<Bytes>>>;

impl OlderS3 {
    /// Starts the proxy on a fresh loopback port, in front of `endpoint` (`http://host:port`).
    pub async fn start(endpoint: &str) -> OlderS3 {
        let target = endpoint.trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refused = Arc::new(AtomicU64::new(0));
        let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build_http();
        let counter = refused.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, target, counter) = (client.clone(), target.clone(), counter.clone());
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (client, target, counter) =
                        (client.clone(), target.clone(), counter.clone());
                    async move {
                        if asks_for_full_object_checksum(&request) {
                            counter.fetch_add(1, Ordering::SeqCst);
                            return Ok::<Answer, hyper_util::client::legacy::Error>(refusal());
                        }
                        let (mut parts, body) = request.into_parts();
                        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                        parts.uri = format!("{target}{path}").parse().unwrap();
                        let answer = client.request(Request::from_parts(parts, body)).await?;
                        Ok(answer.map(Either::Left))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        OlderS3 {
            addr,
            refused,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`, the endpoint to give the daemon.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// CreateMultipartUpload requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for OlderS3 {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A CreateMultipartUpload (`POST /bucket/key?uploads`) with a full-object checksum.
fn asks_for_full_object_checksum(request: &Request<Incoming>) -> bool {
    let creates = request.method() == hyper::Method::POST
        && request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "uploads" || p == "uploads="));
    let full_object = request
        .headers()
        .get("x-amz-checksum-type")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"FULL_OBJECT"));
    creates && full_object
}

fn refusal() -> Answer {
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidRequest</Code>\
        <Message>Checksum type FULL_OBJECT is not supported.</Message></Error>";
    Response::builder()
        .status(400)
        .header("content-type", "application/xml")
        .body(Either::Right(Full::new(Bytes::from(xml))))
        .unwrap()
}
