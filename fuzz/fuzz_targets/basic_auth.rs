//! HTTP Basic authentication: only the exact configured name and password open a user's access.
//!
//! Two users are configured with different access levels, and the anonymous level differs from
//! both, so every outcome tells which identity was granted. The input is tried twice:
//! - as the raw `Authorization` header value: anything granted must be the canonical
//!   `Basic base64(name:password)` of a configured user (any case of the scheme, surrounding
//!   spaces), never a second encoding of the same bytes;
//! - as the decoded `name:password` bytes, sent the way a client sends them: access is granted
//!   exactly when the bytes are one user's credentials, and is that user's.

#![no_main]

use base64::Engine;
use build_cache_proxy::config::{Access, GradleUser};
use build_cache_proxy::fronts::auth::{BasicAuth, Identity};
use http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const WRITER: (&str, &str) = ("ci", "s3cret");
const READER: (&str, &str) = ("reader", "r3ad:only");
const ANONYMOUS: Access = Access::None;

fn auth() -> BasicAuth {
    let user = |(name, password): (&str, &str), access| GradleUser {
        name: name.into(),
        password: Some(password.into()),
        password_file: None,
        access,
    };
    BasicAuth::new(
        &[user(WRITER, Access::Readwrite), user(READER, Access::Read)],
        ANONYMOUS,
    )
}

fn credentials((name, password): (&str, &str)) -> String {
    format!("{name}:{password}")
}

fn identify(value: HeaderValue) -> Identity {
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    auth().identify(&headers)
}

fn expected_for(decoded: &[u8]) -> Identity {
    if decoded == credentials(WRITER).as_bytes() {
        Identity::Known(Access::Readwrite)
    } else if decoded == credentials(READER).as_bytes() {
        Identity::Known(Access::Read)
    } else {
        Identity::Invalid
    }
}

fuzz_target!(|data: &[u8]| {
    let b64 = base64::engine::general_purpose::STANDARD;

    let sent = format!("Basic {}", b64.encode(data));
    let value = HeaderValue::from_str(&sent).expect("base64 is a valid header value");
    assert_eq!(identify(value), expected_for(data), "credentials {data:?}");

    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    match identify(value) {
        Identity::Invalid => {}
        Identity::Known(access) => {
            assert_ne!(
                access, ANONYMOUS,
                "a sent header fell back to anonymous: {data:?}"
            );
            let text = std::str::from_utf8(data).expect("only UTF-8 headers can be accepted");
            let (scheme, encoded) = text.trim().split_once(' ').expect("scheme and credentials");
            assert!(
                scheme.eq_ignore_ascii_case("basic"),
                "scheme {scheme:?} accepted"
            );
            let user = if access == Access::Readwrite {
                WRITER
            } else {
                READER
            };
            assert_eq!(
                encoded.trim(),
                b64.encode(credentials(user)),
                "a non-canonical encoding was accepted as {user:?}"
            );
        }
    }
});
