//! The config loader: TOML text plus `BUILD_CACHE_PROXY_*` overrides, parsed and validated.
//!
//! Input: the TOML text, then optionally a NUL byte and environment lines `NAME=value` (TOML
//! text cannot hold a raw NUL, so the split is unambiguous). Secret files are never read: the
//! loader's parse and validate steps are called without the step that opens `*_file` paths.
//!
//! Beyond not panicking or hanging, it checks that an accepted config can be used as the daemon
//! uses it: every duration can be added to `Instant::now()` (a breaker cooldown is), and the
//! result of loading does not depend on the order of the environment.

#![no_main]

use std::time::{Duration, Instant};

use build_cache_proxy::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (toml, env) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(toml) else {
        return;
    };
    let vars: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();

    let loaded = load(text, vars.clone());
    let reversed = load(text, vars.into_iter().rev().collect());
    let outcome =
        |r: &Result<Config, String>| r.as_ref().map(|c| format!("{c:?}")).map_err(String::clone);
    assert_eq!(
        outcome(&loaded),
        outcome(&reversed),
        "the environment's order changed the outcome"
    );
    if let Ok(config) = &loaded {
        check_usable(config);
    }
});

/// Parse, overrides, validation: what `Config::from_toml_with_env` does minus reading secrets.
fn load(text: &str, vars: Vec<(String, String)>) -> Result<Config, String> {
    let config = Config::parse_toml_with_env("fuzz", text, vars).map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn check_usable(config: &Config) {
    let mut durations: Vec<(&str, Duration)> = vec![
        ("listen.idle_timeout", config.listen.idle_timeout),
        ("listen.drain_timeout", config.listen.drain_timeout),
    ];
    if let Some(s3) = &config.s3 {
        durations.extend([
            ("s3.connect_timeout", s3.connect_timeout),
            ("s3.read_timeout", s3.read_timeout),
            ("s3.breaker_cooldown", s3.breaker_cooldown),
            ("s3.retry_max_backoff", s3.retry_max_backoff),
        ]);
    }
    let now = Instant::now();
    for (key, duration) in durations {
        assert!(
            now.checked_add(duration).is_some(),
            "{key} = {duration:?} was accepted but overflows a deadline"
        );
    }
}
