//! The real `sluice` binary as a child process: started on a config file,
//! its addresses read from the line it prints, its stderr collected on a
//! thread (so the pipe never fills), and killed by PID when dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the binary may take to print its listening line.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// A running `sluice serve`.
pub struct SluiceProcess {
    /// The child; `kill_9` and `terminate` act on it.
    pub child: Child,
    /// Base URL of the public listener, `https://localhost:PORT` (or http).
    pub url: String,
    /// Base URL of the admin listener.
    pub admin_url: String,
    /// Everything the process wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl SluiceProcess {
    /// Writes `config` to `dir/sluice.toml` and starts `sluice serve` on it.
    pub fn start(dir: &Path, config: &str) -> Self {
        let path = dir.join("sluice.toml");
        std::fs::write(&path, config).expect("config written");
        Self::start_with_file(&path)
    }

    /// Starts `sluice serve --config path`.
    pub fn start_with_file(path: &Path) -> Self {
        let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        Self::start_with_log(path, &log)
    }

    /// Starts `sluice serve --config path` with `RUST_LOG=log`.
    pub fn start_with_log(path: &Path, log: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--config"])
            .arg(path)
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("sluice: listening on ") {
                    let _ = tx.send(rest.to_owned());
                }
            }
        });
        let line = match rx.recv_timeout(START_PATIENCE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sluice did not print its addresses; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        // "https://127.0.0.1:PORT (admin http://127.0.0.1:PORT)"
        let mut parts = line.split_whitespace();
        let public = parts.next().expect("public address");
        let admin = parts.nth(1).expect("admin address").trim_end_matches(')');
        let (scheme, rest) = public.split_once("://").expect("a URL");
        let port = rest.rsplit(':').next().expect("a port");
        Self {
            child,
            url: format!("{scheme}://localhost:{port}"),
            admin_url: admin.to_owned(),
            log,
        }
    }

    /// A client trusting the CA generated in `data_dir/tls/`.
    pub fn client(data_dir: &Path) -> reqwest::Client {
        let ca = std::fs::read(data_dir.join("tls/ca.pem")).expect("generated CA in data/tls");
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// SIGKILL, then reap.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for the exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "SIGTERM sent");
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                return exit.success();
            }
            assert!(Instant::now() < deadline, "sluice exits after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for SluiceProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_9();
        }
    }
}

/// The start of a config for a test process: both listeners on ephemeral
/// loopback ports (admin plaintext), and the data directory.
pub fn ephemeral_config(data_dir: &Path) -> String {
    format!(
        "[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\ninsecure = true\n[storage]\ndata_dir = {}\n",
        toml_path(data_dir)
    )
}

/// A data directory path inside a test's temporary directory, as a TOML string.
pub fn toml_path(path: &Path) -> String {
    let path: PathBuf = path.to_owned();
    format!("{:?}", path.display().to_string())
}
