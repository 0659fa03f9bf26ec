//! Names derived from a JupyterHub user and server: the escaped user (JSP compatible), the Ray
//! cluster name and the owner ConfigMap name.
//!
//! Every derived name must be unique per (user, server) pair: two notebooks that shared a cluster
//! or an owner ConfigMap would see each other's Ray jobs, and stopping one would delete the other's
//! objects. Shortened names therefore carry a hash of the raw user and server, and they contain
//! `-h`, which an escaped name never does (in [`escape_user`]'s output every `-` is followed by a
//! hex digit), so a user cannot pick a name whose unshortened form equals someone's shortened one.

use sha2::{Digest, Sha256};

/// KubeRay rejects longer RayCluster names: it derives Service and Pod names from them.
pub const MAX_CLUSTER_NAME: usize = 53;
/// A ConfigMap name is a DNS-1123 subdomain.
pub const MAX_SUBDOMAIN: usize = 253;
const MAX_LABEL: usize = 63;

const CLUSTER_PREFIX: &str = "ray-";
const OWNER_PREFIX: &str = "singleuser-service-ref-";
/// Marks a shortened name; never appears in [`escape_user`]'s output (see the module docs).
const HASH_MARKER: &str = "-h";
/// 64 bits: finding a second (user, server) pair with the same readable prefix and hash is out of
/// reach, so a user cannot take over another user's cluster by choosing a colliding name.
const HASH_HEX_LEN: usize = 16;

/// Escapes a user (or server) name the way JSP and KubeSpawner did (Python `escapism` with
/// `safe = [a-z0-9]` and escape character `-`, then lower-cased).
///
/// Every byte of the UTF-8 encoding of an unsafe character becomes `-` followed by the byte in
/// upper-case hex *without* zero padding (`%X`), and the whole result is lower-cased afterwards, so
/// an upper-case letter is escaped rather than lowered: `Eje` -> `-45je`,
/// `eje@redhat.com` -> `eje-40redhat-2ecom`, `ø` -> `-c3-b8`. Kept byte for byte because JSP
/// deployments have objects and labels named this way. (The missing padding makes it ambiguous for
/// control characters below 0x10: `"\u{1}a"` and `"\u{1a}"` both give `-1a`; derived names that
/// must be unique are shortened with a hash for such names.)
pub fn escape_user(raw: &str) -> String {
    let mut escaped = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            escaped.push(c);
        } else {
            let mut utf8 = [0; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                escaped.push_str(&format!("-{byte:x}"));
            }
        }
    }
    escaped
}

/// The RayCluster name for a user's server (`server` empty = the default server).
///
/// A DNS-1035 label (KubeRay names the head Service `<cluster>-head-svc`, and Services need a
/// leading letter) of at most [`MAX_CLUSTER_NAME`] characters. The default server of a user whose
/// escaped name fits gets the readable `ray-<escaped user>`. Everything else gets
/// `ray-<readable prefix>-h<16 hex digits of a SHA-256 over user and server>`: named servers
/// (`<user>-<server>` would be ambiguous, as escaped names contain `-`), long names, the empty
/// user and names with control characters.
pub fn cluster_name(user: &str, server: &str) -> String {
    let escaped_user = escape_user(user);
    if server.is_empty() && escapes_uniquely(user) {
        let name = format!("{CLUSTER_PREFIX}{escaped_user}");
        if name.len() <= MAX_CLUSTER_NAME && is_dns1035_label(&name) {
            return name;
        }
    }
    let readable =
        if server.is_empty() { escaped_user } else { format!("{escaped_user}-{}", escape_user(server)) };
    shortened(CLUSTER_PREFIX, &readable, MAX_CLUSTER_NAME, user, server)
}

