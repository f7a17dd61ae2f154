//! Session credentials re-sent with every request (the same voucher until
//! it runs out), parsed and checked for our HMAC once. A re-sent
//! `Authorization` value is the same bytes, so what decoding it found does
//! not change; what depends on the request (realm, expiry against the
//! clock, route, body digest, price) is still checked every time
//! ([`crate::binding::Verified::check`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mpp::PaymentCredential;

use crate::binding::Verified;

/// A decoded credential and what its challenge was found to be.
#[derive(Debug)]
pub struct Parsed {
    pub credential: PaymentCredential,
    pub verified: Verified,
}

/// Bounded by bytes, in two generations: when the current one is full it
/// becomes the previous one and the one before is dropped; a hit in the
/// previous generation moves back to the current. What is in use stays,
/// what was used once goes.
pub struct CredentialCache {
    generation_bytes: usize,
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashMap<Box<str>, Arc<Parsed>>,
    current_bytes: usize,
    previous: HashMap<Box<str>, Arc<Parsed>>,
}

/// What an entry is taken to cost: its key and about as much again decoded.
fn cost(header: &str) -> usize {
    2 * header.len() + 256
}

impl CredentialCache {
    /// Keeps at most about `2 * generation_bytes`.
    pub fn new(generation_bytes: usize) -> Self {
        Self {
            generation_bytes,
            generations: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The credential `header` decoded to when it was kept.
    pub fn get(&self, header: &str) -> Option<Arc<Parsed>> {
        let mut generations = self.lock();
        if let Some(parsed) = generations.current.get(header) {
            return Some(Arc::clone(parsed));
        }
        let (key, parsed) = generations.previous.remove_entry(header)?;
        generations.insert(key, Arc::clone(&parsed), self.generation_bytes);
        Some(parsed)
    }

    /// Keeps what `header` decoded to.
    pub fn keep(&self, header: &str, parsed: Arc<Parsed>) {
        if cost(header) > self.generation_bytes {
            return;
        }
        self.lock()
            .insert(header.into(), parsed, self.generation_bytes);
    }

    /// Entries held (both generations).
    pub fn len(&self) -> usize {
        let generations = self.lock();
        generations.current.len() + generations.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Generations {
    fn insert(&mut self, key: Box<str>, parsed: Arc<Parsed>, generation_bytes: usize) {
        let added = cost(&key);
        if self.current_bytes + added > generation_bytes {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
        if self.current.insert(key, parsed).is_none() {
            self.current_bytes += added;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed() -> Arc<Parsed> {
        let keys = crate::keys::ChallengeKeys::new(vec![
            "a-test-secret-that-is-at-least-32-bytes-long".into(),
        ])
        .unwrap();
        let request = mpp::Base64UrlJson::from_value(&serde_json::json!({"amount": "1"})).unwrap();
        let challenge = mpp::PaymentChallenge::with_secret_key_full(
            "a-test-secret-that-is-at-least-32-bytes-long",
            "api.example.com",
            "tempo",
            "session",
            request,
            Some("2099-01-01T00:00:00Z"),
            None,
            None,
            None,
            None,
        );
        let credential = PaymentCredential::new(challenge.to_echo(), serde_json::json!({}));
        Arc::new(Parsed {
            verified: Verified::new(&keys, &credential),
            credential,
        })
    }

    #[test]
    fn a_kept_credential_is_found_by_its_exact_header_only() {
        let cache = CredentialCache::new(64 * 1024);
        let entry = parsed();
        cache.keep("Payment abc", Arc::clone(&entry));
        assert!(Arc::ptr_eq(&cache.get("Payment abc").unwrap(), &entry));
        assert!(cache.get("Payment abd").is_none());
        assert!(cache.get("Payment abc ").is_none());
    }

    #[test]
    fn it_stays_within_two_generations_and_keeps_what_is_used() {
        let header = |i: usize| format!("Payment {i:0>1000}");
        // Room for three entries per generation.
        let cache = CredentialCache::new(3 * cost(&header(0)));
        let entry = parsed();
        cache.keep(&header(0), Arc::clone(&entry));
        for i in 1..100 {
            cache.keep(&header(i), Arc::clone(&entry));
            // The one in use is looked up with every request.
            assert!(
                cache.get(&header(0)).is_some(),
                "lost the one in use at {i}"
            );
            assert!(cache.len() <= 6, "{} entries", cache.len());
        }
        assert!(cache.get(&header(1)).is_none(), "an old one-off stayed");
        // Too big for a generation: not kept at all.
        cache.keep(&"x".repeat(10_000), entry);
        assert!(cache.get(&"x".repeat(10_000)).is_none());
    }
}
