//! Price tables and quotes: what a request costs at most, and what it cost.
#![forbid(unsafe_code)]

pub mod audio;
pub mod cost;
mod image;
pub mod listing;
pub mod quote;
pub mod table;
pub mod tokens;

pub use cost::{Usage, UsageDetail, actual_cost, actual_cost_detail};
pub use quote::{Quote, QuoteError};
pub use table::{BUILTIN_TABLE, PriceTable, TableError, ThinkingMode, per_million};

/// Which quote function prices a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Responses,
    /// Anthropic's native Messages API (`/v1/messages`), Claude models only.
    Messages,
    Embeddings,
    Images,
    Speech,
    /// Multipart audio upload, priced by duration (quoted by the server,
    /// which reads the file).
    Transcription,
}

impl Endpoint {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "chat" => Self::Chat,
            "responses" => Self::Responses,
            "messages" => Self::Messages,
            "transcription" => Self::Transcription,
            "embeddings" => Self::Embeddings,
            "images" => Self::Images,
            "speech" => Self::Speech,
            _ => return None,
        })
    }

    pub fn quote(self, table: &PriceTable, body: &serde_json::Value) -> Result<Quote, QuoteError> {
        match self {
            Self::Chat => quote::chat(table, body),
            Self::Responses => quote::responses(table, body),
            Self::Messages => quote::messages(table, body),
            Self::Embeddings => quote::embeddings(table, body),
            Self::Images => quote::images(table, body),
            Self::Speech => quote::speech(table, body),
            Self::Transcription => Err(QuoteError {
                param: Some("file"),
                message: "transcriptions are quoted from the uploaded audio".into(),
                code: "invalid-body",
            }),
        }
    }
}
