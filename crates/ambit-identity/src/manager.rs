//! The certificate manager: fetch, prefetch, rotate at half-life, retry with backoff.
