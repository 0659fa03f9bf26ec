//! The escape function handlebars applies to every `{{value}}`: values stay as written when they
//! cannot change YAML structure anywhere, and become a fully escaped double-quoted scalar
//! otherwise.
//!
//! Rendering is text substitution into a YAML document, so a user-chosen value such as
//! `x\nkind: Secret` or `a", evil: "b` must not be able to add keys, items, anchors or documents.
//! The context of a placeholder (plain, flow, quoted, comment, block scalar) is unknown here, so
//! the rule works in all of them (below, "letters" and "digits" include Unicode ones):
//!
//! - *Inert* values (see [`is_inert`]) are emitted unchanged, so `quay.io/x/ray:2.9`, `500m`,
//!   `ray://host:10001`, `-45je` and `My cluster` render as written, quoted or not, and are typed
//!   by YAML where they land (`replicas: {{workers}}` gives an integer, `"{{workers}}"` a string).
//! - Anything else becomes `"..."` in which every character but letters, digits and `._/@+=~$-`
//!   is a `\xXX`/`\uXXXX`/`\UXXXXXXXX` escape, so between its quotes there is no raw quote,
//!   space, comma, colon, bracket, brace, `#`, `&`, `*`, `!` or line break. In plain and flow
//!   context it is one string scalar; inside a template's own double quotes it makes the YAML
//!   invalid (a clean render error, never an injection); inside single quotes, a comment or a
//!   block scalar it stays literal text.
//!
//! `{{{value}}}` skips this function: the admin's explicit opt-out for trusted values that are
//! meant to be YAML (never use it for anything a user can choose).

/// Characters that are literal in every YAML context and can never start a structure. Unicode
/// letters and digits count (`Jürgen`): YAML's indicators are ASCII, and its non-ASCII line
/// breaks (U+0085, U+2028, U+2029) and the BOM are not alphanumeric.
fn is_safe(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '/' | '@' | '+' | '=' | '~' | '$' | '-')
}

/// Whether `value` can be pasted into any YAML context without changing its structure.
///
/// Safe characters, plus `:` when followed by a safe character or `:` (URLs, image tags, IPv6)
/// and single interior spaces (`My cluster`). Excluded: values that start like an indicator
/// (`@`, `:`, `- `), a lone `-` (a sequence entry), and `---`/`...` (document markers at the start
/// of a line). The empty value is inert: it renders as nothing, as in JSP.
pub(super) fn is_inert(value: &str) -> bool {
    let chars: Vec<char> = value.chars().collect();
    let structural = |i: usize, c: char| match c {
        ':' => !matches!(chars.get(i + 1), Some(&next) if is_safe(next) || next == ':'),
        ' ' => i == 0 || !matches!(chars.get(i + 1), Some(&next) if is_safe(next)),
        c => !is_safe(c),
    };
    let starts_like_indicator = matches!(chars.first(), Some(':' | '@'))
        || value == "-"
        || value.starts_with("- ")
        || value.starts_with("---")
        || value.starts_with("...");
    !starts_like_indicator && !chars.iter().enumerate().any(|(i, &c)| structural(i, c))
}

/// The handlebars escape function (see the module docs).
pub(super) fn escape(value: &str) -> String {
    if is_inert(value) {
        return value.to_owned();
    }
    let mut quoted = String::with_capacity(value.len() + 8);
    quoted.push('"');
    for c in value.chars() {
        match u32::from(c) {
            _ if is_safe(c) => quoted.push(c),
            code @ 0..=0xff => quoted.push_str(&format!("\\x{code:02X}")),
            code @ 0x100..=0xffff => quoted.push_str(&format!("\\u{code:04X}")),
            code => quoted.push_str(&format!("\\U{code:08X}")),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everyday_values_are_inert() {
        for value in [
            "quay.io/project-codeflare/ray:2.9.0-py39",
            "500m",
            "2Gi",
            "3",
            "-1",
            "0.5",
            "1e+100",
            "true",
            "ray://ray-alice-head-svc.ns.svc:10001",
            "fe80::1",
            "eje-40redhat-2ecom",
            "-45je",
            "eje@redhat.com",
            "My cluster",
            "Jürgen Müller",
            "--conf spark.x=1",
            "SOME_ENV",
            "$HOME/x",
            "",
        ] {
            assert!(is_inert(value), "{value:?}");
            assert_eq!(escape(value), value);
        }
    }

    #[test]
    fn structural_values_are_not_inert() {
        for value in [
            "a: b",
            "a:",
            ":a",
            "a #b",
            "a,b",
            "[a]",
            "{a}",
            "a\nb",
            "a\tb",
            "\"a\"",
            "'a'",
            "&a",
            "*a",
            "!a",
            "|",
            ">",
            "%a",
            "@a",
            "`a`",
            "-",
            "- a",
            "---",
            "...",
            " a",
            "a ",
            "a  b",
            "a\\b",
            "?",
            "a?b",
            "a\u{2028}b",
            "a\u{85}b",
            "\u{feff}a",
            "e\u{301}",
        ] {
            assert!(!is_inert(value), "{value:?}");
        }
    }

    #[test]
    fn escaped_form_holds_only_safe_characters_and_escapes() {
        assert_eq!(escape("a: b"), r#""a\x3A\x20b""#);
        assert_eq!(escape("x\ny"), r#""x\x0Ay""#);
        assert_eq!(escape("é €😀"), r#""é\x20\u20AC\U0001F600""#);
        assert_eq!(escape("a\u{2028}"), r#""a\u2028""#);
        assert_eq!(escape(r#"a"b\c"#), r#""a\x22b\x5Cc""#);
    }

    #[test]
    fn escaped_form_parses_back_to_the_value() {
        for value in
            ["a: b", "x\ny", "é €😀", "a\u{2028}\u{85}", r#"a"b\c"#, "{evil: 1}", "#c", "\u{0}\u{7f}", "- a"]
        {
            let parsed: String = crate::yaml::from_str(&format!("k: {}", escape(value)))
                .map(|m: Option<std::collections::BTreeMap<String, String>>| m.unwrap()["k"].clone())
                .unwrap();
            assert_eq!(parsed, value);
        }
    }
}
