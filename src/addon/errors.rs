//! The one way a [`StoreError`] reaches JavaScript: an `Error` whose `code`
//! is the error's code (`ERR_…`) and whose message is the error's message.
//! `store.js` gives it the class `RedisSessionStoreError` and the caller's
//! stack. (A failed op of a batch crosses as its code's number and its
//! message instead: `crossing.rs`.)

use napi::bindgen_prelude::{JsError, PromiseRaw, ToNapiValue};
use napi::Env;

use crate::errors::StoreError;

/// An error thrown to JavaScript with its code (`napi::Result<T, String>`,
/// as the addon class's sync methods return it).
pub type JsCodedError = napi::Error<String>;

impl From<StoreError> for JsCodedError {
    fn from(e: StoreError) -> Self {
        napi::Error::new(e.code.as_str().to_owned(), e.message)
    }
}

/// A failure of napi itself (not of the store), thrown as napi names it.
pub fn napi_failure(e: napi::Error) -> JsCodedError {
    napi::Error::new(e.status.as_ref().to_owned(), e.reason)
}

/// A Promise for `call`, run on the addon's runtime: it resolves with the
/// value, or rejects with the error and its code.
pub fn promise<'env, T, F>(env: &'env Env, call: F) -> napi::Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: std::future::Future<Output = crate::errors::Result<T>> + Send + 'static,
{
    env.spawn_future_with_callback(async move { Ok(call.await) }, |env, outcome| {
        outcome.map_err(|e| {
            // The rejection keeps this Error object, code and all.
            napi::Error::from(JsError::from(JsCodedError::from(e)).into_unknown(*env))
        })
    })
}
