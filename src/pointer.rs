//! JSON Pointer (RFC 6901) lookups into rendered objects, as `serde_json::Value::pointer` and
//! `pointer_mut` answer them, without their two string allocations per segment: a plan looks
//! up dozens of pointers, and those allocations were an eighth of its CPU (BENCHMARKS.md round 6).

use serde_json::Value;

/// The value at `pointer` (`/metadata/name`, `/spec/rules/0/host`).
pub fn get<'a>(value: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.contains('~') {
        return value.pointer(pointer);
    }
    tokens(pointer)?.try_fold(value, |target, token| match target {
        Value::Object(map) => map.get(token),
        Value::Array(items) => index(token).and_then(|i| items.get(i)),
        _ => None,
    })
}

/// [`get`], for changing the value.
pub fn get_mut<'a>(value: &'a mut Value, pointer: &str) -> Option<&'a mut Value> {
    if pointer.contains('~') {
        return value.pointer_mut(pointer);
    }
    tokens(pointer)?.try_fold(value, |target, token| match target {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => index(token).and_then(|i| items.get_mut(i)),
        _ => None,
    })
}

/// The string at `pointer`.
pub fn str<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    get(value, pointer).and_then(Value::as_str)
}

/// The pointer's reference tokens; none for the whole document (`""`), no pointer without `/`.
fn tokens(pointer: &str) -> Option<impl Iterator<Item = &str>> {
    let rest = match pointer {
        "" => None,
        _ => Some(pointer.strip_prefix('/')?),
    };
    Some(rest.into_iter().flat_map(|rest| rest.split('/')))
}

/// An array index as RFC 6901 writes it: digits, no leading zero.
fn index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() > 1) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_as_serde_json_does() {
        let mut object = json!({
            "metadata": {"name": "ray-a", "a/b": 1, "m~n": 2, "": 3},
            "spec": {"rules": [{"host": "h"}, {"host": "i"}]},
        });
        let pointers = [
            "",
            "/metadata/name",
            "/spec/rules/1/host",
            "/spec/rules/01/host",
            "/spec/rules/+1",
            "/spec/rules/2",
            "/spec/rules/x",
            "/metadata/name/more",
            "/metadata/a~1b",
            "/metadata/m~0n",
            "/metadata/",
            "metadata",
            "/nothing",
        ];
        for pointer in pointers {
            assert_eq!(get(&object, pointer), object.pointer(pointer), "{pointer:?}");
        }
        *get_mut(&mut object, "/spec/rules/0/host").unwrap() = json!("changed");
        assert_eq!(str(&object, "/spec/rules/0/host"), Some("changed"));
        assert_eq!(get_mut(&mut object, "/spec/rules/9"), None);
    }
}