/// The owner ConfigMap every rendered object of a user's server points to (JSP:
/// `singleuser-service-ref-<escaped user>`; named servers add `--<escaped server>`).
///
/// The double dash keeps names unique: escaped names never contain `--`, so the pair splits at
/// the first `--` (with a single dash, user `a` + server `41-b` and user `aA` + server `2db`
/// would share `...-a-41-2db`). Names longer than a DNS-1123 subdomain, names with control
/// characters and the empty user are shortened with a hash.
pub fn owner_configmap_name(user: &str, server: &str) -> String {
    let mut readable = escape_user(user);
    if !server.is_empty() {
        readable.push_str("--");
        readable.push_str(&escape_user(server));
    }
    if escapes_uniquely(user) && escapes_uniquely(server) {
        let name = format!("{OWNER_PREFIX}{readable}");
        if is_dns1123_subdomain(&name) {
            return name;
        }
    }
    shortened(OWNER_PREFIX, &readable, MAX_SUBDOMAIN, user, server)
}

/// A label value naming a raw user or server, so their objects can be selected: the escaped
/// name when it is a valid label value (the empty server included), else a shortened form with
/// the hash marker, starting with `u` because label values must start with a letter or digit.
pub fn label_value(raw: &str) -> String {
    let escaped = escape_user(raw);
    if escaped.is_empty() || (escapes_uniquely(raw) && is_dns1123_label(&escaped)) {
        return escaped;
    }
    shortened("u", escaped.trim_start_matches('-'), MAX_LABEL, raw, "")
}

/// The Secret KubeRay (v1.5.1+) creates for a RayCluster with `authOptions: {mode: token}` and
/// no `secretName`: `utils.CheckName(<cluster>)`, which keeps the last 50 characters and turns a
/// leading digit or punctuation into `r`. The notebook's `RAY_AUTH_TOKEN` refers to it.
pub fn kuberay_token_secret(cluster: &str) -> String {
    const KUBERAY_MAX: usize = 50;
    let kept = &cluster[cluster.len().saturating_sub(KUBERAY_MAX)..];
    match kept.chars().next() {
        Some(c) if c.is_ascii_digit() || c.is_ascii_punctuation() => format!("r{}", &kept[c.len_utf8()..]),
        _ => kept.to_owned(),
    }
}

/// The label value KubeSpawner 7 gives a notebook pod for a user or server name
/// (`hub.jupyter.org/username`, `hub.jupyter.org/servername`): `safe_slug(name,
/// is_valid=is_valid_label)`. A valid label value without `--` stays as it is (upper case
/// included); anything else becomes `<safe part>---<8 hex digits of SHA-256>`, 32 characters at
/// most. Not [`escape_user`]: KubeSpawner 7 labels pods with its "safe" slugs whatever its
/// `slug_scheme`, so a NetworkPolicy selecting the notebook must use these.
pub fn kubespawner_label(raw: &str) -> String {
    const MAX: usize = 32;
    const HASH: usize = 8;
    let valid = raw.is_empty()
        || (raw.len() <= MAX_LABEL
            && raw.starts_with(|c: char| c.is_ascii_alphanumeric())
            && raw.ends_with(|c: char| c.is_ascii_alphanumeric())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
    if valid && !raw.contains("--") {
        return raw.to_owned();
    }
    let hash: String =
        Sha256::digest(raw.as_bytes()).iter().map(|b| format!("{b:02x}")).take(HASH / 2).collect();
    // KubeSpawner's _extract_safe_name: runs of anything but [a-z0-9] (after lower-casing)
    // become one `-`, then truncate, trim `-`, and start with a letter.
    let room = MAX - (HASH + 3);
    let mut safe = String::new();
    for c in raw.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            safe.push(c);
        } else if !safe.ends_with('-') {
            safe.push('-');
        }
    }
    let mut safe: String = safe.trim_start_matches('-').chars().take(room).collect();
    safe.truncate(safe.trim_end_matches('-').len());
    if !safe.is_empty() && !safe.starts_with(|c: char| c.is_ascii_lowercase()) {
        safe = format!("x-{}", &safe[..safe.len().min(room - 2)]);
    }
    if safe.is_empty() {
        safe.push('x');
    }
    format!("{safe}---{hash}")
}

/// Whether no other name escapes to the same string: true unless a byte escapes to a single hex
/// digit (a control character below 0x10), which then merges with the following character.
fn escapes_uniquely(raw: &str) -> bool {
    raw.chars().all(|c| c >= '\u{10}')
}

