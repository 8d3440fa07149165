//! A `segments serve` process on a data directory, as a developer starts it, and tokens from
//! `segments token`: for the tests that drive the API over real HTTP.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_segments");

/// A running `segments serve`; stopped when dropped.
pub struct Runner {
    child: Child,
    pub url: String,
    /// The token `serve` prints: mandator `demo-bank`, every scope.
    pub token: String,
}

impl Runner {
    /// Serves `data_dir` on a free port; with `demo`, after loading 300 demo users.
    pub fn start(data_dir: &Path, demo: bool) -> Runner {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--port", "0", "--json", "--data-dir"]).arg(data_dir);
        if demo {
            cmd.args(["--demo", "--demo-users", "300"]);
        }
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::null()).env("RUST_LOG", "warn").spawn().expect("segments starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("the first line of serve");
        let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Runner {
            child,
            url: info["url"].as_str().expect("url").to_owned(),
            token: info["token"].as_str().expect("token").to_owned(),
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token of `segments token` for `mandator` with `scopes` (every scope when empty).
pub fn cli_token(data_dir: &Path, mandator: &str, scopes: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["token", "--mandator", mandator, "--data-dir"]).arg(data_dir);
    for s in scopes {
        cmd.args(["--scope", s]);
    }
    let out = cmd.output().expect("segments token runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
