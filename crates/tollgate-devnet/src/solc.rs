//! Compiling contracts with the npm `solc` package (solcjs, standard
//! JSON), cached by source and settings so a chain starts without a compile.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::DevnetError;
use crate::install::npm_install;

pub const SOLC_VERSION: &str = "0.8.37";

/// One contract's compiler output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compiled {
    /// Creation bytecode, hex without `0x`.
    pub creation: String,
    /// Runtime (deployed) bytecode, hex without `0x`.
    pub runtime: String,
    /// The JSON ABI.
    pub abi: Value,
}

/// What to compile: one source file and the contract in it.
pub struct Job<'a> {
    /// Prefix of the cached artefact's name.
    pub artefact: &'a str,
    pub file_name: &'a str,
    pub source: &'a str,
    pub contract: &'a str,
    /// `None` keeps the compiler's default EVM version.
    pub evm_version: Option<&'a str>,
}

/// Compiles on first use (installing solcjs into `cache`), then answers from
/// the cache.
pub async fn compile(cache: &Path, job: &Job<'_>) -> Result<Compiled, DevnetError> {
    let input = standard_input(job);
    let input_text = input.to_string();
    let hash: String = Sha256::digest(input_text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let artefact = cache.join(format!("{}-{SOLC_VERSION}-{hash}.json", job.artefact));
    if let Some(compiled) = std::fs::read(&artefact)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Compiled>(&bytes).ok())
    {
        return Ok(compiled);
    }

    let solcjs = ensure_solcjs(cache).await?;
    let output = run_solcjs(&solcjs, &input_text).await?;
    let compiled = read_output(&output, job)?;
    write_atomically(
        &artefact,
        &serde_json::to_vec(&compiled).map_err(|e| compile_error(e.to_string()))?,
    )?;
    Ok(compiled)
}

fn standard_input(job: &Job<'_>) -> Value {
    let mut settings = json!({
        "optimizer": { "enabled": true, "runs": 200 },
        "outputSelection": {
            job.file_name: {
                job.contract: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]
            }
        }
    });
    if let Some(version) = job.evm_version {
        settings["evmVersion"] = json!(version);
    }
    json!({
        "language": "Solidity",
        "sources": { job.file_name: { "content": job.source } },
        "settings": settings,
    })
}

async fn ensure_solcjs(cache: &Path) -> Result<PathBuf, DevnetError> {
    let prefix = cache.join(format!("solc-{SOLC_VERSION}"));
    let solcjs = prefix.join("node_modules/.bin/solcjs");
    npm_install(&prefix, &[&format!("solc@{SOLC_VERSION}")], &solcjs).await?;
    Ok(solcjs)
}

async fn run_solcjs(solcjs: &Path, input: &str) -> Result<Value, DevnetError> {
    let mut child = Command::new(solcjs)
        .arg("--standard-json")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| compile_error(format!("running solcjs: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| compile_error(format!("writing to solcjs: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| compile_error(format!("running solcjs: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // solcjs may print a notice line before the JSON document.
    let json_start = stdout.find('{').ok_or_else(|| {
        compile_error(format!(
            "solcjs printed no JSON (exit {}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    })?;
    serde_json::from_str(&stdout[json_start..])
        .map_err(|e| compile_error(format!("solcjs output is not JSON: {e}")))
}

fn read_output(output: &Value, job: &Job<'_>) -> Result<Compiled, DevnetError> {
    let errors: Vec<&str> = output["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["severity"] == "error")
        .map(|e| e["formattedMessage"].as_str().unwrap_or("unknown error"))
        .collect();
    if !errors.is_empty() {
        return Err(compile_error(format!("solc failed: {}", errors.join("\n"))));
    }
    let contract = &output["contracts"][job.file_name][job.contract];
    let hex_of = |pointer: &str| {
        contract
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|code| !code.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                compile_error(format!("solc produced no {pointer} for {}", job.contract))
            })
    };
    Ok(Compiled {
        creation: hex_of("/evm/bytecode/object")?,
        runtime: hex_of("/evm/deployedBytecode/object")?,
        abi: contract["abi"].clone(),
    })
}

/// Parallel starters may compile at once: each writes its own file and
/// renames it into place, so no reader ever sees half an artefact.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DevnetError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| compile_error(e.to_string()))?;
    }
    let staging = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&staging, bytes).map_err(|e| compile_error(e.to_string()))?;
    std::fs::rename(&staging, path).map_err(|e| compile_error(e.to_string()))
}

fn compile_error(message: String) -> DevnetError {
    DevnetError::Compile(message)
}
