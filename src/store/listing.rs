//! S3's listing rules over names in order, shared by the disk tier's own listing and the tiered
//! store's merge of the backend's listing with the write-back queue.
//!
//! A listing is of the names under a prefix. With a delimiter, every name that has the
//! delimiter after the prefix is rolled up into one common prefix (up to and including the
//! delimiter); names and common prefixes form one sequence in order, of which a page holds at
//! most `max_keys`. A page that stops early names its last line as where the next one starts
//! (everything up to it, and under it when it is a common prefix, is skipped).

use std::ops::Bound;

/// One line of a listing, before its object's metadata is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Name(String),
    Prefix(String),
}

impl Line {
    /// What orders the line among the others.
    pub fn key(&self) -> &str {
        match self {
            Line::Name(name) | Line::Prefix(name) => name,
        }
    }

    /// The line `name` appears as.
    pub fn of(name: &str, prefix: &str, delimiter: Option<&str>) -> Line {
        match rolled_up(name, prefix, delimiter) {
            Some(common) => Line::Prefix(common),
            None => Line::Name(name.to_string()),
        }
    }
}

/// The common prefix `name` (which starts with `prefix`) is rolled up into, if any.
pub fn rolled_up(name: &str, prefix: &str, delimiter: Option<&str>) -> Option<String> {
    let delimiter = delimiter.filter(|d| !d.is_empty())?;
    let rest = name.get(prefix.len()..)?;
    rest.find(delimiter)
        .map(|at| name[..prefix.len() + at + delimiter.len()].to_string())
}

/// The smallest string greater than every string that starts with `prefix` (its last character
/// made the next one), or `None` when there is none.
pub fn past(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Walks names in order through `seek` (the first name at or after a bound, in the listed
/// namespace) and returns up to `limit` lines after `cursor`, and whether more follow. Each
/// common prefix costs one seek past it, so the work is bounded by the page, not by how many
/// names the prefixes hold.
pub fn walk(
    mut seek: impl FnMut(Bound<&str>) -> Option<String>,
    prefix: &str,
    delimiter: Option<&str>,
    cursor: Option<&str>,
    limit: usize,
) -> (Vec<Line>, bool) {
    let mut lines = Vec::new();
    let mut from: Option<String> = None;
    let mut inclusive = true;
    // Start at the prefix, or after the cursor when that is further.
    match cursor {
        Some(c) if c >= prefix => {
            from = Some(c.to_string());
            inclusive = false;
        }
        _ => {}
    }
    loop {
        let bound = match (&from, inclusive) {
            (None, _) => Bound::Included(prefix),
            (Some(f), true) => Bound::Included(f.as_str()),
            (Some(f), false) => Bound::Excluded(f.as_str()),
        };
        let Some(name) = seek(bound) else {
            return (lines, false);
        };
        if !name.starts_with(prefix) {
            return (lines, false);
        }
        let line = Line::of(&name, prefix, delimiter);
        if let Line::Prefix(common) = &line {
            // Everything under the prefix is this one line: go past it.
            match past(common) {
                Some(next) => {
                    from = Some(next);
                    inclusive = true;
                }
                None => {
                    from = Some(name.clone());
                    inclusive = false;
                }
            }
        } else {
            from = Some(name.clone());
            inclusive = false;
        }
        if cursor.is_some_and(|c| line.key() <= c) {
            continue;
        }
        if lines.len() == limit {
            return (lines, true);
        }
        lines.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn page(
        set: &BTreeSet<String>,
        prefix: &str,
        delimiter: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> (Vec<Line>, bool, usize) {
        let mut seeks = 0;
        let (lines, more) = walk(
            |bound| {
                seeks += 1;
                set.range::<str, _>((bound, Bound::Unbounded))
                    .next()
                    .cloned()
            },
            prefix,
            delimiter,
            cursor,
            limit,
        );
        (lines, more, seeks)
    }

    #[test]
    fn names_roll_up_and_pages_continue() {
        let many: Vec<String> = (0..500).map(|i| format!("big/{i:04}")).collect();
        let mut set = names(&["a", "b/1", "b/2", "c", "d/x/1"]);
        set.extend(many);
        let n = |s: &str| Line::Name(s.into());
        let p = |s: &str| Line::Prefix(s.into());
        let (lines, more, seeks) = page(&set, "", Some("/"), None, 10);
        assert_eq!(lines, [n("a"), p("b/"), p("big/"), n("c"), p("d/")]);
        assert!(!more);
        assert!(seeks <= 7, "one seek per line, not per name: {seeks}");

        let (lines, more, _) = page(&set, "", Some("/"), None, 2);
        assert_eq!(lines, [n("a"), p("b/")]);
        assert!(more);
        let (lines, more, _) = page(&set, "", Some("/"), Some("b/"), 2);
        assert_eq!(lines, [p("big/"), n("c")]);
        assert!(more);
        let (lines, more, _) = page(&set, "", Some("/"), Some("c"), 2);
        assert_eq!(lines, [p("d/")]);
        assert!(!more);

        let (lines, _, _) = page(&set, "d/", Some("/"), None, 10);
        assert_eq!(lines, [p("d/x/")]);
        let (lines, more, _) = page(&set, "b/", None, Some("b/1"), 10);
        assert_eq!(lines, [n("b/2")]);
        assert!(!more);
        // A cursor before the prefix starts at the prefix.
        let (lines, _, _) = page(&set, "c", None, Some("a"), 10);
        assert_eq!(lines, [n("c")]);
    }

    #[test]
    fn past_is_after_everything_under_a_prefix() {
        assert_eq!(past("a/").as_deref(), Some("a0"));
        assert_eq!(past("").as_deref(), None);
        assert_eq!(past("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(past("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(rolled_up("a/b/c", "a/", Some("/")).as_deref(), Some("a/b/"));
        assert_eq!(rolled_up("a/b", "a/", Some("/")), None);
        assert_eq!(rolled_up("a/b", "a/", Some("")), None);
        assert_eq!(rolled_up("x--y--z", "", Some("--")).as_deref(), Some("x--"));
    }
}
