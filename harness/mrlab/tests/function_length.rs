//! No function of `harness/mrlab/src` (the library and the binary's `cmd/`) runs over
//! `MAX_LINES` lines, tests aside: a longer one does several things, and each gets a name
//! (docs/ARCHITECTURE.md). Tables are `const`/`static` items, not functions, and are not
//! measured. Everything from a file's first `#[cfg(test)]` on is its tests.

mod common;

use std::path::Path;

const MAX_LINES: usize = 80;

/// Whether `line` starts a function item (`fn`, after visibility and qualifiers).
fn starts_fn(line: &str) -> bool {
    let mut rest = line.trim_start();
    loop {
        let before = rest;
        for prefix in [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "async ",
            "const ",
            "unsafe ",
        ] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
        }
        if rest == before {
            break;
        }
    }
    rest.starts_with("fn ")
}

/// The change in brace depth over `line`, braces inside string and char literals aside;
/// `in_string` carries a string literal that spans lines.
fn brace_delta(line: &str, in_string: &mut bool) -> i64 {
    let mut delta = 0;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if *in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => *in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => *in_string = true,
            '/' if chars.peek() == Some(&'/') => break,
            // A char literal `'{'` or `'}'`; a lifetime (`'a`) has no closing quote after one char.
            '\'' => {
                let mut ahead = chars.clone();
                if let (Some(_), Some('\'')) = (ahead.next(), ahead.next()) {
                    chars.next();
                    chars.next();
                }
            }
            '{' => delta += 1,
            '}' => delta -= 1,
            _ => {}
        }
    }
    delta
}

/// Each function of `source` outside its tests: (first line, name, lines).
fn functions(source: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = source
        .lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        if !starts_fn(line) {
            continue;
        }
        let name = line.split("fn ").nth(1).unwrap_or("");
        let name: String = name
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut opened, mut in_string) = (0, false, false);
        for (end, l) in lines.iter().enumerate().skip(start) {
            if !opened && l.trim_end().ends_with(';') {
                break; // a declaration without a body
            }
            depth += brace_delta(l, &mut in_string);
            opened |= l.contains('{');
            if opened && depth <= 0 {
                found.push((start + 1, name.clone(), end - start + 1));
                break;
            }
        }
    }
    found
}

#[test]
fn no_function_of_mrlab_is_longer_than_the_limit() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    common::rust_files(&src, &mut files);
    let mut measured = 0;
    let mut too_long = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
        for (line, name, length) in functions(&text) {
            measured += 1;
            if length > MAX_LINES {
                too_long.push(format!(
                    "{}:{line} {name}: {length} lines",
                    file.strip_prefix(&src).unwrap_or(&file).display()
                ));
            }
        }
    }
    // The walk found the crate's functions, not nothing.
    assert!(measured > 200, "only {measured} functions found");
    assert!(
        too_long.is_empty(),
        "over {MAX_LINES} lines (split by what each part does):\n{}",
        too_long.join("\n")
    );
}

#[test]
fn a_long_function_is_measured_and_tests_are_not() {
    let body = "    let x = \"}\"; // }\n".repeat(MAX_LINES);
    let source = format!(
        "pub(crate) async fn long(a: char) -> char {{\n{body}    '{{'\n}}\n\
         fn short<'a>(s: &'a str) -> &'a str {{\n    s\n}}\n\
         #[cfg(test)]\nmod tests {{\n    fn in_tests() {{\n{body}    }}\n}}\n"
    );
    assert_eq!(
        functions(&source),
        [
            (1, "long".to_string(), MAX_LINES + 3),
            (MAX_LINES + 4, "short".to_string(), 3),
        ]
    );
}
