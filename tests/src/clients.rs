//! Real clients: curl (the tests require it on PATH; `.ci/run` installs it) and raw TCP for
//! requests no well-behaved client would send.

use std::{future::Future, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// What curl printed and how it exited.
#[derive(Debug)]
pub struct CurlOutput {
    /// curl's exit code.
    pub code: Option<i32>,
    /// The response body (or what `-i`/`-w` printed).
    pub stdout: Vec<u8>,
    /// curl's diagnostics.
    pub stderr: String,
}

impl CurlOutput {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `curl -sS ARGS` with no proxy variables from the environment. The arguments are copied,
/// so the future borrows nothing.
pub fn curl(args: &[&str]) -> impl Future<Output = CurlOutput> + Send + 'static {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    run_curl(args)
}

async fn run_curl(args: Vec<String>) -> CurlOutput {
    let output = tokio::process::Command::new("curl")
        .arg("-sS")
        .arg("--max-time")
        .arg("30")
        .args(&args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .expect("curl runs (install curl)");
    CurlOutput {
        code: output.status.code(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Sends `request` as raw bytes and reads until the server closes or goes quiet: for a second
/// once the answer has begun, for ten before its first byte (a loaded CI machine can take more
/// than a second to answer, and an empty answer would then pass for silence).
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let quiet = match response.is_empty() {
            true => Duration::from_secs(10),
            false => Duration::from_secs(1),
        };
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}
