//! The S3 API front (see issue 8): GitLab Runner's cache and S3 clients through the node.

pub mod object_headers;
