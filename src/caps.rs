//! Caps on what configuration may hold, so that a careless or hostile ConfigMap costs bounded
//! time and memory to load and render. Each is a flag with an environment twin (see
//! `args::CapArgs`); the README lists them. Loading and rendering are linear in their input, so
//! the caps bound the work, and anything over one is refused at once with a message naming it.

/// The caps; see [`Caps::default`] for the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Bytes of data in one ConfigMap (Kubernetes' own limit is 1 MiB).
    pub configmap_bytes: usize,
    /// Bytes of one template.
    pub template_bytes: usize,
    /// `{{ }}` placeholders in one template.
    pub placeholders: usize,
    /// Nesting of YAML collections in one template.
    pub depth: usize,
    /// Bytes of one rendered object as JSON (configuration lists can multiply a template).
    pub rendered_bytes: usize,
}

impl Caps {
    /// Largest file of ConfigMaps read from a folder (`validate`, `render`, the dry run):
    /// room for 16 ConfigMaps at the cap, so `validate /dev/zero` ends at once.
    pub fn file_bytes(&self) -> usize {
        self.configmap_bytes.saturating_mul(16)
    }
}

impl Default for Caps {
    /// Far above what real profiles and templates need (the repository's templates are a few
    /// KB), far below what hurts (BENCHMARKS.md, hostile input).
    fn default() -> Self {
        Self {
            configmap_bytes: 1024 * 1024,
            template_bytes: 256 * 1024,
            placeholders: 20_000,
            depth: crate::yaml::MAX_DEPTH,
            rendered_bytes: 1024 * 1024,
        }
    }
}
