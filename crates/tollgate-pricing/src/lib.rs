//! Price tables and quotes: what a request costs at most, and what it cost.
#![forbid(unsafe_code)]

pub mod quote;
pub mod table;
pub mod tokens;

pub use quote::{Quote, QuoteError};
pub use table::{BUILTIN_TABLE, PriceTable, TableError, per_million};
