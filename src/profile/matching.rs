//! Which profiles apply to a user and an image.

use serde::Serialize;

use super::model::Profile;

/// The JupyterHub user a profile is resolved for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Requester {
    pub user: String,
    pub groups: Vec<String>,
}

impl Requester {
    pub fn new(user: impl Into<String>, groups: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Requester { user: user.into(), groups: groups.into_iter().map(Into::into).collect() }
    }
}

/// Whether `profile` applies to this user and image.
pub fn applies(profile: &Profile, who: &Requester, image: Option<&str>) -> bool {
    allows_user(profile, who) && allows_image(profile, image)
}

/// JSP: no `users` (or `"*"` among them) means everyone, else the exact user name.
/// Extension: `groups` alone restricts to members; with `users` as well, either list admits.
///
/// Unlike JSP, an empty user name does not match every profile: JSP used that for calls made
/// without a user, and here it would hand restricted profiles to an anonymous caller.
pub fn allows_user(profile: &Profile, who: &Requester) -> bool {
    let listed = |list: &[String], name: &str| list.iter().any(|entry| entry == name);
    let everyone = |list: &[String]| listed(list, "*");
    let in_users = everyone(&profile.users) || (!who.user.is_empty() && listed(&profile.users, &who.user));
    let in_groups = everyone(&profile.groups) || who.groups.iter().any(|g| listed(&profile.groups, g));
    match (profile.users.is_empty(), profile.groups.is_empty()) {
        (true, true) => true,
        (false, true) => in_users,
        (true, false) => in_groups,
        (false, false) => in_users || in_groups,
    }
}

/// JSP: no `images` means every image, else an exact match. Extension: glob patterns.
/// With no image known, only image-independent profiles apply (JSP did the same, by accident of
/// `None in images` being false).
pub fn allows_image(profile: &Profile, image: Option<&str>) -> bool {
    if profile.images.is_empty() {
        return true;
    }
    image.is_some_and(|image| profile.images.iter().any(|entry| image_matches(entry, image)))
}

/// An `images` entry against an image reference. A pattern matches the whole reference or the
/// reference without its registry and namespace, so `ray-ml-notebook:*` matches
/// `quay.io/org/ray-ml-notebook:2.9`; a plain entry must match exactly, as in JSP.
pub fn image_matches(entry: &str, image: &str) -> bool {
    if !is_pattern(entry) {
        return entry == image;
    }
    let short = image.rsplit_once('/').map_or(image, |(_, name)| name);
    // The text before the first metacharacter is literal (glob has no escapes), so a reference
    // that does not start with it cannot match. This skips compiling the pattern for almost
    // every profile on every request (1,000 profiles with image globs: 190 µs -> a few µs).
    let literal = &entry[..entry.find(['*', '?', '[']).unwrap_or(entry.len())];
    if !image.starts_with(literal) && !short.starts_with(literal) {
        return false;
    }
    let Ok(pattern) = glob::Pattern::new(entry) else {
        return false; // rejected when the ConfigMap was parsed
    };
    pattern.matches(image) || pattern.matches(short)
}

/// Whether an `images` entry is a glob pattern rather than an image reference.
pub fn is_pattern(entry: &str) -> bool {
    entry.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(users: &[&str], groups: &[&str], images: &[&str]) -> Profile {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        Profile { users: owned(users), groups: owned(groups), images: owned(images), ..Profile::default() }
    }

    fn who(user: &str, groups: &[&str]) -> Requester {
        Requester::new(user, groups.iter().copied())
    }

    #[test]
    fn no_users_star_or_listed_user_match() {
        assert!(allows_user(&profile(&[], &[], &[]), &who("eje", &[])));
        assert!(allows_user(&profile(&["*"], &[], &[]), &who("eje", &[])));
        assert!(allows_user(&profile(&["vpavlin", "eje"], &[], &[]), &who("eje", &[])));
        assert!(!allows_user(&profile(&["vpavlin"], &[], &[]), &who("eje", &[])));
    }

    #[test]
    fn user_names_match_exactly() {
        assert!(!allows_user(&profile(&["Eje"], &[], &[]), &who("eje", &[])));
        assert!(!allows_user(&profile(&["eje"], &[], &[]), &who("eje2", &[])));
    }

    #[test]
    fn empty_user_name_gets_only_unrestricted_profiles() {
        assert!(!allows_user(&profile(&["acorvin"], &[], &[]), &who("", &[])));
        assert!(allows_user(&profile(&[], &[], &[]), &who("", &[])));
    }

    #[test]
    fn groups_alone_restrict_to_members() {
        let p = profile(&[], &["data-science"], &[]);
        assert!(allows_user(&p, &who("eje", &["admins", "data-science"])));
        assert!(!allows_user(&p, &who("eje", &["admins"])));
    }

    #[test]
    fn users_and_groups_admit_either() {
        let p = profile(&["vpavlin"], &["data-science"], &[]);
        assert!(allows_user(&p, &who("vpavlin", &[])));
        assert!(allows_user(&p, &who("eje", &["data-science"])));
        assert!(!allows_user(&p, &who("eje", &["admins"])));
        assert!(allows_user(&profile(&["*"], &["data-science"], &[]), &who("eje", &[])));
    }

    #[test]
    fn no_images_matches_every_image_and_no_image() {
        let p = profile(&[], &[], &[]);
        assert!(allows_image(&p, Some("s2i-spark-notebook:3.6")));
        assert!(allows_image(&p, None));
    }

    #[test]
    fn listed_images_match_exactly_and_never_without_an_image() {
        let p = profile(&[], &[], &["s2i-thoth-notebook:3.6"]);
        assert!(allows_image(&p, Some("s2i-thoth-notebook:3.6")));
        assert!(!allows_image(&p, Some("s2i-thoth-notebook:3.7")));
        assert!(!allows_image(&p, Some("quay.io/thoth/s2i-thoth-notebook:3.6")));
        assert!(!allows_image(&p, Some("s2i-thoth-notebook")));
        assert!(!allows_image(&p, None));
    }

    #[test]
    fn patterns_match_whole_reference_or_last_path_segment() {
        assert!(image_matches("ray-ml-notebook:*", "ray-ml-notebook:2.9"));
        assert!(image_matches("ray-ml-notebook:*", "quay.io/org/ray-ml-notebook:2.9"));
        assert!(image_matches("quay.io/org/*", "quay.io/org/ray-ml-notebook:2.9"));
        assert!(image_matches("ray-ml-notebook:2.?", "ray-ml-notebook:2.9"));
        assert!(!image_matches("ray-ml-notebook:*", "quay.io/org/ray-notebook:2.9"));
        assert!(!image_matches("ray-ml-notebook:*", "ray-ml-notebook-extra:2.9"));
        // The literal-prefix shortcut: classes and `?` end the literal part.
        assert!(image_matches("ray-[mn]l-notebook:*", "quay.io/org/ray-ml-notebook:2.9"));
        assert!(image_matches("?ay-ml-notebook:2.9", "ray-ml-notebook:2.9"));
        assert!(!image_matches("custom-notebook:*", "quay.io/org/ray-ml-notebook:2.9"));
        assert!(image_matches("quay.io/*/ray-ml-notebook:*", "quay.io/org/ray-ml-notebook:2.9"));
    }
}
