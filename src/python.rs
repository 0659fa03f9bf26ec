//! Python's `str()` of a JSON value: how JSP (Python) turned non-string values into text, in
//! `return` values (`str(match.value)`), env values (the Kubernetes client's coercion) and
//! Jinja placeholders. `true` is `True`, `null` is `None`, a list is `['a', 1]`, a map
//! `{'k': 'v'}`, a float Python's shortest repr (`0.5`, `1e-05`, `1e+16`).

use std::fmt::Write;

use serde_json::{Number, Value};

/// `str(value)` in Python, for a value that came from JSON or YAML.
pub fn str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => {
            let mut out = String::new();
            repr(other, &mut out);
            out
        }
    }
}

/// `repr(value)`: what `str()` of a list or dict prints for each element.
fn repr(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&number(n)),
        Value::String(s) => string_repr(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                string_repr(key, out);
                out.push_str(": ");
                repr(item, out);
            }
            out.push('}');
        }
    }
}

fn number(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() => float(f),
        _ => n.to_string(),
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip (as Rust's), in positional
/// notation for exponents -5 < e < 16 and `1e-05` / `1.5e+16` notation outside, always with a
/// `.0` or an exponent so that it reads back as a float.
fn float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // `{:e}` gives the shortest round-trip digits: `1.5e16`, `1e-5`, `-2.5e0`.
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-5 < exponent && exponent < 16) {
        let mut out = format!("{sign}{}", &digits[..1]);
        if digits.len() > 1 {
            let _ = write!(out, ".{}", &digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exponent < 0 { '-' } else { '+' }, exponent.abs());
        return out;
    }
    let point = exponent + 1; // digits before the decimal point
    if point <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= digits.len() {
        format!("{sign}{digits}{}.0", "0".repeat(point as usize - digits.len()))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{sign}{int}.{frac}")
    }
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`; backslash escapes
/// for the quote, `\`, `\t`, `\n`, `\r` and characters Python does not print (controls and the
/// invisible format and separator characters; an approximation of `str.isprintable` that
/// covers every character a Kubernetes object plausibly holds).
fn string_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !printable(c) => {
                let code = u32::from(c);
                let _ = match code {
                    0..=0xff => write!(out, "\\x{code:02x}"),
                    0x100..=0xffff => write!(out, "\\u{code:04x}"),
                    _ => write!(out, "\\U{code:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

fn printable(c: char) -> bool {
    !matches!(u32::from(c),
        0..=0x1f | 0x7f..=0xa0 | 0xad | 0x1680 | 0x180e | 0x2000..=0x200f | 0x2028..=0x202f
        | 0x205f..=0x206f | 0x3000 | 0xd800..=0xdfff | 0xe000..=0xf8ff | 0xfeff | 0xfff9..=0xfffb
        | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scalars_print_as_python_prints_them() {
        assert_eq!(str(&json!("text")), "text");
        assert_eq!(str(&json!(true)), "True");
        assert_eq!(str(&json!(false)), "False");
        assert_eq!(str(&Value::Null), "None");
        assert_eq!(str(&json!(80)), "80");
        assert_eq!(str(&json!(-3)), "-3");
    }

    #[test]
    fn floats_use_python_repr() {
        for (f, python) in [
            (0.5, "0.5"),
            (1.0, "1.0"),
            (-2.0, "-2.0"),
            (100.0, "100.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e16, "1.5e+16"),
            (1e16, "1e+16"),
            (123456789012345.6, "123456789012345.6"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-1.25e-7, "-1.25e-07"),
            (1e300, "1e+300"),
        ] {
            assert_eq!(str(&json!(f)), python, "{f}");
        }
    }

    #[test]
    fn collections_print_their_elements_repr() {
        assert_eq!(str(&json!({"dashboard-host": "0.0.0.0"})), "{'dashboard-host': '0.0.0.0'}");
        assert_eq!(str(&json!(["numpy", "pandas"])), "['numpy', 'pandas']");
        assert_eq!(str(&json!({"a": [1, true, null], "b": 0.5})), "{'a': [1, True, None], 'b': 0.5}");
        assert_eq!(str(&json!([])), "[]");
        assert_eq!(str(&json!({})), "{}");
    }

    #[test]
    fn string_repr_picks_quotes_and_escapes_like_python() {
        assert_eq!(str(&json!(["O'Brien"])), "[\"O'Brien\"]");
        assert_eq!(str(&json!(["both ' and \""])), "['both \\' and \"']");
        assert_eq!(
            str(&json!(["a\\b", "tab\there", "line\nbreak"])),
            "['a\\\\b', 'tab\\there', 'line\\nbreak']"
        );
        assert_eq!(
            str(&json!(["\u{1}", "\u{85}", "\u{2028}", "é🚀"])),
            "['\\x01', '\\x85', '\\u2028', 'é🚀']"
        );
    }
}
