//! Java's `.properties` format, as `java.util.Properties.load` reads it: enough for the
//! `METADATA` file Gradle writes with `Properties.store` (ISO-8859-1, `\` escapes, `#` comments,
//! `key=value`, `key: value` or `key value`, lines continued by a trailing backslash).

/// The key/value pairs of `text`, in order. Never fails: Java's reader accepts any input, and
/// so does this one (a malformed `\u` escape keeps its characters as they are).
pub fn parse(text: &[u8]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for line in logical_lines(text) {
        let (key, value) = split(&line);
        pairs.push((unescape(key), unescape(value)));
    }
    pairs
}

fn is_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\x0c')
}

/// Logical lines: comments and blank lines dropped, continued lines joined (the backslash and
/// the continuation's leading blanks removed), leading blanks trimmed.
fn logical_lines(text: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for natural in text.split(|&c| c == b'\n' || c == b'\r') {
        let start = natural.iter().position(|&c| !is_blank(c));
        let trimmed = start.map_or(&natural[..0], |s| &natural[s..]);
        let mut line = match current.take() {
            Some(line) => line,
            // A comment or a blank line only where a logical line starts.
            None if trimmed.is_empty() || trimmed[0] == b'#' || trimmed[0] == b'!' => continue,
            None => Vec::new(),
        };
        line.extend_from_slice(trimmed);
        let trailing = line.iter().rev().take_while(|&&c| c == b'\\').count();
        if trailing % 2 == 1 {
            line.pop();
            current = Some(line);
        } else {
            lines.push(line);
        }
    }
    lines.extend(current);
    lines
}

/// The raw key and value of a logical line: the key ends at the first unescaped `=`, `:` or
/// blank; blanks and one `=` or `:` separate it from the value.
fn split(line: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    let mut escaped = false;
    while i < line.len() {
        let c = line[i];
        if escaped {
            escaped = false;
        } else if c == b'\\' {
            escaped = true;
        } else if c == b'=' || c == b':' || is_blank(c) {
            break;
        }
        i += 1;
    }
    let key = &line[..i];
    let mut j = i;
    while j < line.len() && is_blank(line[j]) {
        j += 1;
    }
    if j < line.len() && (line[j] == b'=' || line[j] == b':') {
        j += 1;
        while j < line.len() && is_blank(line[j]) {
            j += 1;
        }
    }
    (key, &line[j..])
}

/// Resolves `\t`, `\n`, `\r`, `\f`, `\uXXXX` and `\x` (any other character: itself). Bytes
/// are ISO-8859-1 characters.
fn unescape(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        i += 1;
        if c != b'\\' || i == raw.len() {
            out.push(char::from(c));
            continue;
        }
        let e = raw[i];
        i += 1;
        match e {
            b't' => out.push('\t'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b'f' => out.push('\x0c'),
            b'u' => {
                let code = raw
                    .get(i..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32);
                match code {
                    Some(ch) => {
                        out.push(ch);
                        i += 4;
                    }
                    None => out.push('u'),
                }
            }
            other => out.push(char::from(other)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn reads_what_gradle_4_writes() {
        // A METADATA file as Gradle 4.4.1 wrote it here (host and user names changed).
        let text = b"#Generated origin information\n#Sun Dec 06 06:14:22 UTC 2026\n\
executionTime=1001\npath=\\:compileJava\nhostName=h\ncreationTime=1796537662186\n\
rootPath=/tmp/p\ntype=org.gradle.api.tasks.compile.JavaCompile_Decorated\nuserName=u\n";
        let pairs = parse(text);
        assert_eq!(get(&pairs, "path"), Some(":compileJava"));
        assert_eq!(get(&pairs, "executionTime"), Some("1001"));
        assert_eq!(
            get(&pairs, "type"),
            Some("org.gradle.api.tasks.compile.JavaCompile_Decorated")
        );
        assert_eq!(pairs.len(), 7);
    }

    #[test]
    fn separators_escapes_and_continuations() {
        let text =
            b"  a = 1\r\nb:2\nc 3\n! comment\n\n d\\=e=f\\\n    g\nh=\\u0041\\t\\q\\u00zz\nlast\\";
        let pairs = parse(text);
        assert_eq!(get(&pairs, "a"), Some("1"));
        assert_eq!(get(&pairs, "b"), Some("2"));
        assert_eq!(get(&pairs, "c"), Some("3"));
        assert_eq!(get(&pairs, "d=e"), Some("fg"));
        assert_eq!(get(&pairs, "h"), Some("A\tqu00zz"));
        assert_eq!(get(&pairs, "last"), Some(""));
    }
}
