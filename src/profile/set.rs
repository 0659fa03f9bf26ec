//! All loaded profile documents, and resolving a user's choice against them.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::file::ProfileDoc;
use super::matching::{Requester, allows_image, allows_user, applies};
use super::merge::{Resolved, merge};
use super::model::{Profile, Service, Size};
use super::options::OptionSpec;

/// The profile documents of every ConfigMap, concatenated in load order.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ProfileSet {
    profiles: Vec<Profile>,
    sizes: Vec<Size>,
    gpu_types: Vec<Value>,
    ui: Map<String, Value>,
}

/// What the user picked on the spawn page or in the request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Choice {
    /// A profile slug; `None` takes the default profile.
    pub profile: Option<String>,
    /// A size name, matched exactly (JSP); `None` keeps the profile's resources.
    pub size: Option<String>,
    /// Option values: JSON numbers, booleans and strings, or strings to parse (CLI).
    pub options: BTreeMap<String, Value>,
    /// The user's own settings as JSP's last profile (`@singleuser@`), merged after every
    /// matching profile and before the size; it holds only what a user may choose (their GPU
    /// count and env).
    #[serde(skip)]
    pub personal: Option<Profile>,
}

/// A profile the user may pick, for launchers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileChoice {
    pub slug: String,
    pub display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether this is the profile taken when the user names none.
    pub default: bool,
    /// The images the profile is for; empty: any image.
    pub images: Vec<String>,
    /// The options the user may set with this profile.
    pub options: BTreeMap<String, OptionSpec>,
    pub sizes: Vec<Size>,
}

/// Why a choice cannot be resolved; every message says what to change.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ResolveError {
    #[error("unknown profile {profile:?}; {}", available_list("profiles", available))]
    UnknownProfile { profile: String, available: Vec<String> },
    #[error(
        "profile {profile:?} is not available to user {user:?}; ask an admin to add the user or one of their groups to it"
    )]
    ProfileNotAllowed { profile: String, user: String },
    #[error("{}", not_for_image(profile, image.as_deref(), images))]
    ProfileNotForImage { profile: String, image: Option<String>, images: Vec<String> },
    #[error("unknown size {size:?}; {}", available_list("sizes", available))]
    UnknownSize { size: String, available: Vec<String> },
    #[error("unknown option {option:?}; {}", available_list("options of this profile", known))]
    UnknownOption { option: String, known: Vec<String> },
    #[error("{message}")]
    InvalidOption { option: String, message: String },
    #[error(
        "{} asks for {resource} {value}, above this profile's maximum of {max}; {}",
        size.as_deref().map_or_else(|| "the profile".to_owned(), |s| format!("size {s:?}")),
        if size.is_some() { "pick a smaller size" } else { "the profiles' admin must lower it or raise max_resources" }
    )]
    AboveMaximum { resource: String, value: String, max: String, size: Option<String> },
    #[error("options.{option} has no default: give a value for it")]
    MissingOption { option: String },
    /// An admin problem that only shows once profiles are merged.
    #[error(
        "option {option:?} is declared differently by services {}; the profiles' admin must make the declarations agree",
        services.join(" and ")
    )]
    ConflictingOption { option: String, services: Vec<String> },
}