/// `<prefix><readable, truncated>-h<hash>`, exactly as long as needed to fit `max`.
fn shortened(prefix: &str, readable: &str, max: usize, user: &str, server: &str) -> String {
    let room = max - prefix.len() - HASH_MARKER.len() - HASH_HEX_LEN;
    // `readable` is ASCII (escaped), so byte truncation is character truncation.
    let kept = readable[..readable.len().min(room)].trim_end_matches('-');
    format!("{prefix}{kept}{HASH_MARKER}{}", pair_hash(user, server))
}

/// Hex SHA-256 over the raw pair, length-prefixed so that no two pairs feed the same bytes (a
/// separator such as NUL could itself occur in a name sent to the API).
fn pair_hash(user: &str, server: &str) -> String {
    let digest = Sha256::new()
        .chain_update((user.len() as u64).to_be_bytes())
        .chain_update(user)
        .chain_update(server)
        .finalize();
    digest.iter().take(HASH_HEX_LEN / 2).map(|byte| format!("{byte:02x}")).collect()
}

/// A DNS-1123 label (RFC 1123, as Kubernetes checks it): 1 to 63 of `[a-z0-9-]`, starting and
/// ending with a letter or digit. Most object names (Services, namespaces) must be one.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= MAX_LABEL && is_label_shaped(s)
}

/// A DNS-1035 label: a DNS-1123 label that starts with a letter (required of Service names).
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// A DNS-1123 subdomain as Kubernetes checks it: at most 253 characters of dot-separated parts
/// shaped like labels (Kubernetes does not limit the parts to 63 characters). ConfigMaps and most
/// custom resources (RayCluster included) must be named so.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= MAX_SUBDOMAIN && s.split('.').all(is_label_shaped)
}

