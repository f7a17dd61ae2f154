//! The protocol SDK's replay store, persisted in our ledger.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mpp::store::{Store, StoreError};
use serde_json::Value;
use tollgate_ledger::{Ledger, LedgerError};

type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Adapts [`Ledger`]'s key-value table to the SDK's `Store`, so the SDK's
/// "this transaction paid already" markers survive restarts.
pub struct LedgerStore {
    ledger: Arc<dyn Ledger>,
}

impl LedgerStore {
    pub fn new(ledger: Arc<dyn Ledger>) -> Self {
        Self { ledger }
    }
}

fn internal(error: LedgerError) -> StoreError {
    StoreError::Internal(error.to_string())
}

fn encode(value: &Value) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Serialization(e.to_string()))
}

impl Store for LedgerStore {
    fn get(&self, key: &str) -> StoreFuture<'_, Option<Value>> {
        let key = key.to_owned();
        Box::pin(async move {
            match self.ledger.kv_get(&key).await.map_err(internal)? {
                Some(raw) => serde_json::from_str(&raw)
                    .map(Some)
                    .map_err(|e| StoreError::Serialization(e.to_string())),
                None => Ok(None),
            }
        })
    }

    fn put(&self, key: &str, value: Value) -> StoreFuture<'_, ()> {
        let key = key.to_owned();
        Box::pin(async move {
            let raw = encode(&value)?;
            self.ledger.kv_put(&key, &raw).await.map_err(internal)
        })
    }

    fn delete(&self, key: &str) -> StoreFuture<'_, ()> {
        let key = key.to_owned();
        Box::pin(async move { self.ledger.kv_delete(&key).await.map_err(internal) })
    }

    fn compare_exchange(
        &self,
        key: &str,
        expected: Option<Value>,
        value: Option<Value>,
    ) -> StoreFuture<'_, bool> {
        let key = key.to_owned();
        Box::pin(async move {
            let expected = expected.as_ref().map(encode).transpose()?;
            let value = value.as_ref().map(encode).transpose()?;
            self.ledger
                .kv_compare_exchange(&key, expected.as_deref(), value.as_deref())
                .await
                .map_err(internal)
        })
    }

    fn put_if_absent(&self, key: &str, value: Value) -> StoreFuture<'_, bool> {
        let key = key.to_owned();
        Box::pin(async move {
            let raw = encode(&value)?;
            self.ledger
                .kv_put_if_absent(&key, &raw)
                .await
                .map_err(internal)
        })
    }
}