impl ResolveError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ResolveError::UnknownProfile { .. } => "unknown_profile",
            ResolveError::ProfileNotAllowed { .. } => "profile_not_allowed",
            ResolveError::ProfileNotForImage { .. } => "profile_not_for_image",
            ResolveError::UnknownSize { .. } => "unknown_size",
            ResolveError::UnknownOption { .. } => "unknown_option",
            ResolveError::InvalidOption { .. } => "invalid_option",
            ResolveError::MissingOption { .. } => "missing_option",
            ResolveError::AboveMaximum { .. } => "above_maximum",
            ResolveError::ConflictingOption { .. } => "conflicting_option",
        }
    }

    /// The request field at fault (`profile`, `image`, `size`, `options.workers`).
    pub fn field(&self) -> Option<String> {
        match self {
            ResolveError::UnknownProfile { .. } | ResolveError::ProfileNotAllowed { .. } => {
                Some("profile".to_string())
            }
            ResolveError::ProfileNotForImage { .. } => Some("image".to_string()),
            ResolveError::UnknownSize { .. } | ResolveError::AboveMaximum { .. } => Some("size".to_string()),
            ResolveError::UnknownOption { option, .. }
            | ResolveError::InvalidOption { option, .. }
            | ResolveError::MissingOption { option } => Some(format!("options.{option}")),
            ResolveError::ConflictingOption { .. } => None,
        }
    }
}

fn available_list(what: &str, names: &[String]) -> String {
    if names.is_empty() {
        format!("there are no {what} to choose from")
    } else {
        format!("available {what}: {}", names.join(", "))
    }
}

fn not_for_image(profile: &str, image: Option<&str>, images: &[String]) -> String {
    let images = images.join(", ");
    match image {
        Some(image) => format!("profile {profile:?} is for the images {images}, not {image:?}"),
        None => format!("profile {profile:?} is for the images {images}; say which image is used"),
    }
}

impl ProfileSet {
    /// Concatenates documents in load order: the base ConfigMap first, then the labelled ones
    /// sorted by name (the caller orders them). `ui` merges shallowly, later keys winning.
    pub fn new(docs: impl IntoIterator<Item = ProfileDoc>) -> Self {
        let mut set = ProfileSet::default();
        for doc in docs {
            set.profiles.extend(doc.profiles);
            set.sizes.extend(doc.sizes);
            set.gpu_types.extend(doc.gpu_types);
            set.ui.extend(doc.ui);
        }
        set
    }

    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    /// Every size as loaded, duplicates included; see [`ProfileSet::offered_sizes`].
    pub fn sizes(&self) -> &[Size] {
        &self.sizes
    }

    pub fn gpu_types(&self) -> &[Value] {
        &self.gpu_types
    }

    pub fn ui(&self) -> &Map<String, Value> {
        &self.ui
    }

    /// The sizes a user can pick: one per name, in first-seen order, each with its last
    /// definition, so a later ConfigMap can redefine `Small`.
    pub fn offered_sizes(&self) -> Vec<&Size> {
        let mut offered: Vec<&Size> = Vec::new();
        for size in &self.sizes {
            match offered.iter_mut().find(|s| s.name == size.name) {
                Some(slot) => *slot = size,
                None => offered.push(size),
            }
        }
        offered
    }

    /// A size by its exact name; the last definition wins, as in JSP's `get_size`.
    pub fn find_size(&self, name: &str) -> Option<&Size> {
        self.sizes.iter().rev().find(|s| s.name == name)
    }

    /// Merges what applies to the user and image: every matching profile without a slug plus
    /// the chosen (or default) slugged profile, in list order; then the size and the options.
    pub fn resolve(
        &self,
        who: &Requester,
        image: Option<&str>,
        choice: &Choice,
    ) -> Result<Resolved, ResolveError> {
        let slug = non_empty(choice.profile.as_deref());
        let (mut profiles, slug) = self.select(who, image, slug)?;
        profiles.extend(choice.personal.as_ref());
        let size = match non_empty(choice.size.as_deref()) {
            None => None,
            Some(name) => Some(self.find_size(name).ok_or_else(|| ResolveError::UnknownSize {
                size: name.to_string(),
                available: self.offered_sizes().iter().map(|s| s.name.clone()).collect(),
            })?),
        };
        let mut resolved = merge(&profiles, size, &self.gpu_types);
        check_maximum(&resolved)?;
        resolved.slug = slug;
        resolved.options = resolve_options(&resolved.services, &choice.options)?;
        Ok(resolved)
    }