/// Non-empty `[a-z0-9-]`, starting and ending with a letter or digit.
fn is_label_shaped(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn escape_user_matches_jsp() {
        assert_eq!(escape_user("eje@redhat.com"), "eje-40redhat-2ecom");
        assert_eq!(escape_user("Eje"), "-45je");
        assert_eq!(escape_user("Eje@RedHat.com"), "-45je-40-52ed-48at-2ecom");
        assert_eq!(escape_user("jane-doe_1"), "jane-2ddoe-5f1");
        assert_eq!(escape_user("plain42"), "plain42");
        assert_eq!(escape_user(""), "");
    }

    #[test]
    fn escape_user_escapes_each_utf8_byte_without_padding() {
        assert_eq!(escape_user("ø"), "-c3-b8");
        assert_eq!(escape_user("日"), "-e6-97-a5");
        assert_eq!(escape_user("😀"), "-f0-9f-98-80");
        // escapism formats bytes with `%X`: no zero padding.
        assert_eq!(escape_user("a\nb"), "a-ab");
        assert_eq!(escape_user(" "), "-20");
    }

    #[test]
    fn escaped_dashes_are_always_followed_by_hex() {
        // The invariant that keeps shortened names (`-h`) and `--` separators unambiguous.
        for raw in ["A-B", "x--y", "-", "ÆØÅ", "a\u{1}b", "~!@#$%^&*()"] {
            let escaped = escape_user(raw);
            let bytes = escaped.as_bytes();
            for (i, &b) in bytes.iter().enumerate() {
                if b == b'-' {
                    assert!(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit), "{escaped}");
                }
            }
        }
    }

    #[test]
    fn kubespawner_labels_match_kubespawner_7_safe_slug() {
        // Expected values printed by kubespawner 7.1.0's slugs.safe_slug(name, is_valid_label).
        let cases = [
            ("alice", "alice"),
            ("Alice", "Alice"),
            ("bob.smith", "bob.smith"),
            ("jane-doe_1", "jane-doe_1"),
            ("", ""),
            ("eje@redhat.com", "eje-redhat-com---84c088f0"),
            ("Eje@RedHat.com", "eje-redhat-com---68e0c225"),
            ("a--b", "a-b---90827a2e"),
            ("1user@x", "x-1user-x---e0bf5ed7"),
            ("_x", "x---a01e47cb"),
            ("ø", "x---d48b452a"),
            ("a very long user name with spaces and more", "a-very-long-user-name---276e1951"),
            ("0123456789012345678901234@", "x-0123456789012345678---b3e1693a"),
        ];
        for (raw, label) in cases {
            assert_eq!(kubespawner_label(raw), label, "{raw:?}");
        }
        assert_eq!(kubespawner_label(&"a".repeat(63)), "a".repeat(63));
        assert_eq!(kubespawner_label(&"a".repeat(64)), "aaaaaaaaaaaaaaaaaaaaa---ffe054fe");
    }

    #[test]
    fn kuberay_token_secret_is_kuberays_check_name() {
        assert_eq!(kuberay_token_secret("ray-alice"), "ray-alice");
        let long = cluster_name(&"u".repeat(80), "");
        assert_eq!(long.len(), MAX_CLUSTER_NAME);
        // 53 characters: KubeRay drops the first three (`ray`), then the leading `-` becomes `r`.
        assert_eq!(kuberay_token_secret(&long), format!("r{}", &long[4..]));
        assert_eq!(kuberay_token_secret(&format!("a{}", "1".repeat(50))), format!("r{}", "1".repeat(49)));
        assert_eq!(kuberay_token_secret(&"b".repeat(50)), "b".repeat(50));
    }

    #[test]
    fn default_server_cluster_name_is_readable() {
        assert_eq!(cluster_name("eje@redhat.com", ""), "ray-eje-40redhat-2ecom");
        assert_eq!(cluster_name("Eje", ""), "ray--45je");
        assert_eq!(cluster_name("alice", ""), "ray-alice");
    }

    #[test]
    fn named_server_cluster_name_is_hashed_and_readable() {
        let name = cluster_name("alice", "gpu-box");
        assert!(name.starts_with("ray-alice-gpu-2dbox-h"), "{name}");
        assert_eq!(name.len(), "ray-alice-gpu-2dbox-h".len() + HASH_HEX_LEN);
        assert_ne!(name, cluster_name("alice", "gpu-box2"));
        assert_ne!(name, cluster_name("alice", ""));
    }

    #[test]
    fn cluster_name_is_stable() {
        // Changing this breaks the link between running notebooks and their clusters.
        assert_eq!(cluster_name("alice", "gpu"), cluster_name("alice", "gpu"));
        assert_eq!(cluster_name("", ""), format!("ray--h{}", pair_hash("", "")));
        assert_eq!(pair_hash("alice", "gpu").len(), HASH_HEX_LEN);
    }

    #[test]
    fn long_names_are_shortened_within_kuberay_limit() {
        let user = "a".repeat(200);
        let name = cluster_name(&user, "");
        assert_eq!(name.len(), MAX_CLUSTER_NAME);
        assert!(name.starts_with("ray-aaaa"));
        assert!(is_dns1035_label(&name));
        // The boundary: 49 escaped characters still fit unshortened.
        assert_eq!(cluster_name(&"b".repeat(49), ""), format!("ray-{}", "b".repeat(49)));
        assert!(cluster_name(&"b".repeat(50), "").contains("-h"));
    }

    #[test]
    fn truncation_never_leaves_a_dash_before_the_hash() {
        // Escapes put a `-` at every position modulo 3; one of them hits the cut.
        for pad in 0..3 {
            let user = format!("{}{}", "x".repeat(pad), "@".repeat(40));
            let name = cluster_name(&user, "");
            assert!(!name.contains("--h"), "{name}");
            assert!(is_dns1035_label(&name), "{name}");
        }
    }

    #[test]
    fn empty_and_odd_inputs_give_valid_names() {
        for (user, server) in
            [("", ""), ("", "x"), ("-", "-"), ("A", "B"), ("日本", "サーバ"), ("a\0b", "\0")]
        {
            let name = cluster_name(user, server);
            assert!(is_dns1035_label(&name) && name.len() <= MAX_CLUSTER_NAME, "{name}");
            assert!(is_dns1123_subdomain(&owner_configmap_name(user, server)));
        }
    }

    /// Users and servers chosen to stress uniqueness: shared long prefixes, dashes that make
    /// `user-server` ambiguous, case, unicode, empties, control characters.
    fn tricky_pairs() -> Vec<(String, String)> {
        let long = "data-scientist-with-a-very-long-name@example.com".to_owned();
        let mut users: Vec<String> = [
            "",
            "a",
            "A",
            "aA",
            "a-b",
            "a-2db",
            "a\u{1}b",
            "a\u{1b}",
            "\u{1a}",
            "\u{1}a",
            "eje@redhat.com",
            "Eje@RedHat.com",
            "ø",
            "-c3-b8",
            "h0123456789abcdef",
            "ray",
            "x".repeat(49).as_str(),
            "x".repeat(50).as_str(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for i in 0..40 {
            users.push(format!("{long}{i}"));
            users.push(format!("{}{i}", "日本語".repeat(10)));
        }
        let servers = ["", "b", "2db", "41-b", "b-c", "c", "gpu", "GPU", "1", "x".repeat(60).as_str(), "ø"]
            .map(String::from);
        let mut pairs = Vec::new();
        for user in &users {
            for server in &servers {
                pairs.push((user.clone(), server.clone()));
            }
        }
        pairs
    }

    #[test]
    fn cluster_names_are_valid_and_pairwise_distinct() {
        let pairs = tricky_pairs();
        let mut seen = HashSet::new();
        for (user, server) in &pairs {
            let name = cluster_name(user, server);
            assert!(is_dns1035_label(&name), "{user:?}/{server:?} -> {name}");
            assert!(name.len() <= MAX_CLUSTER_NAME, "{name}");
            assert!(seen.insert(name.clone()), "duplicate {name} for {user:?}/{server:?}");
        }
        assert_eq!(seen.len(), pairs.len());
    }

    #[test]
    fn owner_configmap_names_are_valid_and_pairwise_distinct() {
        let pairs = tricky_pairs();
        let mut seen = HashSet::new();
        for (user, server) in &pairs {
            let name = owner_configmap_name(user, server);
            assert!(is_dns1123_subdomain(&name), "{name}");
            assert!(seen.insert(name.clone()), "duplicate {name} for {user:?}/{server:?}");
        }
        assert_eq!(seen.len(), pairs.len());
    }

    #[test]
    fn owner_configmap_name_matches_jsp_for_default_server() {
        assert_eq!(owner_configmap_name("eje@redhat.com", ""), "singleuser-service-ref-eje-40redhat-2ecom");
        assert_eq!(owner_configmap_name("alice", "gpu"), "singleuser-service-ref-alice--gpu");
        assert_eq!(owner_configmap_name("a", "41-b"), "singleuser-service-ref-a--41-2db");
        assert_eq!(owner_configmap_name("aA", "2db"), "singleuser-service-ref-a-41--2db");
    }

    #[test]
    fn very_long_owner_names_are_shortened() {
        let user = "ü".repeat(100); // 600 escaped characters
        let name = owner_configmap_name(&user, "");
        assert_eq!(name.len(), MAX_SUBDOMAIN);
        assert!(is_dns1123_subdomain(&name));
        assert_ne!(name, owner_configmap_name(&format!("{user}x"), ""));
    }

    #[test]
    fn label_values_are_valid_and_distinct() {
        assert_eq!(label_value("alice"), "alice");
        assert_eq!(label_value(""), "");
        let users: HashSet<String> = tricky_pairs().into_iter().map(|(user, _)| user).collect();
        let mut seen = HashSet::new();
        for user in &users {
            let value = label_value(user);
            assert!(value.is_empty() || is_dns1123_label(&value), "{user:?} -> {value:?}");
            assert!(seen.insert(value.clone()), "{user:?}: duplicate label {value:?}");
        }
        assert!(label_value("Eje@RedHat.com").starts_with('u'));
    }

    #[test]
    fn dns_checks() {
        assert!(is_dns1123_label("a"));
        assert!(is_dns1123_label("0abc-d"));
        assert!(is_dns1123_label(&"a".repeat(63)));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", "ä"] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert!(is_dns1035_label("a0"));
        assert!(!is_dns1035_label("0a"));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(is_dns1123_subdomain(&format!("{}.{}", "a".repeat(63), "b".repeat(63))));
        assert!(is_dns1123_subdomain(&"a".repeat(253)));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        for bad in ["", "a..b", ".a", "a.", "a.-b", "A.b"] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }
}
