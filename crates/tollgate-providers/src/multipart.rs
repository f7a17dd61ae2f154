//! Reading a buffered `multipart/form-data` body into its named fields.

use std::collections::HashMap;

use bytes::Bytes;

/// Every field's bytes by name (the last one wins on duplicates).
pub async fn fields(content_type: &str, body: Bytes) -> Result<HashMap<String, Bytes>, String> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| format!("not multipart/form-data: {e}"))?;
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut out = HashMap::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| format!("malformed multipart body: {e}"))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| format!("malformed multipart body: {e}"))?;
        out.insert(name, bytes);
    }
    Ok(out)
}
