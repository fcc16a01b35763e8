//! Cache keys, as they arrive from a request path: every accepted key must keep the promises the
//! store relies on, and the file it is stored in must stay under the data dir.
//!
//! The input (UTF-8, as a request path is once decoded) is tried as a Gradle key and as an object
//! key in a fixed namespace; when it has a newline, the part before it is also tried as a
//! namespace name for the part after it, since the namespace is joined into the path unhashed.

#![no_main]

use std::path::{Component, Path};

use build_cache_proxy::store::disk::entry_path;
use build_cache_proxy::store::key::{MAX_GRADLE_KEY_LEN, MAX_KEY_LEN};
use build_cache_proxy::store::{Key, Namespace};
use libfuzzer_sys::fuzz_target;

const DATA_DIR: &str = "/var/lib/build-cache-proxy/data";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = Key::gradle(text) {
        assert_eq!(key.namespace(), &Namespace::gradle());
        assert_eq!(
            key.name(),
            text,
            "a Gradle key is stored under the name it was asked for"
        );
        assert!(!text.is_empty() && text.len() <= MAX_GRADLE_KEY_LEN);
        assert!(
            text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{text:?} accepted as a Gradle key"
        );
        check_entry_path(&key);
    }
    let runner = Namespace::new("runner-cache").expect("a valid bucket name");
    if let Ok(key) = Key::object(runner, text) {
        check_object_key(&key, text);
    }
    if let Some((ns, name)) = text.split_once('\n') {
        if let Ok(ns) = Namespace::new(ns) {
            check_namespace(&ns);
            if let Ok(key) = Key::object(ns, name) {
                check_object_key(&key, name);
            }
        }
    }
});

fn check_namespace(ns: &Namespace) {
    let name = ns.as_str();
    assert!(
        (3..=63).contains(&name.len()),
        "{name:?} accepted as a namespace"
    );
    assert!(
        name.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.')),
        "{name:?} accepted as a namespace"
    );
    // The namespace becomes one directory level of its own, so std must read it as exactly one
    // ordinary component (not `.`, `..`, a root or a separator-split pair).
    let components: Vec<_> = Path::new(name).components().collect();
    assert!(
        matches!(components[..], [Component::Normal(c)] if c == name),
        "namespace {name:?} is not one plain path component"
    );
}

fn check_object_key(key: &Key, name: &str) {
    assert_eq!(
        key.name(),
        name,
        "an object key is stored under the name it was asked for"
    );
    assert!(!name.is_empty() && name.len() <= MAX_KEY_LEN);
    assert!(
        !name.chars().any(char::is_control),
        "{name:?} accepted with a control character"
    );
    assert!(
        !name.starts_with('/'),
        "{name:?} accepted with a leading '/'"
    );
    assert!(
        !name.split('/').any(|s| s == "." || s == ".."),
        "{name:?} accepted with a '.' or '..' segment"
    );
    // Backends other than the disk tier (S3, the write-back queue) may use the name as a relative
    // path: read as one, it must only ever descend.
    assert!(
        Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{name:?} reads as a path that is not purely relative"
    );
    check_entry_path(key);
}

/// The disk tier's file for the key is `<dir>/<namespace>/<2 hex>/<64 hex>`, nothing else.
fn check_entry_path(key: &Key) {
    let dir = Path::new(DATA_DIR);
    let path = entry_path(dir, key);
    let rest = path
        .strip_prefix(dir)
        .unwrap_or_else(|_| panic!("{key} is stored outside the data dir: {path:?}"));
    let parts: Vec<&str> = rest
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().expect("entry paths are UTF-8"),
            other => panic!("{key} has an entry path with {other:?}: {path:?}"),
        })
        .collect();
    let [ns, fan_out, file] = parts[..] else {
        panic!("{key} has an entry path of the wrong depth: {path:?}");
    };
    let is_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    assert_eq!(ns, key.namespace().as_str());
    assert!(fan_out.len() == 2 && is_hex(fan_out), "{path:?}");
    assert!(
        file.len() == 64 && is_hex(file) && file.starts_with(fan_out),
        "{path:?}"
    );
}
