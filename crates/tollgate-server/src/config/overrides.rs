//! `TOLLGATE__SECTION__KEY=value` overrides a config value: path segments
//! are separated by a double underscore and lower-cased; the value is read as
//! a TOML scalar when it parses as one (`30`, `true`) and as a string
//! otherwise. Arrays of tables (`routes`) cannot be addressed.

use super::ConfigError;

pub const PREFIX: &str = "TOLLGATE__";

pub(crate) fn apply(
    document: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(path) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let segments: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(name.as_str(), "empty path segment"));
        }
        set(document, &segments, scalar(value), name)?;
    }
    Ok(())
}

fn scalar(text: &str) -> toml::Value {
    let probe = format!("v = {text}");
    match toml::from_str::<toml::Table>(&probe)
        .ok()
        .and_then(|mut t| t.remove("v"))
    {
        Some(v @ (toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_))) => v,
        _ => toml::Value::String(text.to_owned()),
    }
}

fn set(
    table: &mut toml::Table,
    segments: &[String],
    value: toml::Value,
    name: &str,
) -> Result<(), ConfigError> {
    let (last, parents) = segments
        .split_last()
        .ok_or_else(|| ConfigError::invalid(name, "empty path"))?;
    let mut current = table;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::invalid(name, format!("`{segment}` is not a table")))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_create_nested_keys_and_type_scalars() {
        let mut doc: toml::Table = toml::from_str("[chain]\nrpc_url = \"a\"").unwrap();
        let env = vec![
            ("TOLLGATE__CHAIN__RPC_URL".to_owned(), "http://x".to_owned()),
            (
                "TOLLGATE__CHAIN__RPC_TIMEOUT_SECS".to_owned(),
                "7".to_owned(),
            ),
            (
                "TOLLGATE__SERVER__LISTEN".to_owned(),
                "127.0.0.1:1".to_owned(),
            ),
            ("UNRELATED".to_owned(), "1".to_owned()),
        ];
        apply(&mut doc, &env).unwrap();
        assert_eq!(doc["chain"]["rpc_url"].as_str(), Some("http://x"));
        assert_eq!(doc["chain"]["rpc_timeout_secs"].as_integer(), Some(7));
        assert_eq!(doc["server"]["listen"].as_str(), Some("127.0.0.1:1"));
    }

    #[test]
    fn overriding_through_a_scalar_is_an_error_naming_the_variable() {
        let mut doc: toml::Table = toml::from_str("chain = 1").unwrap();
        let env = vec![("TOLLGATE__CHAIN__X".to_owned(), "1".to_owned())];
        let err = apply(&mut doc, &env).unwrap_err().to_string();
        assert!(err.contains("TOLLGATE__CHAIN__X"), "{err}");
    }
}
