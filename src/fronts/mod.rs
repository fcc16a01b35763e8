//! Protocol fronts: each turns its protocol into store operations and store outcomes back into
//! that protocol's status codes. They own authentication and protocol quirks, nothing else.

pub mod admin;
pub mod auth;
pub mod gradle;
pub mod s3;
