//! The reference parts of `compare`: nginx from Debian as the fixed-answer
//! upstream and as a bare reverse proxy, and `wrk` as the closed-loop load
//! generator (`scripts/bench` installs both).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One closed-loop measurement.
#[derive(Debug, Clone)]
pub struct Figure {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Answers with a status other than 2xx/3xx (the 402 path's are all).
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors.
    pub errors: u64,
}

/// nginx on two loopback ports: `upstream` answers every POST with a fixed
/// chat completion (and `/stream` with a fixed SSE stream), `proxy` is a
/// bare keep-alive reverse proxy in front of it.
pub struct Nginx {
    child: std::process::Child,
    pub upstream: String,
    pub proxy: String,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: a killed master leaves its workers running
        // (and listening) after the bench.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nginx {
    /// `json` answers `/…` (the plan runtime's answer under `/plan/…`),
    /// `sse` answers `/…/stream`.
    pub fn start(dir: &Path, json: &str, plan_json: &str, sse: &str) -> Self {
        let prefix = dir.join("nginx");
        let answers = prefix.join("answers");
        std::fs::create_dir_all(&answers).unwrap();
        for (file, text) in [
            ("chat.json", json),
            ("plan.json", plan_json),
            ("stream.sse", sse),
        ] {
            std::fs::write(answers.join(file), text).unwrap();
        }
        let (up, proxy) = (free_port(), free_port());
        let conf = format!(
            r#"
worker_processes auto;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  keepalive_requests 1000000;
  upstream fixed {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{up} reuseport;
    root {prefix}/answers;
    # The static module refuses POST with 405: turn that into the file.
    location ~ /stream$ {{ error_page 405 =200 /stream.sse; return 405; }}
    location /plan/ {{ error_page 405 =200 /plan.json; return 405; }}
    location / {{ error_page 405 =200 /chat.json; return 405; }}
    location = /stream.sse {{ internal; default_type text/event-stream; }}
    location = /plan.json {{ internal; default_type application/json; }}
    location = /chat.json {{ internal; default_type application/json; }}
  }}
  server {{
    listen 127.0.0.1:{proxy} reuseport;
    location / {{
      proxy_pass http://fixed;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"#,
            prefix = prefix.display(),
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(&prefix)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts (scripts/bench installs it)");
        for port in [up, proxy] {
            wait_for_port(port);
        }
        Self {
            child,
            upstream: format!("http://127.0.0.1:{up}"),
            proxy: format!("http://127.0.0.1:{proxy}"),
        }
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}

fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on port {port}");
}

/// The Lua script: POST `BODY_FILE` with `AUTH` as `Authorization` when
/// set, and one parseable summary line at the end.
const WRK_SCRIPT: &str = r#"
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("AUTH")
if auth and #auth > 0 then wrk.headers["Authorization"] = auth end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
"#;

/// Closed loop: `connections` keep-alive connections on 2 wrk threads, each
/// sending its next request when the previous answer arrived.
pub fn wrk(
    dir: &Path,
    url: &str,
    body: &str,
    auth: Option<&str>,
    connections: u32,
    seconds: u32,
) -> Figure {
    let script = dir.join("bench.lua");
    let body_file = dir.join("wrk-body.json");
    std::fs::write(&script, WRK_SCRIPT).unwrap();
    std::fs::write(&body_file, body).unwrap();
    let output = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["--timeout", "10s", "-s"])
        .arg(&script)
        .arg(url)
        .env("BODY_FILE", &body_file)
        .env("AUTH", auth.unwrap_or(""))
        .output()
        .expect("wrk runs (scripts/bench installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("wrk printed no result: {stdout}"));
    let n: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    Figure {
        per_second: n[0] as f64 / (n[1] as f64 / 1e6),
        p50_ms: n[2] as f64 / 1e3,
        p99_ms: n[3] as f64 / 1e3,
        non_2xx: n[4],
        errors: n[5],
    }
}
