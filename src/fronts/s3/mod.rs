//! The S3 API front: GitLab Runner's distributed cache and S3 clients (aws CLI, SDKs) through
//! the node. The protocol layer is here, each piece self-contained and tested on its own: the one
//! reading of a request head, request routing, SigV4, aws-chunked bodies, body digests, object
//! headers and S3 XML.

mod buckets;
pub mod chunked;
pub mod digest;
pub mod error;
pub mod forward;
pub mod front;
mod multipart;
pub mod object_headers;
mod objects;
pub mod request;
pub mod route;
pub mod sigv4;
pub mod xml;
