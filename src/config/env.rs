//! `BUILD_CACHE_PROXY_<SECTION>_<KEY>` environment overrides, merged over the parsed file.
//!
//! Section and key names contain underscores themselves (`disk.max_size`), so a variable is
//! matched against the known tree instead of being split blindly. The value's TOML type is taken
//! from the same tree, so `BUILD_CACHE_PROXY_S3_PREFIX=2024` stays a string while
//! `BUILD_CACHE_PROXY_S3_MAX_ATTEMPTS=5` becomes a number.

use super::{Config, ConfigError, S3Config};

pub const PREFIX: &str = "BUILD_CACHE_PROXY_";

/// Every section and scalar key that can be overridden, with a value showing its type.
fn template() -> toml::Table {
    let full = Config {
        s3: Some(S3Config::default()),
        ..Config::default()
    };
    match toml::Value::try_from(full) {
        Ok(toml::Value::Table(t)) => t,
        _ => unreachable!("the default config always serializes to a table"),
    }
}

pub fn apply_overrides(
    tree: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let template = template();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(PREFIX))
        .collect();
    // Apply in a fixed order so that the same environment always gives the same result.
    vars.sort();
    for (name, raw) in vars {
        let wanted = name[PREFIX.len()..].to_ascii_lowercase();
        let (section, key, example) = find_setting(&template, &wanted).ok_or_else(|| {
            ConfigError::invalid(
                name.clone(),
                "is not a known setting (BUILD_CACHE_PROXY_<SECTION>_<KEY>, e.g. BUILD_CACHE_PROXY_DISK_MAX_SIZE)",
            )
        })?;
        let value = typed_value(example, &raw).ok_or_else(|| {
            ConfigError::invalid(
                name.clone(),
                format!(
                    "{raw:?} is not a valid {} for {section}.{key}",
                    example.type_str()
                ),
            )
        })?;
        let table = tree
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match table {
            toml::Value::Table(t) => {
                t.insert(key.to_string(), value);
            }
            _ => return Err(ConfigError::invalid(section, "must be a table")),
        }
    }
    Ok(())
}

fn find_setting<'t>(
    template: &'t toml::Table,
    wanted: &str,
) -> Option<(&'t str, &'t str, &'t toml::Value)> {
    template.iter().find_map(|(section, body)| {
        let rest = wanted.strip_prefix(section.as_str())?.strip_prefix('_')?;
        let toml::Value::Table(keys) = body else {
            return None;
        };
        let (key, example) = keys.get_key_value(rest)?;
        (!example.is_table() && !example.is_array()).then_some((
            section.as_str(),
            key.as_str(),
            example,
        ))
    })
}

fn typed_value(example: &toml::Value, raw: &str) -> Option<toml::Value> {
    Some(match example {
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().ok()?),
        toml::Value::Float(_) => toml::Value::Float(raw.trim().parse().ok()?),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return None,
        }),
        _ => return None,
    })
}
