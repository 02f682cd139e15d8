//! Process, path and small encoding helpers shared by the subcommands.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// Paths and options shared by every step.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Workspace root (the directory holding the root `Cargo.toml`).
    pub root: PathBuf,
    /// `packages/operator-sdk`.
    pub sdk: PathBuf,
    /// Skip the Chromium tests inside `npm test` (`AUDIN_SKIP_BROWSER=1`).
    pub skip_browser: bool,
}

impl Ctx {
    pub fn new() -> Result<Self> {
        // xtask is always run through cargo, which sets CARGO_MANIFEST_DIR at
        // build time to `<root>/xtask`.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent directory")?
            .to_path_buf();
        let sdk = root.join("packages").join("operator-sdk");
        Ok(Self {
            root,
            sdk,
            skip_browser: false,
        })
    }

    /// A `cargo` command (the same cargo that runs xtask) in the workspace root.
    pub fn cargo(&self) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&self.root);
        cmd
    }

    /// An `npm` command in `packages/operator-sdk`.
    pub fn npm(&self) -> Command {
        let mut cmd = Command::new("npm");
        cmd.current_dir(&self.sdk);
        if self.skip_browser {
            cmd.env("AUDIN_SKIP_BROWSER", "1");
        }
        cmd
    }

    /// Cargo's target directory (honours `CARGO_TARGET_DIR` and config).
    pub fn target_dir(&self) -> Result<PathBuf> {
        let json = output(
            self.cargo()
                .args(["metadata", "--format-version", "1", "--no-deps"]),
        )?;
        let dir = json_string_field(&json, "target_directory")
            .context("`cargo metadata` output has no target_directory")?;
        Ok(PathBuf::from(dir))
    }
}

/// Renders a command for logs: `$ prog arg arg (in dir)`.
pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    if s.ends_with("/cargo") || s == "cargo" {
        s = "cargo".into();
    }
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(arg));
    }
    s
}

fn quote(arg: &OsStr) -> String {
    let a = arg.to_string_lossy();
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@+".contains(c))
    {
        a.into_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` with inherited stdio; fails if it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    match cmd.get_current_dir() {
        Some(dir) => println!("$ {shown}    (in {})", dir.display()),
        None => println!("$ {shown}"),
    }
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}` (is it installed and on PATH?)"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; stderr is inherited.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !out.status.success() {
        bail!("`{shown}` failed ({})", out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{shown}` printed non-UTF-8"))
}

/// Runs `cmd` quietly and returns trimmed stdout, or `None` if it cannot run
/// or fails. Used to probe for installed tools.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether `name` is an executable file somewhere on `PATH`.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// The `version` of package `name` in a `Cargo.lock`. Errors if it is locked
/// at more than one version.
pub fn locked_version(lock: &str, name: &str) -> Result<Option<String>> {
    let wanted = format!("name = \"{name}\"");
    let mut found: Vec<String> = Vec::new();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() != wanted {
            continue;
        }
        for line in lines.by_ref() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("version = \"") {
                found.push(v.trim_end_matches('"').to_owned());
                break;
            }
            if line.is_empty() || line.starts_with('[') {
                break;
            }
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => bail!("Cargo.lock has several versions of {name}: {found:?}"),
    }
}

/// Extracts a top-level-ish string field from compact JSON (enough for
/// `cargo metadata`'s `target_directory`; avoids a serde dependency).
pub fn json_string_field(json: &str, field: &str) -> Option<String> {
    let key = format!("\"{field}\":");
    let start = json.find(&key)? + key.len();
    let rest = json[start..].trim_start().strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes `contents` to `path` only if it differs (keeps mtimes stable so
/// esbuild/tsc watchers and npm scripts do not see spurious changes).
pub fn write_if_changed(path: &Path, contents: &[u8]) -> Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// `1.2 s` / `3 min 04 s`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// `12.3 KiB`.
pub fn fmt_size(bytes: usize) -> String {
    let mut s = String::new();
    if bytes < 1024 {
        let _ = write!(s, "{bytes} B");
    } else {
        let _ = write!(s, "{:.1} KiB", bytes as f64 / 1024.0);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want, "input {input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn parses_locked_version() {
        let lock = "version = 4\n\n[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\nsource = \"x\"\n\n[[package]]\nname = \"wasm-bindgen-macro\"\nversion = \"0.2.130\"\n";
        assert_eq!(
            locked_version(lock, "wasm-bindgen").unwrap().as_deref(),
            Some("0.2.130")
        );
        assert_eq!(locked_version(lock, "serde").unwrap(), None);
        let twice = format!("{lock}\n[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.99\"\n");
        assert!(locked_version(&twice, "wasm-bindgen").is_err());
    }

    #[test]
    fn extracts_json_string_field() {
        let json = r#"{"packages":[],"target_directory":"/a/b \"c\"\\d","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some(r#"/a/b "c"\d"#)
        );
        assert_eq!(json_string_field(json, "nope"), None);
    }

    #[test]
    fn quotes_only_when_needed() {
        let mut cmd = Command::new("cargo");
        cmd.args(["clippy", "--", "-D", "warnings", "a b"]);
        assert_eq!(display(&cmd), "cargo clippy -- -D warnings 'a b'");
    }
}