    /// The slugged profiles this user may pick for the image, one per slug, in list order.
    pub fn choices(&self, who: &Requester, image: Option<&str>) -> Vec<ProfileChoice> {
        self.choices_with_profiles(who, image).into_iter().map(|(choice, _)| choice).collect()
    }

    /// Each choice with the profiles it merges, in list order, in one pass over the profiles.
    pub(super) fn choices_with_profiles(
        &self,
        who: &Requester,
        image: Option<&str>,
    ) -> Vec<(ProfileChoice, Vec<&Profile>)> {
        let default = self.default_slug(who, image);
        let sizes: Vec<Size> = self.offered_sizes().into_iter().cloned().collect();
        // One pass over the profiles: those that apply without a slug, and each slug's own, in
        // list order. (Resolving each slug on its own went over every profile per slug: 20,000
        // profiles took 11 s to list.) What `select` would merge for a slug is both, in order.
        let mut common: Vec<(usize, &Profile)> = Vec::new();
        let mut by_slug: IndexMap<&str, Vec<(usize, &Profile)>> = IndexMap::new();
        for (index, profile) in self.profiles.iter().enumerate().filter(|(_, p)| applies(p, who, image)) {
            match profile.slug.as_deref() {
                Some(slug) => by_slug.entry(slug).or_default().push((index, profile)),
                None => common.push((index, profile)),
            }
        }
        by_slug
            .into_iter()
            .filter_map(|(slug, chosen)| {
                let mut profiles: Vec<(usize, &Profile)> = common.iter().chain(&chosen).copied().collect();
                profiles.sort_unstable_by_key(|(index, _)| *index);
                let profiles: Vec<&Profile> = profiles.into_iter().map(|(_, p)| p).collect();
                let first = chosen.first()?.1;
                let merged = merge(&profiles, None, &self.gpu_types);
                let choice = ProfileChoice {
                    slug: slug.to_string(),
                    display_name: first.label().unwrap_or(slug).to_string(),
                    description: chosen.iter().rev().find_map(|(_, p)| p.description.clone()),
                    default: default == Some(slug),
                    images: chosen.iter().flat_map(|(_, p)| p.images.iter().cloned()).collect(),
                    // A conflict is reported when the profile is resolved.
                    options: declared_options(&merged.services),
                    sizes: sizes.clone(),
                };
                Some((choice, profiles))
            })
            .collect()
    }

    /// The profiles to merge and the slug chosen.
    pub(super) fn select(
        &self,
        who: &Requester,
        image: Option<&str>,
        slug: Option<&str>,
    ) -> Result<(Vec<&Profile>, Option<String>), ResolveError> {
        let slug = match slug {
            Some(slug) => {
                self.check_pickable(who, image, slug)?;
                Some(slug)
            }
            None => self.default_slug(who, image),
        };
        let profiles = self
            .profiles
            .iter()
            .filter(|p| applies(p, who, image))
            .filter(|p| p.slug.is_none() || p.slug.as_deref() == slug)
            .collect();
        Ok((profiles, slug.map(str::to_string)))
    }

    fn check_pickable(&self, who: &Requester, image: Option<&str>, slug: &str) -> Result<(), ResolveError> {
        let candidates: Vec<&Profile> = self.with_slug(slug).collect();
        if candidates.is_empty() {
            return Err(ResolveError::UnknownProfile {
                profile: slug.to_string(),
                available: self.pickable_slugs(who, image).into_iter().map(str::to_string).collect(),
            });
        }
        if !candidates.iter().any(|p| allows_user(p, who)) {
            return Err(ResolveError::ProfileNotAllowed {
                profile: slug.to_string(),
                user: who.user.clone(),
            });
        }
        if !candidates.iter().any(|p| allows_user(p, who) && allows_image(p, image)) {
            return Err(ResolveError::ProfileNotForImage {
                profile: slug.to_string(),
                image: image.map(str::to_string),
                images: candidates.iter().flat_map(|p| p.images.iter().cloned()).collect(),
            });
        }
        Ok(())
    }

