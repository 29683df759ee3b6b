//! Running a target's reload (or post-install) command: argv without a shell, no stdin, a
//! timeout, and a bounded capture of what it printed.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// How much of stdout and of stderr is kept.
pub(crate) const CAPTURE_LIMIT: usize = 4 * 1024;

/// How long to keep reading the pipes after the command exited: a daemon it started may
/// hold them open forever.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// A command that ran and succeeded.
#[derive(Debug)]
pub(crate) struct CommandOutput {
    pub stdout: String,
    pub stderr: String,
}

/// A command that could not run, failed, or timed out.
#[derive(Debug)]
pub(crate) struct CommandFailure {
    pub message: String,
    /// What it printed (stderr, else stdout), bounded, private keys redacted.
    pub observed: Option<String>,
}

/// The argv as a person would type it.
pub(crate) fn display_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("{a:?}")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `argv` and waits at most `timeout` for it; kills it past that.
pub(crate) async fn run(
    argv: &[String],
    timeout: Duration,
) -> Result<CommandOutput, CommandFailure> {
    let shown = display_argv(argv);
    let Some((program, args)) = argv.split_first() else {
        return Err(CommandFailure {
            message: "the command is empty".into(),
            observed: None,
        });
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CommandFailure {
            message: format!("cannot start `{shown}`: {e}"),
            observed: None,
        })?;

    let stdout_buf = Arc::new(Mutex::new(Capture::default()));
    let stderr_buf = Arc::new(Mutex::new(Capture::default()));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(capture(out, Arc::clone(&stdout_buf))));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(capture(err, Arc::clone(&stderr_buf))));
    }

    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let status: Result<ExitStatus, String> = match waited {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(format!("waiting for `{shown}` failed: {e}")),
        Err(_) => {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            Err(format!(
                "`{shown}` did not finish within {} ms and was killed",
                timeout.as_millis()
            ))
        }
    };

    let drain = async {
        for reader in &mut readers {
            let _ = reader.await;
        }
    };
    let _ = tokio::time::timeout(DRAIN_GRACE, drain).await;
    for reader in &readers {
        reader.abort();
    }
    let stdout = take_text(&stdout_buf);
    let stderr = take_text(&stderr_buf);
    let observed = if !stderr.is_empty() {
        Some(stderr.clone())
    } else if !stdout.is_empty() {
        Some(stdout.clone())
    } else {
        None
    };

    match status {
        Ok(status) if status.success() => Ok(CommandOutput { stdout, stderr }),
        Ok(status) => Err(CommandFailure {
            message: format!("`{shown}` failed ({status})"),
            observed,
        }),
        Err(message) => Err(CommandFailure { message, observed }),
    }
}

#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    dropped: usize,
}

async fn capture(mut pipe: impl AsyncRead + Unpin, buf: Arc<Mutex<Capture>>) {
    let mut chunk = [0u8; 4096];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let Ok(mut cap) = buf.lock() else { break };
                let room = CAPTURE_LIMIT.saturating_sub(cap.bytes.len());
                let keep = room.min(n);
                cap.bytes.extend_from_slice(&chunk[..keep]);
                cap.dropped += n - keep;
            }
        }
    }
}

fn take_text(buf: &Mutex<Capture>) -> String {
    let Ok(cap) = buf.lock() else {
        return String::new();
    };
    let mut text = String::from_utf8_lossy(&cap.bytes).trim().to_string();
    if cap.dropped > 0 {
        text.push_str(&format!(" … ({} more bytes)", cap.dropped));
    }
    redact_private_keys(&text)
}

/// Replaces every PEM private key block (complete or cut off) with a marker.
pub(crate) fn redact_private_keys(text: &str) -> String {
    const MARKER: &str = "[private key redacted]";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after_begin = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after_begin.find("-----") else {
            break;
        };
        let label = &after_begin[..label_end];
        if !label.contains("PRIVATE KEY") {
            let skip = start + "-----BEGIN ".len() + label_end + "-----".len();
            out.push_str(&rest[..skip]);
            rest = &rest[skip..];
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str(MARKER);
        let end_marker = format!("-----END {label}-----");
        match rest[start..].find(&end_marker) {
            Some(end) => rest = &rest[start + end + end_marker.len()..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_key_blocks_only() {
        let text = "a -----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
                    b -----BEGIN EC PRIVATE KEY-----\nSECRET\n-----END EC PRIVATE KEY----- c \
                    -----BEGIN PRIVATE KEY-----\nCUT";
        let out = redact_private_keys(text);
        assert!(out.contains("BEGIN CERTIFICATE"));
        assert!(!out.contains("SECRET"));
        assert!(!out.contains("CUT"));
        assert!(out.contains(" c "));
        assert_eq!(out.matches("[private key redacted]").count(), 2);
    }

    #[tokio::test]
    async fn captures_failure_and_times_out() {
        let argv = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        let ok = run(&argv("echo hello"), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(ok.stdout, "hello");

        let failed = run(&argv("echo broken >&2; exit 3"), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            failed.message.contains("exit status: 3"),
            "{}",
            failed.message
        );
        assert_eq!(failed.observed.as_deref(), Some("broken"));

        let slow = run(&argv("exec sleep 30"), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(slow.message.contains("killed"), "{}", slow.message);

        let big = run(
            &argv("head -c 100000 /dev/zero | tr '\\0' x >&2; exit 1"),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        let observed = big.observed.unwrap();
        assert!(observed.len() < CAPTURE_LIMIT + 100);
        assert!(observed.contains("more bytes"));

        let missing = run(&["/nonexistent/reload".to_string()], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(missing.message.contains("cannot start"));
    }
}
