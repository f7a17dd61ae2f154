//! Values that fit a JSON schema: tool inputs and structured answers.

use serde_json::{Map, Value, json};

/// A small value that fits `schema` (see the module documentation).
pub fn fill_schema(schema: &Value, name: Option<&str>) -> Value {
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let empty = Map::new();
            let properties = schema
                .get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut out = Map::new();
            for (key, property) in properties {
                if required.is_empty() || required.contains(&key.as_str()) {
                    out.insert(key.clone(), fill_schema(property, Some(key)));
                }
            }
            Value::Object(out)
        }
        "integer" | "number" => json!(1),
        "boolean" => json!(true),
        "array" => json!([]),
        "null" => Value::Null,
        _ => {
            let name = name.unwrap_or_default().to_ascii_lowercase();
            let place = ["location", "city", "place", "address", "where"]
                .iter()
                .any(|p| name.contains(p));
            json!(if place { "Paris" } else { "mock" })
        }
    }
}
