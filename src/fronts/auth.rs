//! HTTP Basic authentication against the configured users.

use std::collections::HashMap;

use base64::Engine;
use http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::config::{Access, GradleUser};

/// Who a request is, as far as access goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Credentials were sent and are wrong, or the header is malformed.
    Invalid,
    /// A known user, or an anonymous request, with this access level.
    Known(Access),
}

pub struct BasicAuth {
    users: HashMap<String, (String, Access)>,
    anonymous: Access,
}

impl BasicAuth {
    /// Users must have their passwords resolved (config loading reads `password_file`).
    pub fn new(users: &[GradleUser], anonymous: Access) -> Self {
        let users = users
            .iter()
            .map(|u| {
                let password = u.password.clone().unwrap_or_default();
                (u.name.clone(), (password, u.access))
            })
            .collect();
        BasicAuth { users, anonymous }
    }

    pub fn identify(&self, headers: &HeaderMap) -> Identity {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Identity::Known(self.anonymous);
        };
        let Some((name, password)) = parse_basic(value.as_bytes()) else {
            return Identity::Invalid;
        };
        match self.users.get(&name) {
            Some((expected, access))
                if bool::from(expected.as_bytes().ct_eq(password.as_bytes())) =>
            {
                Identity::Known(*access)
            }
            _ => Identity::Invalid,
        }
    }
}

fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (name, password) = decoded.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn auth() -> BasicAuth {
        let users = [GradleUser {
            name: "ci".into(),
            password: Some("s3cret".into()),
            password_file: None,
            access: Access::Readwrite,
        }];
        BasicAuth::new(&users, Access::Read)
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn basic_credentials_are_checked() {
        let a = auth();
        assert_eq!(a.identify(&HeaderMap::new()), Identity::Known(Access::Read));
        // "ci:s3cret"
        assert_eq!(
            a.identify(&with_auth("Basic Y2k6czNjcmV0")),
            Identity::Known(Access::Readwrite)
        );
        // "ci:wrong"
        assert_eq!(
            a.identify(&with_auth("Basic Y2k6d3Jvbmc=")),
            Identity::Invalid
        );
        assert_eq!(a.identify(&with_auth("Bearer xyz")), Identity::Invalid);
        assert_eq!(a.identify(&with_auth("Basic !!!")), Identity::Invalid);
    }
}
