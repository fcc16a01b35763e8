//! The protocol layer of the S3 front: SigV4, aws-chunked bodies, body digests, S3 XML and
//! request routing. Each piece is self-contained and tested on its own; the front wires them to
//! the store.

pub mod checksum;
pub mod chunked;
pub mod digest;
pub mod error;
pub mod route;
pub mod sigv4;
pub mod xml;
