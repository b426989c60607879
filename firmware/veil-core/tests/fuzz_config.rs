//! The configuration file and `VEIL_*` variables are a boundary a technician types into.
//! Property tests (proptest; `PROPTEST_CASES` raises the count) spoil the documented example
//! line by line and byte by byte, and set random variables: parsing never panics, and every
//! refusal is a list of issues, each with a message a technician can act on.

use proptest::prelude::*;
use veil_core::config::{ConfigIssue, parse};

/// The example of docs/configuration.md.
fn example() -> String {
    let doc = include_str!("../../../docs/configuration.md");
    let start = doc.find("```toml\n").expect("the page has a TOML example") + 8;
    let len = doc[start..].find("```").expect("the example ends");
    doc[start..start + len].to_string()
}

#[derive(Debug, Clone)]
enum Spoil {
    DropLine(usize),
    RepeatLine(usize),
    /// The value after `=` on a line becomes this text.
    Value(usize, String),
    /// One byte becomes another.
    Byte(usize, u8),
}

fn spoil() -> impl Strategy<Value = Spoil> {
    let value = prop_oneof![
        Just("\"\"".to_string()),
        Just("-1".to_string()),
        Just("1e400".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("true".to_string()),
        Just("99999999999999999999".to_string()),
        Just("\"rtsp://[::1\"".to_string()),
        ".{0,20}".prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:?}")),
    ];
    prop_oneof![
        any::<usize>().prop_map(Spoil::DropLine),
        any::<usize>().prop_map(Spoil::RepeatLine),
        (any::<usize>(), value).prop_map(|(i, v)| Spoil::Value(i, v)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Spoil::Byte(i, b)),
    ]
}

fn apply(text: String, s: &Spoil) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len().max(1);
    match s {
        Spoil::DropLine(i) => {
            if !lines.is_empty() {
                lines.remove(i % n);
            }
        }
        Spoil::RepeatLine(i) => {
            if let Some(line) = lines.get(i % n).cloned() {
                lines.insert(i % n, line);
            }
        }
        Spoil::Value(i, v) => {
            let with_value: Vec<usize> = (0..lines.len())
                .filter(|&k| lines[k].contains(" = "))
                .collect();
            if let Some(&k) = with_value.get(i % with_value.len().max(1)) {
                let key = lines[k].split(" = ").next().unwrap_or_default().to_string();
                lines[k] = format!("{key} = {v}");
            }
        }
        Spoil::Byte(i, b) => {
            let mut bytes = lines.join("\n").into_bytes();
            if !bytes.is_empty() {
                let at = i % bytes.len();
                bytes[at] = *b;
            }
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    lines.join("\n")
}

fn clear(issues: &[ConfigIssue]) -> Result<(), TestCaseError> {
    prop_assert!(!issues.is_empty(), "refused without an issue");
    for issue in issues {
        prop_assert!(issue.message.trim().len() >= 8, "vague issue: {issue:?}");
        if let Some(key) = &issue.key {
            prop_assert!(!key.is_empty(), "empty key: {issue:?}");
        }
    }
    Ok(())
}

#[test]
fn the_documented_example_is_valid() {
    if let Err(issues) = parse(&example(), &[]) {
        panic!("docs/configuration.md's example is refused: {issues:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_spoilt_example_is_parsed_or_refused_with_clear_issues(
        spoils in prop::collection::vec(spoil(), 1..5),
    ) {
        let text = spoils.iter().fold(example(), apply);
        if let Err(issues) = parse(&text, &[]) {
            clear(&issues)?;
        }
    }

    #[test]
    fn random_variables_are_applied_or_refused_naming_the_variable(
        vars in prop::collection::vec(
            (
                prop_oneof![
                    Just("VEIL_HTTP__LISTEN".to_string()),
                    Just("VEIL_DEVICE__NAME".to_string()),
                    Just("VEIL_STORAGE__SEGMENT_SECONDS".to_string()),
                    Just("VEIL_CAMERAS__0__SOURCE__FPS".to_string()),
                    Just("VEIL_DETECTION__FACE_MIN_SCORE".to_string()),
                    "VEIL_[A-Z_]{1,24}",
                ],
                ".{0,24}",
            ),
            1..4,
        ),
    ) {
        if let Err(issues) = parse(&example(), &vars) {
            clear(&issues)?;
            // The file alone is valid, so a variable is to blame: the issue says which.
            prop_assert!(
                issues.iter().any(|i| i.env_var.is_some() || i.message.contains("VEIL_")),
                "no variable named: {issues:?}"
            );
        }
    }

    #[test]
    fn random_text_never_panics(text in ".{0,400}") {
        if let Err(issues) = parse(&text, &[]) {
            clear(&issues)?;
        }
    }
}
