//! Dry-run render answers already given, kept for the configuration they were rendered from.
//!
//! A render is a pure function of the catalog, the users' saved settings and the request, so the
//! same request against the same snapshot gets the same bytes. A caller asking again for the
//! same preview (a page refreshing a user's choices, a script in a loop) then costs a lookup
//! instead of a plan (~60 µs of CPU and ~6 KB of JSON, BENCHMARKS.md round 6). Any ConfigMap change gives a new snapshot, and
//! the first request against it empties the cache. Bounded in bytes, so no caller can grow it.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::catalog::{Catalog, UserIndex};

/// The configuration a render used: held, so no later snapshot can reuse its addresses.
#[derive(Clone)]
pub struct Generation {
    catalog: Arc<Catalog>,
    users: Arc<UserIndex>,
}

impl Generation {
    pub fn new(catalog: &Arc<Catalog>, users: &Arc<UserIndex>) -> Self {
        Self { catalog: catalog.clone(), users: users.clone() }
    }

    fn is(&self, other: &Generation) -> bool {
        Arc::ptr_eq(&self.catalog, &other.catalog) && Arc::ptr_eq(&self.users, &other.users)
    }
}

/// Answers by request (its JSON), all of one [`Generation`].
pub struct Renders {
    answers: Option<Cache<String, Bytes, ByLength>>,
    generation: Mutex<Option<Generation>>,
}

#[derive(Clone)]
struct ByLength;

impl Weighter<String, Bytes> for ByLength {
    fn weight(&self, key: &String, answer: &Bytes) -> u64 {
        (key.len() + answer.len()) as u64
    }
}

/// 8 MiB: ~1,400 answers of the repo's default profile.
pub const DEFAULT_RENDER_CACHE_BYTES: u64 = 8 << 20;

/// A default render answer is ~6 KB: for sizing the cache's table, not a bound.
const TYPICAL_ENTRY_BYTES: u64 = 6 * 1024;

impl Renders {
    /// Keeps at most `max_bytes` of requests and answers; 0 keeps none.
    pub fn new(max_bytes: u64) -> Self {
        let answers = (max_bytes > 0).then(|| {
            let items = (max_bytes / TYPICAL_ENTRY_BYTES).max(1) as usize;
            Cache::with_weighter(items, max_bytes, ByLength)
        });
        Self { answers, generation: Mutex::new(None) }
    }

    /// The answer given to `request` by `generation`, when it is still kept. A newer generation
    /// than the kept answers' empties the cache first.
    pub fn get(&self, generation: &Generation, request: &str) -> Option<Bytes> {
        let answers = self.answers.as_ref()?;
        let mut current = self.generation.lock().expect("no panics while held");
        if !current.as_ref().is_some_and(|kept| kept.is(generation)) {
            answers.clear();
            *current = Some(generation.clone());
            return None;
        }
        answers.get(request)
    }

    /// Keeps `answer`, unless the configuration moved on while it was rendered.
    pub fn put(&self, generation: &Generation, request: String, answer: Bytes) {
        let Some(answers) = &self.answers else { return };
        let current = self.generation.lock().expect("no panics while held");
        if current.as_ref().is_some_and(|kept| kept.is(generation)) {
            answers.insert(request, answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ProfileSelector;

    fn generation() -> Generation {
        let catalog = Catalog::build(&ProfileSelector::default(), &[], None);
        Generation::new(&Arc::new(catalog), &Arc::new(UserIndex::default()))
    }

    #[test]
    fn answers_a_request_again_only_for_the_same_configuration() {
        let renders = Renders::new(1 << 20);
        let (first, second) = (generation(), generation());
        assert_eq!(renders.get(&first, "alice"), None);
        renders.put(&first, "alice".into(), Bytes::from_static(b"answer"));
        assert_eq!(renders.get(&first, "alice"), Some(Bytes::from_static(b"answer")));
        assert_eq!(renders.get(&first, "bob"), None);
        // A new snapshot, equal or not, never sees the old answers, even after it is left.
        assert_eq!(renders.get(&second, "alice"), None);
        assert_eq!(renders.get(&first, "alice"), None);
    }

    #[test]
    fn drops_an_answer_rendered_from_a_configuration_since_replaced() {
        let renders = Renders::new(1 << 20);
        let (old, new) = (generation(), generation());
        renders.get(&new, "alice");
        renders.put(&old, "alice".into(), Bytes::from_static(b"stale"));
        assert_eq!(renders.get(&new, "alice"), None);
    }

    #[test]
    fn keeps_within_its_bytes() {
        let renders = Renders::new(64 * 1024);
        let g = generation();
        renders.get(&g, "");
        for user in 0..1000 {
            renders.put(&g, format!("user{user}"), Bytes::from(vec![b'x'; 1024]));
        }
        let kept = (0..1000).filter(|user| renders.get(&g, &format!("user{user}")).is_some()).count();
        assert!((1..=64).contains(&kept), "{kept} answers of 1 KB kept in 64 KB");
    }

    #[test]
    fn keeps_nothing_at_zero_bytes() {
        let renders = Renders::new(0);
        let g = generation();
        renders.get(&g, "alice");
        renders.put(&g, "alice".into(), Bytes::from_static(b"answer"));
        assert_eq!(renders.get(&g, "alice"), None);
    }
}