    /// The first matching slugged profile marked `default: true`, else the first matching one.
    fn default_slug(&self, who: &Requester, image: Option<&str>) -> Option<&str> {
        let mut pickable = self.profiles.iter().filter(|p| p.slug.is_some() && applies(p, who, image));
        let first = pickable.clone().next();
        pickable.find(|p| p.default).or(first).and_then(|p| p.slug.as_deref())
    }

    fn pickable_slugs(&self, who: &Requester, image: Option<&str>) -> Vec<&str> {
        let slugs: indexmap::IndexSet<&str> = self
            .profiles
            .iter()
            .filter(|p| applies(p, who, image))
            .filter_map(|p| p.slug.as_deref())
            .collect();
        slugs.into_iter().collect()
    }

    fn with_slug<'a>(&'a self, slug: &'a str) -> impl Iterator<Item = &'a Profile> + 'a {
        self.profiles.iter().filter(move |p| p.slug.as_deref() == Some(slug))
    }
}

fn non_empty(text: Option<&str>) -> Option<&str> {
    text.map(str::trim).filter(|t| !t.is_empty())
}

/// The options the merged services declare, by name (the first declaration of each).
fn declared_options(services: &IndexMap<String, Service>) -> BTreeMap<String, OptionSpec> {
    let mut specs = BTreeMap::new();
    for declared in services.values() {
        for (name, spec) in &declared.options {
            specs.entry(name.clone()).or_insert_with(|| spec.clone());
        }
    }
    specs
}

/// Option names form one namespace (the template context's `options`), so two services may
/// declare the same option only if they agree on it.
fn check_option_conflicts(services: &IndexMap<String, Service>) -> Result<(), ResolveError> {
    let mut first: BTreeMap<&str, (&str, &OptionSpec)> = BTreeMap::new();
    for (service, declared) in services {
        for (name, spec) in &declared.options {
            let (first_service, first_spec) = *first.entry(name).or_insert((service, spec));
            if first_spec != spec {
                return Err(ResolveError::ConflictingOption {
                    option: name.clone(),
                    services: vec![first_service.to_string(), service.clone()],
                });
            }
        }
    }
    Ok(())
}

/// Validates the user's values against the declarations and fills in defaults.
fn resolve_options(
    services: &IndexMap<String, Service>,
    given: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, ResolveError> {
    check_option_conflicts(services)?;
    let specs = declared_options(services);
    if let Some(unknown) = given.keys().find(|name| !specs.contains_key(*name)) {
        return Err(ResolveError::UnknownOption {
            option: unknown.clone(),
            known: specs.keys().cloned().collect(),
        });
    }
    specs
        .iter()
        .map(|(name, spec)| {
            let value = match given.get(name) {
                Some(value) => spec
                    .validate(name, value)
                    .map_err(|message| ResolveError::InvalidOption { option: name.clone(), message })?,
                None => spec
                    .default_value()
                    .ok_or_else(|| ResolveError::MissingOption { option: name.clone() })?,
            };
            Ok((name.clone(), value))
        })
        .collect()
}

/// Refuses a notebook whose requests or limits exceed the profile's `max_resources`.
fn check_maximum(resolved: &Resolved) -> Result<(), ResolveError> {
    for (resource, max) in &resolved.max_resources {
        let Ok(ceiling) = super::quantity_value(max) else { continue };
        let asked = [&resolved.resources.limits, &resolved.resources.requests]
            .into_iter()
            .filter_map(|q| q.get(resource));
        for value in asked {
            if super::quantity_value(value).is_ok_and(|v| v > ceiling) {
                return Err(ResolveError::AboveMaximum {
                    resource: resource.clone(),
                    value: value.clone(),
                    max: max.clone(),
                    size: resolved.size.clone(),
                });
            }
        }
    }
    Ok(())
}
